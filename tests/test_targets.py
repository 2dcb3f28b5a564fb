"""Tests of mrcnn.targets: anchor labels, random ROIs, head targets, against numpy."""

import numpy as np
import pytest

from mrcnn import data, targets, utils

from conftest import iou_matrix, make_shapes_config


def test_build_rpn_targets_hand_made_case():
    shapes_config = make_shapes_config(RPN_TRAIN_ANCHORS_PER_IMAGE=256)
    gt_boxes = np.array([[0, 0, 10, 10], [30, 30, 60, 60], [0, 50, 10, 60]], dtype=np.int32)
    gt_class_ids = np.array([1, 2, -1], dtype=np.int32)  # the last is a crowd
    anchors = np.array([
        [0, 0, 10, 10],    # IoU 1 with box 0: positive
        [0, 0, 10, 12],    # IoU 0.83 with box 0: positive
        [0, 0, 10, 20],    # IoU 0.5: neutral
        [40, 0, 50, 10],   # touches nothing: negative
        [30, 30, 50, 50],  # IoU 0.44, the best anchor of box 1: positive
        [45, 45, 60, 60],  # IoU 0.25: negative
        [0, 50, 10, 60],   # the crowd box: neutral
        [0, 58, 10, 64],   # IoU 0.14 with the crowd: neutral
    ], dtype=np.float64)
    rpn_match, rpn_bbox = targets.build_rpn_targets((64, 64, 3), anchors, gt_class_ids, gt_boxes, shapes_config)
    assert rpn_match.dtype == np.int32 and rpn_bbox.dtype == np.float32
    np.testing.assert_array_equal(rpn_match, [1, 1, 0, -1, 1, -1, 0, 0])
    assert rpn_bbox.shape == (256, 4)
    std = np.array([0.1, 0.1, 0.2, 0.2])
    expected = np.array([[0, 0, 0, 0],
                         [0, -1 / 12, 0, np.log(10 / 12)],
                         [0.25, 0.25, np.log(1.5), np.log(1.5)]]) / std
    np.testing.assert_allclose(rpn_bbox[:3], expected, rtol=1e-5, atol=1e-6)
    assert not rpn_bbox[3:].any()
    decoded = utils.apply_box_deltas(anchors[[0, 1, 4]], rpn_bbox[:3] * std)
    np.testing.assert_allclose(decoded, gt_boxes[[0, 0, 1]], atol=1e-4)


def test_build_rpn_targets_ties_for_best_anchor_are_all_positive():
    anchors = np.array([[0, 0, 10, 20], [0, 0, 20, 10], [0, 0, 20, 20]], dtype=np.float64)
    rpn_match, _ = targets.build_rpn_targets(
        (32, 32, 3), anchors, np.array([1], np.int32), np.array([[0, 0, 10, 10]], np.int32),
        make_shapes_config(RPN_TRAIN_ANCHORS_PER_IMAGE=256))
    np.testing.assert_array_equal(rpn_match, [1, 1, -1])


def test_build_rpn_targets_without_gt_boxes_only_has_negatives():
    anchors = random_boxes(np.random.default_rng(1), 50).astype(float)
    rpn_match, rpn_bbox = targets.build_rpn_targets(
        (128, 128, 3), anchors, np.zeros(0, np.int32), np.zeros((0, 4), np.int32),
        make_shapes_config(RPN_TRAIN_ANCHORS_PER_IMAGE=16))
    assert (rpn_match == -1).sum() == 16 and (rpn_match == 0).sum() == 34
    assert not rpn_bbox.any()


def random_boxes(rng, count, side=128, max_size=60):
    corners = rng.integers(0, side - max_size, (count, 2))
    sizes = rng.integers(4, max_size, (count, 2))
    return np.concatenate([corners, corners + sizes], axis=1)


def expected_rpn_match(anchors, gt_boxes):
    overlaps = iou_matrix(anchors, gt_boxes)
    best_iou = overlaps.max(axis=1)
    match = np.where(best_iou < 0.3, -1, 0)
    match[np.any((overlaps == overlaps.max(axis=0)) & (overlaps > 0), axis=1)] = 1
    match[best_iou >= 0.7] = 1
    return match, overlaps.argmax(axis=1)


