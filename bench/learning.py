"""Learning benchmark: does a CPU-sized Mask R-CNN learn the synthetic dataset from scratch?

Trains the synthetic demo's configuration (``mrcnn.synthetic.DEMO_SETTINGS``: ResNet50,
128-pixel images, two images a batch, SGD at 0.01) on scenes of the built-in
synthetic dataset for a few hundred steps, from random weights, and prints:

* the mean total loss of the first and of the last epoch, and their ratio
  (goal: the loss at least halves);
* mAP@0.5 of detect() on held-out scenes drawn from another seed
  (goal: above 0.5);
* seconds per training step and per detect() call.

Usage::

    python bench/learning.py                 # 300 steps (epochs of STEPS_PER_EPOCH)
    python bench/learning.py --steps 100     # quicker look
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mrcnn import cli, evaluate  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from mrcnn.synthetic import SyntheticDataset, demo_config  # noqa: E402


TRAIN_CONFIG = demo_config()
INFERENCE_CONFIG = demo_config(inference=True)


def synthetic(count, seed):
    dataset = SyntheticDataset()
    dataset.load_synthetic(count, 128, 128, seed=seed)
    dataset.prepare()
    return dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=cli.positive_int, default=300,
                        help=f"training steps, in whole epochs of {TRAIN_CONFIG.STEPS_PER_EPOCH} "
                             f"and at least two (default 300)")
    parser.add_argument("--val-images", type=cli.positive_int, default=50,
                        help="held-out scenes (default 50)")
    parser.add_argument("--logs", default="logs/bench_learning", help="model_dir for checkpoints")
    args = parser.parse_args()

    train_set, val_set = synthetic(500, seed=1), synthetic(args.val_images, seed=2)
    model = MaskRCNN("training", TRAIN_CONFIG, args.logs)
    epoch_steps = TRAIN_CONFIG.STEPS_PER_EPOCH
    epochs = max(2, args.steps // epoch_steps)
    if epochs * epoch_steps != args.steps:
        print(f"--steps {args.steps}: training {epochs * epoch_steps} steps, whole epochs of "
              f"{epoch_steps} and at least two")
    start = time.perf_counter()
    history = model.train(train_set, None, learning_rate=TRAIN_CONFIG.LEARNING_RATE,
                          epochs=epochs, layers="all", verbose=2)
    train_seconds = time.perf_counter() - start
    losses = history.history["loss"]

    inference = MaskRCNN("inference", INFERENCE_CONFIG, args.logs)
    inference.load_weights(model.find_last(), by_name=True)
    inference.detect([val_set.load_image(0)])  # build the predict function before timing
    start = time.perf_counter()
    result = evaluate.evaluate_model(inference, val_set, verbose=0)
    detect_seconds = (time.perf_counter() - start) / len(val_set.image_ids)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"steps: {epochs * epoch_steps} (batch {TRAIN_CONFIG.BATCH_SIZE}), "
          f"{train_seconds / (epochs * epoch_steps):.2f} s/step including graph building")
    print(f"loss: first epoch {losses[0]:.3f}, last epoch {losses[-1]:.3f}, "
          f"ratio {losses[-1] / losses[0]:.2f} (goal <= 0.5)")
    print(f"held-out mAP@0.5: {result.mAP50:.3f} (goal > 0.5), mAP@[.5:.95]: {result.mAP:.3f}")
    print(f"detect(): {detect_seconds:.3f} s/image at 128x128 with evaluation")


if __name__ == "__main__":
    main()
