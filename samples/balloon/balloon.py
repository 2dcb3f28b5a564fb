#!/usr/bin/env python3
"""Mask R-CNN on the balloon dataset: train, then color splash (the original's sample).

The dataset folder is the original's balloon layout: ``train/`` and ``val/``,
each with its photos and the VIA 2.x export ``via_region_data.json`` (polygon
regions without a class attribute: every region is a balloon). Any VIA
version, or a COCO instance file (see mrcnn.datasets), works too.

    # Train a new model starting from pre-trained COCO weights
    python samples/balloon/balloon.py train --dataset=/path/to/balloon --weights=coco
    # Resume training a model that you had trained earlier
    python samples/balloon/balloon.py train --dataset=/path/to/balloon --weights=last
    # Train a new model starting from ImageNet weights
    python samples/balloon/balloon.py train --dataset=/path/to/balloon --weights=imagenet
    # Apply color splash to an image (a file, a folder or a URL) or a video
    python samples/balloon/balloon.py splash --weights=/path/to/weights.h5 --image=photo.jpg
    python samples/balloon/balloon.py splash --weights=last --video=clip.mp4

``detect``, ``evaluate`` and ``check`` work as in the pikachu sample. As in
the original, training from pretrained weights trains the heads only, for 30
epochs (``--layers`` and ``--epochs`` change that).

The original's notebooks import this module with the repository's root on
``sys.path``: ``from samples.balloon import balloon``, then
``balloon.BalloonConfig()`` and ``balloon.BalloonDataset().load_balloon(dir, "val")``.
"""

import os
import sys

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT_DIR)
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # this command writes figures to files, never shows them

from mrcnn import commands, datasets  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.visualize import color_splash  # noqa: E402,F401  (the original's balloon.color_splash)

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")


class BalloonConfig(Config):
    """Configuration for training on the balloon dataset (the original's settings)."""

    NAME = "balloon"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 1  # background + balloon
    STEPS_PER_EPOCH = 100
    DETECTION_MIN_CONFIDENCE = 0.9


class BalloonDataset(datasets.FolderDataset):
    """A subset of the balloon dataset; regions without a class are balloons."""

    SOURCE = "balloon"
    DEFAULT_CLASS = "balloon"

    def load_balloon(self, dataset_dir, subset):
        """Load the "train" or "val" subset of the balloon dataset folder."""
        if subset not in ("train", "val"):
            raise commands.CommandError(f"subset {subset!r}: the balloon dataset has train and "
                                        "val.")
        self.load_subset(dataset_dir, subset)


COMMANDS = commands.SampleCommands(
    "balloon.py", BalloonConfig, BalloonDataset, DEFAULT_LOGS_DIR,
    description="Train Mask R-CNN to detect balloons, then color splash.",
    default_layers="heads")
main = COMMANDS.main


if __name__ == "__main__":
    sys.exit(main())
