"""Training data of Mask R-CNN: image metadata, ground truth, targets, batches.

The path of one training image, as in the original implementation:

1. ``load_image_gt`` loads the image and its instance masks from a
   ``utils.Dataset``, resizes both (``utils.resize_image``/``resize_mask``),
   applies the augmentation, drops instances that vanished, and computes
   boxes and the image metadata (``compose_image_meta``).
2. ``build_rpn_targets`` labels every anchor positive/negative/neutral and
   gives the box deltas of the positive ones.
3. Optionally (``random_rois``, used with ``USE_RPN_ROIS = False`` and in
   the notebooks), ``generate_random_rois`` draws ROIs around the boxes and
   ``build_detection_targets`` gives the classifier and mask head targets.
4. ``DataGenerator`` (a ``keras.utils.PyDataset``) stacks images into the
   seven model inputs; ``data_generator`` is the original's endless Python
   generator on top of it.

Conventions: boxes are ``[N, (y1, x1, y2, x2)]`` int32 pixels with ``y2``
and ``x2`` exclusive; masks are ``[height, width, N]`` bool; class ids are
int32, 0 is the background and negative ids mark crowd boxes (COCO
``iscrowd``), which are neither positive nor negative for the RPN.

Augmentation (``augmentation=``) is an albumentations transform (called as
``aug(image=..., masks=...)``: geometric transforms move the masks with the
image, pixel-level ones leave them alone) or any callable
``(image, masks) -> (image, masks)`` on ``[H, W, 3]`` uint8 and
``[H, W, N]`` bool arrays. It must keep the image size and the number of
instances. imgaug is not supported: it does not import under numpy 2.
"""

import itertools
import sys

import keras
import numpy as np

from mrcnn import utils
from mrcnn.backbone import compute_backbone_shapes

# Anchor labels in rpn_match.
POSITIVE, NEGATIVE, NEUTRAL = 1, -1, 0
# IoU thresholds of the original for anchors and for training ROIs.
RPN_POSITIVE_IOU = 0.7
RPN_NEGATIVE_IOU = 0.3
CROWD_IOU = 0.001
ROI_POSITIVE_IOU = 0.5
# Share of generate_random_rois' ROIs drawn around the GT boxes.
RANDOM_ROIS_NEAR_BOXES = 0.9
# Keys that keep DataGenerator's random streams of passes and batches apart.
PASS_STREAM, BATCH_STREAM = 0, 1


############################################################
#  Image metadata and normalization
############################################################

def compose_image_meta(image_id, original_image_shape, image_shape,
                       window, scale, active_class_ids):
    """Pack the attributes of an image into one 1-D array.

    Args:
        image_id: int id of the image (the dataset's internal id).
        original_image_shape: [H, W, C] before resizing or padding.
        image_shape: [H, W, C] after resizing and padding.
        window: (y1, x1, y2, x2) pixels of the real image inside the padded
            one (``y2``/``x2`` exclusive).
        scale: the factor applied by ``utils.resize_image``.
        active_class_ids: [NUM_CLASSES] 1 for the classes of the image's
            dataset (source), 0 for the others.

    Returns:
        float64 [1 + 3 + 3 + 4 + 1 + NUM_CLASSES] = [config.IMAGE_META_SIZE]:
        image_id, original_image_shape, image_shape, window, scale,
        active_class_ids, in that order.
    """
    return np.array(
        [image_id]
        + list(original_image_shape)
        + list(image_shape)
        + list(window)
        + [scale]
        + list(active_class_ids),
        dtype=np.float64)


def parse_image_meta(meta):
    """Unpack image metadata made by ``compose_image_meta``.

    Args:
        meta: [META_SIZE] for one image or [batch, META_SIZE].

    Returns:
        dict of arrays with the leading batch dimension of ``meta`` (if any):
        image_id int32 [], original_image_shape int32 [3], image_shape int32
        [3], window int32 [(y1, x1, y2, x2)], scale float32 [],
        active_class_ids int32 [NUM_CLASSES].
    """
    meta = np.asarray(meta)
    return {
        "image_id": meta[..., 0].astype(np.int32),
        "original_image_shape": meta[..., 1:4].astype(np.int32),
        "image_shape": meta[..., 4:7].astype(np.int32),
        "window": meta[..., 7:11].astype(np.int32),
        "scale": meta[..., 11].astype(np.float32),
        "active_class_ids": meta[..., 12:].astype(np.int32),
    }


