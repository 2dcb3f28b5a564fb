"""Export a model for serving: a TensorFlow SavedModel or a TFLite file.

``export(model, path)`` writes a SavedModel whose ``serving_default``
signature takes one image and returns what ``MaskRCNN.detect()`` returns for
it, plus the class names. Everything ``detect()`` does in numpy runs inside
the exported graph, so TensorFlow Serving, ``tf.saved_model.load`` or the
TFLite interpreter run it without ``mrcnn`` (or Keras) installed:

1. the image is checked and made RGB (``rgb_image_graph``);
2. it is resized and padded as ``transform.resize_image`` does it
   (``mold_image_graph``: the same bilinear sampling as scikit-image, the
   same rounding of the new size, the same padding), and the mean pixel is
   subtracted;
3. the image meta and the anchors of the molded shape are computed in the
   graph, and the Keras inference graph runs;
4. the detections are mapped back to the input image and each 28x28 mask is
   resized into its box and pasted into a full-size mask, as
   ``MaskRCNN.unmold_detections`` does (``unmold_detections_graph``).

Signature (``serving_default``), for an input image of H x W pixels and N
detections:

====================  ================  =======  ===========================================
name                  shape             dtype    meaning
====================  ================  =======  ===========================================
``image`` (input)     [H, W, C] / [H, W] uint8   RGB (C=3); C=1 gray, C=2 gray+alpha and
                                                 C=4 RGBA are converted as
                                                 ``utils.to_rgb8`` does
``rois``              [N, 4]            int32    (y1, x1, y2, x2) pixels, y2/x2 exclusive
``class_ids``         [N]               int32    class of each instance (never 0)
``class_names``       [N]               string   name of each class id
``scores``            [N]               float32  confidence, best first
``masks``             [H, W, N]         bool     one full-image mask per instance
====================  ================  =======  ===========================================

An image that is empty, of another rank or with more than 4 channels gets an
``InvalidArgumentError`` that says what was expected; another dtype than
uint8 is refused by the signature itself.
"""

import contextlib
import os
import tempfile

import numpy as np
import tensorflow as tf

from mrcnn import files
from mrcnn.config import DERIVED_ATTRIBUTES
from mrcnn.errors import InputError
from mrcnn.layers import DetectionLayer, PyramidROIAlign, mrcnn_convolutions
from mrcnn.transform import compose_image_meta

FORMATS = ("saved_model", "tflite")
EXPORTED_RESIZE_MODES = ("square", "pad64")


class ExportError(InputError):
    """A model or an argument that cannot be exported; the message says what to change."""


# What tf.saved_model.save writes in a SavedModel folder (Keras 2 added keras_metadata.pb).
SAVED_MODEL_ENTRIES = frozenset({"saved_model.pb", "saved_model.pbtxt", "fingerprint.pb",
                                 "variables", "assets", "keras_metadata.pb"})

# A TFLite flatbuffer's file identifier, at bytes 4 to 8.
TFLITE_IDENTIFIER = b"TFL3"


