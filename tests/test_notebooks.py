"""The three notebooks: the committed files hold a clean run, and each runs top to bottom.

The execution tests run a copy of each notebook headless with nbclient in the fast mode
(MRCNN_NOTEBOOK_FAST=1: 128-pixel images, 2 training steps, 4 images per loop), with a
synthetic dataset of their own and a logs folder for each test, so that they run in any
order: the model notebook finds no checkpoint and trains one; the test-images notebook
finds the checkpoint the test wrote.
"""

import math
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "notebooks")
NOTEBOOKS = ["inspect_pikachu_data", "inspect_pikachu_model", "inspect_test_images"]
ENVIRONMENT_VARIABLES = ["MRCNN_DATASET", "MRCNN_WEIGHTS", "MRCNN_LOGS", "MRCNN_CACHE",
                         "MRCNN_IMAGE_SIZE", "MRCNN_TRAIN_STEPS", "MRCNN_NOTEBOOK_FAST"]
CELL_TIMEOUT_S = 600
MAX_NOTEBOOK_BYTES = 2_000_000
FAST_IMAGE_SIZE = 128
FAST_IMAGE_LIMIT = 4
BACKBONE_STRIDES = [4, 8, 16, 32, 64]
ANCHOR_RATIOS = 3


def test_notebooks_find_coco_annotations_too(tmp_path, monkeypatch):
    """notebook_setup.has_annotations, which chooses the test-images notebook's subset."""
    from conftest import load_module, write_coco_dataset

    root = write_coco_dataset(tmp_path / "coco" / "pikachu", subsets=(("train", 1), ("test", 1)))
    os.makedirs(os.path.join(root, "val"))
    monkeypatch.setenv("MRCNN_DATASET", str(root))
    setup = load_module("notebook_setup_under_test",
                        os.path.join(NOTEBOOKS_DIR, "notebook_setup.py"))
    assert setup.has_annotations("train") and setup.has_annotations("test")
    assert not setup.has_annotations("val") and not setup.has_annotations("missing")


def notebook_path(name):
    return os.path.join(NOTEBOOKS_DIR, f"{name}.ipynb")


def text_of(nb):
    """All printed text and plain-text results of a notebook's cells, joined."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif "data" in output:
                parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def image_count(nb):
    return sum("image/png" in output.get("data", {})
               for cell in nb.cells for output in cell.get("outputs", []))


# ----------------------------------------------------------------------------------------------
# The committed files


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_holds_a_complete_clean_run(name):
    assert os.path.getsize(notebook_path(name)) < MAX_NOTEBOOK_BYTES
    nb = nbformat.read(notebook_path(name), as_version=4)
    nbformat.validate(nb)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1))
    assert not [output for cell in code_cells for output in cell.outputs
                if output.output_type == "error"]
    assert image_count(nb) >= 5


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_cell_documents_the_environment_variables(name):
    nb = nbformat.read(notebook_path(name), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    for variable in ENVIRONMENT_VARIABLES:
        assert f"`{variable}`" in first.source


# ----------------------------------------------------------------------------------------------
# Running them


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A cache of the tests' own, for the synthetic dataset the notebooks generate."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def run_dir(tmp_path, cache_dir):
    """Fast mode, the tests' cache and an empty logs folder of this test's own."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in ENVIRONMENT_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.setenv("MRCNN_NOTEBOOK_FAST", "1")
        patch.setenv("MRCNN_CACHE", str(cache_dir))
        patch.setenv("MRCNN_LOGS", str(tmp_path / "logs"))
        yield tmp_path


