"""Tests of mrcnn.data: image meta, ground truth, RPN/detection targets, batches."""

import os
import pickle
import random

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

import albumentations as A
import numpy as np
import pytest

from mrcnn import data, utils
from mrcnn.config import Config

SQUARE, CIRCLE = 1, 2
COLORS = {SQUARE: (220, 30, 30), CIRCLE: (30, 200, 60)}

# (height, width, [(class id, (y1, x1, y2, x2)), ...]) of each test image.
TWO_SHAPES = (100, 160, [(SQUARE, (10, 20, 40, 60)), (CIRCLE, (50, 100, 90, 150))])
THREE_SHAPES = (128, 128, [(SQUARE, (0, 0, 30, 30)), (CIRCLE, (60, 60, 120, 120)),
                           (SQUARE, (70, 10, 100, 40))])
ONE_CIRCLE = (90, 90, [(CIRCLE, (20, 20, 70, 70))])
EMPTY = (64, 64, [])
TWELVE_SQUARES = (128, 128, [(SQUARE, (10 + 30 * (i // 4), 5 + 30 * (i % 4),
                                       30 + 30 * (i // 4), 25 + 30 * (i % 4)))
                             for i in range(12)])


class ShapesTestDataset(utils.Dataset):
    """Images with drawn squares and circles (ellipses inscribed in a box)."""

    def __init__(self, specs, source="test"):
        super().__init__()
        self.add_class(source, SQUARE, "square")
        self.add_class(source, CIRCLE, "circle")
        for i, (height, width, shapes) in enumerate(specs):
            self.add_image(source, image_id=i, path=None, height=height,
                           width=width, shapes=shapes)
        self.prepare()

    def load_image(self, image_id):
        info = self.image_info[image_id]
        image = np.full((info["height"], info["width"], 3), 40, dtype=np.uint8)
        masks, class_ids = self.drawn_masks(image_id)
        for i, class_id in enumerate(class_ids):
            image[masks[:, :, i]] = COLORS[class_id]
        return image

    def load_mask(self, image_id):
        return self.drawn_masks(image_id)

    def drawn_masks(self, image_id):
        info = self.image_info[image_id]
        rows, cols = np.mgrid[:info["height"], :info["width"]] + 0.5
        masks = np.zeros((info["height"], info["width"], len(info["shapes"])), dtype=bool)
        for i, (class_id, (y1, x1, y2, x2)) in enumerate(info["shapes"]):
            if class_id == SQUARE:
                masks[y1:y2, x1:x2, i] = True
            else:
                cy, cx, ry, rx = (y1 + y2) / 2, (x1 + x2) / 2, (y2 - y1) / 2, (x2 - x1) / 2
                masks[:, :, i] = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
        return masks, np.array([c for c, _ in info["shapes"]], dtype=np.int32)


class TinyConfig(Config):
    NAME = "data_test"
    NUM_CLASSES = 1 + 2
    BACKBONE = "resnet50"
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    IMAGES_PER_GPU = 2
    MAX_GT_INSTANCES = 10
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    TRAIN_ROIS_PER_IMAGE = 32
    MINI_MASK_SHAPE = (28, 28)


def make_config(**overrides):
    return type("TestConfig", (TinyConfig,), overrides)()


def iou_matrix(boxes1, boxes2):
    """IoU [N1, N2] by broadcasting (independent of utils.compute_overlaps)."""
    b1, b2 = boxes1[:, None, :].astype(float), boxes2[None, :, :].astype(float)
    height = np.clip(np.minimum(b1[..., 2], b2[..., 2]) - np.maximum(b1[..., 0], b2[..., 0]), 0, None)
    width = np.clip(np.minimum(b1[..., 3], b2[..., 3]) - np.maximum(b1[..., 1], b2[..., 1]), 0, None)
    intersection = height * width
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    return intersection / (area1 + area2 - intersection)


def boxes_of(masks):
    """Tight boxes of [H, W, N] masks, x2/y2 exclusive, via np.nonzero."""
    boxes = []
    for i in range(masks.shape[-1]):
        ys, xs = np.nonzero(masks[:, :, i])
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return np.array(boxes, dtype=np.int32).reshape(-1, 4)


@pytest.fixture(scope="module")
def config():
    return TinyConfig()


@pytest.fixture(scope="module")
def dataset():
    return ShapesTestDataset([TWO_SHAPES, THREE_SHAPES, ONE_CIRCLE, EMPTY, TWELVE_SQUARES])


############################################################
#  Image meta, mold/unmold
############################################################

def test_compose_parse_image_meta_round_trip(config):
    meta = data.compose_image_meta(7, (100, 160, 3), (128, 128, 3), (24, 0, 104, 128),
                                   0.8, [1, 1, 0])
    assert meta.shape == (config.IMAGE_META_SIZE,)
    np.testing.assert_allclose(meta, [7, 100, 160, 3, 128, 128, 3, 24, 0, 104, 128, 0.8, 1, 1, 0])
    parsed = data.parse_image_meta(meta)
    assert parsed["image_id"] == 7
    np.testing.assert_array_equal(parsed["original_image_shape"], [100, 160, 3])
    np.testing.assert_array_equal(parsed["image_shape"], [128, 128, 3])
    np.testing.assert_array_equal(parsed["window"], [24, 0, 104, 128])
    assert parsed["scale"] == pytest.approx(0.8)
    np.testing.assert_array_equal(parsed["active_class_ids"], [1, 1, 0])

    batch = data.parse_image_meta(np.stack([meta, meta * 0]).astype(np.float32))
    np.testing.assert_array_equal(batch["image_id"], [7, 0])
    assert batch["window"].shape == (2, 4) and batch["window"].dtype == np.int32
    assert batch["active_class_ids"].shape == (2, 3)


def test_mold_unmold_round_trip(config):
    image = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    molded = data.mold_image(image, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded, image - config.MEAN_PIXEL, atol=1e-4)
    restored = data.unmold_image(molded, config)
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, image)


############################################################
#  load_image_gt
############################################################

def test_load_image_gt_resizes_image_masks_and_boxes(dataset, config):
    image, meta, class_ids, bbox, mask = data.load_image_gt(dataset, config, 0)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert mask.shape == (128, 128, 2) and mask.dtype == bool
    assert class_ids.dtype == np.int32 and bbox.dtype == np.int32
    np.testing.assert_array_equal(class_ids, [SQUARE, CIRCLE])
    np.testing.assert_array_equal(bbox, boxes_of(mask))

    parsed = data.parse_image_meta(meta)
    assert parsed["image_id"] == 0
    np.testing.assert_array_equal(parsed["original_image_shape"], [100, 160, 3])
    np.testing.assert_array_equal(parsed["image_shape"], [128, 128, 3])
    assert parsed["scale"] == pytest.approx(128 / 160)
    np.testing.assert_array_equal(parsed["window"], [24, 0, 104, 128])  # 100*0.8 = 80 rows, centred
    np.testing.assert_array_equal(parsed["active_class_ids"], [1, 1, 1])

    # The boxes are the original shapes' boxes, scaled and shifted by the window.
    expected = np.array([box for _, box in TWO_SHAPES[2]]) * 0.8 + [24, 0, 24, 0]
    np.testing.assert_allclose(bbox, expected, atol=1)
    # The masks sit on the pixels painted with their class colour.
    for i, class_id in enumerate(class_ids):
        painted = np.all(image == COLORS[class_id], axis=-1)
        assert (mask[:, :, i] & painted).sum() >= 0.9 * mask[:, :, i].sum()


def test_load_image_gt_mini_mask(dataset, config):
    _, _, _, bbox, full_mask = data.load_image_gt(dataset, config, 1)
    _, _, class_ids, mini_bbox, mini_mask = data.load_image_gt(dataset, config, 1, use_mini_mask=True)
    assert mini_mask.shape == (28, 28, 3) and mini_mask.dtype == bool
    np.testing.assert_array_equal(mini_bbox, bbox)
    expanded = utils.expand_mask(bbox, mini_mask, (128, 128))
    for i in range(len(class_ids)):
        intersection = (expanded[:, :, i] & full_mask[:, :, i]).sum()
        union = (expanded[:, :, i] | full_mask[:, :, i]).sum()
        assert intersection / union > 0.9
    assert mini_mask[:, :, 0].all()  # a square fills its box


def test_load_image_gt_active_class_ids_follow_the_source():
    dataset = ShapesTestDataset([ONE_CIRCLE])
    dataset.add_class("other", 1, "triangle")
    dataset.prepare()
    _, meta, _, _, _ = data.load_image_gt(dataset, make_config(NUM_CLASSES=4), 0)
    np.testing.assert_array_equal(data.parse_image_meta(meta)["active_class_ids"], [1, 1, 1, 0])


def test_load_image_gt_crop_mode_drops_instances_outside_the_crop():
    dataset = ShapesTestDataset([(64, 128, [(SQUARE, (10, 0, 40, 20)), (CIRCLE, (10, 100, 50, 128))])])
    config = make_config(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=64)
    counts = set()
    random.seed(3)
    for _ in range(30):
        image, _, class_ids, bbox, mask = data.load_image_gt(dataset, config, 0)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64, len(class_ids))
        assert mask.any(axis=(0, 1)).all()
        np.testing.assert_array_equal(bbox, boxes_of(mask))
        for i, class_id in enumerate(class_ids):
            assert np.all(image[mask[:, :, i]] == COLORS[class_id])
        counts.add(len(class_ids))
    assert counts == {0, 1}  # a 64-px crop never holds both shapes


def test_load_image_gt_rejects_masks_of_the_wrong_size():
    class BadMasks(ShapesTestDataset):
        def load_mask(self, image_id):
            masks, class_ids = super().load_mask(image_id)
            return masks[:-1], class_ids

    with pytest.raises(ValueError, match=r"BadMasks.load_mask\(0\) returned masks of \(89, 90\)"):
        data.load_image_gt(BadMasks([ONE_CIRCLE]), TinyConfig(), 0)


def test_load_image_gt_image_without_instances(dataset, config):
    image, _, class_ids, bbox, mask = data.load_image_gt(dataset, config, 3, use_mini_mask=True)
    assert image.shape == (128, 128, 3)
    assert class_ids.shape == (0,) and bbox.shape == (0, 4) and mask.shape == (28, 28, 0)


############################################################
#  Augmentation
############################################################

def test_albumentations_flip_moves_masks_with_the_image(dataset, config):
    image, _, class_ids, bbox, mask = data.load_image_gt(dataset, config, 0)
    flipped, _, flipped_ids, flipped_bbox, flipped_mask = data.load_image_gt(
        dataset, config, 0, augmentation=A.HorizontalFlip(p=1))
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, mask[:, ::-1])
    np.testing.assert_array_equal(flipped_ids, class_ids)
    np.testing.assert_array_equal(flipped_bbox[:, [0, 2]], bbox[:, [0, 2]])
    np.testing.assert_array_equal(flipped_bbox[:, [1, 3]], 128 - bbox[:, [3, 1]])


def test_albumentations_pixel_transform_leaves_masks_alone(dataset, config):
    image, _, _, bbox, mask = data.load_image_gt(dataset, config, 1)
    augmentation = A.Compose([A.RandomBrightnessContrast(brightness_limit=(0.3, 0.3), p=1),
                              A.GaussNoise(p=1)])
    new_image, _, _, new_bbox, new_mask = data.load_image_gt(
        dataset, config, 1, augmentation=augmentation)
    assert new_image.dtype == np.uint8 and new_image.shape == image.shape
    assert np.abs(new_image.astype(int) - image).mean() > 5
    np.testing.assert_array_equal(new_mask, mask)
    np.testing.assert_array_equal(new_bbox, bbox)


def test_albumentations_rotation_keeps_masks_on_their_shapes(dataset, config):
    augmentation = A.Affine(rotate=(30, 30), interpolation=0, mask_interpolation=0, p=1)
    image, _, class_ids, bbox, mask = data.load_image_gt(dataset, config, 1, augmentation=augmentation)
    np.testing.assert_array_equal(bbox, boxes_of(mask))
    for i, class_id in enumerate(class_ids):
        painted = np.all(image == COLORS[class_id], axis=-1)
        assert (mask[:, :, i] & painted).sum() >= 0.9 * mask[:, :, i].sum()


def test_albumentations_size_change_is_refused(dataset, config):
    with pytest.raises(ValueError, match="must keep the image size"):
        data.load_image_gt(dataset, config, 0, augmentation=A.Resize(64, 64))


def test_callable_augmentation(dataset, config):
    def flip_up_down(image, masks):
        return image[::-1], masks[::-1]

    image, _, _, _, mask = data.load_image_gt(dataset, config, 0)
    flipped, _, _, _, flipped_mask = data.load_image_gt(dataset, config, 0, augmentation=flip_up_down)
    np.testing.assert_array_equal(flipped, image[::-1])
    np.testing.assert_array_equal(flipped_mask, mask[::-1])


def test_callable_augmentation_float_result_is_rounded_and_clipped(dataset, config):
    def brighten(image, masks):
        return image * 1.5 - 20.2, masks

    image, _, _, _, _ = data.load_image_gt(dataset, config, 0)
    bright, _, _, _, _ = data.load_image_gt(dataset, config, 0, augmentation=brighten)
    assert bright.dtype == np.uint8
    np.testing.assert_array_equal(bright, np.clip(np.round(image * 1.5 - 20.2), 0, 255))
    assert bright.max() == 255 and bright.min() == 0


def test_callable_augmentation_that_erases_an_instance_drops_it(dataset, config):
    def erase_first(image, masks):
        masks = masks.copy()
        masks[:, :, 0] = False
        return image, masks

    _, _, class_ids, bbox, mask = data.load_image_gt(dataset, config, 1, augmentation=erase_first)
    np.testing.assert_array_equal(class_ids, [CIRCLE, SQUARE])
    assert mask.shape == (128, 128, 2)
    np.testing.assert_array_equal(bbox, boxes_of(mask))


@pytest.mark.parametrize("bad", [lambda image, masks: (image[:64], masks),
                                 lambda image, masks: (image, masks[:, :, :1])])
def test_callable_augmentation_with_wrong_shapes_is_refused(dataset, config, bad):
    with pytest.raises(ValueError, match=r"into \(.*augmentations must keep the image size"):
        data.load_image_gt(dataset, config, 0, augmentation=bad)


############################################################
#  RPN targets
############################################################

def test_build_rpn_targets_hand_made_case():
    config = make_config(RPN_TRAIN_ANCHORS_PER_IMAGE=256)
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
    rpn_match, rpn_bbox = data.build_rpn_targets((64, 64, 3), anchors, gt_class_ids, gt_boxes, config)
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
    rpn_match, _ = data.build_rpn_targets(
        (32, 32, 3), anchors, np.array([1], np.int32), np.array([[0, 0, 10, 10]], np.int32),
        make_config(RPN_TRAIN_ANCHORS_PER_IMAGE=256))
    np.testing.assert_array_equal(rpn_match, [1, 1, -1])


def test_build_rpn_targets_without_gt_boxes_only_has_negatives():
    anchors = random_boxes(np.random.default_rng(1), 50).astype(float)
    rpn_match, rpn_bbox = data.build_rpn_targets(
        (128, 128, 3), anchors, np.zeros(0, np.int32), np.zeros((0, 4), np.int32),
        make_config(RPN_TRAIN_ANCHORS_PER_IMAGE=16))
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


def test_build_rpn_targets_random_case_against_numpy(config):
    rng = np.random.default_rng(5)
    anchors = random_boxes(rng, 400).astype(np.float64)
    gt_boxes = random_boxes(rng, 6).astype(np.int32)
    rpn_match, rpn_bbox = data.build_rpn_targets(
        (128, 128, 3), anchors, np.ones(6, np.int32), gt_boxes,
        make_config(RPN_TRAIN_ANCHORS_PER_IMAGE=1000))
    expected, best_gt = expected_rpn_match(anchors, gt_boxes)
    np.testing.assert_array_equal(rpn_match, expected)
    positive = np.where(expected == 1)[0]
    decoded = utils.apply_box_deltas(anchors[positive], rpn_bbox[:len(positive)] * config.RPN_BBOX_STD_DEV)
    np.testing.assert_allclose(decoded, gt_boxes[best_gt[positive]], atol=1e-3)


def test_build_rpn_targets_balances_positives_and_negatives():
    rng = np.random.default_rng(6)
    anchors = np.concatenate([random_boxes(rng, 300),
                              np.repeat(np.array([[10, 10, 50, 50]]), 12, axis=0)]).astype(float)
    gt_boxes = np.array([[10, 10, 50, 50], [60, 60, 100, 110]], dtype=np.int32)
    expected, _ = expected_rpn_match(anchors, gt_boxes)
    assert (expected == 1).sum() > 8 and (expected == -1).sum() > 16
    rpn_match, rpn_bbox = data.build_rpn_targets(
        (128, 128, 3), anchors, np.ones(2, np.int32), gt_boxes,
        make_config(RPN_TRAIN_ANCHORS_PER_IMAGE=16), rng=np.random.default_rng(0))
    assert (rpn_match == 1).sum() == 8 and (rpn_match == -1).sum() == 8
    assert np.all(expected[rpn_match == 1] == 1) and np.all(expected[rpn_match == -1] == -1)
    assert np.all(rpn_match[expected == 0] == 0)
    assert rpn_bbox.shape == (16, 4) and not rpn_bbox[8:].any()
    best_gt = iou_matrix(anchors, gt_boxes).argmax(axis=1)[rpn_match == 1]
    decoded = utils.apply_box_deltas(anchors[rpn_match == 1], rpn_bbox[:8] * [0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(decoded, gt_boxes[best_gt], atol=1e-3)


############################################################
#  Random ROIs and detection targets
############################################################

def test_generate_random_rois():
    gt_boxes = np.array([[10, 20, 40, 60], [80, 80, 100, 120]], dtype=np.int32)
    rois = data.generate_random_rois((128, 128, 3), 100, np.array([1, 2], np.int32), gt_boxes,
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


def detection_case(dataset, config, image_id=1, roi_count=200, seed=2):
    _, _, class_ids, boxes, masks = data.load_image_gt(
        dataset, config, image_id, use_mini_mask=config.USE_MINI_MASK)
    rois = data.generate_random_rois((128, 128), roi_count, class_ids, boxes,
                                     rng=np.random.default_rng(seed))
    return rois, class_ids, boxes, masks


def test_build_detection_targets(dataset):
    config = make_config(USE_MINI_MASK=False)
    rpn_rois, gt_class_ids, gt_boxes, gt_masks = detection_case(dataset, config, roi_count=600)
    assert (iou_matrix(rpn_rois, gt_boxes).max(axis=1) > 0.5).sum() > 10
    rois, roi_class_ids, bboxes, masks = data.build_detection_targets(
        rpn_rois, gt_class_ids, gt_boxes, gt_masks, config, rng=np.random.default_rng(0))
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
        deltas = bboxes[i, class_id] * config.BBOX_STD_DEV
        np.testing.assert_allclose(utils.apply_box_deltas(rois[i:i + 1], deltas[None]), [gt], atol=1e-3)
        assert not np.delete(bboxes[i], class_id, axis=0).any()
        # The mask target is the GT mask inside the ROI, sampled at 28x28.
        rows = y1 + ((np.arange(28) + 0.5) * (y2 - y1) / 28).astype(int)
        cols = x1 + ((np.arange(28) + 0.5) * (x2 - x1) / 28).astype(int)
        sampled = gt_masks[np.ix_(rows, cols, [best[i]])][:, :, 0]
        assert np.mean(masks[i, :, :, class_id] == sampled) > 0.9
        assert not np.delete(masks[i], class_id, axis=-1).any()
    assert not bboxes[~positive].any() and not masks[~positive].any()


def test_build_detection_targets_mini_masks_match_full_masks(dataset):
    full, mini = make_config(USE_MINI_MASK=False), make_config(USE_MINI_MASK=True)
    results = []
    for config in (full, mini):
        results.append(data.build_detection_targets(
            *detection_case(dataset, config), config, rng=np.random.default_rng(4)))
    for full_array, mini_array in zip(results[0][:3], results[1][:3]):
        np.testing.assert_array_equal(full_array, mini_array)
    assert np.mean(results[0][3] == results[1][3]) > 0.98


def test_build_detection_targets_repeats_negatives_when_short(dataset):
    config = make_config(USE_MINI_MASK=False)
    _, _, gt_class_ids, gt_boxes, gt_masks = data.load_image_gt(dataset, config, 1)
    negatives = np.array([[0, 100, 10, 110], [100, 0, 110, 5], [40, 40, 50, 50]], dtype=np.int32)
    rpn_rois = np.concatenate([gt_boxes, negatives])
    rois, roi_class_ids, _, _ = data.build_detection_targets(
        rpn_rois, gt_class_ids, gt_boxes, gt_masks, config, rng=np.random.default_rng(0))
    assert rois.shape == (32, 4)
    assert {tuple(roi) for roi in rois[:3]} == {tuple(box) for box in gt_boxes}
    assert {tuple(roi) for roi in rois[3:]} == {tuple(roi) for roi in negatives}
    assert sorted(roi_class_ids[:3]) == sorted(gt_class_ids) and not roi_class_ids[3:].any()


def test_build_detection_targets_checks_dtypes(dataset, config):
    rpn_rois, gt_class_ids, gt_boxes, gt_masks = detection_case(dataset, config)
    with pytest.raises(ValueError, match="gt_boxes has dtype float64"):
        data.build_detection_targets(rpn_rois, gt_class_ids, gt_boxes.astype(float), gt_masks, config)
    with pytest.raises(ValueError, match="at least one instance"):
        data.build_detection_targets(rpn_rois, gt_class_ids * 0, gt_boxes, gt_masks, config)


############################################################
#  DataGenerator and data_generator
############################################################

def anchor_count(config):
    side = config.IMAGE_SHAPE[0]
    cells = sum(int(np.ceil(side / stride)) ** 2 for stride in config.BACKBONE_STRIDES)
    return cells * len(config.RPN_ANCHOR_RATIOS)


def batch_image_ids(generator, index):
    return data.parse_image_meta(generator[index][0][1])["image_id"].tolist()


def test_data_generator_batch(dataset, config):
    generator = data.DataGenerator(dataset, config, shuffle=False)
    assert len(generator) == 5 // 2
    assert len(generator.anchors) == anchor_count(config) == 4092
    batch = generator[0]
    assert len(batch) == 1 and len(batch[0]) == 7
    images, meta, rpn_match, rpn_bbox, class_ids, boxes, masks = batch[0]
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.float32
    assert meta.shape == (2, config.IMAGE_META_SIZE) and meta.dtype == np.float32
    assert rpn_match.shape == (2, 4092, 1) and rpn_match.dtype == np.int32
    assert rpn_bbox.shape == (2, 64, 4) and rpn_bbox.dtype == np.float32
    assert class_ids.shape == (2, 10) and class_ids.dtype == np.int32
    assert boxes.shape == (2, 10, 4) and boxes.dtype == np.int32
    assert masks.shape == (2, 28, 28, 10) and masks.dtype == bool

    for b, image_id in enumerate(data.parse_image_meta(meta)["image_id"]):
        image, _, gt_class_ids, gt_boxes, gt_masks = data.load_image_gt(
            dataset, config, image_id, use_mini_mask=True)
        n = len(gt_class_ids)
        np.testing.assert_array_equal(data.unmold_image(images[b], config), image)
        np.testing.assert_array_equal(class_ids[b, :n], gt_class_ids)
        assert not class_ids[b, n:].any() and not boxes[b, n:].any() and not masks[b, ..., n:].any()
        np.testing.assert_array_equal(boxes[b, :n], gt_boxes)
        np.testing.assert_array_equal(masks[b, ..., :n], gt_masks)
        assert 0 < (rpn_match[b] == 1).sum() <= 32 and (rpn_match[b] != 0).sum() == 64


def test_data_generator_without_mini_masks(dataset):
    generator = data.DataGenerator(dataset, make_config(USE_MINI_MASK=False), batch_size=1)
    assert len(generator) == 5
    assert generator[0][0][6].shape == (1, 128, 128, 10)


def test_data_generator_skips_images_without_instances(dataset, config):
    generator = data.DataGenerator(dataset, config, shuffle=False, batch_size=2, steps=10, seed=0)
    ids = [batch_image_ids(generator, i) for i in range(10)]
    assert ids[0] == [0, 1] and ids[1][0] == 2 and ids[2] == [4, 0]
    assert 3 not in sum(ids, [])  # image 3 is empty: a random image replaces it

    empty = ShapesTestDataset([EMPTY, EMPTY])
    with pytest.raises(ValueError, match="No image of the dataset has an instance"):
        data.DataGenerator(empty, config, batch_size=1)[0]


def test_data_generator_subsamples_instances(dataset, config):
    generator = data.DataGenerator(ShapesTestDataset([TWELVE_SQUARES]), config, batch_size=1)
    _, _, _, _, class_ids, boxes, _ = generator[0][0]
    _, _, _, all_boxes, _ = data.load_image_gt(dataset, config, 4)
    assert np.all(class_ids[0] == SQUARE)
    assert len({tuple(box) for box in boxes[0]}) == 10
    assert all((all_boxes == box).all(axis=1).any() for box in boxes[0])


def test_data_generator_epochs_continue_the_image_stream(config):
    dataset = ShapesTestDataset([ONE_CIRCLE] * 8)
    generator = data.DataGenerator(dataset, config, shuffle=False, steps=3)
    assert len(generator) == 3
    assert [batch_image_ids(generator, i) for i in range(3)] == [[0, 1], [2, 3], [4, 5]]
    generator.on_epoch_end()
    assert generator.epoch == 1
    assert [batch_image_ids(generator, i) for i in range(3)] == [[6, 7], [0, 1], [2, 3]]


def test_data_generator_seeded_shuffling(config):
    dataset = ShapesTestDataset([ONE_CIRCLE] * 8)
    first = data.DataGenerator(dataset, config, seed=7, steps=8)
    second = data.DataGenerator(dataset, config, seed=7, steps=8)
    for a, b in zip(first[1][0], second[1][0]):
        np.testing.assert_array_equal(a, b)
    stream = [first.image_id_at(p) for p in range(32)]
    assert stream == [second.image_id_at(p) for p in range(32)]
    passes = [stream[i:i + 8] for i in range(0, 32, 8)]
    assert all(sorted(images) == list(range(8)) for images in passes)
    assert len({tuple(images) for images in passes}) == 4  # each pass has its own order
    assert [batch_image_ids(first, i) for i in range(8)] == [stream[i:i + 2] for i in range(0, 16, 2)]
    first.on_epoch_end()
    assert batch_image_ids(first, 0) == stream[16:18]
    other_seed = data.DataGenerator(dataset, config, seed=8)
    assert [other_seed.image_id_at(p) for p in range(32)] != stream


def test_data_generator_augmentation_and_no_augmentation_sources(config):
    calls = []

    def record(image, masks):
        calls.append(image.shape)
        return image, masks

    dataset = ShapesTestDataset([ONE_CIRCLE, TWO_SHAPES])
    data.DataGenerator(dataset, config, augmentation=record)[0]
    assert len(calls) == 2
    data.DataGenerator(dataset, config, augmentation=record, no_augmentation_sources=["test"])[0]
    assert len(calls) == 2


def test_data_generator_detection_targets(dataset, config):
    generator = data.DataGenerator(dataset, config, random_rois=100, detection_targets=True,
                                   shuffle=False, seed=0)
    inputs, outputs = generator[0]
    assert len(inputs) == 9
    assert inputs[7].shape == (2, 100, 4) and inputs[7].dtype == np.int32
    assert inputs[8].shape == (2, 32, 4) and inputs[8].dtype == np.int32
    class_ids, bbox, mask = outputs
    assert class_ids.shape == (2, 32, 1) and class_ids.dtype == np.int32
    assert bbox.shape == (2, 32, 3, 4) and mask.shape == (2, 32, 28, 28, 3)
    assert (class_ids > 0).any()

    rois_only = data.DataGenerator(dataset, config, random_rois=50)[0]
    assert len(rois_only) == 1 and len(rois_only[0]) == 8


def test_data_generator_checks_its_arguments(dataset, config):
    with pytest.raises(ValueError, match="needs random_rois > 0"):
        data.DataGenerator(dataset, config, detection_targets=True)
    with pytest.raises(ValueError, match="NUM_CLASSES is 4"):
        data.DataGenerator(dataset, make_config(NUM_CLASSES=4))
    with pytest.raises(IndexError):
        data.DataGenerator(dataset, config)[2]
    with pytest.raises(ValueError, match="needs config.IMAGE_SHAPE"):
        data.DataGenerator(dataset, make_config(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64),
                           batch_size=1, shuffle=False)[0]


def test_data_generator_names_the_image_on_error(config):
    class Broken(ShapesTestDataset):
        def load_mask(self, image_id):
            return np.zeros((5, 5, 1), bool), np.array([1], np.int32)

        def image_reference(self, image_id):
            return f"broken-{image_id}.png"

    with pytest.raises(ValueError, match="must have the size of the image") as error:
        data.DataGenerator(Broken([ONE_CIRCLE]), config, batch_size=1)[0]
    assert "broken-0.png" in " ".join(error.value.__notes__)


def test_data_generator_is_a_picklable_py_dataset(dataset, config):
    import keras

    generator = data.DataGenerator(dataset, config, workers=2, use_multiprocessing=True,
                                   max_queue_size=4, augmentation=A.HorizontalFlip(p=0.5))
    assert isinstance(generator, keras.utils.PyDataset)
    assert generator.workers == 2 and generator.use_multiprocessing and generator.max_queue_size == 4
    copy = pickle.loads(pickle.dumps(generator))
    assert batch_image_ids(copy, 1) == batch_image_ids(generator, 1)


def test_data_generator_function_yields_the_original_structure(dataset, config):
    generator = data.data_generator(dataset, config, shuffle=False, batch_size=2)
    inputs, outputs = next(generator)
    assert isinstance(inputs, list) and outputs == []
    expected = data.DataGenerator(dataset, config, shuffle=False, batch_size=2)[0][0]
    assert [a.shape for a in inputs] == [a.shape for a in expected]
    assert [a.dtype for a in inputs] == [a.dtype for a in expected]
    np.testing.assert_array_equal(inputs[1], expected[1])
    for _ in range(3):  # runs on past the end of the epoch
        inputs, _ = next(generator)
        assert inputs[0].shape == (2, 128, 128, 3)

    inputs, outputs = next(data.data_generator(dataset, config, random_rois=64, batch_size=1,
                                               detection_targets=True))
    assert len(inputs) == 9 and len(outputs) == 3
    assert outputs[0].shape == (1, 32, 1) and outputs[2].shape == (1, 32, 28, 28, 3)
