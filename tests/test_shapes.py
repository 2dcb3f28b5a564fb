"""The shapes sample: mrcnn.shapes (ShapesDataset, ShapesConfig) and its tutorial notebook.

The tutorial runs headless in the fast mode (MRCNN_NOTEBOOK_FAST=1: two training steps per
epoch, three images evaluated) with a logs folder of its own.
"""

import os
import re
import shutil

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from mrcnn.shapes import MAX_OVERLAP, SHAPE_NAMES, ShapesConfig, ShapesDataset

from conftest import iou_matrix  # noqa: E402
from test_notebooks import image_count, text_of  # noqa: E402

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(ROOT_DIR, "samples", "shapes")
NOTEBOOK = os.path.join(SAMPLE_DIR, "train_shapes.ipynb")
MAX_NOTEBOOK_BYTES = 500_000


@pytest.fixture(scope="module")
def dataset():
    dataset = ShapesDataset()
    dataset.load_shapes(12, 96, 128, rng=7)
    dataset.prepare()
    return dataset


def test_config_keeps_the_original_settings():
    config = ShapesConfig()
    assert (config.NAME, config.NUM_CLASSES, config.IMAGES_PER_GPU) == ("shapes", 4, 8)
    assert tuple(config.IMAGE_SHAPE) == (128, 128, 3)
    assert tuple(config.RPN_ANCHOR_SCALES) == (8, 16, 32, 64, 128)
    assert (config.TRAIN_ROIS_PER_IMAGE, config.STEPS_PER_EPOCH, config.VALIDATION_STEPS) == \
        (32, 100, 5)


def test_the_same_seed_gives_the_same_images():
    def specs(seed):
        dataset = ShapesDataset()
        dataset.load_shapes(5, 128, 128, rng=seed)
        return [(info["bg_color"], info["shapes"]) for info in dataset.image_info]

    assert specs(3) == specs(3)
    assert specs(3) != specs(4)


def test_masks_are_the_visible_pixels_of_each_shape_in_its_color(dataset):
    assert dataset.class_names == ["BG"] + list(SHAPE_NAMES)
    for image_id in dataset.image_ids:
        info = dataset.image_info[image_id]
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert masks.shape == (96, 128, len(info["shapes"])) and masks.dtype == bool
        assert [dataset.class_names[c] for c in class_ids] == [s[0] for s in info["shapes"]]
        assert masks.sum(axis=-1).max() <= 1  # each pixel belongs to one shape at most
        for i, (_, color, _) in enumerate(info["shapes"]):
            assert (image[masks[:, :, i]] == color).all()
        background = ~masks.any(axis=-1)
        assert (image[background] == info["bg_color"]).all()


def test_later_shapes_hide_earlier_ones():
    dataset = ShapesDataset()
    dataset.add_class("shapes", 1, "square")
    dataset.add_class("shapes", 2, "circle")
    dataset.add_image("shapes", image_id=0, path=None, width=64, height=64, bg_color=(0, 0, 0),
                      shapes=[("square", (255, 0, 0), (30, 30, 10)),
                              ("circle", (0, 255, 0), (40, 30, 8))])
    dataset.prepare()
    masks, _ = dataset.load_mask(0)
    square = np.zeros((64, 64), bool)
    square[20:41, 20:41] = True
    rows, cols = np.mgrid[:64, :64]
    circle = (rows - 30) ** 2 + (cols - 40) ** 2 < 8 ** 2
    np.testing.assert_array_equal(masks[:, :, 1], circle)
    np.testing.assert_array_equal(masks[:, :, 0], square & ~circle)


def test_shape_geometry():
    dataset = ShapesDataset()
    canvas = dataset.draw_shape(np.zeros((60, 60), bool), "square", (20, 30, 5), True)
    assert canvas.sum() == 11 * 11 and canvas[25:36, 15:26].all()
    canvas = dataset.draw_shape(np.zeros((60, 60), bool), "circle", (30, 30, 10), True)
    assert abs(canvas.sum() - np.pi * 100) < 20
    canvas = dataset.draw_shape(np.zeros((60, 60), bool), "triangle", (30, 30, 10), True)
    rows = np.nonzero(canvas.any(axis=1))[0]
    assert rows.min() in (20, 21) and rows.max() in (39, 40)  # apex at y - s, base at y + s
    assert canvas[39].sum() > 20 and canvas[21].sum() <= 3
    with pytest.raises(ValueError, match="Unknown shape 'star'"):
        dataset.draw_shape(canvas, "star", (30, 30, 10), True)


def test_random_images_hold_one_to_four_shapes_that_overlap_little():
    dataset = ShapesDataset()
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(40):
        bg_color, shapes = dataset.random_image(128, 128, rng)
        counts.add(len(shapes))
        assert all(0 <= c <= 255 for c in bg_color)
        boxes = np.array([[y - s, x - s, y + s, x + s] for _, _, (x, y, s) in shapes])
        overlaps = iou_matrix(boxes, boxes)
        np.fill_diagonal(overlaps, 0)
        assert overlaps.max() <= MAX_OVERLAP
        for _, _, (x, y, s) in shapes:
            assert 20 <= x < 108 and 20 <= y < 108 and 20 <= s <= 32
    assert counts == {1, 2, 3, 4}


def test_image_reference_and_size_check(dataset):
    assert dataset.image_reference(0) == dataset.image_info[0]["shapes"]
    with pytest.raises(ValueError, match="at least 48 x 48 pixels, not 32 x 64"):
        ShapesDataset().load_shapes(1, 32, 64)


# ----------------------------------------------------------------------------------------------
# The tutorial notebook


def test_committed_tutorial_holds_a_complete_clean_run():
    assert os.path.getsize(NOTEBOOK) < MAX_NOTEBOOK_BYTES
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1))
    assert not [output for cell in code_cells for output in cell.outputs
                if output.output_type == "error"]
    text = text_of(nb)
    # Progress bars stored as Jupyter shows them, not as every update of them.
    assert "\b" not in text and "\r" not in text
    assert "STEPS_PER_EPOCH                60" in text  # not the fast mode
    assert re.search(r"^mAP@0\.5: \d\.\d{3} over 20 images$", text, re.MULTILINE)
    assert image_count(nb) >= 6  # four samples, the ground truth, the detections


@pytest.mark.notebooks
def test_tutorial_runs_headless_in_fast_mode(tmp_path):
    copy = tmp_path / "train_shapes.ipynb"
    shutil.copyfile(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": SAMPLE_DIR}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MRCNN_NOTEBOOK_FAST", "1")
        patch.setenv("MRCNN_LOGS", str(tmp_path / "logs"))
        client.execute()

    text = text_of(nb)
    saved = tmp_path / "logs" / "mask_rcnn_shapes.h5"
    assert saved.is_file()
    assert re.search(rf"^Loading weights from {re.escape(str(saved))}$", text, re.MULTILINE)
    checkpoints = sorted(path.name for path in (tmp_path / "logs").glob("shapes*/*.h5"))
    assert checkpoints[0] == "mask_rcnn_shapes_0001.h5" and len(checkpoints) >= 2
    found = re.search(r"^mAP@0\.5: (\d\.\d{3}) over 3 images$", text, re.MULTILINE)
    assert found and 0 <= float(found.group(1)) <= 1
    assert image_count(nb) >= 6
