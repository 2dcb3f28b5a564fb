"""Fuzz test of mrcnn.via: randomly mutated VIA files never crash loading or checking.

Each case takes a valid VIA file (1.x export, 2.x export, 2.x project or 3.x
project, with every shape and class attributes), applies a few random
mutations (types swapped, fields and entries dropped or duplicated, numbers
made extreme, text where numbers belong, paths that climb out), and feeds it
to ``via.load_via`` and ``via.check_dataset``. Every outcome must be a result
or mrcnn's own error (``InputError``), never another exception. And whenever
``check_dataset`` finds no problem, the dataset loads the way training loads
it and every mask can be drawn. Seeded: the same cases every run.
"""

import copy
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from mrcnn import datasets, via
from mrcnn.errors import InputError

CASES = 200
SEED = 2024
H, W = 40, 60
HOSTILE_VALUES = [
    "", "40", "text", "../secret.png", "/etc/passwd", "C:\\a.png", "a\0b.png", None, True, False,
    0, -1, 2.5, 7, 1e308, -1e308, float("nan"), float("inf"), -float("inf"), 10 ** 30,
    10 ** 400, [], {}, [1, 2], [1.5, "2", None], {"name": "polygon"}, [[[[[]]]]], "polygon",
    "rect", {"0": {"shape_attributes": {}}}, {"a": {"b": {"c": None}}},
]


def regions():
    """Every shape with an area, as VIA 2.x regions, with class attributes."""
    shapes = [
        {"name": "polygon", "all_points_x": [10, 20, 20, 10], "all_points_y": [5, 5, 15, 15]},
        {"name": "polyline", "all_points_x": [30, 40, 35], "all_points_y": [5, 5, 12]},
        {"name": "rect", "x": 2, "y": 20, "width": 8, "height": 6},
        {"name": "circle", "cx": 30, "cy": 28, "r": 6},
        {"name": "ellipse", "cx": 48, "cy": 25, "rx": 9, "ry": 3, "theta": 0.5},
    ]
    return [{"shape_attributes": shape, "region_attributes": {"name": ("pikachu", "raichu")[i % 2]}}
            for i, shape in enumerate(shapes)]


def via2_export():
    return {f"{name}123": {"filename": name, "size": 123, "file_attributes": {},
                           "regions": regions()} for name in ("a.png", "b.jpg")}


def via1_export():
    export = via2_export()
    for entry in export.values():
        entry["regions"] = {str(i): region for i, region in enumerate(entry["regions"])}
    return export


def via2_project():
    return {"_via_settings": {}, "_via_attributes": {"region": {}}, "_via_img_metadata": via2_export()}


def via3_project():
    metadata = {}
    for fid in ("1", "2"):
        for index, xy in enumerate([[7, 10, 5, 20, 5, 20, 15, 10, 15], [6, 30, 5, 40, 5, 35, 12],
                                    [2, 2, 20, 8, 6], [3, 30, 28, 6], [4, 48, 25, 9, 3, 0.5]]):
            metadata[f"{fid}_{index}"] = {"vid": fid, "flg": 0, "z": [], "xy": xy,
                                          "av": {"1": str(index % 2)}}
    return {"project": {"pid": "x", "vid_list": ["1", "2"]}, "config": {},
            "attribute": {"1": {"aname": "name", "type": 3,
                                "options": {"0": "pikachu", "1": "raichu"}}},
            "file": {"1": {"fid": "1", "fname": "a.png", "type": 2},
                     "2": {"fid": "2", "fname": "b.jpg", "type": 2}},
            "view": {"1": {"fid_list": ["1"]}, "2": {"fid_list": ["2"]}},
            "metadata": metadata}


VALID_FILES = [via1_export, via2_export, via2_project, via3_project]


def containers(node, path=()):
    """(path, container) of every dict and list in a JSON tree."""
    if isinstance(node, (dict, list)):
        yield path, node
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            yield from containers(child, path + (key,))


def mutate(data, rng):
    """Apply one random mutation to a JSON tree in place (or return a new root)."""
    places = list(containers(data))
    _, node = places[rng.integers(len(places))]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    operation = rng.choice(["replace", "replace", "replace", "drop", "swap", "duplicate", "add",
                            "negate"])
    value = copy.deepcopy(HOSTILE_VALUES[rng.integers(len(HOSTILE_VALUES))])
    if not keys or operation == "add":
        if isinstance(node, dict):
            node[str(rng.choice(["name", "x", "filename", "regions", "junk", "xy", "theta"]))] = value
        else:
            node.append(value)
        return data
    key = keys[rng.integers(len(keys))]
    if operation == "replace":
        node[key] = value
    elif operation == "drop":
        del node[key]
    elif operation == "swap":  # a list becomes an object and the other way round
        child = node[key]
        if isinstance(child, list):
            node[key] = {str(i): v for i, v in enumerate(child)}
        elif isinstance(child, dict):
            node[key] = list(child.values())
        else:
            node[key] = [child]
    elif operation == "duplicate" and isinstance(node, list):
        node.append(copy.deepcopy(node[key]))
    elif operation == "negate" and isinstance(node[key], (int, float)) \
            and not isinstance(node[key], bool):
        node[key] = -node[key] * 1e6
    else:
        node[key] = value
    return data