def mold_image(images, config):
    """Subtract the mean pixel: uint8 RGB image(s) [..., 3] -> float32.

    The model takes images in this form; ``unmold_image`` is the inverse.
    """
    return images.astype(np.float32) - np.asarray(config.MEAN_PIXEL, np.float32)


def unmold_image(normalized_images, config):
    """Add the mean pixel back to image(s) made by ``mold_image`` -> uint8."""
    images = np.asarray(normalized_images, np.float32) + np.asarray(
        config.MEAN_PIXEL, np.float32)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


############################################################
#  Ground truth of one image
############################################################

def load_image_gt(dataset, config, image_id, augmentation=None,
                  use_mini_mask=False):
    """Load an image and its ground truth, resized for the model.

    Args:
        dataset: a prepared ``utils.Dataset``.
        config: the model's ``Config`` (IMAGE_RESIZE_MODE, IMAGE_MIN_DIM,
            IMAGE_MAX_DIM, IMAGE_MIN_SCALE, MINI_MASK_SHAPE).
        image_id: internal id of the image in ``dataset``.
        augmentation: None, an albumentations transform, or a callable
            ``(image, masks) -> (image, masks)``; see ``apply_augmentation``.
        use_mini_mask: return each mask cropped to its box and resized to
            ``config.MINI_MASK_SHAPE`` (see ``utils.minimize_mask``).

    Returns:
        image: uint8 [H, W, 3], resized (and padded or cropped).
        image_meta: [config.IMAGE_META_SIZE], see ``compose_image_meta``.
        class_ids: int32 [N] of the instances still visible after resizing,
            cropping and augmentation.
        bbox: int32 [N, (y1, x1, y2, x2)] tight boxes of their masks.
        mask: bool [H, W, N], or [mini_height, mini_width, N] with
            ``use_mini_mask``.
    """
    image = dataset.load_image(image_id)
    mask, class_ids = _load_checked_mask(dataset, image_id, image.shape)
    original_shape = image.shape
    image, window, scale, padding, crop = utils.resize_image(
        image,
        min_dim=config.IMAGE_MIN_DIM,
        min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM,
        mode=config.IMAGE_RESIZE_MODE)
    mask = utils.resize_mask(mask, scale, padding, crop)

    if augmentation is not None:
        image, mask = apply_augmentation(augmentation, image, mask)

    visible = mask.any(axis=(0, 1))
    mask = mask[:, :, visible]
    class_ids = class_ids[visible]
    bbox = utils.extract_bboxes(mask)

    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1

    if use_mini_mask:
        mask = utils.minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)

    image_meta = compose_image_meta(image_id, original_shape, image.shape,
                                    window, scale, active_class_ids)
    return image, image_meta, class_ids, bbox, mask


def _load_checked_mask(dataset, image_id, image_shape):
    """``dataset.load_mask`` as bool [H, W, N] and int32 [N], shapes checked."""
    mask, class_ids = dataset.load_mask(image_id)
    mask = np.asarray(mask)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    where = f"{type(dataset).__name__}.load_mask({image_id})"
    if mask.ndim != 3 or len(class_ids) != mask.shape[-1]:
        raise ValueError(
            f"{where} returned masks of shape {mask.shape} and "
            f"{len(class_ids)} class ids: it must return bool masks "
            "[height, width, instance_count] and one class id per instance.")
    if mask.shape[-1] == 0:
        return np.zeros(tuple(image_shape[:2]) + (0,), dtype=bool), class_ids
    if mask.shape[:2] != tuple(image_shape[:2]):
        raise ValueError(
            f"{where} returned masks of {mask.shape[:2]} pixels for an image "
            f"of {tuple(image_shape[:2])} pixels (load_image): each mask must "
            "have the size of the image.")
    return mask.astype(bool), class_ids


