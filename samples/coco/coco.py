#!/usr/bin/env python3
"""Mask R-CNN on MS COCO: configuration, dataset, COCO evaluation (the original's sample).

A local COCO folder in the layout of the official downloads::

    coco/
        annotations/instances_train2014.json, instances_val2014.json,
                    instances_minival2014.json, instances_valminusminival2014.json
        train2014/  val2014/        (or train2017/, val2017/ with instances_*2017.json)

minival and valminusminival are the original's split of val2014 (their
annotation files are separate downloads; their images are those of val2014).

    # Train a new model starting from pre-trained COCO weights
    python samples/coco/coco.py train --dataset=/path/to/coco/ --model=coco
    # Train from ImageNet weights, downloading the COCO files first
    python samples/coco/coco.py train --dataset=/path/to/coco/ --model=imagenet --download
    # Continue training a model that you had trained earlier, or the last one
    python samples/coco/coco.py train --dataset=/path/to/coco/ --model=/path/to/weights.h5
    python samples/coco/coco.py train --dataset=/path/to/coco/ --model=last
    # Run the COCO evaluation on the last model you trained
    python samples/coco/coco.py evaluate --dataset=/path/to/coco/ --model=last

Nothing is downloaded unless asked (``--download``, ``auto_download=True``);
without the files, the error says which file to put where. Training uses the
2014 train and valminusminival subsets (2017: train), validating on minival
(2017: val), and the original's three stages: the heads for a quarter of the
epochs, ResNet stage 4 and up to three quarters, then all layers at a tenth
of the learning rate, with left-right flips.

The original's notebooks import this module with ``samples/coco`` on
``sys.path``: ``import coco``, then ``coco.CocoConfig()`` and
``coco.CocoDataset().load_coco(COCO_DIR, "minival")``.
"""

import dataclasses
import os
import sys
import time
import zipfile

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT_DIR)

import argparse  # noqa: E402

import numpy as np  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from mrcnn import cli, commands, evaluate, files, utils  # noqa: E402
from mrcnn import coco as coco_files  # noqa: E402
from mrcnn.config import Config  # noqa: E402

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
DEFAULT_DATASET_YEAR = "2014"
DEFAULT_EPOCHS = 160
# The official annotation files are larger than files.MAX_JSON_BYTES allows a
# user's export to be: instances_train2017.json is 448 MB.
MAX_JSON_BYTES = 2**30
SOURCE = "coco"
# The subsets made of val's images.
VAL_SUBSETS = ("minival", "valminusminival")
IMAGES_URL = "http://images.cocodataset.org/zips/{subset}{year}.zip"
ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval{year}.zip"
# The original's downloads of the minival split of val2014.
SPLIT_ANNOTATION_URLS = {
    "minival": "https://dl.dropboxusercontent.com/s/o43o90bna78omob/"
               "instances_minival2014.json.zip?dl=0",
    "valminusminival": "https://dl.dropboxusercontent.com/s/s3tw5zcg7395368/"
                       "instances_valminusminival2014.json.zip?dl=0",
}


class CocoConfig(Config):
    """Configuration for training on MS COCO (the original's settings)."""

    NAME = "coco"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 80  # COCO has 80 classes


# ---------------------------------------------------------------------------
# Dataset


def image_subset(subset):
    """The subset whose images a subset uses: val for minival and valminusminival."""
    return "val" if subset in VAL_SUBSETS else subset


def coco_paths(dataset_dir, subset, year=DEFAULT_DATASET_YEAR):
    """(annotation file, image folder) of a subset of a local COCO folder."""
    return (os.path.join(dataset_dir, "annotations", f"instances_{subset}{year}.json"),
            os.path.join(dataset_dir, f"{image_subset(subset)}{year}"))


