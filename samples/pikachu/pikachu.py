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
"""

import argparse
import datetime
import json
import math
import os
import secrets
import sys
import tempfile
import urllib.parse
import urllib.request

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT_DIR)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # figures are written to files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mrcnn import evaluate, synthetic, utils, via, visualize  # noqa: E402
from mrcnn.config import Config, ConfigError  # noqa: E402

# TensorFlow (under mrcnn.model and mrcnn.weights) takes seconds to import:
# the commands that need it import it, so that `check` and --help stay quick.

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
SETTINGS_FILE = "pikachu_settings.json"
LAYER_CHOICES = ("heads", "3+", "4+", "5+", "all")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class PikachuConfig(Config):
    """Configuration for training on a VIA-annotated dataset (the original sample's settings)."""

    NAME = "pikachu"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 1  # background + pikachu
    STEPS_PER_EPOCH = 100
    DETECTION_MIN_CONFIDENCE = 0.9


# Overrides of PikachuConfig for the synthetic demo: a model that a laptop CPU
# trains from scratch in a few minutes (bench/learning.py measures the same
# settings: about 200 steps give usable masks).
QUICK_SETTINGS = {
    "BACKBONE": "resnet50",
    "IMAGE_MIN_DIM": 128,
    "IMAGE_MAX_DIM": 128,
    "IMAGES_PER_GPU": 2,
    "STEPS_PER_EPOCH": 25,
    "VALIDATION_STEPS": 4,
    "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128),
    "RPN_TRAIN_ANCHORS_PER_IMAGE": 128,
    "POST_NMS_ROIS_TRAINING": 500,
    "POST_NMS_ROIS_INFERENCE": 200,
    "TRAIN_ROIS_PER_IMAGE": 32,
    "FPN_CLASSIF_FC_LAYERS_SIZE": 256,
    "MAX_GT_INSTANCES": 10,
    "DETECTION_MIN_CONFIDENCE": 0.7,
    "LEARNING_RATE": 0.01,
}
QUICK_EPOCHS = 8
DEFAULT_EPOCHS = 30
SYNTHETIC_SPLIT = {"train": 200, "val": 20, "test": 6, "image_size": 256, "seed": 0}


class CommandError(Exception):
    """Bad input: the message names the file or option and what to do."""


class PikachuDataset(utils.Dataset):
    """Images of one subset of a VIA-annotated dataset folder and their masks."""

    def load_pikachu(self, dataset_dir, subset, class_attribute=None, class_names=None,
                     keep_negatives=False):
        """Register the images of ``dataset_dir/subset`` and their regions.

        Args:
            dataset_dir: folder with train/ and val/ (and optionally test/).
            subset: "train", "val" or "test"; the folder holds the images and
                ``via_region_data.json``.
            class_attribute: region attribute naming the class (default: the
                only text attribute, if any; else every region is "pikachu").
            class_names: classes to keep, in order (default: those found).
            keep_negatives: keep images without regions (as negatives).

        Sets ``self.problems`` to the list of via.Problem found on the way.

        Raises:
            via.ViaError: missing folder or annotation file, malformed file.
        """
        subset_dir = os.path.join(dataset_dir, subset)
        if not os.path.isdir(subset_dir):
            raise via.ViaError(f"{subset_dir}: no such folder. The dataset folder must hold "
                               f"train/ and val/, each with its images and {via.ANNOTATION_FILE}.")
        annotations = via.load_via(os.path.join(subset_dir, via.ANNOTATION_FILE),
                                   class_attribute=class_attribute, class_names=class_names,
                                   default_class="pikachu", keep_negatives=keep_negatives)
        self.problems = annotations.problems
        for class_id, name in enumerate(annotations.class_names, start=1):
            self.add_class("pikachu", class_id, name)
        source_ids = {name: class_id for class_id, name in enumerate(annotations.class_names, 1)}
        for image in annotations.images:
            self.add_image("pikachu", image_id=image.filename, path=image.path,
                           width=image.width, height=image.height, annotation=image,
                           source_class_ids=[source_ids[r.label] for r in image.regions])

    def load_mask(self, image_id):
        """Masks bool [height, width, N] and class ids int32 [N] of an image."""
        info = self.image_info[image_id]
        if info["source"] != "pikachu":
            return super().load_mask(image_id)
        class_ids = [self.map_source_class_id(f"pikachu.{i}") for i in info["source_class_ids"]]
        return via.image_masks(info["annotation"]), np.array(class_ids, dtype=np.int32)

    def image_reference(self, image_id):
        """The image's path."""
        return self.image_info[image_id]["path"]


# ---------------------------------------------------------------------------
# Settings, weights and models


def make_config(settings, class_count, inference=False):
    """A PikachuConfig with ``settings`` (attribute -> value) and ``class_count`` classes.

    Inference configs detect one image at a time.
    """
    attributes = dict(settings, NUM_CLASSES=1 + class_count)
    if inference:
        attributes.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    return type("RunConfig", (PikachuConfig,), attributes)()


def settings_from_args(args, quick):
    """Config overrides from the command line, on top of the demo's when ``quick``."""
    settings = dict(QUICK_SETTINGS) if quick else {}
    if args.backbone:
        settings["BACKBONE"] = args.backbone
    elif getattr(args, "weights", None) == "imagenet":
        settings["BACKBONE"] = "resnet50"  # the ImageNet file holds a ResNet50
    if args.image_size:
        settings.update(IMAGE_MIN_DIM=args.image_size, IMAGE_MAX_DIM=args.image_size)
    steps = getattr(args, "steps_per_epoch", None)
    if steps:
        validation = settings.get("VALIDATION_STEPS", PikachuConfig.VALIDATION_STEPS)
        settings.update(STEPS_PER_EPOCH=steps, VALIDATION_STEPS=min(steps, validation))
    return settings


def resolve_weights(choice, logs_dir):
    """Path of the weights file that ``--weights`` names, or None for "none"."""
    from mrcnn import weights

    if choice == "none":
        return None
    if choice in ("coco", "imagenet"):
        try:
            if choice == "coco":
                return weights.get_coco_weights()
            return weights.get_imagenet_weights()
        except weights.DownloadError as error:
            raise CommandError(f"--weights={choice}: {error}") from None
    if choice == "last":
        try:
            return weights.find_last_checkpoint(logs_dir, PikachuConfig.NAME)
        except FileNotFoundError as error:
            raise CommandError(f"--weights=last: {error}") from None
    if not os.path.isfile(choice):
        raise CommandError(f"{choice}: no such weights file. Give a .h5 file, or --weights "
                           "coco, imagenet, last or none.")
    if not weights.is_weights_file(choice):
        raise CommandError(f"{choice}: not a Keras HDF5 weights file (a Mask R-CNN .h5 with "
                           "layer_names). Give a checkpoint written by training, the original's "
                           "mask_rcnn_coco.h5, or --weights coco.")
    return os.path.abspath(choice)


def saved_settings(weights_path):
    """(config settings, class names) saved by ``train`` beside a checkpoint, or None."""
    if weights_path is None:
        return None
    path = os.path.join(os.path.dirname(weights_path), SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    return saved["config"], saved["class_names"]


def load_model_weights(model, weights_path, class_count):
    """Load a weights file by name; heads of another class count are left out."""
    from mrcnn import weights

    if weights_path is None:
        return
    print(f"Loading weights {weights_path}")
    try:
        model.load_weights(weights_path, by_name=True)
    except ValueError:
        print(f"  its class-specific heads do not fit {class_count} class(es): "
              "they start untrained")
        model.load_weights(weights_path, by_name=True, exclude=weights.CLASS_SPECIFIC_LAYERS)


def inference_setup(args):
    """(weights path, config settings, class names) for splash/detect/evaluate.

    The settings and class names are those ``train`` saved beside the
    checkpoint (else the defaults and "pikachu"), with --backbone and
    --image-size on top.
    """
    weights_path = resolve_weights(args.weights, args.logs)
    settings, class_names = saved_settings(weights_path) or ({}, ["pikachu"])
    settings.update(settings_from_args(args, quick=False))
    return weights_path, settings, class_names


def inference_model(args, weights_path, settings, class_names):
    """A MaskRCNN in inference mode with its weights loaded."""
    from mrcnn import model as modellib

    config = make_config(settings, len(class_names), inference=True)
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=args.logs)
    load_model_weights(model, weights_path, len(class_names))
    return model


# ---------------------------------------------------------------------------
# Files


def write_atomically(path, write):
    """Call ``write(temporary_path)`` and rename the result to ``path`` when complete.

    The temporary file sits beside ``path`` and keeps its extension (so that
    writers choosing the format from the name work); it is removed on failure.
    """
    directory, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    temporary = os.path.join(directory, f".{stem}.{secrets.token_hex(4)}.partial{extension}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def synthetic_dataset():
    """The synthetic dataset folder in the cache, generated on first use."""
    from mrcnn import weights

    root = os.path.join(weights.default_cache_dir(), "pikachu-synthetic")
    if not os.path.isdir(root):
        print(f"Generating the synthetic pikachu dataset into {root}")
        try:
            synthetic.write_via_dataset(root, **SYNTHETIC_SPLIT)
        except OSError:
            if not os.path.isdir(root):  # not another process finishing first
                raise
    return root


def image_paths(image_arg):
    """Image files named by ``--image``: a file, a folder (its images) or an http(s) URL.

    The header of each file is read so that unreadable images stop the command
    before any output is written.
    """
    if image_arg is None:
        test_dir = os.path.join(synthetic_dataset(), "test")
        return [os.path.join(test_dir, sorted(os.listdir(test_dir))[0])]
    if urllib.parse.urlparse(image_arg).scheme in ("http", "https"):
        return [download_image(image_arg)]
    if os.path.isdir(image_arg):
        paths = [os.path.join(image_arg, f) for f in sorted(os.listdir(image_arg))
                 if f.lower().endswith(via.IMAGE_EXTENSIONS)]
        if not paths:
            raise CommandError(f"{image_arg}: the folder holds no image "
                               f"({', '.join(via.IMAGE_EXTENSIONS)}).")
    elif os.path.isfile(image_arg):
        paths = [image_arg]
    else:
        raise CommandError(f"{image_arg}: no such file or folder. Give an image, a folder of "
                           "images or an http(s) URL.")
    for path in paths:
        try:
            via.displayed_size(path)
        except OSError as error:
            raise CommandError(f"{path}: cannot read image ({error}). Re-save it as JPEG or "
                               "PNG, or leave it out.") from None
    return paths


def download_image(url):
    """Download an image URL into a temporary file; its path."""
    suffix = os.path.splitext(urllib.parse.urlparse(url).path)[1] or ".jpg"
    handle, path = tempfile.mkstemp(prefix="pikachu-", suffix=suffix)
    os.close(handle)
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(path, "wb") as f:
            f.write(response.read())
        via.displayed_size(path)
    except (OSError, ValueError) as error:
        os.remove(path)
        raise CommandError(f"{url}: cannot download an image ({error}). Download it yourself "
                           "and pass the file with --image.") from None
    return path


def read_image(path):
    """[H, W, 3] uint8 RGB of an image file, EXIF orientation applied."""
    try:
        return utils.read_image(path)
    except (OSError, ValueError) as error:
        raise CommandError(f"{path}: cannot read image ({error}). "
                           "Re-save it as JPEG or PNG.") from None


def timestamp():
    return f"{datetime.datetime.now():%Y%m%dT%H%M%S}"


# ---------------------------------------------------------------------------
# Commands


def load_subset(dataset_dir, subset, class_attribute, class_names=None):
    """A prepared PikachuDataset, with a summary and its problems printed."""
    dataset = PikachuDataset()
    dataset.load_pikachu(dataset_dir, subset, class_attribute=class_attribute,
                         class_names=class_names)
    dataset.prepare()
    regions = sum(len(info["source_class_ids"]) for info in dataset.image_info)
    print(f"{subset}: {dataset.num_images} images, {regions} instances, "
          f"classes {', '.join(dataset.class_names[1:])}")
    for problem in dataset.problems[:5]:
        print(f"  warning: {problem}")
    if len(dataset.problems) > 5:
        print(f"  ... {len(dataset.problems) - 5} more; run `pikachu.py check` for the full list")
    if not dataset.num_images:
        raise CommandError(f"{os.path.join(dataset_dir, subset)}: no annotated image to use. "
                           "Run `pikachu.py check` to see why.")
    return dataset


def training_stages(layers, epochs, pretrained, learning_rate):
    """[(layers, up-to-epoch, learning rate)]: the transfer-learning recipe by default.

    With pretrained weights: the heads for the first half of the epochs, then
    all layers at a tenth of the learning rate. From scratch: all layers.
    """
    if layers:
        return [(layers, epochs, learning_rate)]
    if not pretrained:
        return [("all", epochs, learning_rate)]
    heads_epochs = math.ceil(epochs / 2)
    stages = [("heads", heads_epochs, learning_rate)]
    if epochs > heads_epochs:
        stages.append(("all", epochs, learning_rate / 10))
    return stages


def augmentation():
    """Flips, small affine moves and lighting changes (albumentations)."""
    import albumentations as A

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.8, 1.2), rotate=(-15, 15), p=0.5),
        A.RandomBrightnessContrast(p=0.5),
    ])