def test_build_rpn_targets_random_case_against_numpy(shapes_config):
    rng = np.random.default_rng(5)
    anchors = random_boxes(rng, 400).astype(np.float64)
    gt_boxes = random_boxes(rng, 6).astype(np.int32)
    rpn_match, rpn_bbox = targets.build_rpn_targets(
        (128, 128, 3), anchors, np.ones(6, np.int32), gt_boxes,
        make_shapes_config(RPN_TRAIN_ANCHORS_PER_IMAGE=1000))
    expected, best_gt = expected_rpn_match(anchors, gt_boxes)
    np.testing.assert_array_equal(rpn_match, expected)
    positive = np.where(expected == 1)[0]
    decoded = utils.apply_box_deltas(anchors[positive], rpn_bbox[:len(positive)] * shapes_config.RPN_BBOX_STD_DEV)
    np.testing.assert_allclose(decoded, gt_boxes[best_gt[positive]], atol=1e-3)


def test_build_rpn_targets_balances_positives_and_negatives():
    rng = np.random.default_rng(6)
    anchors = np.concatenate([random_boxes(rng, 300),
                              np.repeat(np.array([[10, 10, 50, 50]]), 12, axis=0)]).astype(float)
    gt_boxes = np.array([[10, 10, 50, 50], [60, 60, 100, 110]], dtype=np.int32)
    expected, _ = expected_rpn_match(anchors, gt_boxes)
    assert (expected == 1).sum() > 8 and (expected == -1).sum() > 16
    rpn_match, rpn_bbox = targets.build_rpn_targets(
        (128, 128, 3), anchors, np.ones(2, np.int32), gt_boxes,
        make_shapes_config(RPN_TRAIN_ANCHORS_PER_IMAGE=16), rng=np.random.default_rng(0))
    assert (rpn_match == 1).sum() == 8 and (rpn_match == -1).sum() == 8
    assert np.all(expected[rpn_match == 1] == 1) and np.all(expected[rpn_match == -1] == -1)
    assert np.all(rpn_match[expected == 0] == 0)
    assert rpn_bbox.shape == (16, 4) and not rpn_bbox[8:].any()
    best_gt = iou_matrix(anchors, gt_boxes).argmax(axis=1)[rpn_match == 1]
    decoded = utils.apply_box_deltas(anchors[rpn_match == 1], rpn_bbox[:8] * [0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(decoded, gt_boxes[best_gt], atol=1e-3)


def test_generate_random_rois():
    gt_boxes = np.array([[10, 20, 40, 60], [80, 80, 100, 120]], dtype=np.int32)
    rois = targets.generate_random_rois((128, 128, 3), 100, np.array([1, 2], np.int32), gt_boxes,
                                     rng=np.random.default_rng(1))
    assert rois.shape == (100, 4) and rois.dtype == np.int32
    assert np.all(rois[:, 2] > rois[:, 0]) and np.all(rois[:, 3] > rois[:, 1])
    assert rois.min() >= 0 and rois[:, [0, 2]].max() <= 127 and rois[:, [1, 3]].max() <= 127
    # 45 ROIs per box inside the box grown by its size on each side.
    for i, (y1, x1, y2, x2) in enumerate(gt_boxes):
        near = rois[45 * i:45 * (i + 1)]
        h, w = y2 - y1, x2 - x1
        assert near[:, [0, 2]].min() >= max(y1 - h, 0) and near[:, [0, 2]].max() < min(y2 + h, 128)
        assert near[:, [1, 3]].min() >= max(x1 - w, 0) and near[:, [1, 3]].max() < min(x2 + w, 128)


def detection_case(shapes_dataset, shapes_config, image_id=1, roi_count=200, seed=2):
    _, _, class_ids, boxes, masks = data.load_image_gt(
        shapes_dataset, shapes_config, image_id, use_mini_mask=shapes_config.USE_MINI_MASK)
    rois = targets.generate_random_rois((128, 128), roi_count, class_ids, boxes,
                                     rng=np.random.default_rng(seed))
    return rois, class_ids, boxes, masks


def test_build_detection_targets(shapes_dataset):
    shapes_config = make_shapes_config(USE_MINI_MASK=False)
    rpn_rois, gt_class_ids, gt_boxes, gt_masks = detection_case(shapes_dataset, shapes_config, roi_count=600)
    assert (iou_matrix(rpn_rois, gt_boxes).max(axis=1) > 0.5).sum() > 10
    rois, roi_class_ids, bboxes, masks = targets.build_detection_targets(
        rpn_rois, gt_class_ids, gt_boxes, gt_masks, shapes_config, rng=np.random.default_rng(0))
    assert rois.shape == (32, 4) and rois.dtype == np.int32
    assert roi_class_ids.shape == (32,) and roi_class_ids.dtype == np.int32
    assert bboxes.shape == (32, 3, 4) and bboxes.dtype == np.float32
    assert masks.shape == (32, 28, 28, 3) and masks.dtype == np.float32

    # Every ROI is one of the inputs; positives (IoU > 0.5) come first, 10 of 32.
    overlaps = iou_matrix(rois, gt_boxes)
    assert all((rpn_rois == roi).all(axis=1).any() for roi in rois)
    positive = overlaps.max(axis=1) > 0.5
    assert positive.sum() == int(32 * 0.33) and positive[:10].all()
    assert np.all(overlaps[~positive].max(axis=1) < 0.5)
    best = overlaps.argmax(axis=1)
    np.testing.assert_array_equal(roi_class_ids, np.where(positive, gt_class_ids[best], 0))

    for i in np.where(positive)[0]:
        class_id, (y1, x1, y2, x2) = roi_class_ids[i], rois[i]
        gt = gt_boxes[best[i]]
        deltas = bboxes[i, class_id] * shapes_config.BBOX_STD_DEV
        np.testing.assert_allclose(utils.apply_box_deltas(rois[i:i + 1], deltas[None]), [gt], atol=1e-3)
        assert not np.delete(bboxes[i], class_id, axis=0).any()
        # The mask target is the GT mask inside the ROI, sampled at 28x28.
        rows = y1 + ((np.arange(28) + 0.5) * (y2 - y1) / 28).astype(int)
        cols = x1 + ((np.arange(28) + 0.5) * (x2 - x1) / 28).astype(int)
        sampled = gt_masks[np.ix_(rows, cols, [best[i]])][:, :, 0]
        assert np.mean(masks[i, :, :, class_id] == sampled) > 0.9
        assert not np.delete(masks[i], class_id, axis=-1).any()
    assert not bboxes[~positive].any() and not masks[~positive].any()


def test_build_detection_targets_mini_masks_match_full_masks(shapes_dataset):
    full, mini = make_shapes_config(USE_MINI_MASK=False), make_shapes_config(USE_MINI_MASK=True)
    results = []
    for shapes_config in (full, mini):
        results.append(targets.build_detection_targets(
            *detection_case(shapes_dataset, shapes_config), shapes_config, rng=np.random.default_rng(4)))
    for full_array, mini_array in zip(results[0][:3], results[1][:3]):
        np.testing.assert_array_equal(full_array, mini_array)
    assert np.mean(results[0][3] == results[1][3]) > 0.98


def test_build_detection_targets_repeats_negatives_when_short(shapes_dataset):
    shapes_config = make_shapes_config(USE_MINI_MASK=False)
    _, _, gt_class_ids, gt_boxes, gt_masks = data.load_image_gt(shapes_dataset, shapes_config, 1)
    negatives = np.array([[0, 100, 10, 110], [100, 0, 110, 5], [40, 40, 50, 50]], dtype=np.int32)
    rpn_rois = np.concatenate([gt_boxes, negatives])
    rois, roi_class_ids, _, _ = targets.build_detection_targets(
        rpn_rois, gt_class_ids, gt_boxes, gt_masks, shapes_config, rng=np.random.default_rng(0))
    assert rois.shape == (32, 4)
    assert {tuple(roi) for roi in rois[:3]} == {tuple(box) for box in gt_boxes}
    assert {tuple(roi) for roi in rois[3:]} == {tuple(roi) for roi in negatives}
    assert sorted(roi_class_ids[:3]) == sorted(gt_class_ids) and not roi_class_ids[3:].any()


def test_build_detection_targets_checks_dtypes(shapes_dataset, shapes_config):
    rpn_rois, gt_class_ids, gt_boxes, gt_masks = detection_case(shapes_dataset, shapes_config)
    with pytest.raises(ValueError, match="gt_boxes has dtype float64"):
        targets.build_detection_targets(rpn_rois, gt_class_ids, gt_boxes.astype(float), gt_masks, shapes_config)
    with pytest.raises(ValueError, match="at least one instance"):
        targets.build_detection_targets(rpn_rois, gt_class_ids * 0, gt_boxes, gt_masks, shapes_config)