class CocoDataset(utils.Dataset):
    """Subsets of a local MS COCO folder (or any folder in its layout).

    Class ids of the source "coco" are COCO's category ids, image ids COCO's
    image ids. Crowd regions (``iscrowd``) come out of ``load_mask`` with
    negative class ids, which training and ``mrcnn.evaluate`` ignore.
    ``problems`` lists what loading left out (``via.Problem`` items). Images
    are checked by their headers (``images.check_image(decode=False)``): the
    official ones are whole, and decoding 118,000 photos would take minutes.
    """

    def __init__(self, class_map=None):
        super().__init__(class_map)
        self.problems = []

    def load_coco(self, dataset_dir, subset, year=DEFAULT_DATASET_YEAR, class_ids=None,
                  class_map=None, return_coco=False, auto_download=False):
        """Load a subset of the COCO dataset.

        Args:
            dataset_dir: the COCO folder (see the module's docstring).
            subset: "train", "val", "minival" or "valminusminival".
            year: "2014" or "2017", as a string.
            class_ids: COCO category ids to load, and only the images that
                have one of them (default: every category).
            class_map: not used, as in the original.
            return_coco: return the ``pycocotools.coco.COCO`` of the subset
                (its well-formed images and annotations).
            auto_download: download and unzip the subset's images and
                annotations first when they are missing.

        Raises:
            mrcnn.coco.CocoError: the annotation file is missing (the message
                says where to put it and where to get it), malformed, or
                ``class_ids`` names unknown categories.
        """
        if auto_download:
            self.auto_download(dataset_dir, subset, year)
        annotation_path, image_dir = coco_paths(dataset_dir, subset, year)
        if not os.path.isfile(annotation_path):
            raise coco_files.CocoError(
                f"{annotation_path}: no such file. Put the COCO annotations there (from "
                f"{annotation_url(subset, year)}) and the images in {image_dir}/ (from "
                f"{IMAGES_URL.format(subset=image_subset(subset), year=year)}), or pass "
                "--download (auto_download=True) on a machine that is online.")
        loaded = coco_files.load_coco(annotation_path, image_dir, keep_negatives=True,
                                      decode=False, max_json_bytes=MAX_JSON_BYTES)
        self.problems += loaded.problems
        class_ids = sorted(class_ids or loaded.categories)
        unknown = [i for i in class_ids if i not in loaded.categories]
        if unknown:
            raise coco_files.CocoError(f"{annotation_path}: no category has id "
                                       f"{', '.join(map(str, unknown))}. Choose class_ids among "
                                       f"{sorted(loaded.categories)}.")
        for class_id in class_ids:
            self.add_class(SOURCE, class_id, loaded.categories[class_id])
        api = coco_files.coco_api(loaded.dataset)
        for image in loaded.images:
            regions = [r for r in image.regions if r.category_id in class_ids]
            if regions:
                self.add_image(SOURCE, image_id=image.image_id, path=image.path,
                               width=image.width, height=image.height,
                               annotations=api.loadAnns(api.getAnnIds(imgIds=[image.image_id],
                                                                      catIds=class_ids)),
                               coco_image=dataclasses.replace(image, regions=regions))
        if return_coco:
            return api

    def auto_download(self, dataDir, dataType, dataYear):
        """Download and unzip a subset's images and annotations when they are missing.

        The original's argument names: the COCO folder, the subset ("train",
        "val", "minival", "valminusminival") and the year. For 2014, minival
        and valminusminival take the images of val2014 and their own
        annotation files; 2017 has train and val only.

        Raises:
            mrcnn.weights.DownloadError: offline or failed download; the
                message gives the URL and where to put the file.
        """
        annotation_path, image_dir = coco_paths(dataDir, dataType, dataYear)
        if not os.path.isdir(image_dir):
            archive = image_dir + ".zip"
            _download(IMAGES_URL.format(subset=image_subset(dataType), year=dataYear), archive)
            _unzip(archive, dataDir)
        print(f"Will use images in {image_dir}")
        if not os.path.isfile(annotation_path):
            url = annotation_url(dataType, dataYear)
            split = dataType in VAL_SUBSETS
            archive = (annotation_path if split else
                       os.path.join(dataDir, f"annotations_trainval{dataYear}")) + ".zip"
            _download(url, archive)
            _unzip(archive, os.path.dirname(annotation_path) if split else dataDir)
        print(f"Will use annotations in {annotation_path}")

    def load_mask(self, image_id):
        """Instance masks bool [height, width, N] and class ids int32 [N] of an image; crowd
        regions have the negative of their class id."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().load_mask(image_id)
        image = info["coco_image"]
        class_ids = [(-1 if region.crowd else 1)
                     * self.map_source_class_id(f"{SOURCE}.{region.category_id}")
                     for region in image.regions]
        return coco_files.image_masks(image), np.array(class_ids, dtype=np.int32)

    def image_reference(self, image_id):
        """A link to the image on the COCO website."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().image_reference(image_id)
        return f"http://cocodataset.org/#explore?id={info['id']}"

    def annToRLE(self, ann, height, width):
        """An annotation's segmentation (polygons, RLE or uncompressed RLE) as a compressed
        RLE of a height x width image."""
        return coco_files.segmentation_rle(ann["segmentation"], height, width)

    def annToMask(self, ann, height, width):
        """An annotation's segmentation as a uint8 [height, width] mask."""
        return coco_files.decode(self.annToRLE(ann, height, width))


