"""Training runs: their folders, checkpoints and settings.

Each call of ``MaskRCNN.train`` writes into one run folder,
``<model_dir>/<name><YYYYmmddTHHMM>/`` (the original's layout; a run that starts in the
same minute as another gets the seconds too, ``new_run_folder``)::

    logs/pikachu20260125T1530/
        mask_rcnn_pikachu_0001.h5    a checkpoint per epoch (Keras-2 layout, mrcnn.weights)
        run_settings.json            the configuration and class names of the run
        train/, validation/          TensorBoard logs

``run_settings.json`` lets any script rebuild the model of a checkpoint::

    settings = runs.load_run_settings("logs/pikachu20260125T1530/mask_rcnn_pikachu_0008.h5")
    config = settings.to_config(GPU_COUNT=1, IMAGES_PER_GPU=1)
    model = MaskRCNN("inference", config, "logs")
    settings.class_names                      # ["pikachu"]
"""

import dataclasses
import datetime
import json
import logging
import os
import re

import h5py

from mrcnn import files, weights
from mrcnn.config import MACHINE_SETTINGS, Config, ConfigError

LOG_DIR_TIME_FORMAT = "%Y%m%dT%H%M"
# The names a new run folder tries in turn (``new_run_folder``): each begins with the one
# before, so that sorted names stay in the order the runs began.
RUN_FOLDER_TIME_FORMATS = (LOG_DIR_TIME_FORMAT, "%Y%m%dT%H%M%S", "%Y%m%dT%H%M%S%f")
RUN_TIME_PATTERN = r"\d{8}T\d{4}(?:\d{2}(?:\d{6})?)?"
SETTINGS_FILE = "run_settings.json"
SETTINGS_VERSION = 1

# The settings that fix a model's weight shapes or what its weights mean: a
# model fine-tuned from a checkpoint keeps them (only the class count may
# change), since a different backbone, head width, anchor set, image size or
# normalization would make the checkpoint's weights useless.
ARCHITECTURE_SETTINGS = (
    "BACKBONE", "BACKBONE_STRIDES", "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE",
    "RPN_ANCHOR_SCALES", "RPN_ANCHOR_RATIOS", "RPN_ANCHOR_STRIDE", "RPN_BBOX_STD_DEV",
    "BBOX_STD_DEV", "POOL_SIZE", "MASK_POOL_SIZE", "MASK_SHAPE", "IMAGE_RESIZE_MODE",
    "IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "IMAGE_MIN_SCALE", "IMAGE_CHANNEL_COUNT", "MEAN_PIXEL",
    "TRAIN_BN", "ROI_ALIGN_BY_STRIDE",
)
# Of those, the ones that change what trained weights compute without changing their
# shapes: a model built with other values loads the checkpoint without an error and
# detects worse.
WEIGHT_MEANING_SETTINGS = (
    "RPN_ANCHOR_SCALES", "RPN_ANCHOR_STRIDE", "RPN_BBOX_STD_DEV", "BBOX_STD_DEV", "MEAN_PIXEL",
    "ROI_ALIGN_BY_STRIDE",
)

logger = logging.getLogger(__name__)


# Folders and checkpoints ---------------------------------------------------

def log_dir_name(name, now=None):
    """Folder of one training run: ``<name lowercased><YYYYmmddTHHMM>``, e.g.
    ``pikachu20260125T1530`` (the original's)."""
    now = now or datetime.datetime.now()
    return f"{name.lower()}{now:{LOG_DIR_TIME_FORMAT}}"


def new_run_folder(model_dir, name, now=None):
    """Create the folder of a new training run under ``model_dir``; return its path.

    The folder is ``log_dir_name``'s, or, when another run already has that one (it
    started in the same minute), the same name with the seconds, then the microseconds,
    appended (``pikachu20260125T153042``). It is created here, so no two runs share one.

    Raises:
        FileExistsError: all the names are taken.
    """
    now = now or datetime.datetime.now()
    os.makedirs(model_dir, exist_ok=True)
    for time_format in RUN_FOLDER_TIME_FORMATS:
        path = os.path.join(model_dir, f"{name.lower()}{now:{time_format}}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{path} already exists: another run started at the same moment. "
                          "Start this one again.")