def apply_augmentation(augmentation, image, mask):
    """Augment an image and its instance masks together.

    Args:
        augmentation: an albumentations transform (``BasicTransform`` or a
            ``Compose``), called as ``augmentation(image=image, masks=...)``
            so that geometric transforms move the masks and pixel-level
            ones leave them untouched; or any callable
            ``(image, masks) -> (image, masks)``.
        image: uint8 [H, W, 3].
        mask: bool [H, W, N].

    Returns:
        The augmented image, uint8 [H, W, 3] (a float result of a callable
        is rounded and clipped to 0..255), and masks, bool [H, W, N].

    Raises:
        ValueError: if the augmentation changed the image size or the
            number of instances.
    """
    if _is_albumentations(augmentation):
        new_image, new_mask = _apply_albumentations(augmentation, image, mask)
    else:
        new_image, new_mask = augmentation(image, mask)
        new_image, new_mask = np.asarray(new_image), np.asarray(new_mask)
    if new_image.shape != image.shape or new_mask.shape != mask.shape:
        raise ValueError(
            f"The augmentation {type(augmentation).__name__} turned an image {image.shape} "
            f"and masks {mask.shape} into {new_image.shape} and "
            f"{new_mask.shape}: augmentations must keep the image size and "
            "the number of masks ([H, W, N]); resize or crop with "
            "IMAGE_RESIZE_MODE instead.")
    if new_image.dtype != image.dtype:
        new_image = np.clip(np.round(new_image), 0, 255)
    return new_image.astype(image.dtype), new_mask.astype(bool)


def _is_albumentations(augmentation):
    """Whether ``augmentation`` is an albumentations transform or Compose."""
    albumentations = sys.modules.get("albumentations")
    if albumentations is None:  # not imported, so not one of its transforms
        return False
    return isinstance(augmentation, (albumentations.BaseCompose,
                                     albumentations.BasicTransform))


def _apply_albumentations(transform, image, mask):
    """Run an albumentations transform on an image and [H, W, N] masks."""
    if mask.shape[-1] == 0:
        return transform(image=image)["image"], mask
    result = transform(image=image,
                       masks=np.moveaxis(mask, -1, 0).astype(np.uint8))
    masks = np.asarray(result["masks"])
    return result["image"], np.moveaxis(masks, 0, -1) > 0


############################################################
#  RPN targets
############################################################

