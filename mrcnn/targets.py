"""Training targets in numpy: anchor labels, ROI samples and head targets.

What each anchor and each ROI should predict for one image, given its ground
truth. The thresholds below are the only copy: the training graph's
DetectionTargetLayer (``mrcnn.layers``) imports them too, so the numpy data
path and the graph label ROIs alike.

- ``build_rpn_targets``: anchors -> positive / negative / neutral labels and
  the box deltas of the positives (the RPN's targets, fed to the model).
- ``generate_random_rois``: ROIs drawn around the ground truth (training the
  heads without the RPN, and the notebooks).
- ``build_detection_targets``: ROIs -> class, box and mask targets of the
  heads (the numpy twin of DetectionTargetLayer).

Conventions: boxes are [N, (y1, x1, y2, x2)] pixels, y2/x2 exclusive; class
id 0 is the background and negative ids mark crowd boxes (COCO ``iscrowd``).
"""

import numpy as np

from mrcnn import utils

# Anchor labels in rpn_match.
POSITIVE, NEGATIVE, NEUTRAL = 1, -1, 0
# IoU thresholds of the original. An anchor is positive from RPN_POSITIVE_IOU
# on, negative below RPN_NEGATIVE_IOU; a ROI is positive from
# ROI_POSITIVE_IOU on, negative below it. Anchors and ROIs with an IoU of
# CROWD_IOU or more with a crowd box are never negatives.
RPN_POSITIVE_IOU = 0.7
RPN_NEGATIVE_IOU = 0.3
CROWD_IOU = 0.001
ROI_POSITIVE_IOU = 0.5
# Share of generate_random_rois' ROIs drawn around the GT boxes.
RANDOM_ROIS_NEAR_BOXES = 0.9


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
    its best IoU with a GT box (crowd boxes excluded) is at least
    ROI_POSITIVE_IOU (0.5) and negative otherwise. Up to ``TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO``
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
        ValueError: for wrong dtypes or an image without instances.
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
    positive_ids = np.where(roi_iou_max >= ROI_POSITIVE_IOU)[0]
    negative_ids = np.where(roi_iou_max < ROI_POSITIVE_IOU)[0]

    keep_positive = _sample(rng, positive_ids,
                            int(roi_count * config.ROI_POSITIVE_RATIO))
    keep_negative = _sample(rng, negative_ids, roi_count - len(keep_positive))
    keep = np.concatenate([keep_positive, keep_negative])
    shortfall = roi_count - len(keep)
    if shortfall > 0:
        repeat_from = keep_negative if len(keep_negative) else keep_positive
        keep = np.concatenate([keep, rng.choice(repeat_from, shortfall)])

    rois = rpn_rois[keep].astype(np.int32)
    is_positive = roi_iou_max[keep] >= ROI_POSITIVE_IOU
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
