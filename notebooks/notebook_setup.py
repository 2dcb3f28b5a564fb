"""What the notebooks share: dataset, configuration and weights, chosen by environment variables.

With none of them set a notebook runs offline: it uses the synthetic pikachu dataset that
``samples/pikachu/pikachu.py`` writes into its cache, and the newest checkpoint of
``pikachu.py train`` under the logs folder, training a small model first when there is none.

    MRCNN_DATASET        VIA dataset folder with train/ and val/ (and optionally test/), each
                         holding its images and via_region_data.json.
                         Default: the synthetic pikachu dataset ($MRCNN_CACHE/pikachu-synthetic).
    MRCNN_WEIGHTS        weights file (.h5) to inspect, or "last".
                         Default: the newest checkpoint under MRCNN_LOGS, else a short training run.
    MRCNN_LOGS           folder of the training runs (default: <repo>/logs, as pikachu.py's).
    MRCNN_CACHE          folder of the synthetic dataset (default: ~/.cache/mrcnn).
    MRCNN_IMAGE_SIZE     image side in pixels, a multiple of 64 (default: the checkpoint's).
    MRCNN_TRAIN_STEPS    steps of the short training run (default: 100).
    MRCNN_NOTEBOOK_FAST  1: everything tiny (128 px, 2 training steps, 4 images per loop),
                         as the tests run the notebooks.

The configuration is ``pikachu.py``'s: the settings saved beside the checkpoint by
``pikachu.py train``, else its defaults (the CPU-sized ones for the synthetic dataset).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline: no version check
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT_DIR, os.path.join(ROOT_DIR, "samples", "pikachu")]

import pikachu  # noqa: E402
from mrcnn import via  # noqa: E402

FAST = os.environ.get("MRCNN_NOTEBOOK_FAST", "0") not in ("", "0")
IMAGE_SIZE = int(os.environ.get("MRCNN_IMAGE_SIZE") or (128 if FAST else 0)) or None
TRAIN_STEPS = int(os.environ.get("MRCNN_TRAIN_STEPS") or (2 if FAST else 100))
IMAGE_LIMIT = 4 if FAST else None
LOGS_DIR = os.environ.get("MRCNN_LOGS") or pikachu.DEFAULT_LOGS_DIR
CUSTOM_DATASET = os.environ.get("MRCNN_DATASET")


def dataset_dir():
    """MRCNN_DATASET, or the synthetic dataset (generated on first use)."""
    return CUSTOM_DATASET or pikachu.synthetic_dataset()


def load_dataset(subset, class_names=None):
    """A prepared PikachuDataset of one subset ("train", "val" or "test") of dataset_dir()."""
    return pikachu.load_subset(dataset_dir(), subset, None, class_names)


def has_annotations(subset):
    """Whether dataset_dir()/subset holds a VIA annotation file."""
    return os.path.isfile(os.path.join(dataset_dir(), subset, via.ANNOTATION_FILE))


def make_config(class_count, weights_path=None, inference=False):
    """The PikachuConfig that trained ``weights_path`` (saved beside it by pikachu.py train).

    Without saved settings: pikachu.py train's defaults for the dataset. MRCNN_IMAGE_SIZE
    (or the fast mode) overrides the image size.
    """
    saved = pikachu.saved_settings(weights_path)
    options = argparse.Namespace(backbone=None, image_size=None, steps_per_epoch=None)
    settings = saved[0] if saved else pikachu.settings_from_args(options, quick=not CUSTOM_DATASET)
    if IMAGE_SIZE:
        settings.update(IMAGE_MIN_DIM=IMAGE_SIZE, IMAGE_MAX_DIM=IMAGE_SIZE)
    return pikachu.make_config(settings, class_count, inference=inference)


def weights_path():
    """The weights to inspect: MRCNN_WEIGHTS, else the newest checkpoint under LOGS_DIR.

    When there is none, trains a small model from scratch for TRAIN_STEPS steps with
    ``pikachu.py train`` (which also writes the settings beside the checkpoint) and returns
    its checkpoint.
    """
    choice = os.environ.get("MRCNN_WEIGHTS")
    if choice:
        return pikachu.resolve_weights(choice, LOGS_DIR)
    try:
        return pikachu.resolve_weights("last", LOGS_DIR)
    except pikachu.CommandError:
        print(f"No checkpoint under {LOGS_DIR}: training a small model for {TRAIN_STEPS} steps.")
    command = ["train", "--weights", "none", "--logs", LOGS_DIR, "--epochs", "1",
               "--steps-per-epoch", str(TRAIN_STEPS)]
    if CUSTOM_DATASET:
        command += ["--dataset", CUSTOM_DATASET, "--backbone", "resnet50",
                    "--image-size", str(IMAGE_SIZE or 256)]
    elif IMAGE_SIZE:
        command += ["--image-size", str(IMAGE_SIZE)]
    print("pikachu.py " + " ".join(command))
    if pikachu.main(command) != 0:
        raise RuntimeError("pikachu.py train failed (its message is above).")
    return pikachu.resolve_weights("last", LOGS_DIR)


def short_path(path):
    """``path`` relative to the repository when inside it (for printing)."""
    relative = os.path.relpath(path, ROOT_DIR)
    return path if relative.startswith("..") else relative
