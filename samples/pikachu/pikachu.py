#!/usr/bin/env python3
"""Mask R-CNN on your own objects: train on a VIA-annotated folder, then splash and detect.

The dataset folder holds ``train/`` and ``val/`` (and optionally ``test/``),
each with its images and the VGG Image Annotator export
``via_region_data.json`` (VIA 1.x, 2.x or 3.x; polygon, rect, circle or
ellipse regions).

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

This file only parses arguments and prints: the work is done by the mrcnn
library (mrcnn.datasets, mrcnn.runs, mrcnn.training, mrcnn.splash, ...).
"""

import argparse
import datetime
import os
import sys
import tempfile

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT_DIR)

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # this command writes figures to files, never shows them

from mrcnn import (cli, datasets, evaluate, files, images, splash, synthetic, utils,  # noqa: E402
                   via)
from mrcnn.config import Config, ConfigError  # noqa: E402
from mrcnn.errors import InputError  # noqa: E402

# TensorFlow (under mrcnn.model, mrcnn.runs and mrcnn.training) takes seconds
# to import: the commands that need it say so (tensorflow=True), and
# cli.run imports it for them with its start-up log hidden, so that `check`
# and --help stay quick.

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
DEFAULT_EPOCHS = 30
LAYER_CHOICES = ("heads", "3+", "4+", "5+", "all")
# Written beside checkpoints by the pikachu.py of mrcnn 3.0, before training
# saved its own run_settings.json: overrides of PikachuConfig.
LEGACY_SETTINGS_FILE = "pikachu_settings.json"


class PikachuConfig(Config):
    """Configuration for training on a VIA-annotated dataset (the original sample's settings)."""

    NAME = "pikachu"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 1  # background + pikachu
    STEPS_PER_EPOCH = 100
    DETECTION_MIN_CONFIDENCE = 0.9


class PikachuDataset(datasets.FolderDataset):
    """A subset of a VIA-annotated dataset folder; regions without a class are pikachus."""

    SOURCE = "pikachu"
    DEFAULT_CLASS = "pikachu"

    def load_pikachu(self, dataset_dir, subset, **options):
        """``load_subset`` under the original sample's name."""
        self.load_subset(dataset_dir, subset, **options)


class CommandError(InputError):
    """Bad input to a command: the message names the file or option and what to do."""


# ---------------------------------------------------------------------------
# Settings


def checkpoint_settings(weights_path):
    """The ``runs.RunSettings`` of a checkpoint, or None (a file not written by training).

    Raises:
        ConfigError: settings that cannot be read or used; the message names
            their file.
    """
    from mrcnn import runs

    if weights_path is None:
        return None
    settings = runs.load_run_settings(weights_path)
    legacy = os.path.join(os.path.dirname(weights_path), LEGACY_SETTINGS_FILE)
    if settings is None and os.path.lexists(legacy):
        saved = runs.read_settings(legacy)
        try:
            config = PikachuConfig.from_dict(saved.config).to_dict()
        except ConfigError as error:
            raise ConfigError(f"{legacy}: {error}") from None
        settings = runs.RunSettings(config, saved.class_names, legacy)
    if settings is not None:
        settings.to_config(PikachuConfig)  # ConfigError naming the file
    return settings


def option_settings(args):
    """Config overrides given by --backbone, --image-size and --steps-per-epoch."""
    settings = {}
    if args.backbone:
        settings["BACKBONE"] = args.backbone
    elif getattr(args, "weights", None) == "imagenet":
        settings["BACKBONE"] = "resnet50"  # the ImageNet file holds a ResNet50
    if args.image_size:
        settings.update(IMAGE_MIN_DIM=args.image_size, IMAGE_MAX_DIM=args.image_size)
    steps = getattr(args, "steps_per_epoch", None)
    if steps:
        settings.update(STEPS_PER_EPOCH=steps,
                        VALIDATION_STEPS=min(steps, PikachuConfig.VALIDATION_STEPS))
    return settings


def make_config(settings, class_count, inference=False):
    """A PikachuConfig with ``settings`` and ``class_count`` object classes."""
    values = dict(settings, NUM_CLASSES=1 + class_count)
    if inference:
        values.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    try:
        return PikachuConfig.from_dict(values)
    except InputError as error:
        raise CommandError(f"{error} (options --backbone, --image-size)") from None


