"""Tests of mrcnn.datasets: a subset of an annotated folder as a utils.Dataset."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from mrcnn import datasets, synthetic, via

from conftest import square_region


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
