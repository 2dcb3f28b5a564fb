"""Tests of the original's samples ported here: samples/balloon/balloon.py and samples/coco/coco.py.

Both train one step of a resnet50 on 128-pixel images of tiny generated data (the two runs go
concurrently), then balloon.py splashes and coco.py evaluates with the new checkpoint. The
COCO folder is in the official layout (annotations/instances_<subset><year>.json beside
<subset><year>/) with polygons, RLEs, a crowd region and an image without annotations.
"""

import functools
import glob
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from mrcnn import coco as coco_files
from mrcnn import evaluate, runs, synthetic, utils, via

from conftest import ROBOFLOW_FILE, load_module, write_coco_dataset

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BALLOON = os.path.join(REPO, "samples", "balloon", "balloon.py")
COCO = os.path.join(REPO, "samples", "coco", "coco.py")
TINY = ["--epochs", "1", "--steps-per-epoch", "1", "--image-size", "128", "--backbone", "resnet50"]


coco_sample = load_module("coco_sample", COCO)
balloon_sample = load_module("balloon_sample", BALLOON)


def run(*command, timeout=300):
    return subprocess.run([sys.executable, *command], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def write_balloon_dataset(root):
    """Synthetic scenes in the original balloon layout: train/ and val/ with a VIA 2.x export
    (regions as a list, no region attributes: every region is a balloon)."""
    synthetic.write_via_dataset(root, train=3, val=2, test=1, image_size=64, seed=5)
    for subset in ("train", "val"):
        path = os.path.join(root, subset, via.ANNOTATION_FILE)
        with open(path) as f:
            export = json.load(f)
        for entry in export.values():
            entry["regions"] = [dict(region, region_attributes={})
                                for region in entry["regions"].values()]
        with open(path, "w") as f:
            json.dump(export, f)
    return root


def write_coco_folder(root, year="2017", subsets=(("train", 3), ("val", 2))):
    """A COCO folder in the official layout, from conftest.write_coco_dataset's subsets."""
    write_coco_dataset(root, subsets=[(f"{subset}{year}", count) for subset, count in subsets])
    os.makedirs(os.path.join(root, "annotations"))
    for subset, _ in subsets:
        shutil.move(os.path.join(root, f"{subset}{year}", ROBOFLOW_FILE),
                    os.path.join(root, "annotations", f"instances_{subset}{year}.json"))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    return {"root": root, "balloon": write_balloon_dataset(root / "balloon"),
            "coco": write_coco_folder(root / "coco")}


@pytest.fixture(scope="module")
def trained(data):
    """One training step of each sample, run concurrently."""
    root = data["root"]
    commands = {
        "balloon": [BALLOON, "train", "--dataset", str(data["balloon"]), "--weights", "none",
                    "--logs", str(root / "balloon_logs"), *TINY],
        "coco": [COCO, "train", "--dataset", str(data["coco"]), "--year", "2017", "--model",
                 "none", "--logs", str(root / "coco_logs"), *TINY],
    }
    processes = {name: subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=REPO)
                 for name, command in commands.items()}
    outputs = {name: process.communicate(timeout=900)[0] for name, process in processes.items()}
    return {name: (processes[name].returncode, outputs[name]) for name in processes}


def checkpoint_of(logs, name):
    [checkpoint] = glob.glob(os.path.join(logs, f"{name}*", f"mask_rcnn_{name}_0001.h5"))
    return checkpoint


# ---------------------------------------------------------------------------
# samples/balloon


def test_balloon_dataset_loads_the_via_2_layout(data):
    dataset = balloon_sample.BalloonDataset()
    dataset.load_balloon(data["balloon"], "train")
    dataset.prepare()
    assert dataset.class_names == ["BG", "balloon"] and dataset.num_images == 3
    masks, class_ids = dataset.load_mask(0)
    assert masks.shape[:2] == (64, 64) and masks.any(axis=(0, 1)).all()
    np.testing.assert_array_equal(class_ids, np.ones(masks.shape[-1]))
    with pytest.raises(Exception, match="the balloon dataset has train and val"):
        dataset.load_balloon(data["balloon"], "test")