def load_subset(args, dataset_dir, subset, class_attribute=None, class_names=None):
    """A prepared PikachuDataset, with a summary and its problems printed."""
    dataset = PikachuDataset()
    dataset.load_subset(dataset_dir, subset, class_attribute=class_attribute,
                        class_names=class_names, follow_links=args.follow_links)
    dataset.prepare()
    print(dataset.summary())
    for problem in dataset.problems[:5]:
        print(f"  warning: {problem}")
    if len(dataset.problems) > 5:
        print(f"  ... {len(dataset.problems) - 5} more; run `pikachu.py check` for the full list")
    if not dataset.num_images:
        raise CommandError(f"{os.path.join(dataset_dir, subset)}: no annotated image to use. "
                           "Run `pikachu.py check` to see why.")
    return dataset


def dataset_folder(args):
    """``--dataset``, or the synthetic dataset (generated once) without it."""
    dataset_dir = args.dataset if args.dataset is not None else synthetic.demo_dataset()
    if not os.path.isdir(dataset_dir):
        what = "not a folder" if os.path.lexists(dataset_dir) else "no such dataset folder"
        raise CommandError(f"--dataset {dataset_dir}: {what}. Give the folder that holds "
                           "train/ and val/.")
    return dataset_dir


def inference_settings(args):
    """(config settings, class names without "BG", weights path) of an inference command."""
    from mrcnn import runs

    weights_path = runs.resolve_weights(args.weights, args.logs, PikachuConfig.NAME)
    saved = checkpoint_settings(weights_path)
    settings = dict(saved.config) if saved else {}
    class_names = saved.class_names if saved else [PikachuDataset.DEFAULT_CLASS]
    settings.update(option_settings(args))
    make_config(settings, len(class_names), inference=True)  # bad settings fail now
    return settings, class_names, weights_path


def inference_model(settings, class_names, weights_path, logs):
    """MaskRCNN in inference mode with its weights."""
    from mrcnn import model as modellib

    config = make_config(settings, len(class_names), inference=True)
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=logs)
    load_weights(model, weights_path)
    return model


def load_weights(model, weights_path):
    """Load starting weights by name; say which class-specific heads start untrained."""
    if weights_path is None:
        return
    print(f"Loading weights {weights_path}")
    report = model.load_pretrained(weights_path)
    if report.skipped:
        print(f"  {', '.join(report.skipped)}: other class count in the file, left untrained")


def timestamp():
    return f"{datetime.datetime.now():%Y%m%dT%H%M%S}"


def augmentation():
    """Flips, small affine moves and lighting changes (albumentations)."""
    import albumentations as A

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.8, 1.2), rotate=(-15, 15), p=0.5),
        A.RandomBrightnessContrast(p=0.5),
    ])


def demo_image():
    """The first test image of the synthetic dataset."""
    test_dir = os.path.join(synthetic.demo_dataset(), "test")
    return os.path.join(test_dir, sorted(os.listdir(test_dir))[0])


# ---------------------------------------------------------------------------
# Commands
#
# Each command checks everything the user gave it (output places, folders,
# files, options) before its long work starts, the cheap checks first (the
# synthetic dataset is generated, COCO weights downloaded, only once the rest
# holds), and writes its outputs through files.staged_outputs, so that a
# failure leaves no partial output behind.