def build_rpn_targets(image_shape, anchors, gt_class_ids, gt_boxes, config,
                      rng=None):
    """Label anchors and give the box deltas of the positive ones.

    The original's rules: an anchor is positive if its IoU with a GT box is
    >= 0.7, or if it is (one of) the best anchors of a GT box; negative if
    its best IoU is < 0.3 and it does not touch a crowd box (IoU >= 0.001
    with a box of negative class id); neutral otherwise. Then at most
    ``RPN_TRAIN_ANCHORS_PER_IMAGE // 2`` random positives are kept and the
    negatives fill the rest of ``RPN_TRAIN_ANCHORS_PER_IMAGE``.

    Args:
        image_shape: [H, W, C] of the molded image (unused; kept for the
            original's signature).
        anchors: [A, (y1, x1, y2, x2)] pixel anchors.
        gt_class_ids: int32 [N]; negative ids are crowd boxes.
        gt_boxes: [N, (y1, x1, y2, x2)] pixel boxes.
        config: RPN_TRAIN_ANCHORS_PER_IMAGE, RPN_BBOX_STD_DEV.
        rng: ``np.random.Generator`` for the subsampling (default: a fresh
            one).

    Returns:
        rpn_match: int32 [A], 1 positive, -1 negative, 0 neutral.
        rpn_bbox: float32 [RPN_TRAIN_ANCHORS_PER_IMAGE, (dy, dx, log(dh),
            log(dw))] deltas from each positive anchor (in anchor order) to
            its best GT box, divided by RPN_BBOX_STD_DEV; zero-padded.
    """
    del image_shape
    rng = np.random.default_rng(rng)
    anchors_per_image = config.RPN_TRAIN_ANCHORS_PER_IMAGE
    rpn_match = np.full([anchors.shape[0]], NEUTRAL, dtype=np.int32)
    rpn_bbox = np.zeros([anchors_per_image, 4], dtype=np.float32)

    crowd = gt_class_ids < 0
    if crowd.any():
        crowd_iou_max = utils.compute_overlaps(anchors, gt_boxes[crowd]).max(axis=1)
        far_from_crowd = crowd_iou_max < CROWD_IOU
        gt_boxes = gt_boxes[~crowd]
    else:
        far_from_crowd = np.ones([anchors.shape[0]], dtype=bool)

    overlaps = utils.compute_overlaps(anchors, gt_boxes)
    if gt_boxes.shape[0] == 0:
        anchor_iou_max = np.zeros([anchors.shape[0]])
        anchor_iou_argmax = np.zeros([anchors.shape[0]], dtype=np.int64)
    else:
        anchor_iou_argmax = overlaps.argmax(axis=1)
        anchor_iou_max = overlaps[np.arange(anchors.shape[0]), anchor_iou_argmax]

    rpn_match[(anchor_iou_max < RPN_NEGATIVE_IOU) & far_from_crowd] = NEGATIVE
    # The best anchor(s) of each GT box are positive, whatever their IoU
    # (a GT box that no anchor touches at all has none).
    best_of_gt = (overlaps == overlaps.max(axis=0, initial=0)) & (overlaps > 0)
    rpn_match[best_of_gt.any(axis=1)] = POSITIVE
    rpn_match[anchor_iou_max >= RPN_POSITIVE_IOU] = POSITIVE

    _drop_random(rng, rpn_match, POSITIVE, anchors_per_image // 2)
    _drop_random(rng, rpn_match, NEGATIVE,
                 anchors_per_image - np.sum(rpn_match == POSITIVE))

    positive = np.where(rpn_match == POSITIVE)[0]
    deltas = utils.box_refinement(anchors[positive],
                                  gt_boxes[anchor_iou_argmax[positive]])
    rpn_bbox[:len(positive)] = deltas / np.asarray(config.RPN_BBOX_STD_DEV)
    return rpn_match, rpn_bbox


def _drop_random(rng, rpn_match, label, keep_count):
    """Set random anchors of ``label`` to neutral until ``keep_count`` remain."""
    ids = np.where(rpn_match == label)[0]
    extra = len(ids) - keep_count
    if extra > 0:
        rpn_match[rng.choice(ids, extra, replace=False)] = NEUTRAL


############################################################
#  Detection targets (ROIs given as an input)
############################################################

def generate_random_rois(image_shape, count, gt_class_ids, gt_boxes, rng=None):
    """Random ROIs, most of them near the GT boxes, as the original draws them.

    ``int(0.9 * count / N)`` ROIs per GT box have their corners drawn
    uniformly in the box grown by its own height and width on each side
    (clipped to the image); the rest are drawn anywhere in the image. Every
    ROI is at least one pixel high and wide.

    Args:
        image_shape: [H, W, ...] of the image.
        count: number of ROIs to generate.
        gt_class_ids: [N] (unused; kept for the original's signature).
        gt_boxes: [N, (y1, x1, y2, x2)] pixel boxes.
        rng: ``np.random.Generator`` (default: a fresh one).

    Returns:
        int32 [count, (y1, x1, y2, x2)] pixel ROIs, those of the first GT box
        first, the image-wide ones last.
    """
    del gt_class_ids
    rng = np.random.default_rng(rng)
    height, width = image_shape[:2]
    box_count = gt_boxes.shape[0]
    rois_per_box = int(RANDOM_ROIS_NEAR_BOXES * count / box_count) if box_count else 0
    rois = []
    for y1, x1, y2, x2 in gt_boxes:
        h, w = y2 - y1, x2 - x1
        rois.append(_random_boxes(
            rng, rois_per_box,
            (max(y1 - h, 0), min(y2 + h, height)),
            (max(x1 - w, 0), min(x2 + w, width))))
    rois.append(_random_boxes(rng, count - rois_per_box * box_count,
                              (0, height), (0, width)))
    return np.concatenate(rois, axis=0).astype(np.int32)


def _random_boxes(rng, count, y_range, x_range):
    """``count`` boxes [count, (y1, x1, y2, x2)] with corners in the ranges.

    Each range is ``(start, stop)``; the two corner coordinates of a box are
    distinct integers drawn uniformly from ``[start, stop)``.
    """
    def sorted_distinct_pairs(start, stop):
        if stop - start < 2:
            raise ValueError(f"Cannot draw ROIs of at least one pixel in "
                             f"[{start}, {stop}).")
        pairs = np.zeros([0, 2], dtype=np.int64)
        while len(pairs) < count:
            draws = rng.integers(start, stop, (2 * count, 2))
            pairs = np.concatenate([pairs, draws[draws[:, 0] != draws[:, 1]]])
        return np.sort(pairs[:count], axis=1)

    y = sorted_distinct_pairs(*y_range)
    x = sorted_distinct_pairs(*x_range)
    return np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)