def command_train(args):
    quick = args.dataset is None
    dataset_dir = synthetic_dataset() if quick else args.dataset
    if not os.path.isdir(dataset_dir):
        raise CommandError(f"{dataset_dir}: no such dataset folder. Give the folder that holds "
                           "train/ and val/.")
    train_set = load_subset(dataset_dir, "train", args.class_attribute)
    class_names = train_set.class_names[1:]
    val_set = load_subset(dataset_dir, "val", args.class_attribute, class_names)
    settings = settings_from_args(args, quick)
    config = make_config(settings, len(class_names))
    weights_path = resolve_weights(args.weights or ("none" if quick else "coco"), args.logs)
    config.display()

    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    load_model_weights(model, weights_path, len(class_names))
    os.makedirs(model.log_dir, exist_ok=True)
    write_atomically(os.path.join(model.log_dir, SETTINGS_FILE), lambda path: _write_json(
        path, {"config": settings, "class_names": class_names,
               "dataset": os.path.abspath(dataset_dir)}))
    epochs = args.epochs or (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    for layers, up_to_epoch, learning_rate in training_stages(
            args.layers, epochs, weights_path is not None, config.LEARNING_RATE):
        if up_to_epoch > model.epoch:
            print(f"Training {layers} layers up to epoch {up_to_epoch}")
            model.train(train_set, val_set, learning_rate=learning_rate, epochs=up_to_epoch,
                        layers=layers, augmentation=augmentation() if args.augment else None)
    print(f"Last checkpoint: {model.find_last()}")
    return 0


def _write_json(path, data, indent=1):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent)


