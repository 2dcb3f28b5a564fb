"""Tests of mrcnn.files: atomic writes and the progress bar."""

import io
import os

import pytest

from mrcnn import files


def test_atomic_path_keeps_the_extension_and_renames_when_done(tmp_path):
    target = tmp_path / "out" / "picture.png"
    with files.atomic_path(target) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path / "out")
        assert temporary.endswith(".partial.png") and os.path.basename(temporary).startswith(".")
        with open(temporary, "wb") as f:
            f.write(b"done")
        assert not target.exists()
    assert target.read_bytes() == b"done"
    assert os.listdir(tmp_path / "out") == ["picture.png"]


def test_atomic_path_leaves_the_previous_file_on_error(tmp_path):
    target = tmp_path / "settings.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_path(target) as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["settings.json"]


def test_write_json_and_text(tmp_path):
    assert files.write_json(tmp_path / "a.json", {"b": [1, 2]}) == tmp_path / "a.json"
    assert (tmp_path / "a.json").read_text() == '{\n "b": [\n  1,\n  2\n ]\n}'
    files.write_text(tmp_path / "b.csv", "x,y\r\n1,2\r\n")
    assert (tmp_path / "b.csv").read_bytes() == b"x,y\r\n1,2\r\n"


def test_atomic_directory_is_complete_or_absent(tmp_path):
    with files.atomic_directory(tmp_path / "data") as partial:
        (open(os.path.join(partial, "a.txt"), "w")).close()
    assert os.listdir(tmp_path / "data") == ["a.txt"]
    with pytest.raises(FileExistsError, match="already exists"):
        with files.atomic_directory(tmp_path / "data"):
            pass
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_directory(tmp_path / "other") as partial:
            (open(os.path.join(partial, "a.txt"), "w")).close()
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_progress_bar_draws_counts_and_percentages():
    stream = io.StringIO()
    with files.ProgressBar(4, "Detecting", width=4, stream=stream) as bar:
        bar.advance(1)
        bar.advance(3)
    assert stream.getvalue() == ("\rDetecting [    ]   0% 0/4\rDetecting [=   ]  25% 1/4"
                                 "\rDetecting [====] 100% 4/4\n")
    stream = io.StringIO()
    with files.ProgressBar(None, "weights.h5", unit="bytes", stream=stream) as bar:
        bar.advance(2_500_000)
    assert stream.getvalue().split("\r")[-1] == "weights.h5 2.5 MB\n"


def test_default_cache_dir(monkeypatch):
    monkeypatch.setenv("MRCNN_CACHE", "/somewhere")
    assert files.default_cache_dir() == "/somewhere"
    monkeypatch.delenv("MRCNN_CACHE")
    assert files.default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "mrcnn")
