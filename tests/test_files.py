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


# ---------------------------------------------------------------------------
# Reading only regular files; output folders


def test_regular_file_refuses_what_cannot_be_read_safely(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (folder / "inside_link.jpg").symlink_to(folder / "a.jpg")
    (folder / "out_link.jpg").symlink_to(tmp_path / "outside.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / "sub.jpg").mkdir()
    os.mkfifo(folder / "fifo.jpg")
    assert files.regular_file(folder / "a.jpg", folder) == str(folder / "a.jpg")
    assert files.regular_file(folder / "inside_link.jpg", folder)
    assert files.regular_file(folder / "out_link.jpg", folder, follow_links=True)
    assert files.regular_file(folder / "out_link.jpg")  # named directly by the user
    for name, reason in [("out_link.jpg", f"a symbolic link to {tmp_path / 'outside.jpg'}, "
                                          f"outside {folder}, so it is not read"),
                         ("zero.jpg", "not a regular file (a device, FIFO or socket)"),
                         ("fifo.jpg", "not a regular file (a device, FIFO or socket)"),
                         ("dangling.jpg", "no such image"),
                         ("missing.jpg", "no such image"),
                         ("sub.jpg", "a folder, not an image")]:
        with pytest.raises(files.FileError) as error:
            files.regular_file(folder / name, folder, what="image")
        assert str(error.value).startswith(f"{folder / name}: {reason}")
        assert error.value.path == str(folder / name) and error.value.reason.startswith(reason)
    with pytest.raises(files.FileError, match="--follow-links"):
        files.regular_file(folder / "out_link.jpg", folder)
    with pytest.raises(files.FileError, match="cannot access this file"):
        files.regular_file(f"{folder}/a\0.jpg")


def test_check_output_folder_creates_nothing_and_refuses_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert files.check_output_folder(tmp_path / "new" / "deeper", "--output")
    assert files.check_output_folder(tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]
    with pytest.raises(files.FileError) as error:
        files.check_output_folder(tmp_path / "notes.txt", "--output")
    assert str(error.value) == (f"--output {tmp_path / 'notes.txt'}: an existing file, not a "
                                "folder. Give a folder (it is created if missing).")
    with pytest.raises(files.FileError, match=f"--logs {tmp_path / 'notes.txt' / 'runs'}: "
                                              f"{tmp_path / 'notes.txt'}, a part of it, is an "
                                              "existing file"):
        files.check_output_folder(tmp_path / "notes.txt" / "runs", "--logs")


def test_check_output_folder_refuses_a_new_folder_named_like_an_output_file(tmp_path):
    for name in ["detections.json", "splash.PNG", "results.csv/"]:
        with pytest.raises(files.FileError) as error:
            files.check_output_folder(tmp_path / name, "--output")
        stem, suffix = os.path.splitext(name.rstrip("/"))
        assert str(error.value) == (
            f"--output {tmp_path / name}: named like a file ({suffix}), but it is a folder to "
            f"write files into. Give a folder name, e.g. {tmp_path / stem} (it is created if "
            "missing).")
    assert os.listdir(tmp_path) == []
    (tmp_path / "v1.0").mkdir()
    (tmp_path / "made_before.json").mkdir()
    for name in ["v1.0", "v2.0", "made_before.json"]:   # not an output's ending, or a folder
        assert files.check_output_folder(tmp_path / name, "--output") == str(tmp_path / name)


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs Linux's read-only /sys")
def test_check_output_folder_refuses_a_folder_that_takes_no_files():
    with pytest.raises(files.FileError, match="--output /sys/out: cannot write into /sys"):
        files.check_output_folder("/sys/out", "--output")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="file modes do not stop root")
def test_check_output_folder_refuses_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(files.FileError, match="cannot write into"):
            files.check_output_folder(locked / "out")
    finally:
        locked.chmod(0o700)


def test_staged_outputs_move_in_when_done(tmp_path):
    out = tmp_path / "a" / "detections"
    with files.staged_outputs(out) as staging:
        assert os.path.dirname(staging) == str(tmp_path)  # the nearest existing folder
        files.write_text(os.path.join(staging, "x.json"), "{}")
        assert not out.exists()
    assert os.listdir(out) == ["x.json"] and sorted(os.listdir(tmp_path)) == ["a"]
    with files.staged_outputs(out) as staging:
        assert os.path.dirname(staging) == str(out)
        files.write_text(os.path.join(staging, "x.json"), "[1]")
        files.write_text(os.path.join(staging, "y.png"), "png")
    assert sorted(os.listdir(out)) == ["x.json", "y.png"] and (out / "x.json").read_text() == "[1]"


def test_staged_outputs_leave_nothing_when_a_command_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with files.staged_outputs(tmp_path / "a" / "new") as staging:
            files.write_text(os.path.join(staging, "half.png"), "x")
            raise RuntimeError("the second image failed")
    assert os.listdir(tmp_path) == []
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.png").write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        with files.staged_outputs(tmp_path / "old") as staging:
            files.write_text(os.path.join(staging, "keep.png"), "half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path / "old") == ["keep.png"]
    assert (tmp_path / "old" / "keep.png").read_text() == "previous"


def test_a_failed_atomic_write_removes_the_folders_made_for_it(tmp_path):
    with pytest.raises(RuntimeError):
        with files.atomic_path(tmp_path / "a" / "b" / "c.h5"):
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    assert files.missing_folders(tmp_path / "a" / "b") == [str(tmp_path / "a" / "b"),
                                                          str(tmp_path / "a")]
