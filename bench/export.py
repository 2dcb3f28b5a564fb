"""Size and speed of the exported model (SavedModel, TFLite) beside detect().

Builds an inference model (random weights: speed does not depend on them, but
DETECTION_MIN_CONFIDENCE is 0 so that every call returns and unmolds
DETECTION_MAX_INSTANCES masks, the slowest case), exports it, and prints:

* the time of each export and the size of the SavedModel folder and of the
  .tflite file;
* the latency of one image for detect(), the SavedModel's serving_default
  signature (loaded with tf.saved_model.load, as TensorFlow Serving runs it)
  and the TFLite file in TensorFlow's TFLite interpreter: the first call
  (which traces or allocates), then the median of --repeats calls.

Usage::

    python bench/export.py                   # COCO-sized: ResNet101, 1024x1024, 81 classes
    python bench/export.py --image-size 640x480 --repeats 5
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrcnn import cli  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from speed import CocoSizedConfig, timed  # noqa: E402  (bench/speed.py)


def latency(fn, repeats):
    """(first call, median of the next ``repeats`` calls) in seconds."""
    _, first = timed(fn)
    return first, statistics.median(timed(fn)[1] for _ in range(repeats))


def folder_size(path):
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def image_size(text):
    """argparse type: ``HEIGHTxWIDTH``, both at least 1, as (height, width)."""
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 1024x768")
    return height, width


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=image_size, default="1024x768",
                        help="HEIGHTxWIDTH of the input image")
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="timed calls of each (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mrcnn_export_") as folder:
        measure(args, folder)


def measure(args, folder):
    """Export the model into ``folder``, time each way of running it, print the table."""
    config = CocoSizedConfig()
    height, width = args.image_size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    model = MaskRCNN("inference", config, folder)

    saved_model_dir, saved_model_seconds = timed(lambda: model.export(os.path.join(folder, "1")))
    tflite_file, tflite_seconds = timed(
        lambda: model.export(os.path.join(folder, "model.tflite"), format="tflite"))

    rows = [("detect()", latency(lambda: model.detect([image]), args.repeats))]
    serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    rows.append(("SavedModel", latency(lambda: serve(image=tf.constant(image)), args.repeats)))
    runner = tf.lite.Interpreter(model_path=tflite_file).get_signature_runner("serving_default")
    rows.append(("TFLite", latency(lambda: runner(image=image), args.repeats)))

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}, no GPU")
    print(f"model: {config.BACKBONE}, {config.IMAGE_MAX_DIM}x{config.IMAGE_MAX_DIM} molded, "
          f"{config.NUM_CLASSES} classes, {config.DETECTION_MAX_INSTANCES} detections; "
          f"input image {height}x{width}")
    print(f"SavedModel: {folder_size(saved_model_dir) / 2**20:.0f} MiB, exported in "
          f"{saved_model_seconds:.0f} s")
    print(f"TFLite:     {os.path.getsize(tflite_file) / 2**20:.0f} MiB, exported in "
          f"{tflite_seconds:.0f} s")
    for name, (first, median) in rows:
        print(f"{name:11} first call {first:.2f} s, then median {median:.2f} s over {args.repeats}")


if __name__ == "__main__":
    main()