def checkpoint_path_template(log_dir, name):
    """``<log_dir>/mask_rcnn_<name lowercased>_{epoch:04d}.h5``, the original's
    checkpoint names; format it with the 1-based epoch number."""
    return os.path.join(log_dir, f"mask_rcnn_{name.lower()}_{{epoch:04d}}.h5")


def find_last_checkpoint(model_dir, name):
    """The last complete checkpoint of the newest run of ``name`` under ``model_dir``.

    Runs are the folders ``<name><YYYYmmddTHHMM>`` (``log_dir_name``), newest
    first; in each, the files ``mask_rcnn_<name>_<epoch:04d>.h5`` from the
    highest epoch down. Files that do not open as HDF5 files of the Keras-2
    layout (an interrupted write, a partial copy) are skipped with a warning;
    temporary files never match the pattern.

    Raises:
        FileNotFoundError: no complete checkpoint; the message says where
            checkpoints are expected.
    """
    name = name.lower()
    run_pattern = re.compile(re.escape(name) + RUN_TIME_PATTERN)
    run_folders = sorted((entry for entry in _list_dir(model_dir) if run_pattern.fullmatch(entry)
                          and os.path.isdir(os.path.join(model_dir, entry))), reverse=True)
    for run in run_folders:
        for path in _checkpoints(os.path.join(model_dir, run), re.escape(name)):
            if weights.is_weights_file(path):
                return path
            logger.warning("Skipping %s: not a complete weights file", path)
    raise FileNotFoundError(
        f"No complete checkpoint of {name!r} under {model_dir}: expected "
        f"{os.path.join(model_dir, name + 'YYYYmmddTHHMM', f'mask_rcnn_{name}_0001.h5')} "
        "(written by training). Train first, or load another weights file.")


def has_checkpoint(log_dir):
    """Whether a run folder holds a checkpoint file (of any name, complete or not)."""
    return os.path.isdir(log_dir) and any(_checkpoints(log_dir, r"[\w-]+"))


def _checkpoints(run_dir, name_pattern):
    """Paths of the files ``mask_rcnn_<name>_<epoch>.h5`` in a run folder, last epoch first.

    ``name_pattern`` is a regular expression of the name (e.g. ``re.escape(name)``).
    """
    pattern = re.compile(rf"mask_rcnn_{name_pattern}_(\d{{4,}})\.h5")
    matches = sorted((match for match in map(pattern.fullmatch, os.listdir(run_dir)) if match),
                     key=lambda match: int(match.group(1)), reverse=True)
    return [os.path.join(run_dir, match.group(0)) for match in matches]


def _list_dir(model_dir):
    if not os.path.isdir(model_dir):
        what = "is not a folder" if os.path.lexists(model_dir) else "does not exist"
        raise FileNotFoundError(
            f"Model directory {model_dir} {what}: no checkpoints to resume from. "
            "Train first, or load another weights file.")
    return os.listdir(model_dir)


def epoch_from_checkpoint(path):
    """The epoch number in a checkpoint path, or None for other files.

    ``logs/pikachu20260125T1530/mask_rcnn_pikachu_0003.h5`` -> 3: three epochs
    were done, so training resumes with Keras ``initial_epoch=3`` (the 4th
    epoch, saved as ``..._0004.h5``) in the same log folder.
    """
    match = re.search(rf"[\w-]+{RUN_TIME_PATTERN}[/\\]mask_rcnn_[\w-]+_(\d{{4,}})\.h5$",
                      os.fspath(path))
    return int(match.group(1)) if match else None


# Settings ------------------------------------------------------------------

