"""Tests of mrcnn.images: the image files a path, folder or URL names."""

import functools
import http.server
import os
import threading

import pytest
from PIL import Image

from mrcnn import images


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
