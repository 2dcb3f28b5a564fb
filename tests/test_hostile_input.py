"""Hostile input to the command line: every bad dataset, image, weights file, option and
output place ends in one error line naming the file or option and the fix, exit status 2,
no traceback, nothing read outside the dataset and nothing left behind.

Most cases run in this process through ``pikachu.main`` (TensorFlow is imported once);
three run as subprocesses: one checks that TensorFlow's start-up log stays hidden, one
records every file opened (an audit hook on ``open``), one trains a step into a run that
fails. See also tests/test_via_fuzz.py (randomly mutated VIA files).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mrcnn import commands, splash, synthetic, utils, via

from conftest import jpeg_bytes, load_module, png_header

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(REPO, "samples", "pikachu", "pikachu.py")


pikachu = load_module("pikachu_hostile", SCRIPT)


# ---------------------------------------------------------------------------
# Helpers: run a command, check its one error line, compare folders


def run_main(capfd, *argv):
    """(exit status, stdout, stderr) of ``pikachu.py argv`` run in this process."""
    try:
        status = pikachu.main([str(arg) for arg in argv])
    except SystemExit as exit_:  # argparse's errors
        status = exit_.code
    out, err = capfd.readouterr()
    return status, out, err


def assert_one_error_line(result, command, *fragments):
    """Exit status 2, stderr one line ``pikachu.py COMMAND: error: ...`` holding the fragments."""
    status, out, err = result
    assert status == 2, out + err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pikachu.py {command}: error: "), lines[0]
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]
    return lines[0]


def tree(folder):
    """{relative path: None for a folder, (size, mtime) for a file} of everything under
    ``folder``: equal trees mean that nothing was created, removed or written."""
    found = {}
    for root, folders, names in os.walk(folder):
        for name in folders:
            found[os.path.relpath(os.path.join(root, name), folder)] = None
        for name in names:
            info = os.lstat(os.path.join(root, name))
            found[os.path.relpath(os.path.join(root, name), folder)] = (info.st_size,
                                                                        info.st_mtime_ns)
    return found


def write_weights(path, layers, nan=False):
    """A Keras-2 layout weights file: {layer: {weight name: shape}}."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name in layers])
        for layer, layer_weights in layers.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([name.encode() for name in layer_weights])
            for name, shape in layer_weights.items():
                group[name] = np.full(shape, np.nan if nan else 0.1, np.float32)
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small clean VIA dataset: train 3, val 2, test 2 images of 64 pixels."""
    return pathlib.Path(synthetic.write_via_dataset(tmp_path_factory.mktemp("good") / "pikachu",
                                                    train=3, val=2, test=2, image_size=64, seed=5))


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder (also the current one and the cache) whose tree must not change."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "notes.txt").write_text("a file where a folder is expected")
    (tmp_path / "empty_logs").mkdir()
    before = tree(tmp_path)
    yield tmp_path
    assert tree(tmp_path) == before  # nothing created, changed or left behind


def copy_dataset(good, destination):
    return shutil.copytree(good, destination)


# ---------------------------------------------------------------------------
# Options: reported by name, before any work


@pytest.mark.parametrize("argv, fragments", [
    (["train", "--image-size", "100"], ["argument --image-size: '100' is not a multiple of 64",
                                        "try 128"]),
    (["train", "--image-size", "0"], ["argument --image-size: '0' is not a positive integer"]),
    (["splash", "--image-size", "65536"], ["argument --image-size: '65536' is larger than 8192"]),
    (["train", "--epochs", "0"], ["argument --epochs: '0' is not a positive integer"]),
    (["train", "--epochs", "ten"], ["argument --epochs: 'ten' is not a positive integer"]),
    (["train", "--steps-per-epoch", "-3"], ["argument --steps-per-epoch: '-3'"]),
    (["train", "--layers", "everything"], ["argument --layers: invalid choice: 'everything'"]),
    (["detect", "--backbone", "resnet18"], ["argument --backbone: invalid choice: 'resnet18'"]),
    (["evaluate", "--subset", "holdout"], ["argument --subset: invalid choice: 'holdout'"]),
    (["evaluate", "--limit", "0"], ["argument --limit: '0' is not a positive integer"]),
    (["check"], ["the following arguments are required: --dataset"]),
    (["splash", "--image", "a.jpg", "--video", "b.mp4"], ["argument --video: not allowed with "
                                                          "argument --image"]),
])
def test_a_bad_option_is_named_in_one_line_before_any_work(capfd, place, argv, fragments):
    status, out, err = run_main(capfd, *argv)
    assert status == 2 and out == "" and "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith(f"pikachu.py {argv[0]}: error: ")
    assert line.endswith(f"See `pikachu.py {argv[0]} --help`.")
    for fragment in fragments:
        assert fragment in line


# ---------------------------------------------------------------------------
# Output places: checked before any work, never created on failure


@pytest.mark.parametrize("command, option", [("train", "--logs"), ("splash", "--output"),
                                             ("detect", "--output"), ("evaluate", "--output")])
def test_an_output_place_that_is_a_file_is_refused_first(capfd, place, good, command, option):
    extra = ["--dataset", good] if command in ("train", "evaluate") else ["--image", good / "test"]
    for target, said in [(place / "notes.txt", "an existing file, not a folder"),
                         (place / "notes.txt" / "sub", f"{place / 'notes.txt'}, a part of it, is "
                                                       "an existing file")]:
        result = run_main(capfd, command, option, target, "--weights", "none", *extra)
        assert_one_error_line(result, command, f"{option} {target}: {said}",
                              "Give a folder (it is created if missing).")
        assert result[1] == ""  # before any dataset, image or model is loaded


@pytest.mark.parametrize("command, name", [("detect", "found.json"), ("splash", "splash.png")])
def test_an_output_folder_named_like_a_file_is_refused_first(capfd, place, good, command, name):
    result = run_main(capfd, command, "--output", place / name, "--image", good / "test",
                      "--weights", "none")
    stem = os.path.splitext(name)[0]
    assert_one_error_line(result, command, f"--output {place / name}: named like a file",
                          f"Give a folder name, e.g. {place / stem} (it is created if missing).")
    assert result[1] == "" and not (place / name).exists()


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs Linux's read-only /sys")
def test_an_output_place_that_takes_no_files_is_refused_first(capfd, place, good):
    result = run_main(capfd, "detect", "--output", "/sys/mrcnn", "--image", good / "test",
                      "--weights", "none")
    assert_one_error_line(result, "detect", "--output /sys/mrcnn: cannot write into /sys",
                          "Choose a folder you can write to.")


# ---------------------------------------------------------------------------
# Datasets: folders, annotation files, images


def broken_dataset(good, root, breakage):
    """A copy of ``good`` with one breakage applied."""
    dataset = copy_dataset(good, root / "data")
    train = dataset / "train"
    annotation = train / via.ANNOTATION_FILE
    export = json.loads(annotation.read_text())
    if breakage == "malformed JSON":
        annotation.write_text('{"a": [1, 2,,]}')
    elif breakage == "annotation is /dev/zero":
        annotation.unlink()
        annotation.symlink_to("/dev/zero")
    elif breakage == "annotation links out":
        shutil.move(annotation, root / "elsewhere.json")
        annotation.symlink_to(root / "elsewhere.json")
    elif breakage == "no val":
        shutil.rmtree(dataset / "val")
    elif breakage == "every image missing":
        for name in os.listdir(train):
            if not name.endswith(".json"):
                os.remove(train / name)
    elif breakage == "every image truncated":
        for name in os.listdir(train):
            if not name.endswith(".json"):
                data = (train / name).read_bytes()
                (train / name).write_bytes(data[:len(data) // 2])
    elif breakage == "every image a link out":
        for name in os.listdir(train):
            if not name.endswith(".json"):
                shutil.move(train / name, root / name)
                (train / name).symlink_to(root / name)
    elif breakage == "absolute filename":
        entry = next(iter(export.values()))
        entry["filename"] = str(root / "elsewhere.jpg")
        annotation.write_text(json.dumps(export))
    elif breakage == "regions of the wrong type":
        for entry in export.values():
            for region in entry["regions"].values():
                region["shape_attributes"]["all_points_x"] = "40"
        annotation.write_text(json.dumps(export))
    elif breakage == "a val class that train lacks":
        path = dataset / "val" / via.ANNOTATION_FILE
        val = json.loads(path.read_text())
        for entry in val.values():
            for region in entry["regions"].values():
                region["region_attributes"]["name"] = "raichu"
        path.write_text(json.dumps(val))
    return dataset


DATASET_BREAKAGES = {
    # breakage: (what `train` says in its one line, what `check` lists)
    "malformed JSON": ("line 1, column 13", "malformed JSON at line 1, column 13"),
    "annotation is /dev/zero": ("not a regular file (a device, FIFO or socket)",
                                "not a regular file"),
    "annotation links out": ("outside", "a symbolic link to"),
    "no val": ("val: no such folder", "subset folder is missing"),
    "every image missing": ("none of its 3 image files are in", "none of its 3 image files"),
    "every image truncated": ("train: no annotated image to use. Run `pikachu.py check`",
                              "image data is truncated or corrupt"),
    "every image a link out": ("train: no annotated image to use", "a symbolic link to"),
    "absolute filename": ("is absolute or climbs out of", "is absolute or climbs out of"),
    "regions of the wrong type": ("train: no annotated image to use",
                                  'all_points_x is "40", not a list of numbers'),
    "a val class that train lacks": ("val: no annotated image of the classes pikachu to use; "
                                     "the warnings above say why",
                                     "has unknown class 'raichu' (known: pikachu)"),
}


@pytest.mark.parametrize("breakage", DATASET_BREAKAGES)
def test_a_broken_dataset_stops_train_in_one_line_and_check_lists_it(capfd, tmp_path, good,
                                                                      monkeypatch, breakage):
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path / "cache"))
    dataset = broken_dataset(good, tmp_path, breakage)
    said_by_train, said_by_check = DATASET_BREAKAGES[breakage]
    before = tree(tmp_path)
    result = run_main(capfd, "train", "--dataset", dataset, "--weights", "none",
                      "--logs", tmp_path / "logs")
    assert_one_error_line(result, "train", said_by_train)
    status, out, err = run_main(capfd, "check", "--dataset", dataset)
    assert status == 1 and err == "", out + err
    assert said_by_check in out and out.splitlines()[-1].endswith(f"found in {dataset}.")
    assert tree(tmp_path) == before


def test_check_and_train_agree_on_a_clean_dataset(capfd, good):
    status, out, err = run_main(capfd, "check", "--dataset", good)
    assert (status, out, err) == (0, f"{good}: no problem found.\n", "")


def test_links_out_of_the_dataset_are_used_with_follow_links(capfd, tmp_path, good):
    dataset = broken_dataset(good, tmp_path, "every image a link out")
    status, out, _ = run_main(capfd, "check", "--dataset", dataset, "--follow-links")
    assert status == 0, out
    train = pikachu.PikachuDataset()
    train.load_subset(dataset, "train", follow_links=True)
    assert len(train.image_info) == 3


@pytest.mark.parametrize("command, option", [("train", "--dataset"), ("evaluate", "--dataset"),
                                             ("check", "--dataset")])
def test_a_dataset_that_is_not_a_folder(capfd, place, command, option):
    for target, said in [(place / "nowhere", "no such dataset folder"),
                         (place / "notes.txt", "not a folder")]:
        extra = ["--weights", "none"] if command != "check" else []
        line = assert_one_error_line(run_main(capfd, command, option, target, *extra), command,
                                     target, said)
        assert "Give the folder that holds train/" in line


# ---------------------------------------------------------------------------
# Images named on the command line (splash, detect)


def image_folder(root, defect):
    """A folder of two good JPEGs and one image with ``defect``; the defective file's path."""
    folder = root / "photos"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg_bytes(seed=1))
    (folder / "c.jpg").write_bytes(jpeg_bytes(seed=2))
    bad = folder / "b.png"
    if defect == "truncated":
        bad = folder / "b.jpg"
        data = jpeg_bytes(seed=3)
        bad.write_bytes(data[:len(data) // 2])
    elif defect == "too many pixels":
        bad.write_bytes(png_header(30000, 30000))
    elif defect == "not an image":
        bad.write_text("<html>404</html>")
    elif defect == "empty":
        bad.write_bytes(b"")
    elif defect == "/dev/zero":
        bad.symlink_to("/dev/zero")
    elif defect == "fifo":
        os.mkfifo(bad)
    return folder, bad


IMAGE_DEFECTS = {
    "truncated": "image data is truncated or corrupt (image file is truncated",
    "too many pixels": "PIL.Image.MAX_IMAGE_PIXELS",
    "not an image": "cannot read image (cannot identify image file",
    "empty": "the file is empty (0 bytes)",
    "/dev/zero": "not a regular file (a device, FIFO or socket)",
    "fifo": "not a regular file (a device, FIFO or socket)",
}


@pytest.mark.parametrize("defect", IMAGE_DEFECTS)
@pytest.mark.parametrize("command", ["detect", "splash"])
def test_one_bad_image_among_good_ones_stops_the_command_before_it_writes(capfd, place, command,
                                                                          defect):
    folder, bad = image_folder(place / "input", defect)
    before = tree(place)
    result = run_main(capfd, command, "--image", folder, "--weights", "none",
                      "--output", place / "out")
    assert_one_error_line(result, command, f"{bad}: ", IMAGE_DEFECTS[defect])
    assert tree(place) == before
    shutil.rmtree(place / "input")


@pytest.mark.parametrize("argv, fragments", [
    (["detect", "--image", "nowhere.jpg"], ["nowhere.jpg: no such file or folder"]),
    (["detect", "--image", "/dev/zero"], ["/dev/zero: not a regular file"]),
    (["splash", "--image", "empty_logs"], ["empty_logs: the folder holds no image"]),
    (["splash", "--video", "nowhere.mp4"], ["nowhere.mp4: no such video"]),
    (["splash", "--video", "notes.txt"], ["notes.txt: OpenCV cannot open this video",
                                          "Convert it to MP4"]),
    (["splash", "--video", "/dev/zero"], ["/dev/zero: not a regular file"]),
])
def test_a_missing_or_unreadable_source_is_named(capfd, place, argv, fragments):
    assert_one_error_line(run_main(capfd, *argv, "--weights", "none"), argv[0], *fragments)


def test_an_image_given_as_a_video_is_refused(capfd, place):
    """OpenCV would read it as a video of one frame."""
    (place / "photo.jpg").write_bytes(jpeg_bytes())
    try:
        result = run_main(capfd, "splash", "--video", "photo.jpg", "--weights", "none")
        assert_one_error_line(result, "splash", "photo.jpg: an image, not a video. Splash it "
                                                "as an image (--image).")
    finally:
        os.remove(place / "photo.jpg")


# ---------------------------------------------------------------------------
# Weights files and the settings beside them


def test_bad_weights_are_named_before_any_model_is_built(capfd, place, good):
    with_settings = place / "run" / "pikachu20260101T0000"
    with_settings.mkdir(parents=True)
    checkpoint = write_weights(with_settings / "mask_rcnn_pikachu_0001.h5",
                               {"conv1": {"conv1/kernel:0": (7, 7, 3, 64)}})
    cases = [
        ("nowhere.h5", "nowhere.h5: no such weights file. Give a .h5 weights file, or one of "
                       "coco, imagenet, last, none."),
        ("/dev/zero", "/dev/zero: not a regular file (a device, FIFO or socket)"),
        ("empty_logs", "empty_logs: a folder, not a weights file"),
        ("notes.txt", "notes.txt: not a Keras HDF5 weights file"),
        (write_weights(place / "nan.h5", {"conv1": {"conv1/kernel:0": (3,)}}, nan=True),
         "conv1/conv1/kernel:0 holds NaN or infinite values"),
    ]
    truncated = place / "truncated.h5"
    truncated.write_bytes(checkpoint.read_bytes()[:-300])
    cases.append((truncated, "is a damaged HDF5 file"))
    (with_settings / "run_settings.json").write_text('{"config": {"IMAGE_MAX_DIM": "abc"}, '
                                                     '"class_names": ["pikachu"]}')
    cases.append((checkpoint, f"{with_settings / 'run_settings.json'}: IMAGE_MAX_DIM is 'abc': "
                              "it must be a finite number"))
    legacy = place / "legacy" / "pikachu20250101T0000"
    legacy.mkdir(parents=True)
    shutil.copy(checkpoint, legacy / "mask_rcnn_pikachu_0001.h5")
    (legacy / pikachu.LEGACY_SETTINGS_FILE).write_text('{"config": [], "class_names": 3}')
    cases.append((legacy / "mask_rcnn_pikachu_0001.h5",
                  f"{legacy / pikachu.LEGACY_SETTINGS_FILE}: cannot read the run settings"))
    before = tree(place)
    for weights, said in cases:
        for command in ("detect", "train"):
            extra = ["--dataset", good] if command == "train" else ["--image", good / "test"]
            result = run_main(capfd, command, "--weights", weights, "--logs", place / "logs",
                              *extra)
            assert_one_error_line(result, command, said)
            assert "Loading weights" not in result[1]
            if "settings" not in said:   # the file itself is checked before the dataset is read
                assert " images, " not in result[1]
    assert tree(place) == before
    shutil.rmtree(place / "run")
    shutil.rmtree(place / "legacy")
    for name in ("nan.h5", "truncated.h5"):
        os.remove(place / name)


def test_resuming_a_run_of_other_classes_is_refused_before_the_model_is_built(capfd, tmp_path,
                                                                            good):
    run = tmp_path / "logs" / "pikachu20260101T0000"
    run.mkdir(parents=True)
    checkpoint = write_weights(run / "mask_rcnn_pikachu_0003.h5",
                               {"conv1": {"conv1/kernel:0": (7, 7, 3, 64)}})
    (run / "run_settings.json").write_text('{"config": {}, "class_names": ["raichu"]}')
    result = run_main(capfd, "train", "--dataset", good, "--weights", "last",
                      "--logs", tmp_path / "logs")
    assert_one_error_line(result, "train", f"--weights last: {checkpoint} was trained on the "
                                           "classes raichu and the dataset has pikachu",
                          f"Start a new run from it: --weights {checkpoint}")
    assert sorted(os.listdir(run)) == ["mask_rcnn_pikachu_0003.h5", "run_settings.json"]


def test_resuming_with_options_of_another_network_is_refused_before_the_model_is_built(
        capfd, tmp_path, good):
    run = tmp_path / "logs" / "pikachu20260101T0000"
    run.mkdir(parents=True)
    checkpoint = write_weights(run / "mask_rcnn_pikachu_0003.h5",
                               {"conv1": {"conv1/kernel:0": (7, 7, 3, 64)}})
    (run / "run_settings.json").write_text(
        '{"config": {"BACKBONE": "resnet50", "IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128}, '
        '"class_names": ["pikachu"]}')
    result = run_main(capfd, "train", "--dataset", good, "--weights", "last", "--backbone",
                      "resnet101", "--image-size", "128", "--logs", tmp_path / "logs")
    assert_one_error_line(result, "train", f"--weights last: {checkpoint} was trained with "
                                           "BACKBONE 'resnet50'; the options ask for BACKBONE "
                                           "'resnet101', another network",
                          f"start a new run from it: --weights {checkpoint}")
    assert sorted(os.listdir(run)) == ["mask_rcnn_pikachu_0003.h5", "run_settings.json"]


def test_weights_last_without_a_run_is_named(capfd, place):
    result = run_main(capfd, "splash", "--logs", place / "empty_logs")
    assert_one_error_line(result, "splash", "--weights=last: No complete checkpoint of "
                                            "'pikachu' under", "Train first")
    result = run_main(capfd, "splash", "--logs", place / "notes.txt")
    assert_one_error_line(result, "splash", f"{place / 'notes.txt'} is not a folder")


def test_weights_of_another_architecture_are_one_line_after_the_model_is_built(
        capfd, place, good, tmp_path_factory):
    path = write_weights(tmp_path_factory.mktemp("weights") / "other.h5",
                         {"conv1": {"conv1/kernel:0": (7, 7, 3, 32), "conv1/bias:0": (32,)}})
    result = run_main(capfd, "detect", "--weights", path, "--image", good / "test",
                      "--backbone", "resnet50", "--image-size", "128", "--output", place / "out")
    assert_one_error_line(result, "detect", f"Cannot start from {path}: weight shapes differ in "
                                            "1 layer(s) (conv1 kernel:0 is (7, 7, 3, 32) in the "
                                            "file, (7, 7, 3, 64) in the model",
                          "The file holds another architecture")


# ---------------------------------------------------------------------------
# Nothing half-written: outputs appear all at once or not at all


class FakeModel:
    """detect() of a model that finds nothing, or fails on the ``fail_at``-th image."""

    def __init__(self, fail_at=None, error=RuntimeError("the model broke")):
        self.calls, self.fail_at, self.error = 0, fail_at, error

    def detect(self, images, verbose=0):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        height, width = images[0].shape[:2]
        return [{"rois": np.zeros((0, 4), np.int32), "class_ids": np.zeros(0, np.int32),
                 "scores": np.zeros(0, np.float32), "masks": np.zeros((height, width, 0), bool)}]


@pytest.fixture
def fake_model(monkeypatch):
    """Replace the model of splash and detect; the fixture's value sets its behaviour."""
    holder = {"model": FakeModel()}
    monkeypatch.setattr(pikachu.COMMANDS, "inference_settings",
                        lambda args: ({}, ["pikachu"], None))
    monkeypatch.setattr(pikachu.COMMANDS, "inference_model", lambda *args: holder["model"])
    return holder


def test_output_names_of_a_folder_never_collide():
    paths = ["in/photo.jpg", "in/photo.JPG", "in/photo.jpeg", "in/photo_jpg.jpg", "in/x.png"]
    stems = commands.output_stems(paths)
    assert stems == {"in/photo.jpg": "photo_jpg", "in/photo.JPG": "photo_JPG_2",
                     "in/photo.jpeg": "photo_jpeg", "in/photo_jpg.jpg": "photo_jpg_3",
                     "in/x.png": "x"}
    assert len({stem.casefold() for stem in stems.values()}) == len(paths)


def test_an_inference_model_with_random_weights_says_so(capfd, tmp_path):
    settings = {"BACKBONE": "resnet50", "IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128}
    model = pikachu.COMMANDS.inference_model(settings, ["pikachu"], None, tmp_path / "logs")
    assert model.mode == "inference" and not model.pretrained
    assert capfd.readouterr().out.splitlines()[-1] == (
        "warning: --weights none: the model has random weights, so its detections mean "
        "nothing. Give --weights last or a trained weights file.")


@pytest.mark.parametrize("command", ["detect", "splash"])
def test_outputs_appear_only_when_every_image_is_done(capfd, place, good, fake_model, command):
    out = place / "out"
    status, stdout, err = run_main(capfd, command, "--image", good / "test", "--output", out)
    assert status == 0, stdout + err
    names = sorted(os.listdir(out))
    if command == "detect":
        assert names == ["detections.json", "test_0000_detections.png",
                         "test_0001_detections.png"]
    else:
        assert len(names) == 2 and all(n.startswith("splash_") and n.endswith(".png") for n in names)
    for name in names:
        assert str(out / name) in stdout
    shutil.rmtree(out)


@pytest.mark.parametrize("command", ["detect", "splash"])
def test_a_failure_after_the_first_image_leaves_the_output_folder_as_it_was(
        capfd, place, good, fake_model, command):
    fake_model["model"] = FakeModel(fail_at=2)
    status, _, err = run_main(capfd, command, "--image", good / "test", "--output", place / "out")
    assert status == 1 and "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith(f"pikachu.py {command}: unexpected error (RuntimeError: the model "
                           "broke). This is a bug in mrcnn: the full report is in ")
    report = line.split("the full report is in ")[1].split(";")[0]
    assert report.startswith(str(place / "cache" / "reports"))
    assert "RuntimeError: the model broke" in open(report).read()
    shutil.rmtree(place / "cache")  # the report is the one file a bug leaves, by design
    # An image that turns unreadable half-way is bad input; the existing folder keeps its file.
    fake_model["model"] = FakeModel(fail_at=2, error=utils.ImageError("b.jpg: cannot read image"))
    before = tree(place)
    result = run_main(capfd, command, "--image", good / "test", "--output", place / "empty_logs")
    assert_one_error_line(result, command, "b.jpg: cannot read image")
    assert tree(place) == before


def test_a_full_disk_is_one_line_naming_the_file(capfd, place, good, fake_model, monkeypatch):
    import errno

    def full(path, image):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(splash, "save_image", full)
    result = run_main(capfd, "splash", "--image", good / "test", "--output", place / "out")
    assert_one_error_line(result, "splash", "No space left on device; free some disk space")


def test_an_unusable_cache_folder_is_one_line(capfd, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path / "cache"))
    before = tree(tmp_path)
    result = run_main(capfd, "train", "--logs", tmp_path / "logs")  # the demo generates its data
    assert_one_error_line(result, "train", f"the cache folder ($MRCNN_CACHE) {tmp_path / 'cache'}: "
                                           "an existing file, not a folder")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------------------
# As a user runs it: separate processes


def run_cli(*argv, env=None, timeout=300, prefix=()):
    return subprocess.run([sys.executable, *prefix, SCRIPT, *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def test_tensorflow_start_up_log_is_hidden_and_the_error_is_the_only_line(tmp_path, good):
    env = dict(os.environ, MRCNN_CACHE=str(tmp_path / "cache"))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = run_cli("train", "--dataset", good, "--weights", "/dev/zero", "--logs",
                     tmp_path / "logs", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pikachu.py train: error: /dev/zero: not a regular file (a device, FIFO or socket), so it "
        "is not read. Give a .h5 weights file, or one of coco, imagenet, last, none."]
    assert os.listdir(tmp_path) == []


AUDIT = textwrap.dedent("""
    import json, os, sys
    import importlib.util
    script, dataset, record = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("pikachu", script)
    pikachu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pikachu)
    from PIL import Image, JpegImagePlugin, PngImagePlugin  # the plugins, imported now
    opened = []
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes)):
            opened.append(os.fsdecode(args[0]))
    sys.addaudithook(hook)
    status = pikachu.main(["check", "--dataset", dataset])
    for subset in ("train", "val", "test"):
        try:
            pikachu.PikachuDataset().load_subset(dataset, subset)
        except Exception as error:
            print(type(error).__name__, error)
    seen = list(opened)
    with open(record, "w") as f:
        json.dump(seen, f)
    sys.exit(status)
""")


def test_nothing_outside_the_dataset_is_ever_opened(tmp_path, good):
    """Links out, absolute and climbing filenames, devices and FIFOs: none is opened."""
    dataset = copy_dataset(good, tmp_path / "data")
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(seed=9))
    (tmp_path / "secret.json").write_text(json.dumps({"x.jpg1": {"filename": "x.jpg",
                                                                 "regions": []}}))
    train, val, test = (dataset / subset for subset in ("train", "val", "test"))
    (train / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (train / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(train / "fifo.png")
    (test / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    export = json.loads((train / via.ANNOTATION_FILE).read_text())
    square = {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 9, "height": 9},
              "region_attributes": {}}
    for name in ("link.jpg", "zero.jpg", "fifo.png"):
        export[name] = {"filename": name, "regions": [square]}
    (train / via.ANNOTATION_FILE).write_text(json.dumps(export))
    (val / via.ANNOTATION_FILE).unlink()
    (val / via.ANNOTATION_FILE).symlink_to(tmp_path / "secret.json")
    (test / via.ANNOTATION_FILE).write_text(json.dumps(
        {"a": {"filename": str(tmp_path / "secret.jpg"), "regions": [square]},
         "b": {"filename": "../../secret.jpg", "regions": [square]}}))
    record = tmp_path / "opened.json"
    result = subprocess.run([sys.executable, "-c", AUDIT, SCRIPT, dataset, record],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1, result.stdout + result.stderr  # problems found, no crash
    for fragment in ("link.jpg: a symbolic link to", "zero.jpg: not a regular file",
                     "fifo.png: not a regular file", f"{via.ANNOTATION_FILE}: a symbolic link",
                     "is absolute or climbs out of"):
        assert fragment in result.stdout, result.stdout
    opened = json.loads(record.read_text())
    python = (sys.prefix, sys.base_prefix, REPO)
    outside = [path for path in opened if not os.path.realpath(path).startswith(str(dataset))
               and not path.startswith(python) and not path.endswith((".py", ".pyc"))]
    assert outside == [], outside
    assert any(path.startswith(str(train)) for path in opened)  # the hook did see the reads


def test_a_run_that_fails_in_its_first_step_leaves_no_folder(tmp_path, good):
    """train imports a dataset whose images fail in the data loader: no logs, no run folder."""
    failing = textwrap.dedent("""
        import runpy, sys
        from mrcnn import utils
        def broken(path):
            raise RuntimeError(f"{path}: the disk went away")
        utils.read_image = broken
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """)
    env = dict(os.environ, MRCNN_CACHE=str(tmp_path / "cache"))
    logs = tmp_path / "new" / "logs"
    result = run_cli("train", "--dataset", good, "--weights", "none", "--backbone", "resnet50",
                     "--image-size", "64", "--epochs", "1", "--steps-per-epoch", "1",
                     "--logs", logs, env=env, prefix=("-c", failing), timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert "unexpected error (RuntimeError: " in line and "the disk went away" in line
    assert not (tmp_path / "new").exists()  # neither the run folder nor the --logs made for it
    assert os.listdir(tmp_path / "cache") == ["reports"]