@dataclasses.dataclass
class RunSettings:
    """The configuration and class names a run was trained with.

    Attributes:
        config: ``Config.to_dict()`` of the training configuration, derived
            attributes included.
        class_names: the object classes, background excluded, in class-id
            order (class id 1 is ``class_names[0]``).
        path: the settings file read, or None.
        pretrained: whether the run started from a weights file (True) or from
            random weights (False), which decides its schedule's stages; None
            in the settings files that predate this record.
        schedule: the stages the run was started with (``MaskRCNN.train_schedule``),
            as [layers, epochs, learning_rate] lists, or None (a run of ``train``
            calls, or settings that predate this record).
    """

    config: dict
    class_names: list
    path: str = None
    pretrained: bool = None
    schedule: list = None

    def architecture(self):
        """The ``ARCHITECTURE_SETTINGS`` of the run, for a model fine-tuned from it."""
        return {key: self.config[key] for key in ARCHITECTURE_SETTINGS if key in self.config}

    def architecture_changes(self, settings):
        """The ``ARCHITECTURE_SETTINGS`` among ``settings`` (name -> value) whose values
        differ from the run's, as ``{name: (run's value, new value)}``. Lists and tuples
        of the same items are the same value."""
        return {key: (self.config.get(key), value) for key, value in settings.items()
                if key in ARCHITECTURE_SETTINGS and key in self.config
                and not same_setting(self.config[key], value)}

    def meaning_changes(self, config):
        """``architecture_changes`` of ``config`` (a Config) in ``WEIGHT_MEANING_SETTINGS``:
        what a model of that configuration would compute differently with the run's
        weights."""
        ours = config.to_dict()
        return self.architecture_changes({key: ours.get(key) for key in WEIGHT_MEANING_SETTINGS})

    def to_config(self, base=Config, **overrides):
        """The run's configuration, as an instance of a subclass of ``base``.

        ``overrides`` (attribute -> value) replace saved values, e.g.
        ``GPU_COUNT=1, IMAGES_PER_GPU=1`` for inference.
        """
        try:
            return base.from_dict({**self.config, **overrides})
        except ConfigError as error:
            raise ConfigError(f"{self.path or 'run settings'}: {error}") from None


def same_setting(a, b):
    """Whether two configuration values (``Config.to_dict()``'s, JSON's or an option's) are
    the same; a tuple is the list of its items."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def save_run_settings(log_dir, config, class_names, pretrained=None, schedule=None):
    """Write ``<log_dir>/run_settings.json`` (atomically); return its path.

    Args:
        log_dir: the run folder.
        config: the training ``Config``. Callable settings (a custom
            BACKBONE) cannot be saved: they are written as null and the
            rebuilding script must supply them. The thread counts
            (``config.MACHINE_SETTINGS``) belong to the machine, not the
            run: they are not saved.
        class_names: the object classes without the background, e.g.
            ``dataset.class_names[1:]``.
        pretrained: whether the run started from a weights file (``RunSettings.pretrained``).
        schedule: the run's stages, (layers, epochs, learning_rate) each, or None.
    """
    values = {key: (None if callable(value) else value) for key, value in config.to_dict().items()
              if key not in MACHINE_SETTINGS}
    data = {"version": SETTINGS_VERSION, "config": values, "class_names": list(class_names),
            "pretrained": pretrained,
            "schedule": None if schedule is None else [list(stage) for stage in schedule]}
    return files.write_json(os.path.join(log_dir, SETTINGS_FILE), data)


def load_run_settings(weights_path):
    """The ``RunSettings`` saved beside a checkpoint, or None when there are none.

    Args:
        weights_path: a checkpoint; its folder is searched for
            ``run_settings.json``.

    Raises:
        ConfigError: a settings file that cannot be read; the message names it.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(weights_path)), SETTINGS_FILE)
    return read_settings(path) if os.path.lexists(path) else None


