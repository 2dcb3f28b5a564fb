"""Shared test settings and fixtures.

Models are expensive to build on a 2-core machine, so the tiny inference
model is built once per session; tests that change weights must restore them.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no online version check

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mrcnn.config import Config  # noqa: E402


def box_mask(shape, box):
    """[H, W] bool mask filling a pixel box (y1, x1, y2, x2), y2/x2 exclusive."""
    mask = np.zeros(shape, dtype=bool)
    y1, x1, y2, x2 = box
    mask[y1:y2, x1:x2] = True
    return mask


class TinyConfig(Config):
    """A CPU-sized configuration: ResNet50, 128-pixel images, few ROIs."""

    NAME = "tiny"
    NUM_CLASSES = 1 + 1
    BACKBONE = "resnet50"
    IMAGES_PER_GPU = 1
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 10
    FPN_CLASSIF_FC_LAYERS_SIZE = 128
    DETECTION_MAX_INSTANCES = 20
    DETECTION_MIN_CONFIDENCE = 0.0
    STEPS_PER_EPOCH = 10
    VALIDATION_STEPS = 2


@pytest.fixture(scope="session")
def tiny_config():
    return TinyConfig()


@pytest.fixture(scope="session")
def synthetic_dataset():
    """Eight 128x128 synthetic pikachu scenes (in memory, exact masks)."""
    from mrcnn.synthetic import SyntheticDataset

    dataset = SyntheticDataset()
    dataset.load_synthetic(8, 128, 128, seed=3)
    dataset.prepare()
    return dataset


@pytest.fixture(scope="session")
def inference_model(tiny_config, tmp_path_factory):
    from mrcnn import model as modellib

    return modellib.MaskRCNN("inference", tiny_config, str(tmp_path_factory.mktemp("logs")))