def command_splash(args):
    if args.video:
        if not os.path.isfile(args.video):
            raise CommandError(f"{args.video}: no such video file.")
        paths = []
    else:
        paths = image_paths(args.image)
    setup = inference_setup(args)
    os.makedirs(args.output, exist_ok=True)
    model = inference_model(args, *setup)
    if args.video:
        print(splash_video(model, args.video, args.output))
        return 0
    stamp = timestamp()
    for path in paths:
        image = read_image(path)
        masks = model.detect([image], verbose=0)[0]["masks"]
        name = f"splash_{stamp}.png" if len(paths) == 1 else \
            f"splash_{stamp}_{os.path.splitext(os.path.basename(path))[0]}.png"
        splash = visualize.color_splash(image, masks)
        out = write_atomically(os.path.join(args.output, name),
                               lambda tmp: _save_png(tmp, splash))
        print(f"{path}: {masks.shape[-1]} instance(s) -> {out}")
    return 0


def _save_png(path, image):
    Image.fromarray(image).save(path, format="PNG")


def splash_video(model, video_path, output_dir):
    """Color splash of every frame of a video; the path of the .mp4 written."""
    import cv2

    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        raise CommandError(f"{video_path}: OpenCV cannot open this video. "
                           "Convert it to MP4 (H.264).")
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25

    def write(path):
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        count = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                rgb = frame[..., ::-1].copy()
                masks = model.detect([rgb], verbose=0)[0]["masks"]
                writer.write(visualize.color_splash(rgb, masks)[..., ::-1].copy())
                count += 1
        finally:
            writer.release()
            capture.release()
        if not count:
            raise CommandError(f"{video_path}: no frame could be read.")
        print(f"{video_path}: {count} frames")

    return write_atomically(os.path.join(output_dir, f"splash_{timestamp()}.mp4"), write)


