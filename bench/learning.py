"""Learning benchmark: does a CPU-sized Mask R-CNN learn the synthetic dataset from scratch?

Trains a small configuration (ResNet50, 128-pixel images) on scenes of the
built-in synthetic dataset for a few hundred steps, from random weights, and
prints:

* the mean total loss of the first and of the last epoch, and their ratio
  (goal: the loss at least halves);
* mAP@0.5 of detect() on held-out scenes drawn from another seed
  (goal: above 0.5);
* seconds per training step and per detect() call.

Usage::

    python bench/learning.py                 # 300 steps (12 epochs of 25)
    python bench/learning.py --steps 100     # quicker look
"""

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrcnn import evaluate  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from mrcnn.synthetic import SyntheticDataset  # noqa: E402

EPOCH_STEPS = 25


class LearningConfig(Config):
    """ResNet50 on 128-pixel synthetic scenes, sized for two CPU cores."""

    NAME = "learning"
    NUM_CLASSES = 1 + 1
    BACKBONE = "resnet50"
    IMAGES_PER_GPU = 2
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 128
    POST_NMS_ROIS_TRAINING = 500
    POST_NMS_ROIS_INFERENCE = 200
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 10
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    DETECTION_MAX_INSTANCES = 10
    DETECTION_MIN_CONFIDENCE = 0.7
    STEPS_PER_EPOCH = EPOCH_STEPS
    VALIDATION_STEPS = 5
    LEARNING_RATE = 0.01


class InferenceConfig(LearningConfig):
    IMAGES_PER_GPU = 1


def synthetic(count, seed):
    dataset = SyntheticDataset()
    dataset.load_synthetic(count, 128, 128, seed=seed)
    dataset.prepare()
    return dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--val-images", type=int, default=50, help="held-out scenes (default 50)")
    parser.add_argument("--logs", default="logs/bench_learning", help="model_dir for checkpoints")
    args = parser.parse_args()

    train_set, val_set = synthetic(500, seed=1), synthetic(args.val_images, seed=2)
    model = MaskRCNN("training", LearningConfig(), args.logs)
    epochs = max(2, args.steps // EPOCH_STEPS)
    start = time.perf_counter()
    history = model.train(train_set, None, learning_rate=LearningConfig.LEARNING_RATE,
                          epochs=epochs, layers="all", verbose=2)
    train_seconds = time.perf_counter() - start
    losses = history.history["loss"]

    inference = MaskRCNN("inference", InferenceConfig(), args.logs)
    inference.load_weights(model.find_last(), by_name=True)
    inference.detect([val_set.load_image(0)])  # build the predict function before timing
    start = time.perf_counter()
    result = evaluate.evaluate_model(inference, val_set, verbose=0)
    detect_seconds = (time.perf_counter() - start) / len(val_set.image_ids)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"steps: {epochs * EPOCH_STEPS} (batch {LearningConfig.IMAGES_PER_GPU}), "
          f"{train_seconds / (epochs * EPOCH_STEPS):.2f} s/step including graph building")
    print(f"loss: first epoch {losses[0]:.3f}, last epoch {losses[-1]:.3f}, "
          f"ratio {losses[-1] / losses[0]:.2f} (goal <= 0.5)")
    print(f"held-out mAP@0.5: {result.mAP50:.3f} (goal > 0.5), mAP@[.5:.95]: {result.mAP:.3f}")
    print(f"detect(): {detect_seconds:.3f} s/image at 128x128 with evaluation")


if __name__ == "__main__":
    main()