def check_export_path(path, format="saved_model"):
    """Raise ExportError unless an export of ``format`` may be written at ``path``.

    A path that does not exist is free. An existing one is replaced only when it
    holds an earlier export of the same format: an empty folder or a SavedModel's
    files only (``SAVED_MODEL_ENTRIES``, with saved_model.pb) for "saved_model", a
    TFLite flatbuffer (or an empty file) for "tflite". Anything else is the user's
    and is never replaced; nor is the current folder, or one that holds it.
    """
    if format not in FORMATS:
        raise ExportError(f"format is {format!r}: use one of {', '.join(FORMATS)}.")
    if not os.path.lexists(path):
        return
    fix = "Choose a path that does not exist yet, or remove it."
    working = os.path.realpath(os.getcwd())
    if format == "saved_model" and os.path.commonpath(
            [working, os.path.realpath(path)]) == os.path.realpath(path):
        raise ExportError(f"{path}: is the current folder (or holds it), which an export "
                          "cannot replace, since it swaps the whole folder. Give a folder "
                          "inside it, e.g. export/1.")
    if format == "saved_model":
        if os.path.islink(path) or not os.path.isdir(path):
            raise ExportError(f"{path}: exists and is not a folder; a SavedModel export is a "
                              f"folder. {fix}")
        entries = set(os.listdir(path))
        if entries and ("saved_model.pb" not in entries or entries - SAVED_MODEL_ENTRIES):
            others = sorted(entries - SAVED_MODEL_ENTRIES) or sorted(entries)
            raise ExportError(
                f"{path}: holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}, "
                f"which is not an earlier SavedModel export; an export replaces only an empty "
                f"folder or a SavedModel, never other files. {fix}")
        return
    if os.path.islink(path) or not os.path.isfile(path):
        raise ExportError(f"{path}: exists and is not a file; a TFLite export is a file. {fix}")
    with open(path, "rb") as f:
        header = f.read(8)
    if header and header[4:8] != TFLITE_IDENTIFIER:
        raise ExportError(f"{path}: exists and is not a TFLite file; an export replaces only an "
                          f"earlier TFLite file. {fix}")


def export(model, path, class_names=None, format="saved_model"):
    """Write ``model`` as a SavedModel folder or a TFLite file at ``path``.

    Args:
        model: a ``MaskRCNN`` in either mode with any batch size; its weights
            are copied into a one-image inference graph when needed.
        path: the SavedModel folder (TensorFlow Serving expects
            ``<models>/<name>/<version>``) or the ``.tflite`` file. An earlier
            export there is replaced; anything else there is refused
            (``check_export_path``).
        class_names: NUM_CLASSES names, the background first, e.g.
            ``dataset.class_names``; default ``["BG", "class_1", ...]``.
        format: "saved_model" or "tflite". The TFLite file uses builtin
            ops only, so any TFLite runtime runs it: its graph pools ROIs with
            ``layers.crop_and_resize_graph``, runs the NMS of every class in
            turn and resizes in float32 (``builtin_ops_graph``).

    Returns:
        ``path``. The output is written beside it and renamed into place, so
        an interrupted export leaves no half-written model behind.
    """
    path = os.path.abspath(os.fspath(path))
    check_export_path(path, format)
    config = model.config
    class_names = _checked_class_names(class_names, config.NUM_CLASSES)
    _check_exportable(config)
    inference_model = one_image_inference_model(model)
    if format == "saved_model":
        with files.atomic_directory(path, replace=True) as temp_path:
            write_saved_model(inference_model, temp_path, class_names)
        return path
    with tempfile.TemporaryDirectory() as saved_model_dir:
        # The TFLite converter needs a known rank: the image is [H, W, C] there.
        with builtin_ops_graph(inference_model):
            write_saved_model(inference_model, saved_model_dir, class_names, image_rank=3,
                              float_dtype=tf.float32)
        flatbuffer = convert_to_tflite(saved_model_dir)
    with files.atomic_path(path) as temp_path, open(temp_path, "wb") as f:
        f.write(flatbuffer)
    return path