def execute(name, run_dir):
    """Runs a copy of the notebook in run_dir, from the notebooks folder; returns it executed.

    nbclient raises CellExecutionError, naming the cell, when a cell fails.
    """
    copy = run_dir / f"{name}.ipynb"
    shutil.copyfile(notebook_path(name), copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": NOTEBOOKS_DIR}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, copy)
    return nb


def subset_image_count(subset):
    folder = os.path.join(os.environ["MRCNN_CACHE"], "pikachu-synthetic", subset)
    return sum(not name.endswith(".json") for name in os.listdir(folder))


def checkpoints(run_dir):
    return sorted((run_dir / "logs").glob("pikachu*/mask_rcnn_pikachu_*.h5"))


def write_checkpoint(logs):
    """A checkpoint of the demo's configuration at 128 px (random weights) with its run
    settings, in a run folder as training writes them; returns its path."""
    from mrcnn import model as modellib
    from mrcnn import runs, synthetic, weights

    config = synthetic.demo_config()
    model = modellib.MaskRCNN("training", config, str(logs))
    path = model.checkpoint_path.format(epoch=1)
    weights.save_weights(model.keras_model, path)
    runs.save_run_settings(model.log_dir, config, ["pikachu"])
    return path


@pytest.mark.notebooks
def test_data_notebook_runs(run_dir):
    nb = execute("inspect_pikachu_data", run_dir)
    text = text_of(nb)

    for subset in ("train", "val"):
        shown = re.search(rf"^{subset}\s*:\s+(\d+) images", text, re.MULTILINE)
        assert shown and int(shown.group(1)) == subset_image_count(subset)
    side = FAST_IMAGE_SIZE
    anchors = sum(math.ceil(side / stride) ** 2 * ANCHOR_RATIOS for stride in BACKBONE_STRIDES)
    assert f"total {anchors} anchors" in text
    assert re.search(r"instance 0: \d+ pixels, IoU after the round trip [01]\.\d{3}", text)
    assert re.search(r"rois\s+shape: \(1, \d+, 4\)", text)
    assert image_count(nb) >= 10


@pytest.mark.notebooks
def test_data_notebook_runs_on_your_own_dataset_with_the_default_settings(run_dir, monkeypatch):
    """No checkpoint, no fast mode: pikachu.py train's defaults (800 to 1024 pixels), whose
    IMAGE_MIN_DIM the pad64 example rounds up to a multiple of 64."""
    from mrcnn import synthetic

    root = synthetic.write_via_dataset(run_dir / "photos", train=2, val=1, test=0,
                                       image_size=64)
    monkeypatch.setenv("MRCNN_DATASET", str(root))
    monkeypatch.delenv("MRCNN_NOTEBOOK_FAST")
    text = text_of(execute("inspect_pikachu_data", run_dir))

    assert "Settings of pikachu.py train for this dataset" in text
    assert re.search(r"^IMAGE_MIN_DIM\s+800$", text, re.MULTILINE)
    side = 1024
    anchors = sum(math.ceil(side / stride) ** 2 * ANCHOR_RATIOS for stride in BACKBONE_STRIDES)
    assert f"total {anchors} anchors" in text
    # The example's part of a 64x64 image is 64x48: scaled by 832 / 48, padded to 64s.
    assert re.search(r"^pad64 : \(1152, 832, 3\), window \(21, 0, 1130, 832\), scale 17\.33",
                     text, re.MULTILINE)


def test_notebooks_take_the_settings_of_the_checkpoint_they_inspect(tmp_path, monkeypatch):
    """notebook_setup.checkpoint_path: the configuration the data notebook shows, found
    without training or downloading anything."""
    from conftest import load_module

    for variable in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MRCNN_LOGS", str(tmp_path / "logs"))
    monkeypatch.setenv("MRCNN_DATASET", str(tmp_path / "photos"))
    setup = load_module("notebook_setup_under_test",
                        os.path.join(NOTEBOOKS_DIR, "notebook_setup.py"))
    assert setup.checkpoint_path() is None  # no checkpoint yet
    assert setup.make_config(3).IMAGE_MAX_DIM == 1024  # your dataset: the defaults
    checkpoint = write_checkpoint(tmp_path / "logs")
    assert setup.checkpoint_path() == checkpoint
    config = setup.make_config(3, setup.checkpoint_path())
    assert (config.IMAGE_MAX_DIM, config.NUM_CLASSES) == (FAST_IMAGE_SIZE, 4)
    for weights in ("coco", "imagenet", "none"):  # weights without settings
        monkeypatch.setenv("MRCNN_WEIGHTS", weights)
        assert setup.checkpoint_path() is None
    monkeypatch.setenv("MRCNN_WEIGHTS", checkpoint)
    assert setup.checkpoint_path() == checkpoint


@pytest.mark.notebooks
def test_model_notebook_runs(run_dir):
    nb = execute("inspect_pikachu_model", run_dir)
    text = text_of(nb)

    assert len(checkpoints(run_dir)) == 1  # trained by the notebook, there being none
    assert re.search(r"^ROI\s+shape: \(1, \d+, 4\)", text, re.MULTILINE)
    assert re.search(r"the layer gives \d+ proposals, \d+ of them among these boxes", text)
    side = FAST_IMAGE_SIZE // 4  # res2 has stride 4
    assert re.search(rf"res2c_out\s+shape: \(1, {side}, {side}, 256\)", text)
    weights = re.search(r"^(\d+) weights$", text, re.MULTILINE)
    assert weights and int(weights.group(1)) > 300
    # The 2-step model may detect nothing: then the mask-head cell prints instead of drawing.
    assert image_count(nb) >= (7 if "No detection: nothing to show." in text else 8)


@pytest.mark.notebooks
def test_test_images_notebook_runs(run_dir):
    checkpoint = write_checkpoint(run_dir / "logs")
    nb = execute("inspect_test_images", run_dir)
    text = text_of(nb)

    loaded = re.search(r"^Loading weights (\S+)$", text, re.MULTILINE)
    assert loaded and os.path.abspath(loaded.group(1)) == checkpoint
    assert checkpoints(run_dir) == [Path(checkpoint)]  # nothing trained: the checkpoint was used
    scores = re.search(r"mAP@0\.5: (\d\.\d{3})\s+mAP@\[\.5:\.95\]: (\d\.\d{3})\s+\((\d+) images\)",
                       text)
    assert scores
    assert 0 <= float(scores.group(1)) <= 1 and 0 <= float(scores.group(2)) <= 1
    assert int(scores.group(3)) == FAST_IMAGE_LIMIT
    assert "COCO metrics" in text
    assert image_count(nb) >= 5