def read_settings(path):
    """The ``RunSettings`` of a settings file ``{"config": {...}, "class_names": [...]}``.

    Raises:
        ConfigError: not a regular file, malformed JSON, no ``config``
            object or no non-empty ``class_names`` list of text; the message
            names the file.
    """
    try:
        files.regular_file(path, what="run settings file")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        config, class_names = data["config"], data["class_names"]
        if not isinstance(config, dict):
            raise TypeError("'config' is not an object")
        if not (isinstance(class_names, list) and class_names and
                all(isinstance(name, str) and name for name in class_names)):
            raise TypeError("'class_names' is not a list of class names")
        pretrained = data.get("pretrained")
        if pretrained not in (True, False, None):
            raise TypeError("'pretrained' is not true, false or null")
        schedule = data.get("schedule")
        if schedule is not None and not (isinstance(schedule, list) and schedule and all(
                isinstance(stage, list) and len(stage) == 3 and isinstance(stage[0], str)
                and isinstance(stage[1], int) and not isinstance(stage[1], bool)
                and isinstance(stage[2], (int, float)) and not isinstance(stage[2], bool)
                for stage in schedule)):
            raise TypeError("'schedule' is not a list of [layers, epochs, learning rate] stages")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        reason = str(error).removeprefix(f"{path}: ").rstrip(".")
        raise ConfigError(f"{path}: cannot read the run settings ({reason}). Restore the file "
                          "written by training, or delete it to use the default "
                          "configuration.") from None
    config = dict(config)
    # Runs saved before ROI_ALIGN_BY_STRIDE existed read their ROIs the original's way; a
    # resumed demo or a run fine-tuned from one must not take today's default instead.
    config.setdefault("ROI_ALIGN_BY_STRIDE", False)
    return RunSettings(config, list(class_names), path, pretrained, schedule)


# Starting weights ----------------------------------------------------------

WEIGHTS_CHOICES = ("coco", "imagenet", "last", "none")
DOWNLOADED_WEIGHTS = ("coco", "imagenet")   # the choices that may need a download


def resolve_weights(choice, model_dir, name, option="--weights"):
    """The weights file a run starts from, as the command lines name it.

    Args:
        choice: "coco" (the original's mask_rcnn_coco.h5, downloaded once),
            "imagenet" (ResNet50 ImageNet weights, downloaded once), "last"
            (the newest complete checkpoint of ``name`` under ``model_dir``),
            "none" (random weights), or the path of a .h5 weights file.
        model_dir: folder of the training runs (for "last").
        name: the configuration's NAME (for "last").
        option: the command-line option that gave ``choice``, for messages.

    Returns:
        The file's absolute path, or None for "none".

    Raises:
        weights.WeightsError: the file does not exist, is not a regular file
            or not a weights file of the Keras-2 layout, is damaged
            (``weights.check_weights_file``), cannot be downloaded, or there
            is no checkpoint; the message says what to do.
    """
    if choice == "none":
        return None
    if choice in DOWNLOADED_WEIGHTS:
        try:
            path = os.path.abspath(weights.get_coco_weights() if choice == "coco"
                                   else weights.get_imagenet_weights())
        except weights.DownloadError as error:
            raise weights.WeightsError(f"{option}={choice}: {error}") from None
        weights.check_weights_file(path)
        return path
    if choice == "last":
        try:
            path = find_last_checkpoint(model_dir, name)
        except FileNotFoundError as error:
            raise weights.WeightsError(f"{option}=last: {error}") from None
        weights.check_weights_file(path)
        return path
    try:
        files.regular_file(choice, what="weights file")
    except files.FileError as error:
        raise weights.WeightsError(f"{choice}: {error.reason}. Give a .h5 weights file, or one "
                                   f"of {', '.join(WEIGHTS_CHOICES)}.") from None
    if not h5py.is_hdf5(choice):
        raise weights.WeightsError(
            f"{choice}: not a Keras HDF5 weights file (a Mask R-CNN .h5 with layer_names). "
            "Give a checkpoint written by training, the original's mask_rcnn_coco.h5, or "
            "--weights coco.")
    weights.check_weights_file(choice)
    return os.path.abspath(choice)