def test_balloon_config_and_schedule_are_the_originals():
    config = balloon_sample.BalloonConfig()
    assert (config.NAME, config.NUM_CLASSES, config.IMAGES_PER_GPU) == ("balloon", 2, 2)
    assert (config.STEPS_PER_EPOCH, config.DETECTION_MIN_CONFIDENCE) == (100, 0.9)
    commands = balloon_sample.COMMANDS
    # The original trains the heads for 30 epochs from pretrained weights.
    assert [tuple(s) for s in commands.schedule(30, 0.001)] == [("heads", 30, 0.001)]
    assert [tuple(s) for s in commands.schedule(30, 0.001, pretrained=False)] == [
        ("all", 30, 0.001)]
    assert [tuple(s) for s in commands.schedule(30, 0.001, layers="4+")] == [("4+", 30, 0.001)]
    assert balloon_sample.color_splash is __import__("mrcnn.visualize").visualize.color_splash


def test_balloon_imports_as_the_original_notebooks_do(data):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from samples.balloon import balloon; "
            "config = balloon.BalloonConfig(); dataset = balloon.BalloonDataset(); "
            "dataset.load_balloon(sys.argv[2], 'val'); dataset.prepare(); "
            "print(config.NAME, dataset.num_images, dataset.class_names)")
    result = run("-c", code, REPO, str(data["balloon"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "balloon 2 ['BG', 'balloon']"


def test_balloon_commands_need_their_inputs():
    result = run(BALLOON, "splash", "--weights", "last")
    assert result.returncode == 2 and "one of the arguments --image --video is required" in \
        result.stderr
    result = run(BALLOON, "train", "--weights", "coco")
    assert result.returncode == 2 and "the following arguments are required: --dataset" in \
        result.stderr


def test_balloon_trains_then_splashes(trained, data, tmp_path):
    code, output = trained["balloon"]
    assert code == 0, output
    assert "train: 3 images" in output and "classes balloon" in output
    logs = data["root"] / "balloon_logs"
    checkpoint = checkpoint_of(logs, "balloon")
    settings = runs.load_run_settings(checkpoint)
    assert settings.class_names == ["balloon"] and settings.config["NAME"] == "balloon"
    image = os.path.join(data["balloon"], "test", "test_0000.jpg")
    result = run(BALLOON, "splash", "--weights", "last", "--logs", str(logs), "--image", image,
                 "--output", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    [splash] = glob.glob(str(tmp_path / "splash_*.png"))
    assert result.stdout.strip().endswith(splash)
    original, picture = utils.read_image(image), np.asarray(Image.open(splash))
    gray = (picture[..., 0] == picture[..., 1]) & (picture[..., 1] == picture[..., 2])
    assert picture.shape == original.shape and (gray | (picture == original).all(-1)).all()


# ---------------------------------------------------------------------------
# samples/coco: the dataset


def test_coco_config_is_the_originals():
    config = coco_sample.CocoConfig()
    assert (config.NAME, config.NUM_CLASSES, config.IMAGES_PER_GPU) == ("coco", 81, 2)


def test_load_coco_reads_the_official_layout(data):
    dataset = coco_sample.CocoDataset()
    api = dataset.load_coco(data["coco"], "train", year="2017", return_coco=True)
    dataset.prepare()
    # Every category is a class (Roboflow's parent category 0 too), ids are COCO's.
    assert dataset.class_names == ["BG", "pikachus", "pikachu"]
    assert [dataset.get_source_class_id(i, "coco") for i in (1, 2)] == [0, 1]
    assert dataset.num_images == 3  # the image without annotations is left out
    assert [info["id"] for info in dataset.image_info] == [0, 1, 2]
    assert dataset.image_reference(0) == "http://cocodataset.org/#explore?id=0"
    masks, class_ids = dataset.load_mask(0)
    annotations = api.loadAnns(api.getAnnIds(imgIds=[0]))
    assert dataset.image_info[0]["annotations"] == annotations
    np.testing.assert_array_equal(class_ids, [-2 if a["iscrowd"] else 2 for a in annotations])
    for i, annotation in enumerate(annotations):
        np.testing.assert_array_equal(masks[..., i], api.annToMask(annotation).astype(bool))
        np.testing.assert_array_equal(dataset.annToMask(annotation, 64, 64),
                                      api.annToMask(annotation))


def test_load_coco_of_some_classes_and_of_minival(data, tmp_path):
    dataset = coco_sample.CocoDataset()
    dataset.load_coco(data["coco"], "train", year="2017", class_ids=[0])
    dataset.prepare()
    assert dataset.class_names == ["BG", "pikachus"] and dataset.num_images == 0
    with pytest.raises(coco_files.CocoError, match="no category has id 5"):
        coco_sample.CocoDataset().load_coco(data["coco"], "train", year="2017", class_ids=[5])
    # minival is an annotation file of its own over val's images.
    os.makedirs(tmp_path / "annotations")
    shutil.copy(os.path.join(data["coco"], "annotations", "instances_val2017.json"),
                tmp_path / "annotations" / "instances_minival2017.json")
    os.symlink(os.path.join(data["coco"], "val2017"), tmp_path / "val2017")
    minival = coco_sample.CocoDataset()
    minival.load_coco(tmp_path, "minival", year="2017")
    minival.prepare()
    assert minival.num_images == 2 and minival.image_info[0]["path"].startswith(
        str(tmp_path / "val2017"))


def test_missing_files_say_where_to_put_them_and_nothing_downloads(tmp_path):
    with pytest.raises(coco_files.CocoError) as error:
        coco_sample.CocoDataset().load_coco(tmp_path, "minival")
    assert str(error.value) == (
        f"{tmp_path / 'annotations' / 'instances_minival2014.json'}: no such file. Put the COCO "
        f"annotations there (from {coco_sample.SPLIT_ANNOTATION_URLS['minival']}) and the "
        f"images in {tmp_path / 'val2014'}/ (from http://images.cocodataset.org/zips/"
        "val2014.zip), or pass --download (auto_download=True) on a machine that is online.")
    assert os.listdir(tmp_path) == []


def zip_folder(folder, archive, root):
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
            zipped.write(path, os.path.relpath(path, root))


def test_auto_download_fetches_and_unzips_what_is_missing(data, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    zip_folder(os.path.join(data["coco"], "val2017"), served / "val2017.zip", data["coco"])
    zip_folder(os.path.join(data["coco"], "annotations"), served / "annotations.zip",
               data["coco"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(coco_sample, "IMAGES_URL", base + "/{subset}{year}.zip")
    monkeypatch.setattr(coco_sample, "ANNOTATIONS_URL", base + "/annotations.zip")
    try:
        dataset = coco_sample.CocoDataset()
        dataset.load_coco(tmp_path / "coco", "val", year="2017", auto_download=True)
    finally:
        server.shutdown()
    dataset.prepare()
    assert dataset.num_images == 2
    assert sorted(os.listdir(tmp_path / "coco" / "val2017")) == sorted(
        os.listdir(os.path.join(data["coco"], "val2017")))


# ---------------------------------------------------------------------------
# samples/coco: evaluation


class PerfectModel:
    """detect() answers each image with its ground truth (crowd regions too, as detections of
    their class), found by the image's content."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.config = type("Config", (), {"BATCH_SIZE": 2})()
        self.ids = {hashlib.sha1(dataset.load_image(i)).hexdigest(): i for i in dataset.image_ids}

    def detect(self, images, verbose=0):
        results = []
        for image in images:
            masks, class_ids = self.dataset.load_mask(self.ids[hashlib.sha1(image).hexdigest()])
            results.append({"rois": utils.extract_bboxes(masks), "class_ids": np.abs(class_ids),
                            "scores": np.linspace(1, 0.5, len(class_ids)), "masks": masks})
        return results


@pytest.mark.parametrize("eval_type", ["bbox", "segm"])
def test_evaluate_coco_of_perfect_detections_is_one(data, eval_type, capsys):
    dataset = coco_sample.CocoDataset()
    api = dataset.load_coco(data["coco"], "train", year="2017", return_coco=True)
    dataset.prepare()
    result = coco_sample.evaluate_coco(PerfectModel(dataset), dataset, api, eval_type, limit=2)
    assert result.params.imgIds == [0, 1]
    assert result.stats[0] == pytest.approx(1.0) and result.stats[1] == pytest.approx(1.0)
    assert f"Evaluate annotation type *{eval_type}*" in capsys.readouterr().out


def test_build_coco_results_gives_coco_ids_and_geometry(data):
    dataset = coco_sample.CocoDataset()
    dataset.load_coco(data["coco"], "train", year="2017")
    dataset.prepare()
    masks = np.zeros((64, 64, 1), bool)
    masks[10:20, 5:35] = True
    results = coco_sample.build_coco_results(dataset, [7], np.array([[10, 5, 20, 35]]),
                                             np.array([2]), np.array([0.75]), masks)
    [result] = results
    assert (result["image_id"], result["category_id"], result["score"]) == (7, 1, 0.75)
    assert result["bbox"] == [5, 10, 30, 10]
    assert evaluate.coco_api({"images": [{"id": 7, "height": 64, "width": 64}], "annotations": [],
                              "categories": [{"id": 1, "name": "pikachu"}]}).loadRes(results)
    assert coco_sample.build_coco_results(dataset, [7], None, None, None, None) == []
    with pytest.raises(ValueError, match="one COCO image id, not 2"):
        coco_sample.build_coco_results(dataset, [7, 8], np.zeros((0, 4)), np.zeros(0),
                                       np.zeros(0), np.zeros((64, 64, 0), bool))


def test_coco_imports_as_the_original_notebooks_do(data):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import coco; "
            "config = coco.CocoConfig(); dataset = coco.CocoDataset(); "
            "dataset.load_coco(sys.argv[2], 'val', year='2017'); dataset.prepare(); "
            "print(config.NAME, config.NUM_CLASSES, dataset.num_images)")
    result = run("-c", code, os.path.dirname(COCO), str(data["coco"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "coco 81 2"


def test_coco_trains_then_evaluates(trained, data, tmp_path):
    code, output = trained["coco"]
    assert code == 0, output
    assert "train 2017: 3 images, 2 classes" in output and "val 2017: 2 images" in output
    logs = data["root"] / "coco_logs"
    settings = runs.load_run_settings(checkpoint_of(logs, "coco"))
    assert settings.class_names == ["pikachus", "pikachu"]
    assert (settings.config["NUM_CLASSES"], settings.config["IMAGE_MAX_DIM"]) == (3, 128)
    result = run(COCO, "evaluate", "--dataset", str(data["coco"]), "--year", "2017", "--logs",
                 str(logs), "--limit", "1", "--eval-type", "segm")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Running COCO evaluation on 1 images." in result.stdout
    assert "Evaluate annotation type *segm*" in result.stdout
    assert len([line for line in result.stdout.splitlines()
                if line.startswith(" Average Precision")]) == 6
    missing = run(COCO, "evaluate", "--dataset", str(tmp_path), "--model", "none")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "instances_minival2014.json: no such file" in missing.stderr
    # Errors about the weights name this script's option, --model.
    no_run = run(COCO, "evaluate", "--dataset", str(data["coco"]), "--year", "2017",
                 "--logs", str(tmp_path / "empty"))
    assert no_run.returncode == 2 and "error: --model=last: Model directory" in no_run.stderr, \
        no_run.stderr
