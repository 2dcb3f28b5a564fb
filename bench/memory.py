"""Does resident memory stay flat over long runs of detect() and of training?

Goal (issue 12): 500 detect() calls and a 1,000-step training run grow the resident memory
(RSS) by less than 5% after the first calls. The run uses the synthetic demo's settings
(``mrcnn.synthetic.DEMO_SETTINGS``: ResNet50, 128x128, batch 2) on synthetic scenes,
samples the RSS as it goes, and compares the end with the RSS after the warm-up (the first 50 calls,
the first 100 steps), when every function is traced and every buffer allocated once.

Usage::

    python bench/memory.py                       # 500 calls, 1,000 steps (about 10 minutes)
    python bench/memory.py --detect-calls 100 --train-steps 200
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)

import keras  # noqa: E402

from mrcnn.model import MaskRCNN  # noqa: E402
from mrcnn import cli, synthetic  # noqa: E402

GOAL_GROWTH = 0.05
# Memory growth counts from the sample after these many calls and steps.
DETECT_WARM_UP = 50
TRAIN_WARM_UP = 100
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def rss_mib():
    """Resident memory of this process now, MiB."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE_MIB


class RssSampler(keras.callbacks.Callback):
    """RSS after every ``every`` training steps: a list of (step, MiB)."""

    def __init__(self, every):
        super().__init__()
        self.every = every
        self.samples = []
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            self.samples.append((self._step, rss_mib()))


def growth(samples, warm_up):
    """(RSS after the warm-up, RSS at the end, relative growth) of [(count, MiB)] samples."""
    start = next(mib for count, mib in samples if count >= warm_up)
    end = samples[-1][1]
    return start, end, (end - start) / start


def measure_detect(calls, logs, images):
    config = synthetic.demo_config(inference=True)
    model = MaskRCNN("inference", config, logs)
    samples = []
    start = time.perf_counter()
    for call in range(1, calls + 1):
        model.detect([images[call % len(images)]])
        if call % 10 == 0:
            samples.append((call, rss_mib()))
    return samples, (time.perf_counter() - start) / calls


def measure_training(steps, logs, dataset):
    per_epoch = 100
    config = synthetic.demo_config(STEPS_PER_EPOCH=per_epoch)
    model = MaskRCNN("training", config, logs)
    sampler = RssSampler(every=20)
    start = time.perf_counter()
    model.train(dataset, None, learning_rate=config.LEARNING_RATE,
                epochs=max(1, steps // per_epoch), layers="all", custom_callbacks=[sampler],
                verbose=0)
    return sampler.samples, (time.perf_counter() - start) / sampler._step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect-calls", type=cli.positive_int, default=500)
    parser.add_argument("--train-steps", type=cli.positive_int, default=1000,
                        help="training steps, a multiple of 100 (default 1000)")
    args = parser.parse_args()
    if 0 < args.detect_calls <= DETECT_WARM_UP or 0 < args.train_steps <= TRAIN_WARM_UP:
        parser.error(f"growth is measured after a warm-up of {DETECT_WARM_UP} detect() calls "
                     f"and {TRAIN_WARM_UP} training steps: run more than that (or 0 to skip)")

    dataset = synthetic.SyntheticDataset()
    dataset.load_synthetic(200, 128, 128, seed=1)
    dataset.prepare()
    images = [dataset.load_image(i) for i in range(20)]
    with tempfile.TemporaryDirectory(prefix="mrcnn_memory_") as logs:
        rows = []
        if args.detect_calls:
            samples, seconds = measure_detect(args.detect_calls, logs, images)
            rows.append((f"{args.detect_calls} detect() calls ({seconds:.3f} s each)",
                         DETECT_WARM_UP, samples))
        if args.train_steps:
            samples, seconds = measure_training(args.train_steps, logs, dataset)
            rows.append((f"{samples[-1][0]} training steps ({seconds:.3f} s each)", TRAIN_WARM_UP,
                         samples))

    print(f"\nresident memory, MiB (goal: growth < {GOAL_GROWTH:.0%} after the warm-up)")
    print("| run | after warm-up | end | growth | samples |")
    print("| --- | ---: | ---: | ---: | --- |")
    for title, warm_up, samples in rows:
        start, end, change = growth(samples, warm_up)
        trace = " ".join(f"{mib:.0f}" for _, mib in samples[::max(1, len(samples) // 10)])
        print(f"| {title} | {start:.0f} (after {warm_up}) | {end:.0f} | {change:+.1%} "
              f"| {trace} |")


if __name__ == "__main__":
    main()
