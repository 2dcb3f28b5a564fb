"""Tests of mrcnn.datasets: a subset of an annotated folder as a utils.Dataset."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from mrcnn import coco, datasets, synthetic, via

from conftest import ROBOFLOW_FILE, rle_counts, square_region, write_coco_dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return synthetic.write_via_dataset(tmp_path_factory.mktemp("data") / "pikachu",
                                       train=4, val=2, test=2, image_size=64, seed=3)


def test_pikachu_dataset_loads_masks_from_via(small_dataset):
    dataset = datasets.FolderDataset()
    dataset.load_subset(small_dataset, "train")
    dataset.prepare()
    assert dataset.num_images == 4 and dataset.class_names == ["BG", "pikachu"]
    assert dataset.summary() == f"train: 4 images, {dataset.instance_count()} instances, classes pikachu"
    assert dataset.problems == []
    for image_id in dataset.image_ids:
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        assert image.shape == (64, 64, 3)
        assert masks.shape[:2] == (64, 64) and masks.dtype == bool and masks.any(axis=(0, 1)).all()
        np.testing.assert_array_equal(class_ids, np.ones(masks.shape[-1], np.int32))
        index = int(os.path.basename(dataset.image_reference(image_id))[6:10])
        _, exact = synthetic.draw_scene(synthetic.scene_rng(3, 1, index), 64, 64)
        assert masks.shape == exact.shape



def test_pikachu_dataset_multi_class(tmp_path):
    subset = tmp_path / "train"
    subset.mkdir()
    Image.new("RGB", (32, 24)).save(subset / "a.png")
    export = {"a.png1": {"filename": "a.png", "size": 1, "file_attributes": {},
                         "regions": [square_region("raichu"), square_region("pikachu")]}}
    (subset / via.ANNOTATION_FILE).write_text(json.dumps(export))
    dataset = datasets.FolderDataset()
    dataset.load_subset(tmp_path, "train")
    dataset.prepare()
    assert dataset.class_names == ["BG", "pikachu", "raichu"]
    masks, class_ids = dataset.load_mask(0)
    assert masks.shape == (24, 32, 2)
    np.testing.assert_array_equal(class_ids, [2, 1])


def test_regions_without_a_class_get_the_default_class(tmp_path):
    subset = tmp_path / "train"
    subset.mkdir()
    Image.new("RGB", (32, 24)).save(subset / "a.png")
    region = dict(square_region(), region_attributes={})
    export = {"a.png1": {"filename": "a.png", "size": 1, "file_attributes": {}, "regions": [region]}}
    (subset / via.ANNOTATION_FILE).write_text(json.dumps(export))

    class BalloonDataset(datasets.FolderDataset):
        SOURCE, DEFAULT_CLASS = "balloon", "balloon"

    dataset = BalloonDataset()
    dataset.load_subset(tmp_path, "train")
    dataset.prepare()
    assert dataset.class_names == ["BG", "balloon"]
    assert dataset.image_info[0]["source"] == "balloon"
    masks, class_ids = dataset.load_mask(0)
    expected = np.zeros((24, 32), bool)
    expected[2:21, 2:21] = True  # the polygon (2..20) with its border pixels
    np.testing.assert_array_equal(masks[:, :, 0], expected)
    np.testing.assert_array_equal(class_ids, [1])


def test_validation_subset_takes_the_training_class_ids(small_dataset):
    train = datasets.FolderDataset()
    train.load_subset(small_dataset, "train")
    train.prepare()
    val = datasets.FolderDataset()
    val.load_subset(small_dataset, "val", class_names=train.class_names[1:])
    val.prepare()
    assert val.class_names == train.class_names


def test_missing_subset_folder_names_it(tmp_path):
    with pytest.raises(via.ViaError, match=f"{tmp_path / 'val'}: no such folder"):
        datasets.FolderDataset().load_subset(tmp_path, "val")


# ---------------------------------------------------------------------------
# COCO-annotated folders


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("coco") / "pikachu")


def test_coco_folder_loads_polygons_rles_and_crowds(coco_dataset):
    dataset = datasets.FolderDataset()
    dataset.load_subset(coco_dataset, "train")
    dataset.prepare()
    assert dataset.annotation_file.format == datasets.COCO
    assert dataset.annotation_file.path == os.path.join(coco_dataset, "train", ROBOFLOW_FILE)
    assert dataset.class_names == ["BG", "pikachu"] and dataset.problems == []
    assert dataset.num_images == 4  # the negative is left out
    with open(dataset.annotation_file.path) as f:
        data = json.load(f)
    for image_id in dataset.image_ids:
        info = dataset.image_info[image_id]
        entry = next(e for e in data["images"] if e["file_name"] == info["id"])
        annotations = [a for a in data["annotations"] if a["image_id"] == entry["id"]]
        masks, class_ids = dataset.load_mask(image_id)
        assert masks.shape == (64, 64, len(annotations)) and masks.dtype == bool
        np.testing.assert_array_equal(class_ids, [-1 if a["iscrowd"] else 1 for a in annotations])
        for i, a in enumerate(annotations):
            segmentation = a["segmentation"]
            if isinstance(segmentation, dict) and isinstance(segmentation["counts"], list):
                np.testing.assert_array_equal(rle_counts(masks[..., i]), segmentation["counts"])
    crowds = dataset.instance_count(crowd=True)
    assert crowds == 1
    assert dataset.summary() == (f"train: 4 images, {dataset.instance_count()} instances and 1 "
                                 "crowd region, classes pikachu")


def test_a_subset_with_via_and_coco_files_uses_via(coco_dataset, tmp_path):
    subset = tmp_path / "train"
    shutil.copytree(os.path.join(coco_dataset, "train"), subset)
    export = {"train_0.jpg1": {"filename": "train_0.jpg", "size": 1, "file_attributes": {},
                               "regions": [square_region()]}}
    (subset / via.ANNOTATION_FILE).write_text(json.dumps(export))
    dataset = datasets.FolderDataset()
    dataset.load_subset(tmp_path, "train")
    assert dataset.annotation_file.format == datasets.VIA and len(dataset.image_info) == 1
    assert dataset.problems[0] == via.Problem(
        str(subset / ROBOFLOW_FILE), "ignored: via_region_data.json is used when a subset "
                                     "holds both; remove one of them")
    (subset / "annotations.json").write_text("{}")
    os.remove(subset / via.ANNOTATION_FILE)
    with pytest.raises(coco.CocoError, match=r"holds several COCO files \(_annotations.coco.json, "
                                             r"annotations.json\)"):
        dataset.load_subset(tmp_path, "train")


def test_a_subset_without_annotation_file_names_the_accepted_files(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(via.ViaError) as error:
        datasets.FolderDataset().load_subset(tmp_path, "val")
    assert str(error.value) == (
        f"{tmp_path / 'val'}: no annotation file. Save the annotations there as "
        "via_region_data.json (VIA) or _annotations.coco.json or annotations.json or "
        "instances_val.json or annotations/instances_default.json or result.json (COCO).")


def test_a_missing_image_is_one_problem_not_also_a_warning(tmp_path):
    root = synthetic.write_via_dataset(tmp_path / "data", train=3, val=1, test=0, image_size=64,
                                       seed=1)
    [gone, *_] = sorted(name for name in os.listdir(os.path.join(root, "train"))
                        if name.endswith(".jpg"))
    os.remove(os.path.join(root, "train", gone))
    dataset = datasets.FolderDataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset.load_subset(root, "train")
    dataset.prepare()
    assert [str(problem) for problem in dataset.problems] == [
        f"{os.path.join(root, 'train', gone)}: image file is missing"]
    assert dataset.num_images == 2


def test_a_class_attribute_does_not_apply_to_coco(coco_dataset):
    # COCO categories name the classes; a VIA class attribute (e.g. a training subset's, handed
    # to a validation subset in COCO) changes nothing.
    dataset = datasets.FolderDataset()
    dataset.load_subset(coco_dataset, "train", class_attribute="name")
    assert dataset.class_attribute is None
    assert [info["name"] for info in dataset.class_info] == ["BG", "pikachu"]


def test_check_reports_coco_problems_like_via_ones(coco_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(coco_dataset, root)
    Image.new("RGB", (64, 64), "red").save(root / "train" / "stray.png")
    path = root / "train" / ROBOFLOW_FILE
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    data["annotations"][1]["category_id"] = 5
    data["annotations"].append(dict(data["annotations"][2], id=99, image_id=42))
    data["images"].append({"id": 7, "file_name": "gone.jpg", "width": 64, "height": 64})
    path.write_text(json.dumps(data))
    (root / "val" / ROBOFLOW_FILE).write_text('{"images": [], "categories": []}')
    problems = datasets.check_dataset(root)
    found = [(os.path.relpath(p.file, root), p.message.split(";")[0]) for p in problems]
    assert found == [
        ("train/gone.jpg", "image file is missing"),
        ("train/train_0.jpg", "annotation 1: polygon 0 has 4 numbers"),
        ("train/_annotations.coco.json", "annotation 2 (train_0.jpg): category_id 5 is not "
                                         "among the categories (0, 1)"),
        ("train/_annotations.coco.json", "annotation 99: image_id 42 is not among the images"),
        ("train/stray.png", "image is not listed in _annotations.coco.json"),
        ("val/_annotations.coco.json", "not a COCO instance file: it has no annotations. Export "
                                       "the annotations as COCO (instance segmentation) from "
                                       "your annotation tool."),
    ]
    assert datasets.check_dataset(coco_dataset) == []
    assert via.check_dataset(coco_dataset) == []  # the README's name for the same check


def test_problems_name_absolute_paths_when_the_dataset_is_given_relative(tmp_path, monkeypatch):
    """check's lines named the images absolute and the annotation files and subsets as given."""
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    (tmp_path / "data" / "val").mkdir()
    Image.new("RGB", (32, 32)).save(train / "a.png")
    export = {"a.png1": {"filename": "a.png", "size": 1, "regions": [square_region("pikachu")]},
              "b.png1": {"filename": "b.png", "size": 1, "regions": [square_region("pikachu")]}}
    (train / via.ANNOTATION_FILE).write_text(json.dumps(export))
    (tmp_path / "data" / "val" / via.ANNOTATION_FILE).write_text("{}")
    monkeypatch.chdir(tmp_path)
    problems = datasets.check_dataset("data")
    assert [(p.file, p.message) for p in problems] == [
        (str(train / "b.png"), "image file is missing"),
        (str(tmp_path / "data" / "val" / via.ANNOTATION_FILE), "subset has no annotated instance"),
        (str(tmp_path / "data" / "val"), "subset has no image"),
    ]
    dataset = datasets.FolderDataset()
    dataset.load_subset("data", "train")
    assert dataset.image_info[0]["path"] == str(train / "a.png")
    assert [p.file for p in dataset.problems] == [str(train / "b.png")]


