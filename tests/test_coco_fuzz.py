"""Fuzz test of mrcnn.coco: randomly mutated COCO files never crash loading or checking.

As tests/test_via_fuzz.py does for VIA: a valid COCO instance file (polygons, a polygon in two
pieces, compressed and uncompressed RLE, a crowd region, two categories) gets a few random
mutations (types swapped, fields and entries dropped or duplicated, numbers made extreme, text
where numbers belong, paths that climb out) and goes to ``coco.load_coco`` and
``datasets.check_dataset``. Every outcome must be a result or mrcnn's own error
(``InputError``), never another exception; whenever ``check_dataset`` finds no problem, the
dataset loads the way training loads it and every mask can be drawn. Seeded: the same cases
every run.
"""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mrcnn import coco, datasets

from conftest import rle_counts
from test_via_fuzz import H, W, mutate, run_cases, write_image

CASES = 150
SEED = 2026


def square(y1, x1, y2, x2):
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def coco_file():
    """Both images with one annotation of every kind; the second category is used once."""
    l_shape = np.zeros((H, W), bool)
    l_shape[5:35, 30:36] = l_shape[29:35, 30:55] = True
    compressed = mask_utils.encode(np.asfortranarray(l_shape.astype(np.uint8)))["counts"]
    band = np.zeros((H, W), bool)
    band[20:25, :] = True
    annotations = []
    for image_id in (1, 2):
        for segmentation, category, crowd in (
                ([square(2, 2, 12, 12)], 1, 0),
                ([square(14, 2, 18, 6), square(14, 8, 18, 12)], 1, 0),
                ({"size": [H, W], "counts": compressed.decode()}, 3, 0),
                ({"size": [H, W], "counts": rle_counts(band)}, 1, 1)):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "iscrowd": crowd,
                                "segmentation": segmentation, "bbox": [0, 0, 1, 1], "area": 1})
    return {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                       {"id": 2, "file_name": "b.jpg", "width": W, "height": H}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "pikachu"}, {"id": 3, "name": "raichu"}]}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_fuzz")
    for subset in ("train", "val"):
        (root / subset).mkdir()
        write_image(root / subset / "a.png", (len(subset), 10, 10))
        write_image(root / subset / "b.jpg", (len(subset), 90, 10))
        (root / subset / "annotations.json").write_text(json.dumps(coco_file()))
    write_image(root / "secret.png", (1, 2, 3))
    return root


def test_the_valid_file_loads_every_kind(dataset_dir):
    annotations = coco.load_coco(dataset_dir / "train" / "annotations.json")
    assert annotations.class_names == ["pikachu", "raichu"] and annotations.problems == []
    assert [[r.crowd for r in image.regions] for image in annotations.images] == \
        [[False, False, False, True]] * 2
    assert datasets.check_dataset(dataset_dir) == []


def fuzzed_file(case):
    rng = np.random.default_rng([SEED, case])
    data = coco_file()
    for _ in range(rng.integers(1, 4)):
        data = mutate(data, rng)
    return data


def test_mutated_files_give_a_result_or_an_input_error(dataset_dir):
    outcomes = run_cases(dataset_dir / "train" / "annotations.json", dataset_dir,
                         ((case, fuzzed_file(case)) for case in range(CASES)),
                         coco.load_coco, coco.image_masks)
    assert outcomes["loaded"] > CASES / 4 and outcomes["error"] > 0 and outcomes["clean"] > 0, \
        outcomes