def command_train(args):
    from mrcnn import model as modellib
    from mrcnn import runs
    from mrcnn.training import transfer_schedule

    demo = args.dataset is None
    files.check_output_folder(args.logs, "--logs")
    dataset_dir = dataset_folder(args)
    train_set = load_subset(args, dataset_dir, "train", args.class_attribute)
    class_names = train_set.class_names[1:]
    val_set = load_subset(args, dataset_dir, "val", train_set.class_attribute, class_names)
    choice = args.weights or ("none" if demo else "coco")
    weights_path = runs.resolve_weights(choice, args.logs, PikachuConfig.NAME)
    resume = choice == "last"

    # A checkpoint of ours fixes the architecture (backbone, head widths,
    # anchors, image size); resuming also keeps every other setting.
    saved = checkpoint_settings(weights_path)
    if resume and saved and saved.class_names != class_names:
        raise CommandError(
            f"--weights last: {weights_path} was trained on the classes "
            f"{', '.join(saved.class_names)} and the dataset has {', '.join(class_names)}, so "
            f"its run cannot go on. Start a new run from it: --weights {weights_path}")
    settings = dict(synthetic.DEMO_SETTINGS) if demo else {}
    if saved:
        settings.update(saved.config if resume else saved.architecture())
    settings.update(option_settings(args))
    config = make_config(settings, len(class_names))
    config.display()

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    if resume:
        print(f"Resuming {model.resume(weights_path)}")
    else:
        load_weights(model, weights_path)
    epochs = args.epochs or (synthetic.DEMO_EPOCHS if demo else DEFAULT_EPOCHS)
    stages = transfer_schedule(epochs, config.LEARNING_RATE, args.layers,
                               pretrained=weights_path is not None)
    model.train_schedule(train_set, val_set, stages,
                         augmentation=augmentation() if args.augment else None)
    print(f"Last checkpoint: {model.find_last()}")
    return 0


def command_splash(args):
    files.check_output_folder(args.output, "--output")
    with tempfile.TemporaryDirectory(prefix="mrcnn-downloads-") as downloads:
        if args.video:
            splash.check_video(args.video)
        paths = images.image_files(args.image, downloads) if args.image else []
        settings = inference_settings(args)
        if not (args.image or args.video):
            paths = images.image_files(demo_image())
        model = inference_model(*settings, args.logs)
        stamp = timestamp()
        with files.staged_outputs(args.output) as staging:
            if args.video:
                name = f"splash_{stamp}.mp4"
                frames = splash.splash_video(model, args.video, os.path.join(staging, name))
                print(f"{args.video}: {frames} frames -> {os.path.join(args.output, name)}")
            for path in paths:
                image = utils.read_image(path)
                picture, result = splash.splash_image(model, image)
                name = f"splash_{stamp}.png" if len(paths) == 1 else \
                    f"splash_{stamp}_{os.path.splitext(os.path.basename(path))[0]}.png"
                splash.save_image(os.path.join(staging, name), picture)
                print(f"{path}: {len(result['class_ids'])} instance(s) -> "
                      f"{os.path.join(args.output, name)}")
    return 0


def command_detect(args):
    import matplotlib.pyplot as plt

    from mrcnn import visualize

    files.check_output_folder(args.output, "--output")
    with tempfile.TemporaryDirectory(prefix="mrcnn-downloads-") as downloads:
        paths = images.image_files(args.image, downloads) if args.image else []
        settings, class_names, weights_path = inference_settings(args)
        paths = paths or images.image_files(demo_image())
        model = inference_model(settings, class_names, weights_path, args.logs)
        class_names = ["BG"] + class_names
        records = []
        with files.staged_outputs(args.output) as staging:
            for path in paths:
                image = utils.read_image(path)
                r = model.detect([image], verbose=0)[0]
                name = f"{os.path.splitext(os.path.basename(path))[0]}_detections.png"
                figure = visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"],
                                                     class_names, r["scores"],
                                                     title=os.path.basename(path))
                files.write_atomically(os.path.join(staging, name),
                                       lambda tmp: figure.savefig(tmp, bbox_inches="tight"))
                plt.close(figure)
                records.append(splash.detection_record(path, image.shape, r, class_names))
                print(f"{path}: {len(r['class_ids'])} instance(s) -> "
                      f"{os.path.join(args.output, name)}")
            files.write_json(os.path.join(staging, "detections.json"),
                             {"weights": weights_path, "class_names": class_names[1:],
                              "images": records}, indent=None)
    print(os.path.join(args.output, "detections.json"))
    return 0


