"""The samples' commands, written once: train, splash, detect, evaluate and check.

A sample names its ``Config`` and ``datasets.FolderDataset`` subclasses and
gets the commands, with the same options, output and messages::

    COMMANDS = commands.SampleCommands("balloon.py", BalloonConfig, BalloonDataset,
                                       logs_dir="logs", description="Train Mask R-CNN on balloons.")
    if __name__ == "__main__":
        sys.exit(COMMANDS.main())

- ``train --dataset DIR``: train on ``DIR/train``, validating on ``DIR/val``
  (VIA or COCO annotations, see ``mrcnn.datasets``), from
  ``--weights coco|imagenet|last|none|PATH`` (``runs.resolve_weights``) by the
  transfer schedule (``training.transfer_schedule``); a checkpoint of this
  project brings its architecture (``runs.RunSettings.architecture``).
- ``splash``, ``detect``: color splash (``mrcnn.splash``) and pictures with a
  JSON of the detections, for an image, a folder, a URL or a video.
- ``evaluate``: the original's mAP and the COCO metrics (``mrcnn.evaluate``).
- ``check``: every problem of a dataset folder (``datasets.check_dataset``).

Each command checks everything the user gave it (output places, folders,
files, options) before its long work starts, the cheap checks first (the
synthetic dataset is generated, COCO weights downloaded, only once the rest
holds), and writes its outputs through ``files.staged_outputs``, so that a
failure leaves no partial output behind. ``mrcnn.cli`` runs them: exit
statuses, one-line errors, ``--debug``; TensorFlow is imported only by the
commands that need it (``tensorflow=True``), so ``check`` and ``--help`` stay
quick.
"""

import argparse
import collections
import dataclasses
import datetime
import os
import shlex
import sys
import tempfile

from mrcnn import cli, datasets, evaluate, files, images, splash, synthetic, utils
from mrcnn.errors import InputError

LAYER_CHOICES = ("heads", "3+", "4+", "5+", "all")
ALL_COMMANDS = ("train", "splash", "detect", "evaluate", "export", "check")
SHOWN_PROBLEMS = 5


class CommandError(InputError):
    """Bad input to a command: the message names the file or option and what to do."""


def timestamp():
    """The current time as ``YYYYmmddTHHMMSS``, for output file names."""
    return f"{datetime.datetime.now():%Y%m%dT%H%M%S}"


def augmentation():
    """Flips, small affine moves and lighting changes (albumentations)."""
    import albumentations as A

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.8, 1.2), rotate=(-15, 15), p=0.5),
        A.RandomBrightnessContrast(p=0.5),
    ])


def option_settings(args, config_class):
    """Config overrides given by --backbone, --image-size and --steps-per-epoch, and by
    --weights imagenet or none: heads that start untrained learn better with ROIAlign
    reading each box where its pixels are (ROI_ALIGN_BY_STRIDE; the COCO heads were
    trained with the original's sampling)."""
    settings = {}
    weights = getattr(args, "weights", None)
    if getattr(args, "backbone", None):
        settings["BACKBONE"] = args.backbone
    elif weights == "imagenet":
        settings["BACKBONE"] = "resnet50"  # the ImageNet file holds a ResNet50
    if weights in ("imagenet", "none"):
        settings["ROI_ALIGN_BY_STRIDE"] = True
    if getattr(args, "image_size", None):
        settings.update(IMAGE_MIN_DIM=args.image_size, IMAGE_MAX_DIM=args.image_size)
    steps = getattr(args, "steps_per_epoch", None)
    if steps:
        settings.update(STEPS_PER_EPOCH=steps,
                        VALIDATION_STEPS=min(steps, config_class.VALIDATION_STEPS))
    return settings


def load_weights(model, weights_path):
    """Load starting weights by name; say which class-specific heads start untrained."""
    if weights_path is None:
        return
    print(f"Loading weights {weights_path}")
    report = model.load_pretrained(weights_path)
    if report.skipped:
        print(f"  {', '.join(report.skipped)}: other class count in the file, left untrained")


