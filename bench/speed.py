"""Speed benchmark of the full-size model: ResNet101-FPN, 81 classes, 1024x1024 images.

Prints, with the machine it ran on:

* the time to build the inference and the training model;
* detect() latency for one 1024x1024 image (median of --repeats calls, after one warm-up call
  that builds the predict function);
* the time of one training step (batch of one image, all layers trained, median of the steps
  after the first, which builds the training function), and the first step of a second
  train() stage of the same layers (which keeps the traced step: no second tracing);
* the peak resident memory of the process.

The weights are random: speed does not depend on them, except through the number of
detections, which is why DETECTION_MIN_CONFIDENCE is 0 here (every detect() call returns
DETECTION_MAX_INSTANCES instances and unmolds as many masks, the slowest case).

Usage::

    python bench/speed.py                  # 3 detect calls, 4 training steps
    python bench/speed.py --repeats 10 --train-steps 6
    python bench/speed.py --tensorflow-graph-passes   # Grappler's defaults, to compare
"""

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrcnn import cli  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from mrcnn.synthetic import SyntheticDataset  # noqa: E402


class CocoSizedConfig(Config):
    """The original COCO configuration: ResNet101, 1024x1024, 81 classes, one image a batch."""

    NAME = "speed"
    NUM_CLASSES = 81
    IMAGES_PER_GPU = 1
    DETECTION_MIN_CONFIDENCE = 0.0


class StepTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every training batch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="timed detect() calls (default 3)")
    parser.add_argument("--train-steps", type=cli.positive_int, default=4,
                        help="training steps (default 4)")
    parser.add_argument("--tensorflow-graph-passes", action="store_true",
                        help="optimize the step functions with TensorFlow's default Grappler "
                             "passes, not mrcnn's light ones for CPUs (mrcnn.cpu)")
    args = parser.parse_args()
    light = not args.tensorflow_graph_passes

    config = CocoSizedConfig()
    image = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="mrcnn_speed_") as logs:
        detector, build_inference = timed(lambda: MaskRCNN("inference", config, logs))
        detector.keras_model.light_graph_optimization &= light
        _, first_detect = timed(lambda: detector.detect([image]))
        detect_seconds = [timed(lambda: detector.detect([image]))[1] for _ in range(args.repeats)]
        detector = None  # free the inference model before building the training one

        class TrainConfig(CocoSizedConfig):
            STEPS_PER_EPOCH = args.train_steps

        dataset = SyntheticDataset()
        dataset.load_synthetic(4, 1024, 1024, seed=0)
        for class_id in range(2, config.NUM_CLASSES):  # COCO's class count: 80 stand-in classes
            dataset.add_class("coco", class_id, f"class_{class_id}")
        dataset.prepare()
        trainer, build_training = timed(lambda: MaskRCNN("training", TrainConfig(), logs))
        trainer.keras_model.light_graph_optimization &= light
        timer = StepTimer()
        trainer.train(dataset, None, learning_rate=0.001, epochs=1, layers="all",
                      custom_callbacks=[timer], verbose=0)
        second = StepTimer()
        trainer.train(dataset, None, learning_rate=0.0001, epochs=2, layers="all",
                      custom_callbacks=[second], verbose=0)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, no GPU")
    passes = "TensorFlow's" if args.tensorflow_graph_passes else "mrcnn's light (on CPU)"
    print(f"Grappler passes: {passes}")
    print(f"build: inference model {build_inference:.1f} s, training model {build_training:.1f} s")
    print(f"detect() 1024x1024, {config.DETECTION_MAX_INSTANCES} instances: first call {first_detect:.1f} s, "
          f"then median {statistics.median(detect_seconds):.2f} s over {args.repeats}")
    steady = statistics.median(timer.seconds[1:] + second.seconds[1:])
    print(f"training step (batch 1, layers='all'): first {timer.seconds[0]:.1f} s, "
          f"then median {steady:.2f} s over {len(timer.seconds) + len(second.seconds) - 2} "
          f"(first / steady {timer.seconds[0] / steady:.1f})")
    print(f"second train() stage, same layers: first step {second.seconds[0]:.1f} s "
          f"(first / steady {second.seconds[0] / steady:.1f})")
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