def annotation_url(subset, year):
    """Where a subset's annotation file is downloaded from."""
    return SPLIT_ANNOTATION_URLS[subset] if subset in VAL_SUBSETS else \
        ANNOTATIONS_URL.format(year=year)


def _download(url, path):
    from mrcnn import weights

    print(f"Downloading {url} to {path}")
    weights.download_file(url, path, file_type="ZIP", is_file_type=zipfile.is_zipfile)


def _unzip(archive, folder):
    print(f"Unzipping {archive}")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)


# ---------------------------------------------------------------------------
# COCO evaluation


def build_coco_results(dataset, image_ids, rois, class_ids, scores, masks):
    """One image's detections as COCO results (http://cocodataset.org/#format).

    Args:
        dataset: the CocoDataset (class ids become COCO category ids).
        image_ids: [the image's COCO id], as the original's evaluate_coco
            passes it.
        rois, class_ids, scores, masks: the image's ``detect()`` result:
            [N, (y1, x1, y2, x2)], [N], [N], [H, W, N].

    Returns:
        [{"image_id", "category_id", "bbox" [x, y, width, height], "score",
        "segmentation" (compressed RLE)}], [] when ``rois`` is None.
    """
    if rois is None:
        return []
    if len(image_ids) != 1:
        raise ValueError(f"build_coco_results takes the detections of one image, so image_ids "
                         f"holds one COCO image id, not {len(image_ids)}.")
    results = evaluate.coco_detections(image_ids[0], {"rois": rois, "class_ids": class_ids,
                                                      "scores": scores, "masks": masks})
    for result in results:
        result["category_id"] = dataset.get_source_class_id(result["category_id"], SOURCE)
    return results


def evaluate_coco(model, dataset, coco, eval_type="bbox", limit=0, image_ids=None):
    """Run the official COCO evaluation (pycocotools' COCOeval) of a model on a dataset.

    Args:
        model: a MaskRCNN in inference mode (batches of its BATCH_SIZE).
        dataset: a prepared CocoDataset.
        coco: the ``COCO`` object ``load_coco(..., return_coco=True)`` returned.
        eval_type: "bbox" or "segm".
        limit: if not 0, evaluate the first ``limit`` images only.
        image_ids: dataset image ids to evaluate (default: all).

    Returns:
        The ``COCOeval``, after it printed its summary (``stats`` holds the
        twelve numbers).
    """
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    if limit:
        image_ids = image_ids[:limit]
    coco_image_ids = [dataset.image_info[i]["id"] for i in image_ids]
    start = time.time()
    results = []
    for image_id, r in evaluate.detect_dataset(model, dataset, image_ids):
        results += build_coco_results(dataset, [dataset.image_info[image_id]["id"]], r["rois"],
                                      r["class_ids"], r["scores"], r["masks"])
    detect_time = time.time() - start
    coco_eval = COCOeval(coco, evaluate.load_results(coco, results, eval_type), eval_type)
    coco_eval.params.imgIds = coco_image_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    print(f"Prediction time: {detect_time:.1f} s, {detect_time / max(len(image_ids), 1):.2f} s "
          "per image")
    print(f"Total time: {time.time() - start:.1f} s")
    return coco_eval


# ---------------------------------------------------------------------------
# Command line


COMMANDS = commands.SampleCommands("coco.py", CocoConfig, CocoDataset, DEFAULT_LOGS_DIR,
                                   description="Train and evaluate Mask R-CNN on MS COCO.",
                                   default_epochs=DEFAULT_EPOCHS, commands=(),
                                   weights_option="--model")