def write_saved_model(model, path, class_names, image_rank=None, float_dtype=tf.float64):
    """Write the serving SavedModel of a one-image inference ``MaskRCNN`` to ``path``.

    ``image_rank`` None accepts [H, W] and [H, W, C] images; 3 only [H, W, C].
    ``float_dtype``: see ``serving_function``. The module saved holds each of
    the model's variables once (Keras's ExportArchive lists them twice,
    doubling the size on disk).
    """
    module = tf.Module()
    module.model_variables = [variable.value for variable in model.keras_model.variables]
    module.serve = tf.function(
        serving_function(model, class_names, float_dtype),
        input_signature=[tf.TensorSpec(None if image_rank is None else [None] * image_rank,
                                       tf.uint8, name="image")])
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def convert_to_tflite(saved_model_dir):
    """The TFLite flatbuffer (bytes) of a SavedModel's serving_default signature, builtin ops only.

    The SavedModel must come from ``write_saved_model`` under
    ``builtin_ops_graph`` with float32 arithmetic; the converter refuses ops
    that have no TFLite builtin.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


@contextlib.contextmanager
def builtin_ops_graph(model):
    """Within this context, ``model``'s layers trace graphs of TFLite builtin ops only.

    ROIAlign pools with ``layers.crop_and_resize_graph`` and the detection
    layer runs the NMS of each class id in turn; both give the same numbers
    as the layers' usual graphs. The 3x3 convolutions run without Winograd's
    algorithm (its tiles are an ExtractImagePatches, which TFLite lacks). The
    layers are set back on exit.
    """
    switched = [layer for layer in model.keras_model.layers
                if isinstance(layer, (PyramidROIAlign, DetectionLayer))]
    winograd = [layer for layer, _ in mrcnn_convolutions(model.keras_model) if layer.winograd]
    for layer in switched:
        layer.builtin_ops_only = True
    for layer in winograd:
        layer.winograd = False
    try:
        yield
    finally:
        for layer in switched:
            layer.builtin_ops_only = False
        for layer in winograd:
            layer.winograd = True


def serving_function(model, class_names, float_dtype=tf.float64):
    """``f(image) -> {rois, class_ids, class_names, scores, masks}`` in TensorFlow ops only.

    ``model`` is a one-image inference ``MaskRCNN``; see the module docstring.
    ``float_dtype`` is that of the resizing and box arithmetic: float64 gives
    ``detect()``'s numbers to the last bit; float32 (TFLite has no float64
    arithmetic) may put a resized pixel one level lower.
    """
    config = model.config
    names = tf.constant(list(class_names))
    anchors = anchors_function(model, float_dtype)

    def serve(image):
        image = rgb_image_graph(image)
        molded, window, scale = mold_image_graph(image, config, float_dtype)
        image_shape = tf.shape(image)
        molded_shape = tf.shape(molded)
        meta = image_meta_graph(image_shape, molded_shape, window, scale, config.NUM_CLASSES)
        outputs = model.keras_model(
            [molded[tf.newaxis], meta[tf.newaxis], anchors(molded_shape)[tf.newaxis]],
            training=False)
        detections, mrcnn_mask = outputs[0][0], outputs[3][0]
        rois, class_ids, scores, masks = unmold_detections_graph(
            detections, mrcnn_mask, image_shape[:2], molded_shape[:2], window, float_dtype)
        return {"rois": rois, "class_ids": class_ids,
                "class_names": tf.gather(names, class_ids), "scores": scores, "masks": masks}

    return serve


# ---------------------------------------------------------------------------
# The model to export


def one_image_inference_model(model):
    """``model`` itself if it is an inference model of batch 1, else such a twin with its weights.

    The twin's configuration is the model's with GPU_COUNT = IMAGES_PER_GPU = 1;
    each of its layers with weights gets the weights of its namesake in ``model``.
    """
    from mrcnn.model import MaskRCNN

    config = model.config
    if model.mode == "inference" and config.BATCH_SIZE == 1:
        return model
    attributes = {name: value for name, value in vars(config).items()
                  if name not in DERIVED_ATTRIBUTES}
    attributes.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    one_image_config = type(type(config).__name__, (type(config),), attributes)()
    twin = MaskRCNN("inference", one_image_config, model.model_dir)
    for layer in twin.keras_model.layers:
        if layer.weights:
            layer.set_weights(model.keras_model.get_layer(layer.name).get_weights())
    return twin


def _check_exportable(config):
    if config.IMAGE_RESIZE_MODE not in EXPORTED_RESIZE_MODES:
        raise ExportError(
            f"IMAGE_RESIZE_MODE is {config.IMAGE_RESIZE_MODE!r}: the exported model resizes "
            f"its input in the graph and supports {' and '.join(EXPORTED_RESIZE_MODES)}; "
            "set IMAGE_RESIZE_MODE = 'square' in the inference config (the default).")
    if callable(config.BACKBONE) and config.IMAGE_RESIZE_MODE != "square":
        raise ExportError(
            "A callable BACKBONE is exported with IMAGE_RESIZE_MODE 'square' only: its "
            "COMPUTE_BACKBONE_SHAPE is Python, so the anchors must be those of one fixed shape.")


def _checked_class_names(class_names, num_classes):
    if class_names is None:
        return ["BG"] + [f"class_{i}" for i in range(1, num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise ExportError(
            f"class_names has {len(class_names)} names but NUM_CLASSES is {num_classes}: "
            "give one name per class, the background first (e.g. dataset.class_names).")
    return class_names


# ---------------------------------------------------------------------------
# Pre-processing in the graph


def rgb_image_graph(image):
    """Check an image and make it [H, W, 3] uint8 RGB, as ``utils.to_rgb8`` does for uint8.

    Args:
        image: uint8 [H, W] or [H, W, C] with C in 1..4 (gray, gray + alpha,
            RGB, RGBA; alpha is dropped).

    Raises (when run):
        InvalidArgumentError: for another rank, another channel count or an empty image.
    """
    rank = tf.rank(image)
    checks = [tf.debugging.assert_equal(
        tf.logical_or(tf.equal(rank, 2), tf.equal(rank, 3)), True,
        message="image must be [height, width] or [height, width, channels]")]
    with tf.control_dependencies(checks):
        shape = tf.shape(image)
    checks = [tf.debugging.assert_positive(
        tf.reduce_prod(shape), message="image is empty: it needs at least one pixel")]
    with tf.control_dependencies(checks):
        image = tf.reshape(image, tf.concat([shape[:2], [-1]], axis=0))
    channels = tf.shape(image)[2]
    checks = [tf.debugging.assert_less_equal(
        channels, 4, message="image must have 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) "
                             "channels")]
    with tf.control_dependencies(checks):
        rgb = tf.where(channels < 3, tf.constant([0, 0, 0]), tf.constant([0, 1, 2]))
        image = tf.gather(image, rgb, axis=2)
    image.set_shape([None, None, 3])
    return image


def resize_bilinear_graph(image, size, dtype=tf.float64):
    """Resize [H, W, C] to ``size`` (height, width) as ``utils.resize`` does (order 1).

    scikit-image (``scipy.ndimage.zoom``) samples output pixel i of an axis at
    input coordinate ``(i + 0.5) * (in / out) - 0.5``, interpolates linearly,
    blends with 0 beyond the border and clips the result to the input's value
    range. The same arithmetic here, summed in scipy's order: in float64, the
    results agree to the last bit and truncating them to uint8 gives the
    same pixels.

    Returns:
        ``dtype`` [size[0], size[1], C].
    """
    image = tf.cast(image, dtype)
    bordered = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
    (top, y_weights), (left, x_weights) = [
        _sample_grid(tf.shape(image)[axis], size[axis], dtype) for axis in (0, 1)]
    rows = [tf.gather(bordered, top + i, axis=0) for i in (0, 1)]
    resized = tf.zeros([], dtype)
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        resized += (tf.gather(rows[i], left + j, axis=1)
                    * y_weights[i][:, tf.newaxis, tf.newaxis] * x_weights[j][:, tf.newaxis])
    return tf.clip_by_value(resized, tf.reduce_min(image), tf.reduce_max(image))


def _sample_grid(in_length, out_length, dtype):
    """Where each of ``out_length`` samples falls in an axis of ``in_length`` pixels.

    Returns:
        below: int32 [out_length], the pixel at or above each sample, counted
            in the axis with a one-pixel border before it.
        weights: the linear weights of ``below`` and ``below + 1``, each
            ``dtype`` [out_length].
    """
    zoom = tf.cast(in_length, dtype) / tf.cast(out_length, dtype)
    coordinates = (tf.cast(tf.range(out_length), dtype) + 0.5) * zoom - 0.5
    below = tf.floor(coordinates)
    fraction = coordinates - below
    return tf.cast(below, tf.int32) + 1, (1.0 - fraction, fraction)


def mold_image_graph(image, config, dtype=tf.float64):
    """Resize, pad and mean-subtract an image as ``MaskRCNN.mold_inputs`` does.

    Args:
        image: uint8 [H, W, 3].
        config: IMAGE_RESIZE_MODE "square" or "pad64", IMAGE_MIN_DIM,
            IMAGE_MAX_DIM, IMAGE_MIN_SCALE, MEAN_PIXEL.
        dtype: of the scale and the resizing (see ``serving_function``).

    Returns:
        molded: float32 [h, w, 3] (IMAGE_SHAPE for "square"), as ``transform.mold_image`` makes it.
        window: int32 (y1, x1, y2, x2) pixels of the image inside the padding.
        scale: ``dtype``, the resize factor.
    """
    size = tf.shape(image)[:2]
    height, width = tf.unstack(tf.cast(size, dtype))
    scale = tf.constant(1.0, dtype)
    if config.IMAGE_MIN_DIM:
        scale = tf.maximum(scale, config.IMAGE_MIN_DIM / tf.minimum(height, width))
    if config.IMAGE_MIN_SCALE:
        scale = tf.maximum(scale, tf.constant(config.IMAGE_MIN_SCALE, dtype))
    if config.IMAGE_RESIZE_MODE == "square":
        longest = tf.maximum(height, width)
        scale = tf.where(tf.round(longest * scale) > config.IMAGE_MAX_DIM,
                         config.IMAGE_MAX_DIM / longest, scale)
    new_size = tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32)
    resized = tf.cond(
        tf.equal(scale, 1.0),
        lambda: tf.cast(image, dtype),
        # resize_image keeps the uint8 dtype: values are truncated.
        lambda: tf.floor(resize_bilinear_graph(image, new_size, dtype)))
    new_size = tf.shape(resized)[:2]
    if config.IMAGE_RESIZE_MODE == "square":
        padding = config.IMAGE_MAX_DIM - new_size
    else:
        padding = -new_size % 64
    before = padding // 2
    padded = tf.pad(resized, [[before[0], padding[0] - before[0]],
                              [before[1], padding[1] - before[1]], [0, 0]])
    if config.IMAGE_RESIZE_MODE == "square":
        padded.set_shape([config.IMAGE_MAX_DIM, config.IMAGE_MAX_DIM, 3])
    window = tf.concat([before, before + new_size], axis=0)
    molded = tf.cast(padded, tf.float32) - tf.constant(np.asarray(config.MEAN_PIXEL, np.float32))
    return molded, window, scale


def image_meta_graph(image_shape, molded_shape, window, scale, num_classes):
    """float32 [IMAGE_META_SIZE] image meta, laid out as ``transform.compose_image_meta``'s."""
    meta = tf.concat([
        tf.zeros([1]),
        tf.cast(image_shape, tf.float32),
        tf.cast(molded_shape, tf.float32),
        tf.cast(window, tf.float32),
        tf.cast(scale, tf.float32)[tf.newaxis],
        tf.zeros([num_classes]),
    ], axis=0)
    meta.set_shape(compose_image_meta(0, [0] * 3, [0] * 3, [0] * 4, 0, [0] * num_classes).shape)
    return meta