def output_stems(paths):
    """{path: the stem of its output files}, each different from the others whatever the
    case (as on a case-insensitive disk): the file name without its extension; for files
    that share a stem (photo.jpg, photo.png) the name with the extension (photo_jpg,
    photo_png); then, if still taken, that with _2, _3, ... added."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    counts = collections.Counter(stem.casefold() for stem in stems)
    chosen, taken = {}, set()
    for path, stem in zip(paths, stems):
        base = os.path.basename(path).replace(".", "_") if counts[stem.casefold()] > 1 else stem
        candidate, number = base, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{base}_{number}"
        taken.add(candidate.casefold())
        chosen[path] = candidate
    return chosen


def print_last_checkpoint(model):
    """Print the newest checkpoint of a trained model's runs; on the chief only (the other
    workers of a cluster write none)."""
    from mrcnn import distribute

    if distribute.is_chief(model.strategy):
        print(f"Last checkpoint: {model.find_last()}")


def add_model_options(parser, weights_default, weights_help, logs_dir, option="--weights"):
    """--weights (or another name for it, e.g. the COCO sample's --model), --logs,
    --backbone, --image-size, --threads and --debug."""
    parser.add_argument(option, dest="weights", default=weights_default, metavar="WEIGHTS",
                        help=weights_help)
    parser.add_argument("--logs", default=logs_dir, metavar="DIR",
                        help="folder of the training runs and checkpoints (default: %(default)s)")
    parser.add_argument("--backbone", choices=("resnet50", "resnet101"),
                        help="backbone network (default: the checkpoint's; resnet101 for coco, "
                             "resnet50 for imagenet and the synthetic demo)")
    parser.add_argument("--image-size", type=cli.image_size, metavar="PIXELS",
                        help="resize images to PIXELS x PIXELS, a multiple of 64 up to "
                             f"{cli.MAX_IMAGE_SIZE} (default: the checkpoint's, else the "
                             "configuration's, or 128 for the synthetic demo; smaller is faster "
                             "on CPU)")
    parser.add_argument("--threads", type=cli.positive_int, metavar="N",
                        help="CPU threads of one TensorFlow operation (default: every core "
                             "this process may use; see mrcnn.threads)")
    cli.add_debug_option(parser)


def machine_settings(args):
    """Config.CPU_THREADS and DATA_WORKERS given by --threads and --workers: settings of this
    machine, not of the run (runs.save_run_settings leaves them out)."""
    options = {"CPU_THREADS": "threads", "DATA_WORKERS": "workers"}
    return {name: getattr(args, option) for name, option in options.items()
            if getattr(args, option, None)}


def add_training_options(parser, default_epochs, steps_per_epoch):
    """--epochs and --steps-per-epoch, with their defaults as text, --strategy and --workers."""
    parser.add_argument("--epochs", type=cli.positive_int, metavar="N",
                        help=f"train up to epoch N (default: {default_epochs})")
    parser.add_argument("--steps-per-epoch", type=cli.positive_int, metavar="N",
                        help=f"training steps per epoch (default: {steps_per_epoch})")
    parser.add_argument("--strategy", choices=("mirrored", "multiworker"),
                        help="tf.distribute strategy: mirrored trains on every GPU of this "
                             "machine; multiworker on the machines TF_CONFIG lists (run the "
                             "command on each); default: one device")
    parser.add_argument("--workers", type=cli.positive_int, metavar="N",
                        help="threads that build training batches ahead of the step "
                             "(default: 1 on up to 4 cores, more above; see mrcnn.threads)")


def check_dataset_folder(dataset_dir):
    """``dataset_dir``, after checking that it is a folder."""
    if not os.path.isdir(dataset_dir):
        what = "not a folder" if os.path.lexists(dataset_dir) else "no such dataset folder"
        raise CommandError(f"--dataset {dataset_dir}: {what}. Give the folder that holds "
                           "train/ and val/.")
    return dataset_dir


def check_export_output(path, format):
    """Raise an InputError unless ``--output`` can take an export of ``format``.

    A SavedModel is a folder, a TFLite model a file; an earlier export there is
    replaced once the new one is complete, anything else refused
    (``export.check_export_path``). Their parent folder is checked like any
    output folder.
    """
    from mrcnn import export

    try:
        export.check_export_path(os.path.abspath(path), format)
    except export.ExportError as error:
        raise CommandError(f"--output {error}") from None
    files.check_output_folder(os.path.dirname(os.path.abspath(path)), "--output")


@dataclasses.dataclass
class SampleCommands:
    """The command line of a sample that trains on a dataset folder.

    Attributes:
        prog: the script's name, e.g. "balloon.py".
        config_class: its ``Config`` subclass (NAME names the runs and
            checkpoints).
        dataset_class: its ``datasets.FolderDataset`` subclass.
        logs_dir: default folder of the training runs.
        description: one line for ``--help``.
        default_epochs: epochs of ``train`` without ``--epochs``.
        default_layers: the layers ``train`` trains from pretrained weights
            without ``--layers`` (a ``training.LAYER_REGEX`` key); default:
            the transfer schedule (heads, then all layers).
        synthetic_demo: without ``--dataset`` (or ``--image``), use the
            synthetic pikachu dataset (``synthetic.demo_dataset``) and its
            settings, as the pikachu sample's offline demo does.
        read_settings: ``f(weights_path) -> runs.RunSettings or None``, e.g.
            one that also reads an older settings file; default
            ``runs.load_run_settings``.
        commands: the commands to offer, a subset of ALL_COMMANDS.
        weights_option: the option that names the weights (the COCO sample's
            ``--model``), for messages.
    """

    prog: str
    config_class: type
    dataset_class: type
    logs_dir: str
    description: str
    default_epochs: int = 30
    default_layers: str = None
    synthetic_demo: bool = False
    read_settings: object = None
    commands: tuple = ALL_COMMANDS
    weights_option: str = "--weights"

    # Settings and models --------------------------------------------------

    def checkpoint_settings(self, weights_path):
        """The ``runs.RunSettings`` of a checkpoint, or None (a file not written by training).

        Raises:
            ConfigError: settings that cannot be read or used with
                ``config_class``; the message names their file.
        """
        from mrcnn import runs

        if weights_path is None:
            return None
        settings = (self.read_settings or runs.load_run_settings)(weights_path)
        if settings is not None:
            settings.to_config(self.config_class)  # ConfigError naming the file
        return settings

    def make_config(self, settings, class_count, inference=False):
        """A ``config_class`` with ``settings`` and ``class_count`` object classes."""
        values = dict(settings, NUM_CLASSES=1 + class_count)
        if inference:
            values.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
        try:
            return self.config_class.from_dict(values)
        except InputError as error:
            raise CommandError(f"{error} (options --backbone, --image-size)") from None

    def dataset_folder(self, args):
        """``--dataset``, or the synthetic dataset (generated once) when the sample has the
        demo and the option is not given."""
        if args.dataset is None and self.synthetic_demo:
            return check_dataset_folder(synthetic.demo_dataset())
        return check_dataset_folder(args.dataset)

    def load_subset(self, args, dataset_dir, subset, class_attribute=None, class_names=None):
        """A prepared ``dataset_class`` of one subset, with its summary and problems printed.

        Raises:
            CommandError: the subset has no annotated image.
        """
        dataset = self.dataset_class()
        dataset.load_subset(dataset_dir, subset, class_attribute=class_attribute,
                            class_names=class_names, follow_links=args.follow_links)
        dataset.prepare()
        print(dataset.summary())
        for problem in dataset.problems[:SHOWN_PROBLEMS]:
            print(f"  warning: {problem}")
        if len(dataset.problems) > SHOWN_PROBLEMS:
            print(f"  ... {len(dataset.problems) - SHOWN_PROBLEMS} more; run "
                  f"`{self.prog} check` for the full list")
        if not dataset.num_images:
            if class_names:   # the training subset's or the model's classes
                raise CommandError(
                    f"{dataset.subset_dir}: no annotated image of the classes "
                    f"{', '.join(class_names)} to use; the warnings above say why (a region "
                    f"of another class needs a model trained on it). Run `{self.prog} check` "
                    "for all the problems of the folder.")
            raise CommandError(f"{dataset.subset_dir}: no annotated image to use. Run "
                               f"`{self.prog} check` to see why.")
        return dataset

    def starting_weights(self, args, downloads=True):
        """The weights file ``args.weights`` names (``runs.resolve_weights``), or None.

        Commands that load a dataset call it with ``downloads=False`` first, so that
        a missing or damaged file is reported before the dataset is read; then, once
        the dataset is read, again for a choice that may need a download
        (``runs.DOWNLOADED_WEIGHTS``), so that a dataset's problem is not behind it.
        ``downloads=False`` gives None for those.
        """
        from mrcnn import runs

        if not downloads and args.weights in runs.DOWNLOADED_WEIGHTS:
            return None
        return runs.resolve_weights(args.weights, args.logs, self.config_class.NAME,
                                    self.weights_option)

    def training_model(self, args, weights_path, class_names, base_settings=None):
        """MaskRCNN in training mode with its starting weights.

        ``weights_path`` is ``starting_weights(args)``; with ``--weights last`` it
        resumes that run with all its settings (its classes must be
        ``class_names``), another checkpoint of this project brings its
        architecture; then ``base_settings`` and the options
        (``option_settings``) apply. Prints the configuration. The model's
        ``pretrained`` says whether the run starts (or started) from weights.
        """
        from mrcnn import model as modellib

        resume = args.weights == "last"
        saved = self.checkpoint_settings(weights_path)
        if resume and saved and saved.class_names != list(class_names):
            raise CommandError(
                f"{self.weights_option} last: {weights_path} was trained on the classes "
                f"{', '.join(saved.class_names)} and the dataset has {', '.join(class_names)}, "
                f"so its run cannot go on. Start a new run from it: {self.weights_option} "
                f"{weights_path}")
        options = option_settings(args, self.config_class)
        changes = saved.architecture_changes(options) if resume and saved else {}
        if changes:
            raise CommandError(
                f"{self.weights_option} last: {weights_path} was trained with " +
                ", ".join(f"{key} {old!r}" for key, (old, _) in changes.items()) +
                "; the options ask for " +
                ", ".join(f"{key} {new!r}" for key, (_, new) in changes.items()) +
                ", another network, so its run cannot go on. Drop those options to resume it, "
                f"or start a new run from it: {self.weights_option} {weights_path}")
        settings = dict(base_settings or {})
        if saved:
            settings.update(saved.config if resume else saved.architecture())
        settings.update(options)
        if args.strategy == "mirrored":
            settings["GPU_COUNT"] = max(1, len(cli.import_tensorflow_quietly().config
                                               .list_physical_devices("GPU")))
        config = self.make_config(dict(settings, **machine_settings(args)), len(class_names))
        config.display()
        model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs,
                                  strategy=args.strategy)
        if resume:
            print(f"Resuming {model.resume(weights_path)}")
        else:
            load_weights(model, weights_path)
        return model

    def inference_settings(self, args, class_names=None, settings=None):
        """(config settings, class names without "BG", weights path) of an inference command.

        The classes and settings are the checkpoint's when it has run
        settings; otherwise ``class_names`` (default: ``[DEFAULT_CLASS]``) and
        the configuration's. ``settings`` (e.g. a lower
        DETECTION_MIN_CONFIDENCE for evaluation) and the options (--threads
        included) apply last;
        settings that cannot work fail now, before any model is built.
        """
        from mrcnn import runs

        weights_path = runs.resolve_weights(args.weights, args.logs, self.config_class.NAME,
                                            self.weights_option)
        saved = self.checkpoint_settings(weights_path)
        values = dict(saved.config) if saved else {}
        class_names = saved.class_names if saved else (
            list(class_names or [self.dataset_class.DEFAULT_CLASS]))
        values.update(settings or {})
        values.update(option_settings(args, self.config_class))
        values.update(machine_settings(args))
        self.make_config(values, len(class_names), inference=True)
        return values, class_names, weights_path

    def inference_model(self, settings, class_names, weights_path, logs):
        """MaskRCNN in inference mode with its weights (``inference_settings``'s values)."""
        from mrcnn import model as modellib

        config = self.make_config(settings, len(class_names), inference=True)
        model = modellib.MaskRCNN(mode="inference", config=config, model_dir=logs)
        if weights_path is None:
            print("warning: --weights none: the model has random weights, so its detections "
                  "mean nothing. Give --weights last or a trained weights file.")
        load_weights(model, weights_path)
        return model

    def resumed_stages(self, args, model):
        """The stages left of the run ``--weights last`` resumes: its own schedule, to
        ``--epochs`` when given (``training.continued_schedule``). None for a new run,
        with ``--layers``, or for a run whose settings hold no schedule."""
        from mrcnn.training import continued_schedule

        if args.weights != "last" or getattr(args, "layers", None) or not model.schedule:
            return None
        return continued_schedule(model.schedule, args.epochs)

    def schedule(self, epochs, learning_rate, layers=None, pretrained=True):
        """The stages of ``train``: ``layers`` if given, else ``default_layers`` from
        pretrained weights, else ``training.transfer_schedule``'s."""
        from mrcnn.training import transfer_schedule

        layers = layers or (self.default_layers if pretrained else None)
        return transfer_schedule(epochs, learning_rate, layers, pretrained=pretrained)

    def demo_image(self):
        """The first test image of the synthetic dataset."""
        test_dir = os.path.join(synthetic.demo_dataset(), "test")
        return os.path.join(test_dir, sorted(os.listdir(test_dir))[0])

    # Commands -------------------------------------------------------------

    def train(self, args):
        demo = args.dataset is None
        files.check_output_folder(args.logs, "--logs")
        args.weights = args.weights or ("none" if demo else "coco")
        weights_path = self.starting_weights(args, downloads=False)
        dataset_dir = self.dataset_folder(args)
        train_set = self.load_subset(args, dataset_dir, "train", args.class_attribute)
        class_names = train_set.class_names[1:]
        val_set = self.load_subset(args, dataset_dir, "val", train_set.class_attribute,
                                   class_names)
        weights_path = weights_path or self.starting_weights(args)
        model = self.training_model(args, weights_path, class_names,
                                    synthetic.DEMO_SETTINGS if demo else None)
        stages = self.resumed_stages(args, model) or self.schedule(
            args.epochs or (synthetic.DEMO_EPOCHS if demo else self.default_epochs),
            model.config.LEARNING_RATE, args.layers, pretrained=model.pretrained)
        if model.epoch >= stages[-1].epochs:
            print(f"{weights_path} is the checkpoint of epoch {model.epoch}: the run is done "
                  f"up to epoch {stages[-1].epochs}. Give more --epochs to train it further.")
            return 0
        try:
            model.train_schedule(train_set, val_set, stages,
                                 augmentation=augmentation() if args.augment else None)
        except KeyboardInterrupt:
            from mrcnn import distribute

            if distribute.is_chief(model.strategy):
                # On a line of its own, after Keras's progress bar.
                print(f"\n{self.interrupted_training_note(model)}", file=sys.stderr)
            raise
        print_last_checkpoint(model)
        return 0

    def interrupted_training_note(self, model):
        """What a train command stopped by Ctrl-C kept: the checkpoint that ``--weights last``
        continues from (the run's newest, if its run is the newest in the model's
        ``model_dir``, the --logs folder), the folder of the run's checkpoints otherwise, or
        that the run kept none."""
        from mrcnn import runs

        folder = model.run_folder
        if folder is None or not runs.has_checkpoint(folder):
            return "Training stopped before the run's first checkpoint: it kept nothing."
        try:
            newest = model.find_last()
        except FileNotFoundError:
            newest = None
        if newest and os.path.samefile(os.path.dirname(newest), folder):
            command = (f"{self.prog} train {self.weights_option} last "
                       f"--logs {shlex.quote(model.model_dir)}")
            return (f"Training stopped; the checkpoint of epoch "
                    f"{runs.epoch_from_checkpoint(newest)} is kept ({newest}): `{command}` "
                    "continues from it.")
        return f"Training stopped; the run's checkpoints are kept in {folder}."

    def splash(self, args):
        files.check_output_folder(args.output, "--output")
        with tempfile.TemporaryDirectory(prefix="mrcnn-downloads-") as downloads:
            if args.video:
                splash.check_video(args.video)
            paths = images.image_files(args.image, downloads) if args.image else []
            settings = self.inference_settings(args)
            if not (args.image or args.video):
                paths = images.image_files(self.demo_image())
            model = self.inference_model(*settings, args.logs)
            stamp = timestamp()
            with files.staged_outputs(args.output) as staging:
                if args.video:
                    name = f"splash_{stamp}.mp4"
                    frames = splash.splash_video(model, args.video, os.path.join(staging, name))
                    print(f"{args.video}: {frames} frames -> {os.path.join(args.output, name)}")
                stems = output_stems(paths)
                for path in paths:
                    image = utils.read_image(path)
                    picture, result = splash.splash_image(model, image)
                    name = f"splash_{stamp}.png" if len(paths) == 1 else \
                        f"splash_{stamp}_{stems[path]}.png"
                    splash.save_image(os.path.join(staging, name), picture)
                    print(f"{path}: {len(result['class_ids'])} instance(s) -> "
                          f"{os.path.join(args.output, name)}")
        return 0

    def detect(self, args):
        import matplotlib.pyplot as plt

        from mrcnn import visualize

        files.check_output_folder(args.output, "--output")
        with tempfile.TemporaryDirectory(prefix="mrcnn-downloads-") as downloads:
            paths = images.image_files(args.image, downloads) if args.image else []
            settings, class_names, weights_path = self.inference_settings(args)
            paths = paths or images.image_files(self.demo_image())
            model = self.inference_model(settings, class_names, weights_path, args.logs)
            class_names = ["BG"] + class_names
            records = []
            with files.staged_outputs(args.output) as staging:
                stems = output_stems(paths)
                for path in paths:
                    image = utils.read_image(path)
                    r = model.detect([image], verbose=0)[0]
                    name = f"{stems[path]}_detections.png"
                    figure = visualize.display_instances(
                        image, r["rois"], r["masks"], r["class_ids"], class_names, r["scores"],
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

    def evaluate(self, args):
        files.check_output_folder(args.output, "--output")
        dataset_dir = self.dataset_folder(args)
        settings, class_names, weights_path = self.inference_settings(args)
        dataset = self.load_subset(args, dataset_dir, args.subset, args.class_attribute,
                                   class_names)
        model = self.inference_model(settings, class_names, weights_path, args.logs)
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

    def export(self, args):
        check_export_output(args.output, args.format)
        settings, class_names, weights_path = self.inference_settings(args)
        model = self.inference_model(settings, class_names, weights_path, args.logs)
        print(model.export(args.output, class_names=["BG"] + class_names, format=args.format))
        return 0

    def check(self, args):
        problems = datasets.check_dataset(args.dataset, class_attribute=args.class_attribute,
                                          default_class=self.dataset_class.DEFAULT_CLASS,
                                          follow_links=args.follow_links)
        for problem in problems:
            print(problem)
        if problems:
            print(f"{len(problems)} problem(s) found in {args.dataset}.")
            return 1
        print(f"{args.dataset}: no problem found.")
        return 0

    # Command line ---------------------------------------------------------

    def build_parser(self):
        """The parser of the sample's commands (a ``cli.ArgumentParser``)."""
        parser = cli.ArgumentParser(
            prog=self.prog, description=self.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=f"Run `{self.prog} COMMAND --help` for each command's options. Exit status: "
                   "0 success, 1 `check` found problems (or an unexpected error, whose report "
                   "file is named), 2 bad input (one error line naming the file or option and "
                   "the fix). --debug shows tracebacks and TensorFlow's start-up log.")
        commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for name in self.commands:
            getattr(self, f"_add_{name}")(commands)
        return parser

    def main(self, argv=None):
        """Run a command; its exit status: 0 success, 1 `check` found problems (or a bug, with a
        report file), 2 bad input (one error line), 130 interrupted. See mrcnn.cli."""
        return cli.run(self.build_parser(), argv)

    def _dataset_help(self, what):
        default = " (default: the synthetic dataset)" if self.synthetic_demo else ""
        return f"{what}, each holding its images and their VIA or COCO annotation file{default}"

    def _dataset_options(self, parser):
        parser.add_argument("--class-attribute", metavar="NAME",
                            help="VIA region attribute that names the class (default: the only "
                                 "text attribute; without one, every region is a "
                                 f"{self.dataset_class.DEFAULT_CLASS}); COCO categories name "
                                 "the classes")
        parser.add_argument("--follow-links", action="store_true",
                            help="accept image and annotation files that are symbolic links to "
                                 "files outside their subset folder (refused by default)")

    def _inference_options(self, parser, output, what):
        """--weights (default last), --logs, --backbone, --image-size, --debug, and --output:
        the folder for ``what`` (default ``output``)."""
        add_model_options(parser, "last", "weights: last (newest checkpoint under --logs, the "
                                          "default), coco, imagenet, none or the path of a .h5 "
                                          "file", self.logs_dir)
        parser.add_argument("--output", default=output, metavar="DIR",
                            help=f"folder for {what} (default: %(default)s)")

    def _add_train(self, commands):
        demo = self.synthetic_demo
        parser = commands.add_parser(
            "train",
            help="train on a dataset folder" + (" (or the synthetic demo)" if demo else ""),
            description="Train on DIR/train, validating on DIR/val." + (
                " Without --dataset, generate the synthetic pikachu dataset and train a small "
                "CPU model on it in a few minutes." if demo else ""))
        parser.add_argument("--dataset", metavar="DIR", required=not demo,
                            help=self._dataset_help("folder with train/ and val/"))
        add_model_options(parser, None, "starting weights: coco (default; downloaded once), "
                                        "imagenet, last (resume the newest run), none (from "
                                        "scratch" + (", the synthetic demo's default" if demo
                                                     else "") + ") or the path of a .h5 file (a "
                                        "new run starts from it; a checkpoint of this project "
                                        "brings its architecture, only the classes change)",
                          self.logs_dir)
        add_training_options(
            parser, f"{self.default_epochs}" + (
                f", or {synthetic.DEMO_EPOCHS} for the synthetic demo" if demo else ""),
            f"{self.config_class.STEPS_PER_EPOCH}" + (
                f", or {synthetic.DEMO_SETTINGS['STEPS_PER_EPOCH']} for the synthetic demo"
                if demo else ""))
        default = (f"{self.default_layers}" if self.default_layers else
                   "the heads for the first half of the epochs, then all layers at a tenth of "
                   "the learning rate")
        parser.add_argument("--layers", choices=LAYER_CHOICES,
                            help=f"layers to train (default: {default}; all layers with "
                                 "--weights none)")
        parser.add_argument("--augment", action="store_true",
                            help="augment training images (flips, small affine moves, lighting)")
        self._dataset_options(parser)
        parser.set_defaults(run=self.train, tensorflow=True)

    def _image_help(self):
        default = " (default: a test image of the synthetic dataset)" if self.synthetic_demo \
            else ""
        return f"image file, folder of images or http(s) URL{default}"

    def _add_splash(self, commands):
        parser = commands.add_parser(
            "splash", help="color splash: grayscale picture, color kept on the detected objects",
            description="Write splash_<timestamp>.png (or .mp4 for --video) into --output and "
                        "print its path.")
        source = parser.add_mutually_exclusive_group(required=not self.synthetic_demo)
        source.add_argument("--image", metavar="PATH|URL", help=self._image_help())
        source.add_argument("--video", metavar="FILE", help="video file (MP4, AVI, ...)")
        self._inference_options(parser, ".", "the splash files")
        parser.set_defaults(run=self.splash, tensorflow=True)

    def _add_detect(self, commands):
        parser = commands.add_parser(
            "detect", help="pictures with masks, boxes and scores, and a JSON of the detections",
            description="For each image write <name>_detections.png, and write detections.json "
                        "with boxes [y1, x1, y2, x2], class names, scores and COCO RLE masks.")
        parser.add_argument("--image", metavar="PATH|URL", required=not self.synthetic_demo,
                            help=self._image_help())
        self._inference_options(parser, "detections", "the pictures and detections.json")
        parser.set_defaults(run=self.detect, tensorflow=True)

    def _add_evaluate(self, commands):
        parser = commands.add_parser(
            "evaluate", help="mAP@0.5 and mAP@[.5:.95] on a subset",
            description="Detect on DIR/SUBSET and compare with its annotations: the original's "
                        "mAP@0.5 and mAP@[.5:.95] (mask IoU) and the COCO metrics; write the "
                        "per-image results as CSV and the precision-recall curve as PNG.")
        parser.add_argument("--dataset", metavar="DIR", required=not self.synthetic_demo,
                            help=self._dataset_help("dataset folder"))
        parser.add_argument("--subset", default="val", choices=("train", "val", "test"),
                            help="subset to evaluate (default: %(default)s)")
        parser.add_argument("--limit", type=cli.positive_int, metavar="N",
                            help="evaluate the first N images only")
        self._dataset_options(parser)
        self._inference_options(parser, "evaluation",
                                "the per-image CSV and the precision-recall PNG")
        parser.set_defaults(run=self.evaluate, tensorflow=True)

    def _add_export(self, commands):
        parser = commands.add_parser(
            "export", help="write the model for serving: a SavedModel folder or a TFLite file",
            description="Write a TensorFlow SavedModel (or a .tflite file) whose serving_default "
                        "signature takes one uint8 RGB image and returns boxes, class ids and "
                        "names, scores and full-size masks; it runs without mrcnn (TensorFlow "
                        "Serving, tf.saved_model.load). Prints the path.")
        add_model_options(parser, "last", "weights: last (newest checkpoint under --logs, the "
                                          "default), coco, imagenet, none or the path of a .h5 "
                                          "file", self.logs_dir)
        parser.add_argument("--output", required=True, metavar="PATH",
                            help="the SavedModel folder, e.g. export/pikachu/1 for TensorFlow "
                                 "Serving (replaced when complete), or the .tflite file")
        parser.add_argument("--format", default="saved_model", choices=("saved_model", "tflite"),
                            help="default: %(default)s")
        parser.set_defaults(run=self.export, tensorflow=True)

    def _add_check(self, commands):
        parser = commands.add_parser(
            "check", help="list the problems of a dataset folder before training",
            description="Validate a dataset folder (VIA or COCO annotations) as `train` reads "
                        "it and list every problem with its file: missing, unreadable, "
                        "truncated or too large images, files that are not regular files or "
                        "link out of their folder, malformed JSON, region fields of the wrong "
                        "type or range, regions outside the image or that cannot become masks, "
                        "unknown shapes, classes, images or categories (a validation class "
                        "that train lacks included), duplicate files, EXIF-rotated photos, "
                        "empty subsets. Exit status 0 when clean (train will load the dataset), "
                        "1 when problems were found, 2 for bad input.")
        parser.add_argument("--dataset", required=True, metavar="DIR",
                            help="folder with train/ and val/ (and optionally test/)")
        self._dataset_options(parser)
        cli.add_debug_option(parser)
        parser.set_defaults(run=self.check)
