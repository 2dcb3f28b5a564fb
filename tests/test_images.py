"""Tests of mrcnn.images: the image files a path, folder or URL names."""

import functools
import http.server
import os
import threading
import warnings

import pytest
from PIL import Image

from mrcnn import images

from conftest import jpeg_bytes, png_header


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (8, 6)).save(tmp_path / "b.png")
    Image.new("RGB", (8, 6)).save(tmp_path / "a.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "sub" / "c.png")
    return tmp_path


def test_a_file_a_folder_and_their_errors(folder):
    assert images.image_files(folder / "b.png") == [str(folder / "b.png")]
    assert images.image_files(folder) == [str(folder / "a.JPG"), str(folder / "b.png")]
    with pytest.raises(images.ImageError, match=f"{folder / 'nowhere'}: no such file or folder"):
        images.image_files(folder / "nowhere")
    (folder / "empty").mkdir()
    with pytest.raises(images.ImageError, match="the folder holds no image"):
        images.image_files(folder / "empty")


def test_a_folder_skips_hidden_files_and_folders_named_like_images(folder):
    (folder / "._a.JPG").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    (folder / ".b.png").write_bytes(b"")
    (folder / "album.jpg").mkdir()
    assert images.image_files(folder) == [str(folder / "a.JPG"), str(folder / "b.png")]
    assert images.is_image_name("IMG_001.JPG") and not images.is_image_name("._IMG_001.JPG")
    assert not images.is_image_name("notes.txt")


def test_an_unreadable_image_is_named(folder):
    (folder / "c.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(images.ImageError, match=f"{folder / 'c.jpg'}: cannot read image"):
        images.image_files(folder)


@pytest.fixture
def server(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_an_image_url_is_downloaded(server, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    [path] = images.image_files(f"{server}/b.png", download_dir=downloads)
    assert os.path.dirname(path) == str(downloads) and path.endswith(".png")
    with Image.open(path) as image:
        assert image.size == (8, 6)
    for url in (f"{server}/missing.png", f"{server}/notes.txt"):
        with pytest.raises(images.ImageError, match="cannot download an image"):
            images.image_files(url, download_dir=downloads)
    assert os.listdir(downloads) == [os.path.basename(path)]


# ---------------------------------------------------------------------------
# check_image: the one check of every image file before use


def test_check_image_gives_the_displayed_size_and_decodes_to_the_end(tmp_path):
    data = jpeg_bytes(48, 64)
    (tmp_path / "good.jpg").write_bytes(data)
    assert images.check_image(tmp_path / "good.jpg") == (48, 64, 1)
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    assert images.check_image(tmp_path / "cut.jpg", decode=False) == (48, 64, 1)  # header only
    with pytest.raises(images.ImageError, match=f"^{tmp_path / 'cut.jpg'}: image data is truncated "
                                                r"or corrupt \(image file is truncated"):
        images.check_image(tmp_path / "cut.jpg")
    Image.new("RGB", (30, 20), "red").save(tmp_path / "good.png")
    png = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[:len(png) - 30])
    with pytest.raises(images.ImageError, match="image data is truncated or corrupt"):
        images.check_image(tmp_path / "cut.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(images.ImageError,
                       match=f"{tmp_path / 'empty.jpg'}: the file is empty \\(0 bytes\\)"):
        images.check_image(tmp_path / "empty.jpg")


@pytest.mark.parametrize("width, height", [(30000, 30000), (10000, 10000)])
def test_images_beyond_the_pixel_limit_are_refused_before_decoding(tmp_path, width, height):
    # 30000^2 is beyond twice Pillow's limit (DecompressionBombError in Image.open);
    # 10000^2 is between once and twice (Pillow only warns): both are refused.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(images.ImageError) as error:
            images.check_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "PIL.Image.MAX_IMAGE_PIXELS" in message
    assert "Downscale the image" in message


def test_check_image_refuses_links_out_of_its_folder_and_special_files(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes())
    (folder / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(images.files.FileError, match="outside"):
        images.check_image(folder / "link.jpg", folder)
    assert images.check_image(folder / "link.jpg", folder, follow_links=True) == (48, 64, 1)
    with pytest.raises(images.files.FileError, match="not a regular file"):
        images.check_image(folder / "zero.jpg", folder, follow_links=True)


def test_image_files_checks_every_image_of_a_folder_before_use(folder):
    data = jpeg_bytes()
    (folder / "z.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(images.ImageError, match=f"{folder / 'z.jpg'}: image data is truncated"):
        images.image_files(folder)
    (folder / "z.jpg").unlink()
    os.mkfifo(folder / "y.png")
    with pytest.raises(images.files.FileError, match=f"{folder / 'y.png'}: not a regular file"):
        images.image_files(folder)
    with pytest.raises(images.files.FileError, match="/dev/zero: not a regular file"):
        images.image_files("/dev/zero")


def test_a_download_larger_than_the_limit_is_refused(server, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(images.ImageError, match="more than 0 MB, too large for an image"):
        images.download_image(f"{server}/b.png", downloads, max_bytes=10)
    assert os.listdir(downloads) == []