def anchors_function(model, dtype=tf.float64):
    """``f(molded_shape) -> [A, 4]`` float32 normalized anchors of that shape.

    "square" molds every image to IMAGE_SHAPE, so its anchors are one
    constant, ``model.get_anchors(IMAGE_SHAPE)``; "pad64" shapes vary, so the
    anchors are computed in the graph (``pyramid_anchors_graph``, in ``dtype``).
    """
    config = model.config
    if config.IMAGE_RESIZE_MODE == "square":
        anchors = tf.constant(model.get_anchors(config.IMAGE_SHAPE))
        return lambda molded_shape: anchors
    return lambda molded_shape: pyramid_anchors_graph(config, molded_shape[:2], dtype)


def pyramid_anchors_graph(config, image_size, dtype=tf.float64):
    """``anchors.generate_pyramid_anchors`` for a ResNet backbone, normalized, in the graph.

    Args:
        config: RPN_ANCHOR_SCALES, RPN_ANCHOR_RATIOS, BACKBONE_STRIDES, RPN_ANCHOR_STRIDE.
        image_size: int32 (height, width) of the molded image.
        dtype: of the arithmetic; float64 is that of ``anchors.py``.

    Returns:
        float32 [A, (y1, x1, y2, x2)] normalized anchors, in the order of
        ``MaskRCNN.get_anchors``.
    """
    image_size = tf.cast(image_size, dtype)
    levels = []
    for scale, stride in zip(config.RPN_ANCHOR_SCALES, config.BACKBONE_STRIDES):
        scales, ratios = np.meshgrid(np.array(scale), np.array(config.RPN_ANCHOR_RATIOS))
        sizes = np.stack([scales.flatten() / np.sqrt(ratios.flatten()),
                          scales.flatten() * np.sqrt(ratios.flatten())], axis=1)  # [k, (h, w)]
        cells = tf.cast(tf.math.ceil(image_size / stride), tf.int32)
        rows = tf.range(0, cells[0], config.RPN_ANCHOR_STRIDE)
        columns = tf.range(0, cells[1], config.RPN_ANCHOR_STRIDE)
        grid_y, grid_x = tf.meshgrid(rows, columns, indexing="ij")
        centers = tf.cast(tf.stack([tf.reshape(grid_y, [-1]), tf.reshape(grid_x, [-1])], axis=1)
                          * stride, dtype)                         # [cells, (y, x)]
        centers = tf.reshape(tf.tile(centers[:, tf.newaxis], [1, len(sizes), 1]), [-1, 2])
        half_sizes = tf.tile(tf.constant(0.5 * sizes, dtype),
                             [tf.shape(rows)[0] * tf.shape(columns)[0], 1])
        levels.append(tf.concat([centers - half_sizes, centers + half_sizes], axis=1))
    anchors = tf.concat(levels, axis=0)
    scale = tf.tile(image_size - 1.0, [2])
    return tf.cast((anchors - tf.constant([0.0, 0.0, 1.0, 1.0], dtype)) / scale, tf.float32)


