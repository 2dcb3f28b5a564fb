"""Finding and fetching the images a command works on.

``image_files(source)`` turns what a user names (an image file, a folder of
images, or an http(s) URL) into a list of readable image files, checking
each file's header first so that a bad image stops a command before it
writes anything.
"""

import os
import tempfile
import urllib.parse
import urllib.request

from mrcnn import via
from mrcnn.utils import ImageError

IMAGE_EXTENSIONS = via.IMAGE_EXTENSIONS


def image_files(source, download_dir=None):
    """The image files a file, folder or URL names.

    Args:
        source: an image file, a folder (its files with an image extension,
            sorted by name; sub-folders are not searched), or an http(s) URL
            (downloaded into ``download_dir``, default a temporary folder).

    Returns:
        A list of paths, each with a readable image header.

    Raises:
        ImageError: nothing there, a folder without images, an unreadable
            image, or a failed download.
    """
    source = os.fspath(source)
    if urllib.parse.urlparse(source).scheme in ("http", "https"):
        return [download_image(source, download_dir)]
    if os.path.isdir(source):
        paths = [os.path.join(source, name) for name in sorted(os.listdir(source))
                 if name.lower().endswith(IMAGE_EXTENSIONS)]
        if not paths:
            raise ImageError(f"{source}: the folder holds no image "
                             f"({', '.join(IMAGE_EXTENSIONS)}).")
    elif os.path.isfile(source):
        paths = [source]
    else:
        raise ImageError(f"{source}: no such file or folder. Give an image, a folder of "
                         "images or an http(s) URL.")
    for path in paths:
        check_image_header(path)
    return paths


def check_image_header(path):
    """Raise ImageError unless ``path``'s header reads as an image."""
    try:
        via.displayed_size(path)
    except (OSError, ValueError) as error:
        raise ImageError(f"{path}: cannot read image ({error}). Re-save it as JPEG or PNG, "
                         "or leave it out.") from None


def download_image(url, directory=None, timeout=30):
    """Download an image URL into ``directory`` (default: a temporary folder); its path.

    Raises:
        ImageError: the download failed or did not return an image; nothing
            is left behind.
    """
    suffix = os.path.splitext(urllib.parse.urlparse(url).path)[1] or ".jpg"
    handle, path = tempfile.mkstemp(prefix="mrcnn-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(handle, "wb") as f, \
                urllib.request.urlopen(url, timeout=timeout) as response:
            f.write(response.read())
        via.displayed_size(path)
    except (OSError, ValueError) as error:
        os.remove(path)
        raise ImageError(f"{url}: cannot download an image ({error}). Download it yourself "
                         "and pass the file instead.") from None
    return path