def write_image(path, color):
    Image.fromarray(np.full((H, W, 3), color, np.uint8)).save(path)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    for subset in ("train", "val"):
        (root / subset).mkdir()
        write_image(root / subset / "a.png", (len(subset), 10, 10))
        write_image(root / subset / "b.jpg", (len(subset), 90, 10))
    write_image(root / "secret.png", (1, 2, 3))
    (root / "val" / via.ANNOTATION_FILE).write_text(json.dumps(via2_export()))
    return root


def fuzzed_file(case):
    rng = np.random.default_rng([SEED, case])
    data = VALID_FILES[case % len(VALID_FILES)]()
    for _ in range(rng.integers(1, 5)):
        data = mutate(data, rng)
    return data


def test_valid_files_load_with_every_shape(dataset_dir):
    for make in VALID_FILES:
        path = dataset_dir / "train" / via.ANNOTATION_FILE
        path.write_text(json.dumps(make()))
        annotations = via.load_via(path)
        assert annotations.class_names == ["pikachu", "raichu"]
        assert [len(image.regions) for image in annotations.images] == [5, 5]
    assert via.check_dataset(dataset_dir) == []


def test_mutated_files_give_a_result_or_an_input_error(dataset_dir):
    outcomes = run_cases(dataset_dir / "train" / via.ANNOTATION_FILE, dataset_dir,
                         ((case, fuzzed_file(case)) for case in range(CASES)),
                         via.load_via, via.image_masks)
    # The mutations reach both outcomes, and some files stay clean.
    assert outcomes["loaded"] > CASES / 4 and outcomes["error"] > 0 and outcomes["clean"] > 0, \
        outcomes


def run_cases(path, dataset_dir, cases, load, image_masks):
    """Write each (case number, JSON data) of ``cases`` to ``path``, load it with ``load`` and
    draw its masks with ``image_masks``, then check ``dataset_dir``; the outcome counts.

    Every outcome must be a result or mrcnn's own error (``InputError``), never another
    exception nor a warning other than ``ViaWarning``; when ``check_dataset`` finds no problem,
    training must load the dataset (``assert_training_loads``).
    """
    outcomes = {"loaded": 0, "error": 0, "clean": 0}
    for case, data in cases:
        path.write_text(json.dumps(data, allow_nan=True))
        where = f"case {case}: {json.dumps(data)[:300]}"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nor a numpy overflow, nor anything but ViaWarning
            warnings.simplefilter("ignore", via.ViaWarning)
            try:
                annotations = load(path)
                outcomes["loaded"] += 1
                for image in annotations.images:
                    masks = image_masks(image)
                    assert masks.shape == (H, W, len(image.regions)) and masks.any(axis=(0, 1)).all()
            except InputError:
                outcomes["error"] += 1
            except Exception as error:  # the test's point: name the case that escaped
                raise AssertionError(f"{type(error).__name__}: {error} in {where}") from error
            try:
                problems = datasets.check_dataset(dataset_dir)
            except Exception as error:
                raise AssertionError(f"check: {type(error).__name__}: {error} in {where}") from error
        assert all(isinstance(p, via.Problem) and os.path.isabs(p.file) for p in problems), where
        if not problems:
            outcomes["clean"] += 1
            assert_training_loads(dataset_dir, where)
    return outcomes


def assert_training_loads(dataset_dir, where):
    """What `check` promises when it finds no problem: training loads both subsets.

    Each image has an object; a (COCO) crowd region may come with it, class id negative.
    """
    train = datasets.FolderDataset()
    train.load_subset(dataset_dir, "train")
    train.prepare()
    val = datasets.FolderDataset()
    val.load_subset(dataset_dir, "val", train.class_attribute, train.class_names[1:])
    val.prepare()
    for dataset in (train, val):
        assert dataset.num_images > 0, where
        for image_id in dataset.image_ids:
            masks, class_ids = dataset.load_mask(image_id)
            assert masks.shape[:2] == dataset.load_image(image_id).shape[:2], where
            assert masks.shape[-1] == len(class_ids) and (class_ids > 0).any(), where
            assert (class_ids != 0).all() and masks.any(axis=(0, 1)).all(), where
