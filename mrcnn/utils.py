"""Numpy utilities of Mask R-CNN: boxes, masks, image reading, AP, Dataset.

The original's resizing and anchor functions (``resize_image``,
``generate_pyramid_anchors``, ...) now live in :mod:`mrcnn.transform` and
:mod:`mrcnn.anchors`, and ``batch_slice`` (TensorFlow) in :mod:`mrcnn.layers`;
``utils.<name>`` still finds them.

Conventions, as in the original implementation:

- Boxes are ``[N, (y1, x1, y2, x2)]`` in pixels; ``y2`` and ``x2`` are
  exclusive (one past the last row/column of the object).
- Normalized boxes (``norm_boxes``) map pixel ``0`` to ``0.0`` and pixel
  ``side - 1`` to ``1.0``, with the exclusive corner shifted back by one.
- Instance masks are ``[height, width, instance_count]`` bool arrays.
- Class ids are int32 and ``0`` is the background class.
- Box deltas are ``[N, (dy, dx, log(dh), log(dw))]`` relative to the
  anchor/proposal size.
"""

import importlib
import logging

import numpy as np
import PIL.Image
import PIL.ImageOps
import skimage.transform

from mrcnn.errors import InputError



# Names of the original's utils module that now live in the module of their
# stage; ``utils.<name>`` still finds them (looked up on first use, so that
# importing utils stays free of TensorFlow and of import cycles).
_MOVED = {
    "resize_image": "mrcnn.transform",
    "resize_mask": "mrcnn.transform",
    "unmold_mask": "mrcnn.transform",
    "generate_anchors": "mrcnn.anchors",
    "generate_pyramid_anchors": "mrcnn.anchors",
    "batch_slice": "mrcnn.layers",
    "box_refinement_graph": "mrcnn.layers",
}


def __getattr__(name):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MOVED))


############################################################
#  Bounding boxes
############################################################

def extract_bboxes(mask):
    """Tight bounding box of each instance mask.

    Args:
        mask: [height, width, num_instances]. Pixels are truthy or falsy.

    Returns:
        int32 array [num_instances, (y1, x1, y2, x2)]; ``y2``/``x2`` are one
        past the last row/column of the instance. An empty mask gives
        ``(0, 0, 0, 0)``.
    """
    boxes = np.zeros([mask.shape[-1], 4], dtype=np.int32)
    for i in range(mask.shape[-1]):
        columns = np.where(np.any(mask[:, :, i], axis=0))[0]
        rows = np.where(np.any(mask[:, :, i], axis=1))[0]
        if columns.shape[0]:
            boxes[i] = [rows[0], columns[0], rows[-1] + 1, columns[-1] + 1]
    return boxes


def compute_iou(box, boxes, box_area, boxes_area):
    """Intersection over union of one box with each of an array of boxes.

    Args:
        box: [(y1, x1, y2, x2)].
        boxes: [N, (y1, x1, y2, x2)].
        box_area: float, the area of ``box``.
        boxes_area: [N], the areas of ``boxes``.

    The areas are passed in rather than computed so that callers computing
    many IoUs compute each area once.

    Returns:
        [N] IoU values; 0 where both boxes have zero area.
    """
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = box_area + boxes_area[:] - intersection[:]
    # Two boxes of zero area (an untrained model makes them) have IoU 0, not NaN.
    return np.divide(intersection, union, out=np.zeros_like(intersection, dtype=float), where=union > 0)


