"""Quality benchmark: train a CPU-sized Mask R-CNN for a fixed time, then measure it.

Experiments (each trains for --minutes of wall-clock time, then evaluates with mrcnn.evaluate):

* ``synthetic``: train on scenes of the built-in synthetic dataset (mrcnn.synthetic) and evaluate
  on held-out scenes drawn from another seed. Goal: mAP@0.5 >= 0.90 within 30 minutes on 2 cores.
* ``mug``: train on the VIA-annotated mug photos (../shared/datasets/mug/train) twice, from
  scratch and from a synthetic-data checkpoint (transfer: every layer but the class-specific
  heads), with the same budget and settings, and evaluate both on mug/val. Without
  --checkpoint, a synthetic model is trained first (another --minutes).

Each run prints the original's mAP@0.5 and mAP@[.5:.95], COCO segm and bbox AP, the training
steps done and the machine, and writes per-image CSV, precision-recall PNG, COCO JSON files and
a results.json under --out::

    python bench/quality.py synthetic --minutes 30
    python bench/quality.py mug --minutes 30 --checkpoint logs/bench_quality/synthetic/.../x.h5
    python bench/quality.py synthetic --minutes 1 --train-images 20 --val-images 4   # smoke run
"""

import argparse
import glob
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mrcnn import cli, datasets, evaluate  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from mrcnn.synthetic import SyntheticDataset  # noqa: E402

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUG_DIR = os.path.join(ROOT_DIR, "..", "shared", "datasets", "mug")
GOAL_SYNTHETIC_MAP50 = 0.90
MAX_EPOCHS = 100_000  # training stops on the time budget long before