def command_detect(args):
    paths = image_paths(args.image)
    weights_path, settings, class_names = inference_setup(args)
    os.makedirs(args.output, exist_ok=True)
    model = inference_model(args, weights_path, settings, class_names)
    class_names = ["BG"] + class_names
    records = []
    for path in paths:
        image = read_image(path)
        r = model.detect([image], verbose=0)[0]
        stem = os.path.splitext(os.path.basename(path))[0]
        figure = visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"],
                                             class_names, r["scores"], title=os.path.basename(path))
        picture = write_atomically(os.path.join(args.output, f"{stem}_detections.png"),
                                   lambda tmp: figure.savefig(tmp, bbox_inches="tight"))
        plt.close(figure)
        records.append(detection_record(path, image.shape, r, class_names))
        print(f"{path}: {len(r['class_ids'])} instance(s) -> {picture}")
    out = write_atomically(os.path.join(args.output, "detections.json"), lambda tmp: _write_json(
        tmp, {"weights": weights_path, "class_names": class_names[1:], "images": records},
        indent=None))
    print(out)
    return 0


def detection_record(path, shape, result, class_names):
    """One image's detections for the JSON: boxes [y1, x1, y2, x2] pixels, RLE masks."""
    return {
        "image": os.path.abspath(path),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "instances": [
            {"box": [int(v) for v in box], "class_id": int(class_id),
             "class_name": class_names[class_id], "score": round(float(score), 4), "mask": rle}
            for box, class_id, score, rle in zip(
                result["rois"], result["class_ids"], result["scores"],
                evaluate.encode_masks(result["masks"]))],
    }