def build_detection_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, config,
                            rng=None):
    """Targets of the classifier and mask heads for given ROIs.

    The numpy counterpart of the model's DetectionTargetLayer, used when
    the model is trained on ROIs given as an input (``USE_RPN_ROIS =
    False``) and to inspect targets in the notebooks. A ROI is positive if
    its best IoU with a GT box (crowd boxes excluded) is > 0.5 and negative
    if it is < 0.5. Up to ``TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO``
    random positives are kept, negatives fill the rest; if there are too few
    ROIs, random kept negatives (or positives, if there are no negatives)
    are repeated.

    Args:
        rpn_rois: int32 [R, (y1, x1, y2, x2)] pixel ROIs.
        gt_class_ids: int32 [N] (0 for padding, negative for crowds).
        gt_boxes: int32 [N, (y1, x1, y2, x2)] pixel boxes.
        gt_masks: bool [H, W, N] masks of the image, or mini-masks
            [mini_height, mini_width, N] when ``config.USE_MINI_MASK``
            (expanded into ``config.IMAGE_SHAPE``).
        config: TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, NUM_CLASSES,
            BBOX_STD_DEV, MASK_SHAPE, USE_MINI_MASK, IMAGE_SHAPE.
        rng: ``np.random.Generator`` for the subsampling (default: a fresh
            one).

    Returns:
        rois: int32 [TRAIN_ROIS_PER_IMAGE, (y1, x1, y2, x2)], positives first.
        roi_gt_class_ids: int32 [TRAIN_ROIS_PER_IMAGE], 0 for negatives.
        bboxes: float32 [TRAIN_ROIS_PER_IMAGE, NUM_CLASSES, (dy, dx,
            log(dh), log(dw))]: for each positive, the deltas to its GT box
            divided by BBOX_STD_DEV, in the row of its class; zeros elsewhere.
        masks: float32 [TRAIN_ROIS_PER_IMAGE, MASK_SHAPE[0], MASK_SHAPE[1],
            NUM_CLASSES]: for each positive, the GT mask cropped to the ROI
            and resized (thresholded at 0.5, as the DetectionTargetLayer
            rounds its masks), in the channel of its class; zeros elsewhere.

    Raises:
        ValueError: for wrong dtypes, an image without instances, or ROIs
            that are neither positive nor negative.
    """
    _check_dtypes(rpn_rois, gt_class_ids, gt_boxes, gt_masks)
    rng = np.random.default_rng(rng)
    roi_count = config.TRAIN_ROIS_PER_IMAGE

    instances = np.where(gt_class_ids > 0)[0]
    if len(instances) == 0:
        raise ValueError("build_detection_targets needs an image with at "
                         "least one instance (class id > 0).")
    gt_class_ids = gt_class_ids[instances]
    gt_boxes = gt_boxes[instances]
    gt_masks = gt_masks[:, :, instances]

    overlaps = utils.compute_overlaps(rpn_rois, gt_boxes)
    roi_iou_argmax = overlaps.argmax(axis=1)
    roi_iou_max = overlaps[np.arange(len(rpn_rois)), roi_iou_argmax]
    positive_ids = np.where(roi_iou_max > ROI_POSITIVE_IOU)[0]
    negative_ids = np.where(roi_iou_max < ROI_POSITIVE_IOU)[0]
    if len(positive_ids) + len(negative_ids) == 0:
        raise ValueError("No ROI is either positive or negative (every ROI "
                         "has an IoU of exactly 0.5 with a GT box).")

    keep_positive = _sample(rng, positive_ids,
                            int(roi_count * config.ROI_POSITIVE_RATIO))
    keep_negative = _sample(rng, negative_ids, roi_count - len(keep_positive))
    keep = np.concatenate([keep_positive, keep_negative])
    shortfall = roi_count - len(keep)
    if shortfall > 0:
        repeat_from = keep_negative if len(keep_negative) else keep_positive
        keep = np.concatenate([keep, rng.choice(repeat_from, shortfall)])

    rois = rpn_rois[keep].astype(np.int32)
    is_positive = roi_iou_max[keep] > ROI_POSITIVE_IOU
    roi_gt = roi_iou_argmax[keep]
    roi_gt_class_ids = np.where(is_positive, gt_class_ids[roi_gt], 0).astype(np.int32)
    positive = np.where(is_positive)[0]
    positive_classes = roi_gt_class_ids[positive]

    bboxes = np.zeros([roi_count, config.NUM_CLASSES, 4], dtype=np.float32)
    bboxes[positive, positive_classes] = utils.box_refinement(
        rois[positive], gt_boxes[roi_gt[positive]]) / np.asarray(config.BBOX_STD_DEV)

    if config.USE_MINI_MASK:
        gt_masks = utils.expand_mask(gt_boxes, gt_masks, config.IMAGE_SHAPE)
    masks = np.zeros([roi_count, config.MASK_SHAPE[0], config.MASK_SHAPE[1],
                      config.NUM_CLASSES], dtype=np.float32)
    crops = utils.minimize_mask(rois[positive], gt_masks[:, :, roi_gt[positive]],
                                config.MASK_SHAPE)
    masks[positive, :, :, positive_classes] = np.moveaxis(crops, -1, 0)
    return rois, roi_gt_class_ids, bboxes, masks