def command_evaluate(args):
    files.check_output_folder(args.output, "--output")
    dataset_dir = dataset_folder(args)
    settings, class_names, weights_path = inference_settings(args)
    dataset = load_subset(args, dataset_dir, args.subset, args.class_attribute, class_names)
    model = inference_model(settings, class_names, weights_path, args.logs)
    image_ids = dataset.image_ids[:args.limit] if args.limit else dataset.image_ids
    result = evaluate.evaluate_model(model, dataset, image_ids)
    print(result.summary())
    print(f"mAP@0.5 = {result.mAP50:.3f}   mAP@[.5:.95] = {result.mAP:.3f}")
    stem = f"evaluation_{args.subset}_{timestamp()}"
    with files.staged_outputs(args.output) as staging:
        result.to_csv(os.path.join(staging, stem + ".csv"))
        evaluate.save_precision_recall_plot(result, os.path.join(staging, stem + "_pr.png"))
    print(f"Per-image results: {os.path.join(args.output, stem + '.csv')}")
    print(f"Precision-recall curve: {os.path.join(args.output, stem + '_pr.png')}")
    return 0


def command_check(args):
    problems = via.check_dataset(args.dataset, class_attribute=args.class_attribute,
                                 default_class=PikachuDataset.DEFAULT_CLASS,
                                 follow_links=args.follow_links)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.dataset}.")
        return 1
    print(f"{args.dataset}: no problem found.")
    return 0


# ---------------------------------------------------------------------------
# Command line


def add_model_options(parser, weights_default, weights_help):
    parser.add_argument("--weights", default=weights_default, metavar="WEIGHTS",
                        help=weights_help)
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR, metavar="DIR",
                        help="folder of the training runs and checkpoints (default: %(default)s)")
    parser.add_argument("--backbone", choices=("resnet50", "resnet101"),
                        help="backbone network (default: the checkpoint's; resnet101 for coco, "
                             "resnet50 for imagenet and the synthetic demo)")
    parser.add_argument("--image-size", type=cli.image_size, metavar="PIXELS",
                        help="resize images to PIXELS x PIXELS, a multiple of 64 up to "
                             f"{cli.MAX_IMAGE_SIZE} (default: the checkpoint's, else 1024, or 128 "
                             "for the synthetic demo; smaller is faster on CPU)")
    cli.add_debug_option(parser)


def add_dataset_options(parser):
    parser.add_argument("--class-attribute", metavar="NAME",
                        help="region attribute that names the class (default: the only text "
                             "attribute; without one, every region is a pikachu)")
    parser.add_argument("--follow-links", action="store_true",
                        help="accept image and annotation files that are symbolic links to "
                             "files outside their subset folder (refused by default)")


