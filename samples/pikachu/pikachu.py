#!/usr/bin/env python3
"""Mask R-CNN on your own objects: train on an annotated folder, then splash and detect.

The dataset folder holds ``train/`` and ``val/`` (and optionally ``test/``),
each with its images and their annotations: the VGG Image Annotator export
``via_region_data.json`` (VIA 1.x, 2.x or 3.x; polygon, rect, circle or
ellipse regions) or a COCO instance file as CVAT, Label Studio or Roboflow
export it (``_annotations.coco.json``, ``annotations.json``, ...; see
mrcnn.datasets).

    # Train (COCO weights are downloaded once when online)
    python samples/pikachu/pikachu.py train --dataset=path/to/pikachu --weights=coco
    # Resume the last run
    python samples/pikachu/pikachu.py train --dataset=path/to/pikachu --weights=last
    # Color splash on a photo, a folder, a URL or a video
    python samples/pikachu/pikachu.py splash --weights=last --image=photo.jpg
    python samples/pikachu/pikachu.py splash --weights=last --video=clip.mp4
    # Pictures with masks, boxes and scores, and one JSON of the detections
    python samples/pikachu/pikachu.py detect --weights=last --image=path/to/photos
    # mAP@0.5 and mAP@[.5:.95] on the validation images
    python samples/pikachu/pikachu.py evaluate --dataset=path/to/pikachu --weights=last
    # Find annotation problems before training
    python samples/pikachu/pikachu.py check --dataset=path/to/pikachu

Without ``--dataset``, ``train`` generates a synthetic pikachu dataset into
``$MRCNN_CACHE/pikachu-synthetic`` (default ``~/.cache/mrcnn``) and trains a
CPU-sized model on it in a few minutes, offline; ``splash`` and ``detect``
without ``--image`` use its test images.

This file only names the sample's configuration and dataset: the commands
are mrcnn.commands', run by mrcnn.cli, and the work is done by the mrcnn
library (mrcnn.datasets, mrcnn.runs, mrcnn.training, mrcnn.splash, ...).
"""

import os
import sys

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT_DIR)

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # this command writes figures to files, never shows them

from mrcnn import commands, datasets  # noqa: E402
from mrcnn.config import Config, ConfigError  # noqa: E402

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
# Written beside checkpoints by the pikachu.py of mrcnn 3.0, before training
# saved its own run_settings.json: overrides of PikachuConfig.
LEGACY_SETTINGS_FILE = "pikachu_settings.json"


class PikachuConfig(Config):
    """Configuration for training on an annotated dataset (the original sample's settings)."""

    NAME = "pikachu"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 1  # background + pikachu
    STEPS_PER_EPOCH = 100
    DETECTION_MIN_CONFIDENCE = 0.9


class PikachuDataset(datasets.FolderDataset):
    """A subset of an annotated dataset folder; VIA regions without a class are pikachus."""

    SOURCE = "pikachu"
    DEFAULT_CLASS = "pikachu"

    def load_pikachu(self, dataset_dir, subset, **options):
        """``load_subset`` under the original sample's name."""
        self.load_subset(dataset_dir, subset, **options)


def checkpoint_settings(weights_path):
    """The ``runs.RunSettings`` of a checkpoint (also those mrcnn 3.0 wrote), or None.

    Raises:
        ConfigError: settings that cannot be read or used; the message names
            their file.
    """
    from mrcnn import runs

    settings = runs.load_run_settings(weights_path)
    legacy = os.path.join(os.path.dirname(weights_path), LEGACY_SETTINGS_FILE)
    if settings is None and os.path.lexists(legacy):
        saved = runs.read_settings(legacy)
        try:
            config = PikachuConfig.from_dict(saved.config).to_dict()
        except ConfigError as error:
            raise ConfigError(f"{legacy}: {error}") from None
        settings = runs.RunSettings(config, saved.class_names, legacy)
    return settings


COMMANDS = commands.SampleCommands(
    "pikachu.py", PikachuConfig, PikachuDataset, DEFAULT_LOGS_DIR,
    description="Train Mask R-CNN on an annotated dataset folder (VIA or COCO), then splash, "
                "detect and evaluate.",
    synthetic_demo=True, read_settings=checkpoint_settings)
main = COMMANDS.main


if __name__ == "__main__":
    sys.exit(main())
