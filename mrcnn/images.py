"""Image files: checking them before use, and finding the ones a command works on.

Every image mrcnn reads from a dataset or a command line goes through
:func:`check_image` before any work starts:

- it must be a regular file (``files.regular_file``), and inside its dataset
  folder unless links out are allowed;
- its header must read as an image of at most ``PIL.Image.MAX_IMAGE_PIXELS``
  pixels (Pillow's decompression-bomb limit, about 89 megapixels by default;
  raise it to accept larger images);
- its pixel data must decode to the end, so that a truncated JPEG or PNG is
  found when a dataset is loaded or checked, not in the middle of training.
  JPEGs are decoded at 1/8 scale (libjpeg's DCT scaling still reads the whole
  file), which halves the cost: about 1 ms per photo of the mug dataset.

``image_files(source)`` turns what a user names (an image file, a folder of
images, or an http(s) URL) into a list of checked image files, so that a bad
image stops a command before it writes anything.
"""

import os
import tempfile
import urllib.parse
import urllib.request
import warnings

from PIL import Image

from mrcnn import files
from mrcnn.utils import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
MAX_DOWNLOAD_BYTES = 200 * 2**20
PIXEL_LIMIT_FIX = ("Downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS (Pillow's guard "
                   "against decompression bombs) if you trust it.")


def is_image_name(name):
    """Whether a file name in a folder names an image: an image extension, and not hidden
    (macOS copies put a ``._IMG_001.JPG`` of metadata beside each photo)."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def exif_orientation(image):
    """EXIF orientation (1..8) of an open PIL image; 1 when absent or unreadable."""
    try:
        orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block leaves the photo as stored
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def check_image(path, folder=None, follow_links=False, decode=True):
    """Check an image file before use; its size as displayed.

    Args:
        path: the image file.
        folder: the dataset folder it belongs to (see ``files.regular_file``),
            or None for a file a user named directly.
        follow_links: accept a symbolic link out of ``folder``.
        decode: decode the pixel data to the end (truncated or corrupt data
            is an error); False reads the header only.

    Returns:
        (height, width, orientation): height and width as displayed, after
        the EXIF orientation (1..8) is applied (swapped for orientations
        5-8), the frame VIA shows and ``utils.Dataset.load_image`` returns.

    Raises:
        files.FileError: not a regular file, or a link out of ``folder``.
        ImageError: not a readable image, more pixels than
            ``PIL.Image.MAX_IMAGE_PIXELS``, or (with ``decode``) truncated
            or corrupt pixel data. The message names the file and the fix.
    """
    files.regular_file(path, folder, follow_links, what="image")
    if not os.path.getsize(path):
        raise ImageError(f"{path}: the file is empty (0 bytes), an interrupted copy or "
                         "download. Copy the image again, or leave it out.")
    problem = "cannot read image"
    try:
        with warnings.catch_warnings():
            # Images beyond the pixel limit are refused below, not warned about.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            _check_pixel_count(path, width, height)
            orientation = exif_orientation(image)
            if decode:
                problem = "image data is truncated or corrupt"
                if image.format == "JPEG":
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path}: {error} {PIXEL_LIMIT_FIX}") from None
    except Exception as error:  # Pillow fails on damaged files with many exception types
        reason = error if isinstance(error, (OSError, SyntaxError, ValueError)) else \
            f"{type(error).__name__}: {error}"
        raise ImageError(f"{path}: {problem} ({reason}). Re-save it as JPEG or PNG, or leave "
                         "it out.") from None
    if orientation in TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    return height, width, orientation


def displayed_size(path):
    """(height, width, orientation) of an image as displayed, from its header only.

    ``check_image(path, decode=False)``: see there.
    """
    return check_image(path, decode=False)


def _check_pixel_count(path, width, height):
    limit = Image.MAX_IMAGE_PIXELS
    if width < 1 or height < 1:
        raise ImageError(f"{path}: the header gives a size of {width}x{height} pixels. Re-save "
                         "the image, or leave it out.")
    if limit and width * height > limit:
        raise ImageError(f"{path}: {width}x{height} pixels, more than the limit of {limit} "
                         f"pixels. {PIXEL_LIMIT_FIX}")


def image_files(source, download_dir=None, decode=True):
    """The image files a file, folder or URL names, each checked with ``check_image``.

    Args:
        source: an image file, a folder (its files with an image extension,
            sorted by name, hidden ones skipped (``is_image_name``); sub-folders
            are not searched), or an http(s) URL
            (downloaded into ``download_dir``, default a temporary folder).
        decode: decode each image to the end (see ``check_image``).

    Returns:
        A list of paths.

    Raises:
        ImageError or files.FileError: nothing there, a folder without
            images, an unreadable, truncated or too large image, a file that
            is not a regular file, or a failed download.
    """
    source = os.fspath(source)
    if urllib.parse.urlparse(source).scheme in ("http", "https"):
        return [download_image(source, download_dir)]
    if os.path.isdir(source):
        paths = [os.path.join(source, name) for name in sorted(os.listdir(source))
                 if is_image_name(name) and not os.path.isdir(os.path.join(source, name))]
        if not paths:
            raise ImageError(f"{source}: the folder holds no image "
                             f"({', '.join(IMAGE_EXTENSIONS)}).")
    elif os.path.lexists(source):
        paths = [source]
    else:
        raise ImageError(f"{source}: no such file or folder. Give an image, a folder of "
                         "images or an http(s) URL.")
    for path in paths:
        check_image(path, decode=decode)
    return paths


def download_image(url, directory=None, timeout=30, max_bytes=MAX_DOWNLOAD_BYTES):
    """Download an image URL into ``directory`` (default: a temporary folder); its path.

    At most ``max_bytes`` are read; the image is checked with ``check_image``.

    Raises:
        ImageError: the download failed, was too large or did not return an
            image; nothing is left behind.
    """
    suffix = os.path.splitext(urllib.parse.urlparse(url).path)[1] or ".jpg"
    handle, path = tempfile.mkstemp(prefix="mrcnn-", suffix=suffix, dir=directory)
    reason = None
    try:
        with os.fdopen(handle, "wb") as f, \
                urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
            f.write(data[:max_bytes])
        if len(data) > max_bytes:
            reason = f"more than {max_bytes // 2**20} MB, too large for an image"
        else:
            check_image(path)
    except (OSError, ValueError) as error:
        reason = str(error).removeprefix(f"{path}: ")
    if reason:
        os.remove(path)
        raise ImageError(f"{url}: cannot download an image ({reason}). Download it yourself "
                         "and pass the file instead.")
    return path