def build_parser():
    parser = cli.ArgumentParser(
        prog="pikachu.py", description="Train Mask R-CNN on a VIA-annotated dataset folder, "
        "then splash, detect and evaluate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `pikachu.py COMMAND --help` for each command's options. Exit status: 0 "
               "success, 1 `check` found problems (or an unexpected error, whose report file "
               "is named), 2 bad input (one error line naming the file or option and the fix). "
               "--debug shows tracebacks and TensorFlow's start-up log.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inference_weights_help = ("weights: last (newest checkpoint under --logs, the default), "
                              "coco, imagenet, none or the path of a .h5 file")

    train = commands.add_parser(
        "train", help="train on a dataset folder (or the synthetic demo)",
        description="Train on DIR/train, validating on DIR/val. Without --dataset, generate the "
                    "synthetic pikachu dataset and train a small CPU model on it in a few minutes.")
    train.add_argument("--dataset", metavar="DIR",
                       help="folder with train/ and val/, each holding images and "
                            "via_region_data.json (default: the synthetic dataset)")
    add_model_options(train, None, "starting weights: coco (default; downloaded once), imagenet, "
                                   "last (resume the newest run), none (from scratch, the "
                                   "synthetic demo's default) or the path of a .h5 file (a "
                                   "new run starts from it; a checkpoint of this project "
                                   "brings its architecture, only the classes change)")
    train.add_argument("--epochs", type=cli.positive_int, metavar="N",
                       help=f"train up to epoch N (default: {DEFAULT_EPOCHS}, "
                            f"or {synthetic.DEMO_EPOCHS} for the synthetic demo)")
    train.add_argument("--steps-per-epoch", type=cli.positive_int, metavar="N",
                       help=f"training steps per epoch (default: {PikachuConfig.STEPS_PER_EPOCH}, "
                            f"or {synthetic.DEMO_SETTINGS['STEPS_PER_EPOCH']} for the synthetic "
                            "demo)")
    train.add_argument("--layers", choices=LAYER_CHOICES,
                       help="layers to train (default: the heads for the first half of the "
                            "epochs, then all layers at a tenth of the learning rate; all layers "
                            "with --weights none)")
    train.add_argument("--augment", action="store_true",
                       help="augment training images (flips, small affine moves, lighting)")
    add_dataset_options(train)
    train.set_defaults(run=command_train, tensorflow=True)

    image_help = ("image file, folder of images or http(s) URL "
                  "(default: a test image of the synthetic dataset)")
    splash_parser = commands.add_parser(
        "splash", help="color splash: grayscale picture, color kept on the detected objects",
        description="Write splash_<timestamp>.png (or .mp4 for --video) into --output and "
                    "print its path.")
    source = splash_parser.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="PATH|URL", help=image_help)
    source.add_argument("--video", metavar="FILE", help="video file (MP4, AVI, ...)")
    add_model_options(splash_parser, "last", inference_weights_help)
    splash_parser.add_argument("--output", default=".", metavar="DIR",
                               help="folder for the splash files (default: the current folder)")
    splash_parser.set_defaults(run=command_splash, tensorflow=True)

    detect = commands.add_parser(
        "detect", help="pictures with masks, boxes and scores, and a JSON of the detections",
        description="For each image write <name>_detections.png, and write detections.json with "
                    "boxes [y1, x1, y2, x2], class names, scores and COCO RLE masks.")
    detect.add_argument("--image", metavar="PATH|URL", help=image_help)
    add_model_options(detect, "last", inference_weights_help)
    detect.add_argument("--output", default="detections", metavar="DIR",
                        help="folder for the pictures and detections.json (default: %(default)s)")
    detect.set_defaults(run=command_detect, tensorflow=True)

    evaluate_parser = commands.add_parser(
        "evaluate", help="mAP@0.5 and mAP@[.5:.95] on a subset",
        description="Detect on DIR/SUBSET and compare with its annotations: the original's "
                    "mAP@0.5 and mAP@[.5:.95] (mask IoU) and the COCO metrics; write the per-image "
                    "results as CSV and the precision-recall curve as PNG.")
    evaluate_parser.add_argument("--dataset", metavar="DIR",
                                 help="dataset folder (default: the synthetic dataset)")
    evaluate_parser.add_argument("--subset", default="val", choices=("train", "val"),
                                 help="subset to evaluate (default: %(default)s)")
    evaluate_parser.add_argument("--limit", type=cli.positive_int, metavar="N",
                                 help="evaluate the first N images only")
    add_dataset_options(evaluate_parser)
    add_model_options(evaluate_parser, "last", inference_weights_help)
    evaluate_parser.add_argument("--output", default="evaluation", metavar="DIR",
                                 help="folder for the per-image CSV and the precision-recall PNG "
                                      "(default: %(default)s)")
    evaluate_parser.set_defaults(run=command_evaluate, tensorflow=True)

    check = commands.add_parser(
        "check", help="list the problems of a dataset folder before training",
        description="Validate a dataset folder as `train` reads it and list every problem "
                    "with its file: missing, unreadable, truncated or too large images, files "
                    "that are not regular files or link out of their folder, malformed JSON, "
                    "region fields of the wrong type or range, regions outside the image or "
                    "with fewer than 3 points, unknown shapes or classes (a validation class "
                    "that train lacks included), duplicate files, EXIF-rotated photos, empty "
                    "subsets. Exit status 0 when clean (train will load the dataset), 1 when "
                    "problems were found, 2 for bad input.")
    check.add_argument("--dataset", required=True, metavar="DIR",
                       help="folder with train/ and val/ (and optionally test/)")
    add_dataset_options(check)
    cli.add_debug_option(check)
    check.set_defaults(run=command_check)
    return parser


def main(argv=None):
    """Run a command; its exit status: 0 success, 1 `check` found problems (or a bug, with a
    report file), 2 bad input (one error line), 130 interrupted. See mrcnn.cli."""
    return cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
