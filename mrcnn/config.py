"""Mask R-CNN configuration.

Subclass :class:`Config` and override the attributes that differ for your
dataset, exactly as with the original implementation::

    class PikachuConfig(Config):
        NAME = "pikachu"
        NUM_CLASSES = 1 + 1
        STEPS_PER_EPOCH = 100

Every attribute and default of the original (matterport v2.1) is kept. The
derived attributes ``BATCH_SIZE``, ``IMAGE_SHAPE`` and ``IMAGE_META_SIZE`` are
computed in ``__init__``, which also validates the values and raises
:class:`ConfigError` with a message that says what to change. The class
count is checked where a model is built (``validate()``), so that ``Config()``
itself, whose ``NUM_CLASSES`` is a placeholder, can be created and displayed
as in the original.

``to_dict()`` and ``Config.from_dict()`` round-trip a configuration through
JSON; training saves it beside its checkpoints (see :mod:`mrcnn.runs`).
"""

import math

import numpy as np

from mrcnn.errors import InputError

BACKBONES = ("resnet50", "resnet101")
RESIZE_MODES = ("none", "square", "pad64", "crop")
# The five losses, in the order the training model outputs them.
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
              "mrcnn_mask_loss")
# Attributes computed from the others in __init__.
DERIVED_ATTRIBUTES = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE")
# Settings of the machine a run happens on, not of the run: not saved with it.
MACHINE_SETTINGS = ("CPU_THREADS", "CPU_INTER_OP_THREADS", "DATA_WORKERS")
# Settings that may be a function (a custom backbone), whatever their default.
CALLABLE_SETTINGS = ("BACKBONE", "COMPUTE_BACKBONE_SHAPE")
# Counts and sizes: Python or numpy integers (128.0 is not a layer size).
WHOLE_NUMBER_SETTINGS = (
    "NUM_CLASSES", "GPU_COUNT", "IMAGES_PER_GPU", "IMAGE_MIN_DIM", "IMAGE_MAX_DIM",
    "IMAGE_CHANNEL_COUNT", "STEPS_PER_EPOCH", "VALIDATION_STEPS", "PRE_NMS_LIMIT",
    "POST_NMS_ROIS_TRAINING", "POST_NMS_ROIS_INFERENCE", "RPN_TRAIN_ANCHORS_PER_IMAGE",
    "RPN_ANCHOR_STRIDE", "TRAIN_ROIS_PER_IMAGE", "MAX_GT_INSTANCES", "DETECTION_MAX_INSTANCES",
    "POOL_SIZE", "MASK_POOL_SIZE", "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE",
)


class ConfigError(InputError):
    """A configuration value that cannot work."""