def _check_dtypes(rpn_rois, gt_class_ids, gt_boxes, gt_masks):
    """Raise ValueError unless the arrays have the dtypes load_image_gt gives."""
    expected = [("rpn_rois", rpn_rois, np.integer, "an integer dtype"),
                ("gt_class_ids", gt_class_ids, np.int32, "int32"),
                ("gt_boxes", gt_boxes, np.int32, "int32"),
                ("gt_masks", gt_masks, np.bool_, "bool")]
    for name, array, dtype, dtype_name in expected:
        if not np.issubdtype(array.dtype, dtype):
            raise ValueError(f"{name} has dtype {array.dtype}; expected "
                             f"{dtype_name}, as load_image_gt and "
                             "generate_random_rois give.")


def _sample(rng, ids, count):
    """At most ``count`` of ``ids``, drawn at random without replacement."""
    if len(ids) > count:
        return rng.choice(ids, count, replace=False)
    return ids


############################################################
#  Batches
############################################################

def load_training_sample(dataset, config, image_id, anchors, augmentation=None,
                         random_rois=0, detection_targets=False, rng=None):
    """Everything the training model needs of one image.

    Args:
        dataset, config, image_id, augmentation: as for ``load_image_gt``
            (masks are mini-masks when ``config.USE_MINI_MASK``).
        anchors: [A, (y1, x1, y2, x2)] anchors of ``config.IMAGE_SHAPE``.
        random_rois: if > 0, also draw that many ROIs
            (``generate_random_rois``).
        detection_targets: also build the head targets for those ROIs
            (``build_detection_targets``).
        rng: ``np.random.Generator`` for every random choice.

    Returns:
        None if the image has no instance (class id > 0) left; otherwise a
        dict with image (uint8 [H, W, 3]), image_meta, rpn_match [A],
        rpn_bbox, gt_class_ids, gt_boxes, gt_masks (at most
        MAX_GT_INSTANCES instances, a random subset if there are more; the
        RPN targets use all of them), and with ``random_rois`` rpn_rois,
        plus with ``detection_targets`` rois, mrcnn_class_ids, mrcnn_bbox
        and mrcnn_mask.
    """
    rng = np.random.default_rng(rng)
    image, image_meta, gt_class_ids, gt_boxes, gt_masks = load_image_gt(
        dataset, config, image_id, augmentation=augmentation,
        use_mini_mask=config.USE_MINI_MASK)
    if not np.any(gt_class_ids > 0):
        return None
    if tuple(image.shape) != tuple(config.IMAGE_SHAPE):
        raise ValueError(
            f"Image {image_id} ({dataset.image_reference(image_id)}) is "
            f"{image.shape} after resizing but training needs "
            f"config.IMAGE_SHAPE {tuple(config.IMAGE_SHAPE)}: train with "
            'IMAGE_RESIZE_MODE "square" or "crop".')

    sample = {"image": image, "image_meta": image_meta}
    sample["rpn_match"], sample["rpn_bbox"] = build_rpn_targets(
        image.shape, anchors, gt_class_ids, gt_boxes, config, rng=rng)
    if random_rois:
        sample["rpn_rois"] = generate_random_rois(
            image.shape, random_rois, gt_class_ids, gt_boxes, rng=rng)
        if detection_targets:
            (sample["rois"], sample["mrcnn_class_ids"], sample["mrcnn_bbox"],
             sample["mrcnn_mask"]) = build_detection_targets(
                sample["rpn_rois"], gt_class_ids, gt_boxes, gt_masks, config,
                rng=rng)

    if len(gt_class_ids) > config.MAX_GT_INSTANCES:
        ids = rng.choice(len(gt_class_ids), config.MAX_GT_INSTANCES, replace=False)
        gt_class_ids, gt_boxes, gt_masks = gt_class_ids[ids], gt_boxes[ids], gt_masks[:, :, ids]
    sample.update(gt_class_ids=gt_class_ids, gt_boxes=gt_boxes, gt_masks=gt_masks)
    return sample