def test_roboflow_valid_folder_serves_as_val(coco_dataset, tmp_path):
    root = tmp_path / "roboflow"
    shutil.copytree(coco_dataset, root)
    os.rename(root / "val", root / "valid")
    dataset = datasets.FolderDataset()
    dataset.load_subset(root, "val")
    assert dataset.subset_dir == str(root / "valid") and len(dataset.image_info) == 2
    assert dataset.summary().startswith("valid: 2 images")
    assert datasets.check_dataset(root) == []
    os.makedirs(root / "val")
    assert datasets.subset_folder(root, "val") == str(root / "val")  # val/ comes first


def test_check_looks_at_the_image_folders_a_coco_file_names(tmp_path):
    # labelme2coco's layout: annotations.json beside JPEGImages/.
    images = tmp_path / "train" / "JPEGImages"
    images.mkdir(parents=True)
    Image.new("RGB", (32, 24), "red").save(images / "a.png")
    Image.new("RGB", (32, 24), "blue").save(images / "stray.png")
    data = {"images": [{"id": 1, "file_name": "JPEGImages/a.png", "width": 32, "height": 24}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]]}],
            "categories": [{"id": 1, "name": "pikachu"}]}
    (tmp_path / "train" / "annotations.json").write_text(json.dumps(data))
    problems = datasets.check_dataset(tmp_path, subsets=("train",))
    assert problems == [via.Problem(str(images / "stray.png"), "image is not listed in "
                                    "annotations.json; annotate it or move it out")]