def command_evaluate(args):
    dataset_dir = args.dataset or synthetic_dataset()
    weights_path, settings, class_names = inference_setup(args)
    dataset = load_subset(dataset_dir, args.subset, args.class_attribute, class_names)
    model = inference_model(args, weights_path, settings, class_names)
    image_ids = dataset.image_ids[:args.limit] if args.limit else dataset.image_ids
    result = evaluate.evaluate_model(model, dataset, image_ids)
    print(result.summary())
    print(f"mAP@0.5 = {result.mAP50:.3f}   mAP@[.5:.95] = {result.mAP:.3f}")
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, f"evaluation_{args.subset}_{timestamp()}")
    print(f"Per-image results: {result.to_csv(stem + '.csv')}")
    print(f"Precision-recall curve: {evaluate.save_precision_recall_plot(result, stem + '_pr.png')}")
    return 0


def command_check(args):
    problems = via.check_dataset(args.dataset, class_attribute=args.class_attribute)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.dataset}.")
        return 1
    print(f"{args.dataset}: no problem found.")
    return 0


# ---------------------------------------------------------------------------
# Command line


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def add_model_options(parser, weights_default, weights_help):
    parser.add_argument("--weights", default=weights_default, metavar="WEIGHTS",
                        help=weights_help)
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR, metavar="DIR",
                        help="folder of the training runs and checkpoints (default: %(default)s)")
    parser.add_argument("--backbone", choices=("resnet50", "resnet101"),
                        help="backbone network (default: the one the weights were trained with; "
                             "resnet101 for coco, resnet50 for imagenet and the synthetic demo)")
    parser.add_argument("--image-size", type=positive_int, metavar="PIXELS",
                        help="resize images to PIXELS x PIXELS, a multiple of 64 "
                             "(default: 1024, or 128 for the synthetic demo; smaller is faster "
                             "on CPU)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pikachu.py", description="Train Mask R-CNN on a VIA-annotated dataset folder, "
        "then splash, detect and evaluate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `pikachu.py COMMAND --help` for each command's options.")
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
                                   "synthetic demo's default) or the path of a .h5 file")
    train.add_argument("--epochs", type=positive_int, metavar="N",
                       help=f"train up to epoch N (default: {DEFAULT_EPOCHS}, "
                            f"or {QUICK_EPOCHS} for the synthetic demo)")
    train.add_argument("--steps-per-epoch", type=positive_int, metavar="N",
                       help=f"training steps per epoch (default: {PikachuConfig.STEPS_PER_EPOCH}, "
                            f"or {QUICK_SETTINGS['STEPS_PER_EPOCH']} for the synthetic demo)")
    train.add_argument("--layers", choices=LAYER_CHOICES,
                       help="layers to train (default: the heads for the first half of the "
                            "epochs, then all layers at a tenth of the learning rate; all layers "
                            "with --weights none)")
    train.add_argument("--augment", action="store_true",
                       help="augment training images (flips, small affine moves, lighting)")
    train.add_argument("--class-attribute", metavar="NAME",
                       help="region attribute that names the class (default: the only text "
                            "attribute; without one, every region is a pikachu)")
    train.set_defaults(run=command_train)

    image_help = ("image file, folder of images or http(s) URL "
                  "(default: a test image of the synthetic dataset)")
    splash = commands.add_parser(
        "splash", help="color splash: grayscale picture, color kept on the detected objects",
        description="Write splash_<timestamp>.png (or .mp4 for --video) into --output and "
                    "print its path.")
    source = splash.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="PATH|URL", help=image_help)
    source.add_argument("--video", metavar="FILE", help="video file (MP4, AVI, ...)")
    add_model_options(splash, "last", inference_weights_help)
    splash.add_argument("--output", default=".", metavar="DIR",
                        help="folder for the splash files (default: the current folder)")
    splash.set_defaults(run=command_splash)

    detect = commands.add_parser(
        "detect", help="pictures with masks, boxes and scores, and a JSON of the detections",
        description="For each image write <name>_detections.png, and write detections.json with "
                    "boxes [y1, x1, y2, x2], class names, scores and COCO RLE masks.")
    detect.add_argument("--image", metavar="PATH|URL", help=image_help)
    add_model_options(detect, "last", inference_weights_help)
    detect.add_argument("--output", default="detections", metavar="DIR",
                        help="folder for the pictures and detections.json (default: %(default)s)")
    detect.set_defaults(run=command_detect)

    evaluate = commands.add_parser(
        "evaluate", help="mAP@0.5 and mAP@[.5:.95] on a subset",
        description="Detect on DIR/SUBSET and compare with its annotations: the original's "
                    "mAP@0.5 and mAP@[.5:.95] (mask IoU) and the COCO metrics; write the per-image "
                    "results as CSV and the precision-recall curve as PNG.")
    evaluate.add_argument("--dataset", metavar="DIR",
                          help="dataset folder (default: the synthetic dataset)")
    evaluate.add_argument("--subset", default="val", choices=("train", "val"),
                          help="subset to evaluate (default: %(default)s)")
    evaluate.add_argument("--limit", type=positive_int, metavar="N",
                          help="evaluate the first N images only")
    evaluate.add_argument("--class-attribute", metavar="NAME",
                          help="region attribute that names the class")
    add_model_options(evaluate, "last", inference_weights_help)
    evaluate.add_argument("--output", default="evaluation", metavar="DIR",
                          help="folder for the per-image CSV and the precision-recall PNG "
                               "(default: %(default)s)")
    evaluate.set_defaults(run=command_evaluate)

    check = commands.add_parser(
        "check", help="list the problems of a dataset folder before training",
        description="Validate a dataset folder and list every problem with its file: missing "
                    "or unreadable images, malformed JSON, regions outside the image or with "
                    "fewer than 3 points, unknown shapes or classes, duplicate files, "
                    "EXIF-rotated photos, empty subsets. Exit status 0 when clean, 1 when "
                    "problems were found, 2 for bad input.")
    check.add_argument("--dataset", required=True, metavar="DIR",
                       help="folder with train/ and val/ (and optionally test/)")
    check.add_argument("--class-attribute", metavar="NAME",
                       help="region attribute that names the class")
    check.set_defaults(run=command_check)
    return parser


def main(argv=None):
    """Run a command; exit status 0 on success, 1 when `check` finds problems, 2 for bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, via.ViaError, ConfigError) as error:
        print(f"pikachu.py {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
