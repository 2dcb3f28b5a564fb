"""Winograd's F(4x4, 3x3) beside oneDNN's direct convolution, for detect()'s 3x3 convolutions.

For each shape (ResNet101-FPN on a 1024x1024 image: the RPN's and the pyramid's levels, the
backbone's stages, the mask head's batch of ROIs) prints the median time of the direct
convolution as an inference model runs it on this machine (a one-image batch in halves where
``mrcnn.cpu.onednn_without_avx512``), of ``winograd.winograd_convolution``, their ratio, the
largest difference relative to the largest output, and whether
``winograd.winograd_where_it_pays`` chooses Winograd for that shape.

Usage::

    python bench/winograd.py              # 5 calls a shape after a warm-up call
    python bench/winograd.py --repeats 9
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compare_torchvision import machine  # noqa: E402
from mrcnn import cpu, winograd  # noqa: E402
from mrcnn.layers import convolution_in_halves  # noqa: E402

# (what, batch, side, input channels, output channels)
SHAPES = [
    ("RPN on P2", 1, 256, 256, 512),
    ("RPN on P3", 1, 128, 256, 512),
    ("RPN on P4", 1, 64, 256, 512),
    ("RPN on P6", 1, 16, 256, 512),
    ("pyramid P2", 1, 256, 256, 256),
    ("pyramid P4", 1, 64, 256, 256),
    ("backbone stage 2", 1, 256, 64, 64),
    ("backbone stage 3", 1, 128, 128, 128),
    ("backbone stage 4", 1, 64, 256, 256),
    ("backbone stage 5", 1, 32, 512, 512),
    ("mask head, 100 ROIs", 100, 14, 256, 256),
    ("mask head, 2 ROIs", 2, 14, 256, 256),
]


def median_seconds(function, arguments, repeats):
    function(*arguments).numpy()   # traces
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*arguments).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls a shape (default 5)")
    args = parser.parse_args(argv)
    in_halves = cpu.onednn_without_avx512()
    rng = np.random.default_rng(0)
    print(machine())
    print(f"direct: oneDNN's convolution{', one image in halves' if in_halves else ''}")
    print("| convolution | shape | direct ms | Winograd ms | ratio | difference | chosen |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for what, batch, side, channels, filters in SHAPES:
        images = tf.constant(rng.normal(size=(batch, side, side, channels)).astype(np.float32))
        kernel = tf.constant((rng.normal(size=(3, 3, channels, filters))
                              / np.sqrt(9 * channels)).astype(np.float32))

        def direct(x, k, halves=in_halves and batch == 1):
            return convolution_in_halves(x, k) if halves else tf.nn.conv2d(x, k, 1, "SAME")

        direct_function = tf.function(direct, autograph=False)
        winograd_function = tf.function(winograd.winograd_convolution, autograph=False)
        direct_seconds = median_seconds(direct_function, (images, kernel), args.repeats)
        winograd_seconds = median_seconds(winograd_function, (images, kernel), args.repeats)
        expected = direct_function(images, kernel).numpy()
        difference = np.abs(winograd_function(images, kernel).numpy() - expected).max()
        chosen = []
        winograd.winograd_where_it_pays(images, kernel, lambda x, k: chosen.append("direct"),
                                        lambda x, k: chosen.append("Winograd"))
        print(f"| {what} | {batch}x{side}x{side}, {channels} to {filters} "
              f"| {direct_seconds * 1000:.0f} | {winograd_seconds * 1000:.0f} "
              f"| {winograd_seconds / direct_seconds:.2f} "
              f"| {difference / np.abs(expected).max():.1e} | {chosen[0]} |")


if __name__ == "__main__":
    main()