# ---------------------------------------------------------------------------
# Post-processing in the graph


def unmold_detections_graph(detections, mrcnn_mask, image_size, molded_size, window,
                            dtype=tf.float64):
    """``MaskRCNN.unmold_detections`` in TensorFlow ops.

    Args:
        detections: [D, (y1, x1, y2, x2, class_id, score)] normalized in the
            molded image, zero-padded.
        mrcnn_mask: [D, height, width, num_classes] mask probabilities.
        image_size: int32 (H, W) of the input image.
        molded_size: int32 (h, w) of the molded image.
        window: int32 (y1, x1, y2, x2) pixels of the image inside the molded one.
        dtype: of the pixel boxes before rounding; float64 is that of ``detect()``.

    Returns:
        rois int32 [N, 4] pixels of the input image, class_ids int32 [N],
        scores float32 [N], masks bool [H, W, N].
    """
    class_ids = tf.cast(detections[:, 4], tf.int32)
    # The detections end at the first zero class id (padding).
    count = tf.reduce_min(tf.concat(
        [tf.cast(tf.where(tf.equal(class_ids, 0))[:, 0], tf.int32), tf.shape(class_ids)], axis=0))
    boxes = detections[:count, :4]
    class_ids = class_ids[:count]
    scores = detections[:count, 5]
    masks = tf.gather(tf.transpose(mrcnn_mask[:count], [0, 3, 1, 2]),
                      class_ids, axis=1, batch_dims=1)               # [N, height, width]

    # Boxes are normalized in the molded image: map them to the window, then to the image.
    molded_scale = tf.cast(tf.tile(molded_size - 1, [2]), tf.float32)
    corner_shift = tf.constant([0.0, 0.0, 1.0, 1.0])
    window = (tf.cast(window, tf.float32) - corner_shift) / molded_scale
    shift = tf.tile(window[:2], [2])
    extent = tf.tile(window[2:] - window[:2], [2])
    boxes = tf.cast((boxes - shift) / extent, dtype)
    image_scale = tf.cast(tf.tile(image_size - 1, [2]), dtype)
    boxes = tf.cast(tf.round(boxes * image_scale + tf.cast(corner_shift, dtype)), tf.int32)

    keep = tf.where((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)[:, 0]
    boxes = tf.gather(boxes, keep)
    class_ids = tf.gather(class_ids, keep)
    scores = tf.gather(scores, keep)
    masks = paste_masks_graph(tf.gather(masks, keep), boxes, image_size)
    return boxes, class_ids, scores, masks


def paste_masks_graph(masks, boxes, image_size):
    """Full-image masks from box masks, as ``transform.unmold_mask`` makes them.

    Each mask is resized into its box with ``resize_bilinear_graph``'s
    sampling (in float32), thresholded at 0.5 and placed in an image of
    ``image_size``. The resizing is two matrix products per mask, with
    interpolation matrices that are zero outside the box: a loop-free graph
    of TFLite builtin ops, holding N float32 [H, W] planes at once.

    Args:
        masks: float32 [N, height, width] probabilities.
        boxes: int32 [N, (y1, x1, y2, x2)] pixels inside the image, each with
            a positive height and width.
        image_size: int32 (H, W).

    Returns:
        bool [H, W, N].
    """
    rows, row_inside = _paste_weights(boxes[:, 0], boxes[:, 2], image_size[0], masks.shape[1])
    columns, column_inside = _paste_weights(boxes[:, 1], boxes[:, 3], image_size[1],
                                            masks.shape[2])
    resized = tf.matmul(tf.matmul(rows, masks), columns, transpose_b=True)   # [N, H, W]
    # As scikit-image, clip to each mask's range (it matters where a mask is
    # >= 0.5 throughout and its edges blend with the zero border).
    resized = tf.clip_by_value(resized, tf.reduce_min(masks, axis=[1, 2])[:, None, None],
                               tf.reduce_max(masks, axis=[1, 2])[:, None, None])
    inside = tf.logical_and(tf.expand_dims(row_inside, 2), tf.expand_dims(column_inside, 1))
    return tf.transpose(tf.logical_and(resized >= 0.5, inside), [1, 2, 0])


def _paste_weights(starts, ends, image_length, mask_length):
    """The linear interpolation from masks of ``mask_length`` into spans of an image axis.

    Args:
        starts, ends: int32 [N] first and one-past-last pixel of each span.
        image_length: pixels of the image axis.
        mask_length: pixels of the mask axis (static).

    Returns:
        weights: float32 [N, image_length, mask_length]; row p of span n
            weighs the mask pixels that image pixel p samples (``_sample_grid``
            of the span, the border beyond the mask weighing 0), zero outside
            the span.
        inside: bool [N, image_length], whether each pixel is in the span.
    """
    pixels = tf.range(image_length)[tf.newaxis] - starts[:, tf.newaxis]      # [N, image_length]
    lengths = (ends - starts)[:, tf.newaxis]
    inside = tf.logical_and(pixels >= 0, pixels < lengths)
    zoom = mask_length / tf.cast(lengths, tf.float32)
    coordinates = (tf.cast(pixels, tf.float32) + 0.5) * zoom - 0.5
    below = tf.floor(coordinates)
    # expand_dims, not [..., tf.newaxis]: TFLite has no builtin for that slice.
    fraction = tf.expand_dims(coordinates - below, -1)
    below = tf.cast(below, tf.int32)
    weights = ((1.0 - fraction) * tf.one_hot(below, mask_length)
               + fraction * tf.one_hot(below + 1, mask_length))
    return weights * tf.expand_dims(tf.cast(inside, tf.float32), -1), inside