def box_areas(boxes):
    """Areas of boxes [N, (y1, x1, y2, x2)] -> [N]."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def compute_overlaps(boxes1, boxes2):
    """IoU overlaps between two sets of boxes.

    Args:
        boxes1: [N1, (y1, x1, y2, x2)].
        boxes2: [N2, (y1, x1, y2, x2)].

    For better performance, pass the largest set first and the smaller
    second, as in the original.

    Returns:
        float [N1, N2]: ``overlaps[i, j]`` is the IoU of ``boxes1[i]`` and
        ``boxes2[j]``.
    """
    area1 = box_areas(boxes1)
    area2 = box_areas(boxes2)
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    for i in range(overlaps.shape[1]):
        overlaps[:, i] = compute_iou(boxes2[i], boxes1, area2[i], area1)
    return overlaps


def compute_overlaps_masks(masks1, masks2):
    """IoU overlaps between two sets of masks.

    Args:
        masks1: [height, width, N1]; pixels above 0.5 count as inside.
        masks2: [height, width, N2].

    Returns:
        float [N1, N2] IoU values. A pair of empty masks has IoU 0.
    """
    if masks1.shape[-1] == 0 or masks2.shape[-1] == 0:
        return np.zeros((masks1.shape[-1], masks2.shape[-1]))
    masks1 = np.reshape(masks1 > .5, (-1, masks1.shape[-1])).astype(np.float32)
    masks2 = np.reshape(masks2 > .5, (-1, masks2.shape[-1])).astype(np.float32)
    area1 = np.sum(masks1, axis=0)
    area2 = np.sum(masks2, axis=0)
    intersections = np.dot(masks1.T, masks2)
    union = area1[:, None] + area2[None, :] - intersections
    return np.divide(intersections, union, out=np.zeros_like(intersections),
                     where=union > 0)


def non_max_suppression(boxes, scores, threshold):
    """Greedy non-maximum suppression.

    Args:
        boxes: [N, (y1, x1, y2, x2)]. ``(y2, x2)`` lie outside the box.
        scores: [N] box scores.
        threshold: float. A box is dropped when its IoU with a kept box of
            higher score is above this value.

    Returns:
        int32 [K] indices of the kept boxes, highest score first.
    """
    if boxes.dtype.kind != "f":
        boxes = boxes.astype(np.float32)
    area = box_areas(boxes)
    ixs = scores.argsort()[::-1]
    pick = []
    while len(ixs) > 0:
        i = ixs[0]
        pick.append(i)
        iou = compute_iou(boxes[i], boxes[ixs[1:]], area[i], area[ixs[1:]])
        remove_ixs = np.where(iou > threshold)[0] + 1
        ixs = np.delete(ixs, np.concatenate([[0], remove_ixs]))
    return np.array(pick, dtype=np.int32)


def apply_box_deltas(boxes, deltas):
    """Apply refinement deltas to boxes.

    Args:
        boxes: [N, (y1, x1, y2, x2)]. ``(y2, x2)`` lie outside the box.
        deltas: [N, (dy, dx, log(dh), log(dw))].

    Returns:
        float32 [N, (y1, x1, y2, x2)] refined boxes.
    """
    boxes = boxes.astype(np.float32)
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height
    center_x = boxes[:, 1] + 0.5 * width
    center_y += deltas[:, 0] * height
    center_x += deltas[:, 1] * width
    height *= np.exp(deltas[:, 2])
    width *= np.exp(deltas[:, 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=1)


def box_refinement(box, gt_box):
    """Deltas that turn each box into its ground-truth box.

    The inverse of ``apply_box_deltas``.

    Args:
        box: [N, (y1, x1, y2, x2)]. ``(y2, x2)`` lie outside the box.
        gt_box: [N, (y1, x1, y2, x2)], matched to ``box`` row by row.

    Returns:
        float32 [N, (dy, dx, log(dh), log(dw))].
    """
    box = box.astype(np.float32)
    gt_box = gt_box.astype(np.float32)

    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width

    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width

    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=1)


def norm_boxes(boxes, shape):
    """Convert boxes from pixel coordinates to normalized coordinates.

    Args:
        boxes: [N, (y1, x1, y2, x2)] in pixels.
        shape: (height, width) of the image.

    In pixel coordinates ``(y2, x2)`` is outside the box; in normalized
    coordinates it is inside, so ``(0, 0, h, w)`` becomes ``(0, 0, 1, 1)``.

    Returns:
        float32 [N, (y1, x1, y2, x2)] normalized coordinates.
    """
    h, w = shape
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    shift = np.array([0, 0, 1, 1])
    return np.divide((boxes - shift), scale).astype(np.float32)


def denorm_boxes(boxes, shape):
    """Convert boxes from normalized coordinates to pixel coordinates.

    The inverse of ``norm_boxes``, rounded to the nearest pixel.

    Args:
        boxes: [N, (y1, x1, y2, x2)] in normalized coordinates.
        shape: (height, width) of the image.

    Returns:
        int32 [N, (y1, x1, y2, x2)] in pixels.
    """
    h, w = shape
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    shift = np.array([0, 0, 1, 1])
    return np.around(np.multiply(boxes, scale) + shift).astype(np.int32)


def trim_zeros(x):
    """Drop the all-zero rows that pad a [N, C] array (e.g. boxes)."""
    if x.ndim != 2:
        raise ValueError(f"trim_zeros expects a 2-D array, got shape {x.shape}")
    return x[~np.all(x == 0, axis=1)]


############################################################
#  Images
############################################################

class ImageError(InputError):
    """An image file that cannot be read; the message names it and what to do."""


def to_rgb8(image):
    """Convert an image array of any common layout to [H, W, 3] uint8 RGB.

    Accepts [H, W] and [H, W, 1] grayscale, [H, W, 2] grayscale + alpha,
    [H, W, 3] RGB and [H, W, 4] RGBA (alpha is dropped, like the original).
    Values are scaled by dtype: uint8 as is; bool to 0/255; uint16 divided
    by 257 (65535 -> 255); other integers as is when they fit in 0..255,
    otherwise treated as 16-bit; floats multiplied by 255 when their maximum
    is at most 1.0, otherwise taken as 0..255. Results are rounded and
    clipped to 0..255.

    Raises:
        ValueError: for any other shape, or an image without pixels.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected an image of shape [H, W] or [H, W, C] with C in 1..4; "
            f"got shape {image.shape}.")
    if not image.shape[0] or not image.shape[1]:
        raise ValueError(f"The image is empty (shape {image.shape}): it needs at least one "
                         "pixel.")
    if image.shape[-1] in (1, 2):
        image = np.repeat(image[:, :, :1], 3, axis=2)
    image = image[:, :, :3]
    return _to_uint8(image)