def coco_schedule(epochs, learning_rate):
    """The original's stages, scaled to ``epochs`` (its 40, 120, 160 of 160): the heads, then
    ResNet stage 4 and up, then all layers at a tenth of the learning rate."""
    from mrcnn.training import TrainingStage

    return [TrainingStage("heads", max(1, epochs // 4), learning_rate),
            TrainingStage("4+", max(1, epochs * 3 // 4), learning_rate),
            TrainingStage("all", epochs, learning_rate / 10)]


def load_subsets(args, subsets, return_coco=False):
    """A prepared CocoDataset of one or more subsets (and the COCO of the last)."""
    dataset = CocoDataset()
    for subset in subsets:
        api = dataset.load_coco(args.dataset, subset, year=args.year, return_coco=return_coco,
                                auto_download=args.download)
    dataset.prepare()
    print(f"{' + '.join(subsets)} {args.year}: {dataset.num_images} images, "
          f"{len(dataset.class_names) - 1} classes")
    if dataset.problems:
        print(f"  {len(dataset.problems)} annotation problem(s), first: {dataset.problems[0]}")
    if not dataset.num_images:
        raise commands.CommandError(f"{args.dataset}: no annotated image in "
                                    f"{', '.join(subsets)} {args.year}.")
    return dataset, api


def validation_subset(year):
    return "val" if year == "2017" else "minival"


def command_train(args):
    import albumentations as A

    files.check_output_folder(args.logs, "--logs")
    weights_path = COMMANDS.starting_weights(args, downloads=False)
    train_subsets = ["train", "valminusminival"] if args.year == "2014" else ["train"]
    train_set, _ = load_subsets(args, train_subsets)
    val_set, _ = load_subsets(args, [validation_subset(args.year)])
    weights_path = weights_path or COMMANDS.starting_weights(args)
    model = COMMANDS.training_model(args, weights_path, train_set.class_names[1:])
    epochs = args.epochs or DEFAULT_EPOCHS
    # A resumed run goes on with its own stages (or, from older settings, the recipe of
    # how it started: from weights or not).
    stages = COMMANDS.resumed_stages(args, model) or (
        coco_schedule(epochs, model.config.LEARNING_RATE) if model.pretrained else
        COMMANDS.schedule(epochs, model.config.LEARNING_RATE, pretrained=False))
    model.train_schedule(train_set, val_set, stages, augmentation=A.HorizontalFlip(p=0.5))
    commands.print_last_checkpoint(model)
    return 0


def command_evaluate(args):
    dataset, api = load_subsets(args, [validation_subset(args.year)], return_coco=True)
    settings, class_names, weights_path = COMMANDS.inference_settings(
        args, dataset.class_names[1:], {"DETECTION_MIN_CONFIDENCE": 0})
    if class_names != dataset.class_names[1:]:
        raise commands.CommandError(f"--model {args.weights}: trained on the classes "
                                    f"{', '.join(class_names)}, but the dataset has "
                                    f"{', '.join(dataset.class_names[1:])}. Evaluate it on its "
                                    "own classes.")
    model = COMMANDS.inference_model(settings, class_names, weights_path, args.logs)
    print(f"Running COCO evaluation on {min(args.limit or dataset.num_images, dataset.num_images)}"
          " images.")
    evaluate_coco(model, dataset, api, args.eval_type, limit=args.limit)
    return 0


def image_count(text):
    """argparse type of --limit: a whole number of images, 0 for all."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of images (0 for all)")
    return value


def true_or_false(text):
    """argparse type of --download=True|False (the original's spelling)."""
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r} is not True or False")
    return text.lower() in ("true", "1", "yes")


def build_parser():
    parser = cli.ArgumentParser(prog="coco.py", description=COMMANDS.description,
                                epilog="Run `coco.py COMMAND --help` for each command's options. "
                                       "Exit status: 0 success, 2 bad input (one error line), "
                                       "1 an unexpected error (its report file is named).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, run, help_text in (
            ("train", command_train, "train on train (and valminusminival for 2014)"),
            ("evaluate", command_evaluate, "COCO evaluation on minival (val for 2017)")):
        command = subparsers.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--dataset", required=True, metavar="DIR",
                             help="the MS COCO folder (annotations/, train2014/, val2014/, ...)")
        command.add_argument("--year", default=DEFAULT_DATASET_YEAR, choices=("2014", "2017"),
                             help="dataset year (default: %(default)s)")
        command.add_argument("--download", nargs="?", const=True, default=False,
                             type=true_or_false, metavar="True|False",
                             help="download and unzip the missing COCO files first")
        commands.add_model_options(command, "last" if name == "evaluate" else "coco",
                              "weights: coco (the original's, downloaded once), imagenet, last "
                              "(the newest checkpoint under --logs), none or the path of a .h5 "
                              "file", DEFAULT_LOGS_DIR, option=COMMANDS.weights_option)
        if name == "train":
            commands.add_training_options(command, DEFAULT_EPOCHS, CocoConfig.STEPS_PER_EPOCH)
        else:
            command.add_argument("--limit", type=image_count, default=500, metavar="N",
                                 help="images to evaluate, 0 for all (default: %(default)s)")
            command.add_argument("--eval-type", default="bbox", choices=evaluate.IOU_TYPES,
                                 help="what COCOeval compares (default: %(default)s)")
        command.set_defaults(run=run, tensorflow=True)
    return parser


def main(argv=None):
    """Run a command; its exit status (see mrcnn.cli): 0 success, 2 bad input (one error
    line), 1 an unexpected error."""
    return cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