class Config:
    """Base configuration class. Override the attributes you need to change."""

    # Name the configuration, e.g. "coco" or "pikachu". Used in checkpoint and
    # log folder names.
    NAME = None

    # Number of GPUs (replicas) to train with. Kept for compatibility; with
    # more than one, MaskRCNN.train uses tf.distribute.MirroredStrategy.
    GPU_COUNT = 1

    # Images per replica. BATCH_SIZE = IMAGES_PER_GPU * GPU_COUNT.
    IMAGES_PER_GPU = 2

    # Training steps per epoch and validation steps at the end of each epoch.
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50

    # Backbone: "resnet50", "resnet101", or a callable
    # ``backbone(input_image, stage5=True, train_bn=...) -> [C1, C2, C3, C4, C5]``.
    # A callable backbone also needs COMPUTE_BACKBONE_SHAPE.
    BACKBONE = "resnet101"

    # Only used with a callable BACKBONE: ``f(image_shape) -> [N, (height, width)]``
    # giving the shape of each pyramid level.
    COMPUTE_BACKBONE_SHAPE = None

    # Strides of the FPN pyramid levels P2..P6 (for the ResNet backbones).
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]

    # Size of the fully-connected layers in the classification graph.
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024

    # Number of channels of the top-down feature pyramid layers.
    TOP_DOWN_PYRAMID_SIZE = 256

    # Number of classification classes, including the background.
    NUM_CLASSES = 1

    # Side length of square anchors, in pixels, one per pyramid level.
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)

    # Anchor aspect ratios (width / height) at each cell.
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]

    # Anchor stride: 1 puts anchors at every cell of the feature map.
    RPN_ANCHOR_STRIDE = 1

    # Non-max suppression threshold to filter RPN proposals.
    RPN_NMS_THRESHOLD = 0.7

    # How many anchors per image to use for RPN training.
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256

    # ROIs kept after tf.nn.top_k and before non-maximum suppression.
    PRE_NMS_LIMIT = 6000

    # ROIs kept after non-maximum suppression (training and inference).
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000

    # Store instance masks resized to MINI_MASK_SHAPE inside their boxes to
    # save memory during training.
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)  # (height, width) of the mini-mask

    # Input image resizing, see transform.resize_image:
    #   none:   no resizing or padding; the image is used as it is.
    #   square: scale so the short side is IMAGE_MIN_DIM and the long side at
    #           most IMAGE_MAX_DIM, then pad to IMAGE_MAX_DIM x IMAGE_MAX_DIM.
    #   pad64:  pad width and height to multiples of 64 (no scaling unless
    #           IMAGE_MIN_DIM or IMAGE_MIN_SCALE asks for upscaling).
    #   crop:   pick random IMAGE_MIN_DIM x IMAGE_MIN_DIM crops (training only).
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    # Minimum scaling ratio, checked after IMAGE_MIN_DIM; 2 forces 2x upscaling.
    IMAGE_MIN_SCALE = 0

    # Number of color channels per image: 3 (RGB).
    IMAGE_CHANNEL_COUNT = 3

    # Image mean (RGB) subtracted by mold_image.
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])

    # ROIs per image fed to the classifier and mask heads during training.
    TRAIN_ROIS_PER_IMAGE = 200

    # Fraction of positive ROIs used to train the heads.
    ROI_POSITIVE_RATIO = 0.33

    # Output size of ROIAlign for the classifier and mask heads.
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14

    # Where ROIAlign reads a box on each pyramid level (layers.PyramidROIAlign).
    # False: the original's sampling, which the released COCO weights were
    # trained with; it reads the features of the box scaled towards the image's
    # top-left corner (by 3% on P5 of a 1024-pixel image, more on small images),
    # a shift that depends on where the box lies and that the heads cannot learn,
    # so their masks fit the objects less well. True: every box is read
    # where its pixels are (pixel / stride); better masks when training from
    # scratch (the synthetic demo uses it). Part of a checkpoint's architecture.
    ROI_ALIGN_BY_STRIDE = False

    # Shape of the mask head output. Changing it requires changing the head.
    MASK_SHAPE = [28, 28]

    # Maximum number of ground-truth instances per image.
    MAX_GT_INSTANCES = 100

    # Standard deviations of the RPN and final bounding-box refinements.
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    # Maximum number of final detections per image.
    DETECTION_MAX_INSTANCES = 100

    # Minimum probability to accept a detected instance.
    DETECTION_MIN_CONFIDENCE = 0.7

    # Non-maximum suppression threshold for detections (per class).
    DETECTION_NMS_THRESHOLD = 0.3

    # SGD learning rate and momentum.
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9

    # L2 weight decay applied to all kernels (not to BatchNorm gammas/betas).
    WEIGHT_DECAY = 0.0001

    # Weights of the five losses in the total loss.
    LOSS_WEIGHTS = dict.fromkeys(LOSS_NAMES, 1.)

    # Train the heads on ROIs from the RPN (True) or on ROIs given as an input.
    USE_RPN_ROIS = True

    # Train or freeze BatchNorm layers. None trains them (Keras default);
    # False (the default) freezes them, which suits small batches.
    TRAIN_BN = False

    # Gradient norm clipping.
    GRADIENT_CLIP_NORM = 5.0

    # CPU threads (see mrcnn.threads): TensorFlow's intra-op pool (the threads of one
    # operation), its inter-op pool (operations run at once) and the threads that build
    # training batches ahead of the step. None chooses each from the machine's cores.
    CPU_THREADS = None
    CPU_INTER_OP_THREADS = None
    DATA_WORKERS = None

    def __init__(self):
        """Check the kinds of the values, compute the derived attributes and validate."""
        self._check_kinds()
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT

        if self.IMAGE_RESIZE_MODE == "crop":
            self.IMAGE_SHAPE = np.array([self.IMAGE_MIN_DIM, self.IMAGE_MIN_DIM,
                                         self.IMAGE_CHANNEL_COUNT])
        else:
            self.IMAGE_SHAPE = np.array([self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM,
                                         self.IMAGE_CHANNEL_COUNT])

        # image_id (1) + original_image_shape (3) + image_shape (3)
        # + window (4) + scale (1) + active_class_ids (NUM_CLASSES)
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES
        self.validate(for_model=False)

    def _check_kinds(self):
        """Raise ConfigError for a setting of another kind than the base Config's default
        (text where a number belongs: ``_check_type``), or a count that is not an integer."""
        for name in dir(Config):
            if not name.isupper() or name in DERIVED_ATTRIBUTES:
                continue
            value = getattr(self, name)
            if name in CALLABLE_SETTINGS and callable(value):
                continue
            _check_type(name, value, getattr(Config, name))
            if name in WHOLE_NUMBER_SETTINGS and value is not None and not isinstance(
                    value, (int, np.integer)):
                raise ConfigError(f"{name} is {value!r}: it must be a whole number (an int), "
                                  f"like the default {getattr(Config, name)!r}.")

    def validate(self, for_model=True):
        """Raise ConfigError for values the model cannot work with.

        ``for_model=False`` (what ``__init__`` checks) leaves out the class
        count, which the base ``Config`` leaves at a placeholder of 1;
        ``MaskRCNN`` validates everything when it builds a model.
        """
        if for_model and (not isinstance(self.NUM_CLASSES, (int, np.integer))
                          or self.NUM_CLASSES < 2):
            raise ConfigError(
                f"NUM_CLASSES is {self.NUM_CLASSES!r}: it counts the background too, "
                "so it must be an integer >= 2 (e.g. NUM_CLASSES = 1 + 1 for one object class).")
        if not callable(self.BACKBONE) and self.BACKBONE not in BACKBONES:
            raise ConfigError(
                f"BACKBONE is {self.BACKBONE!r}: use one of {', '.join(BACKBONES)} "
                "or a callable backbone with COMPUTE_BACKBONE_SHAPE set.")
        if callable(self.BACKBONE) and not callable(self.COMPUTE_BACKBONE_SHAPE):
            raise ConfigError(
                "BACKBONE is a callable, so COMPUTE_BACKBONE_SHAPE must be a callable "
                "f(image_shape) -> [(height, width) per pyramid level].")
        if self.IMAGE_RESIZE_MODE not in RESIZE_MODES:
            raise ConfigError(
                f"IMAGE_RESIZE_MODE is {self.IMAGE_RESIZE_MODE!r}: use one of "
                f"{', '.join(RESIZE_MODES)}.")
        if self.IMAGE_RESIZE_MODE in ("square", "crop"):
            side = self.IMAGE_MAX_DIM if self.IMAGE_RESIZE_MODE == "square" else self.IMAGE_MIN_DIM
            name = "IMAGE_MAX_DIM" if self.IMAGE_RESIZE_MODE == "square" else "IMAGE_MIN_DIM"
            if side % 64:
                raise ConfigError(
                    f"{name} is {side}: it must be divisible by 64 (2^6) so that the "
                    f"image survives six halvings in the FPN; try {_multiple_of_64(side)}.")
        min_dim = self.IMAGE_MIN_DIM
        if self.IMAGE_RESIZE_MODE == "pad64" and (not min_dim or min_dim % 64):
            raise ConfigError(
                f'IMAGE_MIN_DIM is {min_dim}: IMAGE_RESIZE_MODE "pad64" scales images up to '
                "it and pads them to multiples of 64, and (as in the original) needs it "
                f"divisible by 64; try {_multiple_of_64(min_dim or self.IMAGE_MAX_DIM or 0)}.")
        if self.IMAGE_CHANNEL_COUNT < 1:
            raise ConfigError("IMAGE_CHANNEL_COUNT must be >= 1.")
        if len(np.atleast_1d(self.MEAN_PIXEL)) != self.IMAGE_CHANNEL_COUNT:
            raise ConfigError(
                f"MEAN_PIXEL has {len(np.atleast_1d(self.MEAN_PIXEL))} values but "
                f"IMAGE_CHANNEL_COUNT is {self.IMAGE_CHANNEL_COUNT}: give one mean per channel.")
        if self.GPU_COUNT < 1 or self.IMAGES_PER_GPU < 1:
            raise ConfigError("GPU_COUNT and IMAGES_PER_GPU must both be >= 1.")
        if self.BATCH_SIZE != self.IMAGES_PER_GPU * self.GPU_COUNT:
            raise ConfigError(
                f"BATCH_SIZE is {self.BATCH_SIZE!r} but IMAGES_PER_GPU x GPU_COUNT is "
                f"{self.IMAGES_PER_GPU * self.GPU_COUNT}: BATCH_SIZE is computed from them, so "
                "set IMAGES_PER_GPU (and GPU_COUNT) in the class instead.")
        if not callable(self.BACKBONE) and len(self.RPN_ANCHOR_SCALES) != len(self.BACKBONE_STRIDES):
            raise ConfigError(
                f"RPN_ANCHOR_SCALES has {len(self.RPN_ANCHOR_SCALES)} values but there are "
                f"{len(self.BACKBONE_STRIDES)} pyramid levels (BACKBONE_STRIDES): give one scale per level.")
        if not 0 < self.ROI_POSITIVE_RATIO <= 1:
            raise ConfigError("ROI_POSITIVE_RATIO must be in (0, 1].")
        if list(self.MASK_SHAPE) != [2 * self.MASK_POOL_SIZE] * 2:
            raise ConfigError(
                f"MASK_SHAPE {list(self.MASK_SHAPE)} must be twice MASK_POOL_SIZE "
                f"({self.MASK_POOL_SIZE}) in each dimension: the mask head upsamples once by 2.")
        for name in MACHINE_SETTINGS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ConfigError(f"{name} is {value!r}: give a number of threads >= 1, "
                                  "or None to choose it from the machine's cores.")
        unknown = set(self.LOSS_WEIGHTS) - set(LOSS_NAMES)
        if unknown:
            raise ConfigError(f"LOSS_WEIGHTS has unknown keys {sorted(unknown)}: use "
                              f"{', '.join(LOSS_NAMES)}.")

    def to_dict(self):
        """All upper-case attributes, derived ones included, sorted by name.

        numpy arrays become lists, so that the result (but for a callable
        BACKBONE or COMPUTE_BACKBONE_SHAPE) can be written as JSON.
        """
        return {name: _plain(getattr(self, name))
                for name in sorted(dir(self)) if name.isupper()}

    @classmethod
    def from_dict(cls, values, name="RestoredConfig"):
        """A configuration of this class with ``values`` (attribute -> value) set.

        The inverse of ``to_dict``: lists become numpy arrays or tuples where
        this class's default is one; derived attributes are recomputed, not
        taken from ``values``. A value of None for a callable setting (which
        JSON cannot hold) keeps this class's. ``Config.from_dict(d)`` rebuilds
        a saved configuration; ``PikachuConfig.from_dict({"IMAGE_MAX_DIM":
        512})`` overrides some settings of a subclass.

        Raises:
            ConfigError: an unknown attribute, a value of another type than
                the default's (text where a number belongs, NaN, ...), or a
                value that cannot work.
        """
        attributes = {}
        for key, value in values.items():
            if key in DERIVED_ATTRIBUTES:
                continue
            if not isinstance(key, str) or not key.isupper() or not hasattr(cls, key):
                raise ConfigError(f"Unknown configuration setting {key!r}: settings are the "
                                  "upper-case attributes of mrcnn.config.Config.")
            default = getattr(cls, key)
            if value is None and callable(default):
                continue
            _check_type(key, value, default)
            if isinstance(default, np.ndarray):
                value = np.array(value, dtype=default.dtype)
            elif isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            attributes[key] = value
        try:
            return type(name, (cls,), attributes)()
        except (TypeError, ValueError, ArithmeticError, IndexError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"These settings cannot work together ({error}); check the "
                              f"values of {', '.join(sorted(attributes))}.") from None

    def display(self):
        """Print the configuration values, one per line."""
        print("\nConfigurations:")
        for name, value in self.to_dict().items():
            print(f"{name:30} {value}")
        print("\n")


def _multiple_of_64(side):
    """The multiple of 64 nearest to ``side``, at least 64: a side to suggest."""
    return max(64, int(round(side / 64)) * 64)


def _is_number(value):
    if not isinstance(value, (int, float, np.number)) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _check_type(key, value, default):
    """Raise ConfigError unless ``value`` has the kind of ``default`` (None always passes)."""
    if value is None or default is None or callable(default):
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok, kind = _is_number(value), "a finite number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "text"
    elif isinstance(default, dict):
        ok, kind = (isinstance(value, dict) and all(map(_is_number, value.values())),
                    "a mapping of names to numbers")
    else:
        ok, kind = (isinstance(value, (list, tuple, np.ndarray)) and
                    all(map(_is_number, np.asarray(value, dtype=object).ravel())),
                    "a list of numbers")
    if not ok:
        raise ConfigError(f"{key} is {value!r}: it must be {kind}, like the default "
                          f"{_plain(default)!r}.")


def _plain(value):
    """numpy arrays and scalars as Python lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
