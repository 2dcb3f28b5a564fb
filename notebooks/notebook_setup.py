"""What the notebooks share: dataset, configuration and weights, chosen by environment variables.

With none of them set a notebook runs offline: it uses the synthetic pikachu dataset
(``mrcnn.synthetic.demo_dataset()``, written into the cache on first use) and the newest
checkpoint of ``pikachu.py train`` under the logs folder, training a small model first when
there is none.

    MRCNN_DATASET        dataset folder with train/ and val/ (and optionally test/), each
                         holding its images and their via_region_data.json or COCO file.
                         Default: the synthetic pikachu dataset ($MRCNN_CACHE/pikachu-synthetic).
    MRCNN_WEIGHTS        weights file (.h5) to inspect, or "last".
                         Default: the newest checkpoint under MRCNN_LOGS, else a short training run.
    MRCNN_LOGS           folder of the training runs (default: <repo>/logs, as pikachu.py's).
    MRCNN_CACHE          folder of the synthetic dataset (default: ~/.cache/mrcnn).
    MRCNN_IMAGE_SIZE     image side in pixels, a multiple of 64 (default: the checkpoint's).
    MRCNN_TRAIN_STEPS    steps of the short training run (default: 100).
    MRCNN_NOTEBOOK_FAST  1: everything tiny (128 px, 2 training steps, 4 images per loop),
                         as the tests run the notebooks.

The configuration is the one training saved beside the checkpoint (``mrcnn.runs``), else the
synthetic demo's (``mrcnn.synthetic.DEMO_SETTINGS``) or, for your own dataset, the defaults.
"""

import os
import subprocess
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline: no version check
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)

from mrcnn import cli  # noqa: E402

cli.import_tensorflow_quietly()  # TensorFlow's start-up log hidden

from mrcnn import datasets, runs, synthetic  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.weights import WeightsError  # noqa: E402

NAME = "pikachu"  # the configuration name of pikachu.py's runs
FAST = os.environ.get("MRCNN_NOTEBOOK_FAST", "0") not in ("", "0")
IMAGE_SIZE = int(os.environ.get("MRCNN_IMAGE_SIZE") or (128 if FAST else 0)) or None
TRAIN_STEPS = int(os.environ.get("MRCNN_TRAIN_STEPS") or (2 if FAST else 100))
IMAGE_LIMIT = 4 if FAST else None
LOGS_DIR = os.environ.get("MRCNN_LOGS") or os.path.join(ROOT_DIR, "logs")
CUSTOM_DATASET = os.environ.get("MRCNN_DATASET")
PIKACHU_SCRIPT = os.path.join(ROOT_DIR, "samples", "pikachu", "pikachu.py")


def dataset_dir():
    """MRCNN_DATASET, or the synthetic dataset (generated on first use)."""
    return CUSTOM_DATASET or synthetic.demo_dataset()


def load_dataset(subset, class_names=None):
    """A prepared FolderDataset of one subset ("train", "val" or "test") of dataset_dir()."""
    dataset = datasets.FolderDataset()
    dataset.load_subset(dataset_dir(), subset, class_names=class_names)
    dataset.prepare()
    print(dataset.summary())
    return dataset


def has_annotations(subset):
    """Whether dataset_dir()/subset holds an annotation file (VIA or COCO)."""
    subset_dir = os.path.join(dataset_dir(), subset)
    return os.path.isdir(subset_dir) and datasets.find_annotation_file(subset_dir) is not None


def make_config(class_count, weights_path=None, inference=False):
    """The configuration that trained ``weights_path`` (saved beside it by training).

    Without saved settings: the synthetic demo's for the synthetic dataset, the defaults for
    your own. MRCNN_IMAGE_SIZE (or the fast mode) overrides the image size; inference
    configurations detect one image at a time.
    """
    saved = runs.load_run_settings(weights_path) if weights_path else None
    values = dict(saved.config) if saved else dict(
        {} if CUSTOM_DATASET else synthetic.DEMO_SETTINGS, NAME=NAME)
    values["NUM_CLASSES"] = 1 + class_count
    if IMAGE_SIZE:
        values.update(IMAGE_MIN_DIM=IMAGE_SIZE, IMAGE_MAX_DIM=IMAGE_SIZE)
    if inference:
        values.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    return Config.from_dict(values)


def checkpoint_path():
    """The checkpoint whose settings describe the model, if there is one: MRCNN_WEIGHTS (a
    file, or "last"), else the newest checkpoint under LOGS_DIR; None when there is none,
    or when MRCNN_WEIGHTS names weights without settings ("coco", "imagenet", "none").
    Trains and downloads nothing."""
    choice = os.environ.get("MRCNN_WEIGHTS")
    if choice in runs.DOWNLOADED_WEIGHTS:
        return None
    if choice:
        return runs.resolve_weights(choice, LOGS_DIR, NAME)
    try:
        return runs.resolve_weights("last", LOGS_DIR, NAME)
    except WeightsError:
        return None


def weights_path():
    """The weights to inspect: MRCNN_WEIGHTS, else the newest checkpoint under LOGS_DIR.

    When there is none, trains a small model from scratch for TRAIN_STEPS steps with
    ``pikachu.py train`` (which saves its settings beside the checkpoint) and returns its
    checkpoint.
    """
    choice = os.environ.get("MRCNN_WEIGHTS")
    if choice:
        return runs.resolve_weights(choice, LOGS_DIR, NAME)
    path = checkpoint_path()
    if path:
        return path
    print(f"No checkpoint under {LOGS_DIR}: training a small model for {TRAIN_STEPS} steps.")
    command = ["train", "--weights", "none", "--logs", LOGS_DIR, "--epochs", "1",
               "--steps-per-epoch", str(TRAIN_STEPS)]
    if CUSTOM_DATASET:
        command += ["--dataset", CUSTOM_DATASET, "--backbone", "resnet50",
                    "--image-size", str(IMAGE_SIZE or 256)]
    elif IMAGE_SIZE:
        command += ["--image-size", str(IMAGE_SIZE)]
    print("pikachu.py " + " ".join(command))
    result = subprocess.run([sys.executable, PIKACHU_SCRIPT, *command], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pikachu.py train failed:\n{result.stdout[-2000:]}"
                           f"{result.stderr[-2000:]}")
    return runs.resolve_weights("last", LOGS_DIR, NAME)


def short_path(path):
    """``path`` relative to the repository when inside it (for printing)."""
    relative = os.path.relpath(path, ROOT_DIR)
    return path if relative.startswith("..") else relative