def _to_uint8(image):
    """Scale an array's values to uint8 by the rules of ``to_rgb8``."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if image.dtype.kind == "f":
        peak = np.nanmax(image) if image.size else 0.0
        scaled = image * 255.0 if peak <= 1.0 else image
    elif image.dtype == np.uint16 or (image.size and image.max() > 255):
        scaled = image.astype(np.float64) / 257.0
    else:
        scaled = image
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def read_image(path):
    """Read an image file as [H, W, 3] uint8 RGB, upright by its EXIF tag.

    Any format Pillow reads (JPEG, PNG, TIFF, BMP, ...) in any mode:
    grayscale, palette, RGBA, CMYK, 16-bit. The EXIF Orientation tag is
    applied, so the pixels are in the frame in which annotation tools such
    as VIA display (and annotate) the photo.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ImageError (a ValueError): if the file is not a readable image.
    """
    try:
        with PIL.Image.open(path) as image:
            image = PIL.ImageOps.exif_transpose(image)
            image.load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file.") from None
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as error:
        raise ImageError(f"{path}: cannot read image ({error}). Re-save it as JPEG or "
                         "PNG, or leave it out.") from None
    if image.mode.startswith(("I", "F")):
        return to_rgb8(np.asarray(image))
    return np.asarray(image.convert("RGB"))


def resize(image, output_shape, order=1, mode="constant", cval=0, clip=True,
           preserve_range=False, anti_aliasing=False, anti_aliasing_sigma=None):
    """``skimage.transform.resize`` with the original's defaults.

    Anti-aliasing is off by default (scikit-image turns it on when
    downscaling). Bool arrays with ``order > 0`` are interpolated as floats
    in [0, 1], as scikit-image did when the original was written; the result
    is then float, not bool.

    Args:
        image: [H, W] or [H, W, C] array.
        output_shape: (height, width) of the result.

    Returns:
        The resized array, float unless ``order == 0`` and ``preserve_range``.
    """
    if image.dtype == bool and order > 0:
        image = image.astype(np.float32)
    return skimage.transform.resize(
        image, output_shape, order=order, mode=mode, cval=cval, clip=clip,
        preserve_range=preserve_range, anti_aliasing=anti_aliasing,
        anti_aliasing_sigma=anti_aliasing_sigma)


############################################################
#  Masks
############################################################

def minimize_mask(bbox, mask, mini_shape):
    """Crop each mask to its box and resize it to ``mini_shape``.

    Mini-masks save memory when training with high-resolution images. See
    ``expand_mask`` for the inverse.

    Args:
        bbox: [num_instances, (y1, x1, y2, x2)] int pixel boxes.
        mask: [height, width, num_instances].
        mini_shape: (height, width) of the mini-masks.

    Returns:
        bool [mini_height, mini_width, num_instances].

    Raises:
        ValueError: for a box of zero area.
    """
    mini_mask = np.zeros(tuple(mini_shape) + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        m = mask[y1:y2, x1:x2, i].astype(bool)
        if m.size == 0:
            raise ValueError(f"Invalid bounding box {tuple(int(v) for v in bbox[i][:4])} of "
                             f"instance {i}: its area is zero.")
        mini_mask[:, :, i] = np.around(resize(m, mini_shape)).astype(bool)
    return mini_mask


def expand_mask(bbox, mini_mask, image_shape):
    """Paste mini-masks back into full-size masks (inverse of minimize_mask).

    Args:
        bbox: [num_instances, (y1, x1, y2, x2)] int pixel boxes.
        mini_mask: [mini_height, mini_width, num_instances].
        image_shape: (height, width, ...) of the image.

    Returns:
        bool [height, width, num_instances].
    """
    mask = np.zeros(tuple(image_shape[:2]) + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        m = resize(mini_mask[:, :, i], (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(m).astype(bool)
    return mask


############################################################
#  Evaluation
############################################################

def compute_matches(gt_boxes, gt_class_ids, gt_masks,
                    pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Match predictions to ground-truth instances by mask IoU.

    Predictions are taken from the highest score down. Each one walks the
    ground-truth instances from the highest mask IoU down, skipping those
    already matched, and stops at the first whose IoU is below
    ``iou_threshold`` or whose class agrees (a match). Ground truth whose
    IoU is below ``score_threshold`` is never considered. A ground truth
    matched once is not matched again, so duplicate detections are false
    positives (the original's later fix of ``gt_match[j] > 0``).

    Args:
        gt_boxes: [N, (y1, x1, y2, x2)]; all-zero rows are padding.
        gt_class_ids: [N] int.
        gt_masks: [height, width, N].
        pred_boxes: [M, (y1, x1, y2, x2)]; all-zero rows are padding.
        pred_class_ids: [M] int.
        pred_scores: [M] float.
        pred_masks: [height, width, M].

    Returns:
        gt_match: [N] float: for each ground truth, the index of its matched
            prediction (in score order), or -1.
        pred_match: [M] float: for each prediction sorted by score, the
            index of its matched ground truth, or -1.
        overlaps: [M, N] mask IoUs, predictions in score order.
    """
    gt_boxes = trim_zeros(gt_boxes)
    gt_masks = gt_masks[..., :gt_boxes.shape[0]]
    pred_boxes = trim_zeros(pred_boxes)
    pred_scores = pred_scores[:pred_boxes.shape[0]]
    indices = np.argsort(pred_scores)[::-1]
    pred_class_ids = pred_class_ids[indices]
    pred_masks = pred_masks[..., indices]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)

    pred_match = -1 * np.ones([pred_boxes.shape[0]])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(len(pred_boxes)):
        sorted_ixs = np.argsort(overlaps[i])[::-1]
        low_score_idx = np.where(overlaps[i, sorted_ixs] < score_threshold)[0]
        if low_score_idx.size > 0:
            sorted_ixs = sorted_ixs[:low_score_idx[0]]
        for j in sorted_ixs:
            if gt_match[j] > -1:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks,
               pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Average precision at one mask-IoU threshold (VOC-style, all points).

    Arguments are those of ``compute_matches``. The precision envelope is
    made monotonic and integrated over the recall steps.

    Returns:
        mAP: float average precision. NaN when there is no ground truth but
            there are predictions.
        precisions: [M + 2] precision envelope, with the end points.
        recalls: [M + 2] recall values, from 0 to 1.
        overlaps: [M, N] mask IoUs (see ``compute_matches``).
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks,
        pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)

    true_positives = np.cumsum(pred_match > -1)
    precisions = true_positives / (np.arange(len(pred_match)) + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recalls = true_positives.astype(np.float32) / len(gt_match)

    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]

    indices = np.where(recalls[:-1] != recalls[1:])[0] + 1
    mAP = np.sum((recalls[indices] - recalls[indices - 1]) * precisions[indices])
    return mAP, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask,
                     pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Mean of ``compute_ap`` over IoU thresholds (default 0.5:0.05:0.95).

    Prints the AP at each threshold and the mean when ``verbose``.

    Returns:
        float mean AP.
    """
    if iou_thresholds is None:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)
    aps = []
    for iou_threshold in iou_thresholds:
        ap, _, _, _ = compute_ap(gt_box, gt_class_id, gt_mask,
                                 pred_box, pred_class_id, pred_score, pred_mask,
                                 iou_threshold=iou_threshold)
        if verbose:
            print(f"AP @{iou_threshold:.2f}:\t {ap:.3f}")
        aps.append(ap)
    mean_ap = np.array(aps).mean()
    if verbose:
        print(f"AP @{iou_thresholds[0]:.2f}-{iou_thresholds[-1]:.2f}:\t "
              f"{mean_ap:.3f}")
    return mean_ap


def compute_recall(pred_boxes, gt_boxes, iou):
    """Recall of predicted boxes against ground-truth boxes.

    Args:
        pred_boxes: [M, (y1, x1, y2, x2)].
        gt_boxes: [N, (y1, x1, y2, x2)].
        iou: a ground-truth box is found when a prediction's best match is
            that box with IoU >= ``iou``.

    Returns:
        recall: fraction of ground-truth boxes found.
        positive_ids: [K] indices of the predictions with a match.
    """
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    iou_max = np.max(overlaps, axis=1)
    iou_argmax = np.argmax(overlaps, axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt_boxes = iou_argmax[positive_ids]
    recall = len(set(matched_gt_boxes)) / gt_boxes.shape[0]
    return recall, positive_ids


############################################################
#  Logging and downloads
############################################################

def log(text, array=None):
    """Print a text, followed by an array's shape, min, max and dtype.

    Example output::

        image                    shape: (128, 128, 3)         min:    0.00000  max:  255.00000  uint8
    """
    if array is not None:
        array = np.asarray(array)
        text = text.ljust(25)
        text += f"shape: {str(array.shape):20}  "
        if array.size:
            text += f"min: {float(array.min()):10.5f}  max: {float(array.max()):10.5f}"
        else:
            text += f"min: {'':10}  max: {'':10}"
        text += f"  {array.dtype}"
    print(text)


def download_trained_weights(coco_model_path, verbose=1):
    """The original's helper: make sure ``mask_rcnn_coco.h5`` is at ``coco_model_path``.

    Kept for old scripts; it calls ``mrcnn.weights.get_coco_weights``, which
    downloads the file there when it is missing and the machine is online,
    and otherwise raises an error that gives the URL and the path.

    Returns:
        The path of the weights file.
    """
    from mrcnn import weights

    path = weights.get_coco_weights(path=coco_model_path)
    if verbose > 0:
        print(f"COCO weights at {path}")
    return path


############################################################
#  Dataset
############################################################

class Dataset:
    """Base class of datasets.

    Subclass it, register classes and images with ``add_class`` and
    ``add_image``, override ``load_mask`` (and ``load_image`` if images are
    not files), then call ``prepare()`` before use::

        class ShapesDataset(Dataset):
            def load_shapes(self, count, height, width):
                self.add_class("shapes", 1, "square")
                for i in range(count):
                    self.add_image("shapes", image_id=i, path=None, ...)

            def load_mask(self, image_id):
                ...
                return masks, class_ids

    Images and classes are registered with their source (dataset name) and
    their id in that source; ``prepare`` gives them consecutive internal
    ids, which are what the rest of the library uses. Class 0 is always
    the background "BG".
    """

    def __init__(self, class_map=None):
        self._image_ids = []
        self.image_info = []
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}

    def add_class(self, source, class_id, class_name):
        """Register a class; registering one twice has no effect.

        Raises:
            ValueError: if ``source`` contains a dot.
        """
        if "." in source:
            raise ValueError(f"Source name cannot contain a dot: {source!r}")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id,
                                "name": class_name})

    def add_image(self, source, image_id, path, **kwargs):
        """Register an image; extra keyword arguments are kept in its info."""
        image_info = {"id": image_id, "source": source, "path": path}
        image_info.update(kwargs)
        self.image_info.append(image_info)

    def image_reference(self, image_id):
        """A link or description of the image, for debugging.

        Override for your dataset; the base returns "".
        """
        return ""

    def prepare(self, class_map=None):
        """Build the internal ids and lookup tables. Call before use.

        ``class_map`` is accepted for compatibility and not used, as in the
        original.
        """
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [_first_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": class_id
            for info, class_id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": image_id
            for info, image_id in zip(self.image_info, self.image_ids)}

        self.sources = sorted({info["source"] for info in self.class_info})
        self.source_class_ids = {
            source: [i for i, info in enumerate(self.class_info)
                     if i == 0 or info["source"] == source]
            for source in self.sources}

    def map_source_class_id(self, source_class_id):
        """Internal class id of a "source.class_id" string, e.g. "coco.12"."""
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id, source):
        """The id in ``source`` of an internal class id.

        Raises:
            ValueError: if the class does not come from ``source``.
        """
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(f"Class {class_id} comes from source "
                             f"{info['source']!r}, not {source!r}.")
        return info["id"]

    @property
    def image_ids(self):
        """Internal image ids, 0..num_images-1 (after ``prepare``)."""
        return self._image_ids

    def source_image_link(self, image_id):
        """The path or URL of the image."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id):
        """Load an image as [H, W, 3] uint8 RGB.

        Reads the file at the image's ``path`` (see ``read_image``):
        grayscale, palette, RGBA and 16-bit files are converted, and the
        EXIF orientation is applied.
        """
        return read_image(self.image_info[image_id]["path"])

    def load_mask(self, image_id):
        """Instance masks of an image. Override this for your dataset.

        Returns:
            masks: bool [height, width, instance_count], one mask per
                instance.
            class_ids: int32 [instance_count] internal class ids.

        The base class has no masks: it warns and returns empty arrays.
        """
        logging.warning("You are using the default load_mask(), maybe you "
                        "need to define your own one.")
        mask = np.empty([0, 0, 0])
        class_ids = np.empty([0], np.int32)
        return mask, class_ids


def _first_name(name):
    """A class name up to its first comma ("person, human" -> "person")."""
    return name.split(",")[0]