class DataGenerator(keras.utils.PyDataset):
    """Training batches for ``MaskRCNN.train``, as a Keras ``PyDataset``.

    Item ``i`` is a batch ``(inputs,)`` where ``inputs`` is the tuple of the
    training model's inputs, in the original's order (B = batch size,
    A = number of anchors, G = MAX_GT_INSTANCES, instances zero-padded):

    - batch_images: float32 [B, H, W, 3], molded (``mold_image``).
    - batch_image_meta: float32 [B, IMAGE_META_SIZE].
    - batch_rpn_match: int32 [B, A, 1].
    - batch_rpn_bbox: float32 [B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4].
    - batch_gt_class_ids: int32 [B, G].
    - batch_gt_boxes: int32 [B, G, (y1, x1, y2, x2)] pixels.
    - batch_gt_masks: bool [B, h, w, G], (h, w) = MINI_MASK_SHAPE with
      USE_MINI_MASK, else the image size.

    With ``random_rois`` the inputs end with batch_rpn_rois int32
    [B, random_rois, 4]; with ``detection_targets`` also with batch_rois
    int32 [B, TRAIN_ROIS_PER_IMAGE, 4], and the item is ``(inputs,
    outputs)`` with outputs mrcnn_class_ids int32 [B, TRAIN_ROIS_PER_IMAGE,
    1], mrcnn_bbox float32 [B, TRAIN_ROIS_PER_IMAGE, NUM_CLASSES, 4] and
    mrcnn_mask float32 [B, TRAIN_ROIS_PER_IMAGE, mask h, mask w,
    NUM_CLASSES].

    The batches take their images from an endless stream, as the
    original's generator did: the dataset's images pass after pass, each
    pass in a new random order when shuffling. An epoch is ``steps``
    batches and the next epoch goes on where it ended, so with fewer steps
    than ``image_count // batch_size`` the epochs still cover every image
    in turn. An image without instances is skipped: a random image of the
    dataset takes its place.

    Args:
        dataset: a prepared ``utils.Dataset`` with ``config.NUM_CLASSES``
            classes.
        config: the training ``Config``.
        shuffle: shuffle the images at the start of every epoch.
        augmentation: see ``apply_augmentation``.
        random_rois: if > 0, add that many random ROIs per image.
        detection_targets: add the head targets for the random ROIs.
        no_augmentation_sources: dataset sources whose images are never
            augmented.
        batch_size: images per batch (default ``config.BATCH_SIZE``).
        steps: batches per epoch (``len()``), e.g. ``config.STEPS_PER_EPOCH``;
            default ``max(1, image_count // batch_size)``, one pass.
        seed: seed of the shuffling, subsampling and ROI sampling (None:
            random). Each pass and each batch draws from its own random
            generator, seeded by the seed and its position in the stream,
            so the batches do not depend on the number of workers.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``
            of ``keras.utils.PyDataset``.
    """

    def __init__(self, dataset, config, shuffle=True, augmentation=None,
                 random_rois=0, detection_targets=False,
                 no_augmentation_sources=None, batch_size=None, steps=None,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        if dataset.num_classes != config.NUM_CLASSES:
            raise ValueError(
                f"The dataset has {dataset.num_classes} classes (background "
                f"included) but config.NUM_CLASSES is {config.NUM_CLASSES}: "
                "set NUM_CLASSES = 1 + the number of object classes.")
        if len(dataset.image_ids) == 0:
            raise ValueError("The dataset has no images: add images, then "
                             "call dataset.prepare().")
        if detection_targets and not random_rois:
            raise ValueError("detection_targets=True needs random_rois > 0: "
                             "the targets are built for those ROIs.")
        self.dataset = dataset
        self.config = config
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.random_rois = random_rois
        self.detection_targets = detection_targets
        self.no_augmentation_sources = set(no_augmentation_sources or [])
        self.batch_size = batch_size or config.BATCH_SIZE
        self.seed = np.random.SeedSequence(seed).entropy
        self.anchors = utils.generate_pyramid_anchors(
            config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
            compute_backbone_shapes(config, config.IMAGE_SHAPE),
            config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
        self.steps = steps or max(1, len(dataset.image_ids) // self.batch_size)
        self.epoch = 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} out of range(0, {len(self)}).")
        batch_number = self.epoch * self.steps + index
        rng = np.random.default_rng([self.seed, BATCH_STREAM, batch_number])
        samples = self._samples(batch_number * self.batch_size, rng)
        inputs = tuple(self._stack(samples, key) for key in self._input_keys())
        if not self.detection_targets:
            return (inputs,)
        outputs = (self._stack(samples, "mrcnn_class_ids")[..., np.newaxis],
                   self._stack(samples, "mrcnn_bbox"),
                   self._stack(samples, "mrcnn_mask"))
        return inputs, outputs

    def on_epoch_end(self):
        """Move on to the next epoch's batches of the image stream."""
        self.epoch += 1

    def image_id_at(self, position):
        """The image at ``position`` of the stream of images.

        Position ``p`` is in pass ``p // image_count``; each pass is the
        dataset's image ids in a random order of its own (when shuffling).
        """
        image_ids = self.dataset.image_ids
        pass_number, offset = divmod(position, len(image_ids))
        if not self.shuffle:
            return image_ids[offset]
        rng = np.random.default_rng([self.seed, PASS_STREAM, pass_number])
        return image_ids[rng.permutation(len(image_ids))[offset]]

    def _input_keys(self):
        keys = ["image", "image_meta", "rpn_match", "rpn_bbox",
                "gt_class_ids", "gt_boxes", "gt_masks"]
        if self.random_rois:
            keys.append("rpn_rois")
            if self.detection_targets:
                keys.append("rois")
        return keys

    def _stack(self, samples, key):
        """Batch array of ``sample[key]`` for the samples.

        Images are molded; instances (gt_class_ids, gt_boxes, gt_masks) are
        zero-padded to MAX_GT_INSTANCES; rpn_match gets a last axis of 1.
        """
        arrays = [sample[key] for sample in samples]
        if key == "image":
            return mold_image(np.stack(arrays), self.config)
        if key == "image_meta":
            return np.stack(arrays).astype(np.float32)
        if key == "rpn_match":
            return np.stack(arrays)[..., np.newaxis]
        if key in ("gt_class_ids", "gt_boxes", "gt_masks"):
            instance_axis = -1 if key == "gt_masks" else 0
            return _pad_instances(arrays, self.config.MAX_GT_INSTANCES, instance_axis)
        return np.stack(arrays)

    def _samples(self, start, rng):
        """The samples of the images at ``start``... of the image stream.

        An image without instances is replaced by the next image of a random
        order of the dataset (cycled), as the original's generator skipped
        it.
        """
        image_ids = self.dataset.image_ids
        replacements = itertools.cycle(rng.permutation(image_ids))
        samples = []
        for position in range(start, start + self.batch_size):
            image_id = self.image_id_at(position)
            misses = 0
            while (sample := self._load(image_id, rng)) is None:
                misses += 1
                if misses > len(image_ids):
                    raise ValueError(
                        f"No image of the dataset has an instance (tried "
                        f"{misses} images): training needs images with masks.")
                image_id = next(replacements)
            samples.append(sample)
        return samples

    def _load(self, image_id, rng):
        """``load_training_sample`` of one image, naming the image on error."""
        source = self.dataset.image_info[image_id]["source"]
        augmentation = (None if source in self.no_augmentation_sources
                        else self.augmentation)
        try:
            return load_training_sample(
                self.dataset, self.config, image_id, self.anchors,
                augmentation=augmentation, random_rois=self.random_rois,
                detection_targets=self.detection_targets, rng=rng)
        except Exception as error:
            error.add_note(f"While loading image {image_id} "
                           f"({self.dataset.image_reference(image_id)!r}) "
                           "for training.")
            raise


def _pad_instances(arrays, size, axis):
    """Stack arrays after zero-padding their instance ``axis`` to ``size``."""
    padded = []
    for array in arrays:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, size - array.shape[axis])
        padded.append(np.pad(array, widths))
    return np.stack(padded)


def data_generator(dataset, config, shuffle=True, augmentation=None,
                   random_rois=0, batch_size=1, detection_targets=False,
                   no_augmentation_sources=None):
    """The original's endless generator of training batches.

    Yields ``(inputs, outputs)`` lists, ``inputs`` as the inputs of
    ``DataGenerator`` and ``outputs`` empty, or with ``detection_targets``
    [mrcnn_class_ids, mrcnn_bbox, mrcnn_mask]. It walks through the
    ``DataGenerator`` batches epoch after epoch, an endless stream::

        inputs, outputs = next(data_generator(dataset, config))
    """
    batches = DataGenerator(
        dataset, config, shuffle=shuffle, augmentation=augmentation,
        random_rois=random_rois, detection_targets=detection_targets,
        no_augmentation_sources=no_augmentation_sources, batch_size=batch_size)
    while True:
        for index in range(len(batches)):
            batch = batches[index]
            outputs = batch[1] if len(batch) > 1 else ()
            yield list(batch[0]), list(outputs)
        batches.on_epoch_end()