def bench_config(args, name, inference=False):
    """A CPU-sized configuration: one foreground class, square images of --image-size."""

    class BenchConfig(Config):
        NAME = name
        NUM_CLASSES = 2
        BACKBONE = args.backbone
        IMAGE_RESIZE_MODE = "square"
        IMAGE_MIN_DIM = args.image_size
        IMAGE_MAX_DIM = args.image_size
        RPN_ANCHOR_SCALES = tuple(args.image_size // 2 ** i for i in range(4, -1, -1))
        IMAGES_PER_GPU = 1 if inference else args.batch_size
        STEPS_PER_EPOCH = args.steps_per_epoch
        VALIDATION_STEPS = 1
        TRAIN_ROIS_PER_IMAGE = 64
        POST_NMS_ROIS_TRAINING = 500
        POST_NMS_ROIS_INFERENCE = 250
        MAX_GT_INSTANCES = 20
        DETECTION_MAX_INSTANCES = 20
        DETECTION_MIN_CONFIDENCE = args.min_confidence
        TRAIN_BN = args.train_bn
        LEARNING_RATE = args.learning_rate

    return BenchConfig()


class TrainingLimits(keras.callbacks.Callback):
    """Stops training once `seconds` have passed, or at the first NaN loss.

    Counts the steps done; diverged_at_step is the step whose loss was NaN (None if none).
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.steps = 0
        self.diverged_at_step = None
        self.started = None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if math.isnan(float((logs or {}).get("loss", 0.0))):
            self.diverged_at_step = self.steps
            self.model.stop_training = True
        if time.monotonic() - self.started >= self.seconds:
            self.model.stop_training = True


class KeepLastCheckpoint(keras.callbacks.Callback):
    """Deletes a run's older .h5 checkpoints after each epoch (they are large)."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir

    def on_epoch_end(self, epoch, logs=None):
        checkpoints = sorted(glob.glob(os.path.join(self.log_dir, "*.h5")), key=os.path.getmtime)
        for path in checkpoints[:-1]:
            os.remove(path)


def synthetic_datasets(args):
    """Training scenes (seed --seed) and held-out scenes (seed --seed + 1)."""
    subsets = []
    for count, seed in ((args.train_images, args.seed), (args.val_images, args.seed + 1)):
        dataset = SyntheticDataset()
        dataset.load_synthetic(count, args.image_size, args.image_size, seed=seed)
        dataset.prepare()
        subsets.append(dataset)
    return subsets


def mug_datasets(args):
    """The mug train and val subsets (mrcnn.datasets.FolderDataset)."""
    subsets = []
    for subset in ("train", "val"):
        dataset = datasets.FolderDataset()
        dataset.load_subset(args.mug_dir, subset)
        dataset.prepare()
        print(dataset.summary())
        subsets.append(dataset)
    return subsets


def augmentation(args):
    """Horizontal flips for the small real dataset (None with --no-augment)."""
    if not args.augment:
        return None
    import albumentations

    return albumentations.HorizontalFlip(p=0.5)


def train_for_budget(args, name, train_dataset, init_weights=None, augment=None):
    """Trains all layers for --minutes; returns (checkpoint path, steps done, seconds).

    Exits with a message when the loss becomes NaN (the weights are then useless).
    """
    model_dir = os.path.join(args.out, name)
    model = MaskRCNN("training", bench_config(args, name), model_dir)
    if init_weights:
        model.load_pretrained(init_weights)
    limits = TrainingLimits(args.minutes * 60)
    started = time.monotonic()
    model.train(train_dataset, None, args.learning_rate, MAX_EPOCHS, "all",
                augmentation=augment,
                custom_callbacks=[limits, KeepLastCheckpoint(model.log_dir)],
                verbose=2 if args.verbose else 0)
    seconds = time.monotonic() - started
    if limits.diverged_at_step is not None:
        sys.exit(f"{name}: training diverged (NaN loss at step {limits.diverged_at_step}); "
                 f"lower --learning-rate (now {args.learning_rate}).")
    checkpoint = model.find_last()
    keras.backend.clear_session()
    return checkpoint, limits.steps, seconds


def evaluate_checkpoint(args, name, checkpoint, dataset):
    """Evaluates a checkpoint on a dataset; writes its files under --out/name; returns figures."""
    model = MaskRCNN("inference", bench_config(args, name, inference=True),
                     os.path.join(args.out, name))
    model.load_weights(checkpoint, by_name=True)
    result = evaluate.evaluate_model(model, dataset, verbose=args.verbose)
    out = os.path.join(args.out, name)
    result.to_csv(os.path.join(out, "per_image.csv"))
    evaluate.save_precision_recall_plot(result, os.path.join(out, "precision_recall.png"))
    evaluate.export_coco_ground_truth(dataset, os.path.join(out, "coco_ground_truth.json"))
    evaluate.export_coco_detections(result, os.path.join(out, "coco_detections.json"))
    print(f"\n== {name}: {len(dataset.image_ids)} held-out images ==")
    print(result.summary())
    print(f"files: {out}")
    keras.backend.clear_session()
    return {"mAP50": result.mAP50, "mAP": result.mAP,
            "segm_AP": result.coco["segm"]["AP"], "segm_AP50": result.coco["segm"]["AP50"],
            "bbox_AP": result.coco["bbox"]["AP"], "images": len(dataset.image_ids)}


def run_synthetic(args):
    train_dataset, val_dataset = synthetic_datasets(args)
    checkpoint, steps, seconds = train_for_budget(args, "synthetic", train_dataset)
    figures = evaluate_checkpoint(args, "synthetic", checkpoint, val_dataset)
    figures.update(checkpoint=checkpoint, steps=steps, train_seconds=round(seconds),
                   goal_met=figures["mAP50"] >= GOAL_SYNTHETIC_MAP50)
    print(f"goal mAP@0.5 >= {GOAL_SYNTHETIC_MAP50:.2f}: "
          f"{'met' if figures['goal_met'] else 'not met'} ({figures['mAP50']:.3f})")
    return {"synthetic": figures}


def run_mug(args):
    if not os.path.isdir(args.mug_dir):
        sys.exit(f"No mug dataset at {args.mug_dir}; pass --mug-dir (see "
                 "../shared/datasets/README.md).")
    report = {}
    source = args.checkpoint
    if source is None:
        report = run_synthetic(args)
        source = report["synthetic"]["checkpoint"]
    train_dataset, val_dataset = mug_datasets(args)
    for name, init_weights in (("mug_scratch", None), ("mug_transfer", source)):
        checkpoint, steps, seconds = train_for_budget(args, name, train_dataset, init_weights,
                                                      augmentation(args))
        figures = evaluate_checkpoint(args, name, checkpoint, val_dataset)
        figures.update(checkpoint=checkpoint, steps=steps, train_seconds=round(seconds),
                       init_weights=init_weights)
        report[name] = figures
    return report


def machine():
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU"))}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=["synthetic", "mug"])
    parser.add_argument("--minutes", type=cli.positive_number, default=30.0,
                        help="training time per model (default 30)")
    parser.add_argument("--out", default=os.path.join("logs", "bench_quality"),
                        help="folder for checkpoints and results (default logs/bench_quality)")
    parser.add_argument("--checkpoint", help="mug: synthetic checkpoint to transfer from "
                        "(default: train one first)")
    parser.add_argument("--mug-dir", default=os.path.normpath(MUG_DIR))
    parser.add_argument("--train-images", type=cli.positive_int, default=500,
                        help="synthetic training scenes (default 500)")
    parser.add_argument("--val-images", type=cli.positive_int, default=50,
                        help="synthetic held-out scenes (default 50)")
    parser.add_argument("--image-size", type=cli.image_size, default=128,
                        help="square model input side, a multiple of 64 (default 128)")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet101"])
    parser.add_argument("--batch-size", type=cli.positive_int, default=2)
    parser.add_argument("--steps-per-epoch", type=cli.positive_int, default=100)
    parser.add_argument("--learning-rate", type=cli.positive_number, default=0.001,
                        help="SGD learning rate (default 0.001; 0.01 diverged to NaN)")
    parser.add_argument("--train-bn", action=argparse.BooleanOptionalAction, default=True,
                        help="train BatchNorm layers (default on: there are no pretrained "
                        "statistics to freeze)")
    parser.add_argument("--min-confidence", type=float, default=0.7,
                        help="DETECTION_MIN_CONFIDENCE at evaluation (default 0.7, the original's)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="mug: random horizontal flips (default on)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    started = time.time()
    report = run_synthetic(args) if args.experiment == "synthetic" else run_mug(args)
    report = {"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
              "machine": machine(), "arguments": vars(args),
              "total_seconds": round(time.time() - started), "results": report}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"results_{args.experiment}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=str)
    print("\n" + json.dumps(report["results"], indent=2, default=str))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
