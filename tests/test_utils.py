"""Tests of mrcnn.utils against independent computations."""

import logging

import numpy as np
import PIL.Image
import pytest
import skimage.transform

from mrcnn import utils

from conftest import box_mask, gradient_image


def random_boxes(rng, count, size=40, min_side=1):
    """Integer boxes [count, (y1, x1, y2, x2)] inside a size x size image."""
    y1 = rng.integers(0, size - min_side, count)
    x1 = rng.integers(0, size - min_side, count)
    y2 = np.minimum(y1 + rng.integers(min_side, size // 2, count), size)
    x2 = np.minimum(x1 + rng.integers(min_side, size // 2, count), size)
    return np.stack([y1, x1, y2, x2], axis=1)


def pixel_iou(a, b):
    """IoU of two bool rasters, by counting pixels."""
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 0.0


def reference_nms(boxes, scores, threshold, shape):
    """Keep boxes in score order unless they overlap a kept one too much."""
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        if all(pixel_iou(box_mask(shape, boxes[i]), box_mask(shape, boxes[k]))
               <= threshold for k in kept):
            kept.append(i)
    return kept


############################################################
#  Boxes
############################################################

def test_extract_bboxes_hand_made():
    mask = np.zeros((10, 12, 3), dtype=bool)
    mask[2:5, 3:7, 0] = True
    mask[9, 11, 1] = True
    boxes = utils.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    np.testing.assert_array_equal(boxes, [[2, 3, 5, 7], [9, 11, 10, 12], [0, 0, 0, 0]])


def test_extract_bboxes_matches_nonzero_extent():
    rng = np.random.default_rng(0)
    mask = rng.random((30, 25, 6)) > 0.97
    for i, box in enumerate(utils.extract_bboxes(mask)):
        rows, cols = np.nonzero(mask[:, :, i])
        assert tuple(box) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)


def test_compute_iou_hand_made():
    boxes = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 20]])
    iou = utils.compute_iou(np.array([0, 0, 10, 10]), boxes, 100, utils.box_areas(boxes))
    np.testing.assert_allclose(iou, [25 / 175, 1.0, 0.0, 50 / 150])


def test_compute_overlaps_matches_pixel_counting():
    rng = np.random.default_rng(1)
    boxes1, boxes2 = random_boxes(rng, 12), random_boxes(rng, 7)
    overlaps = utils.compute_overlaps(boxes1, boxes2)
    assert overlaps.shape == (12, 7)
    for i, a in enumerate(boxes1):
        for j, b in enumerate(boxes2):
            expected = pixel_iou(box_mask((40, 40), a), box_mask((40, 40), b))
            assert overlaps[i, j] == pytest.approx(expected)


def test_compute_overlaps_masks_matches_pixel_counting():
    rng = np.random.default_rng(2)
    masks1 = rng.random((20, 20, 5)) > 0.5
    masks2 = rng.random((20, 20, 3)) > 0.7
    masks2[:, :, 1] = masks1[:, :, 2]
    overlaps = utils.compute_overlaps_masks(masks1, masks2)
    for i in range(5):
        for j in range(3):
            assert overlaps[i, j] == pytest.approx(pixel_iou(masks1[:, :, i], masks2[:, :, j]))
    assert overlaps[2, 1] == pytest.approx(1.0)


def test_compute_overlaps_masks_empty_cases():
    assert utils.compute_overlaps_masks(np.zeros((4, 4, 0)), np.ones((4, 4, 2))).shape == (0, 2)
    empty = np.zeros((4, 4, 1), dtype=bool)
    np.testing.assert_array_equal(utils.compute_overlaps_masks(empty, empty), [[0.0]])


def test_non_max_suppression_hand_made():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    keep = utils.non_max_suppression(boxes, scores, 0.5)
    assert keep.dtype == np.int32
    # Box 3 (best) suppresses 0 (IoU 0.9); 1 overlaps 3 by 72/128 > 0.5.
    np.testing.assert_array_equal(keep, [3, 2])
    np.testing.assert_array_equal(utils.non_max_suppression(boxes, scores, 0.95), [3, 0, 1, 2])


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.7])
def test_non_max_suppression_matches_reference(threshold):
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 40, min_side=3)
    scores = rng.permutation(40) / 40.0
    keep = utils.non_max_suppression(boxes, scores, threshold)
    assert list(keep) == reference_nms(boxes, scores, threshold, (40, 40))


def test_non_max_suppression_no_boxes():
    assert utils.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_apply_box_deltas_hand_made():
    boxes = np.array([[0, 0, 10, 10], [10, 20, 30, 60]])
    deltas = np.array([[0.1, 0.0, np.log(2.0), 0.0], [0.0, -0.5, 0.0, np.log(0.5)]])
    refined = utils.apply_box_deltas(boxes, deltas)
    assert refined.dtype == np.float32
    np.testing.assert_allclose(refined, [[-4, 0, 16, 10], [10, 10, 30, 30]], atol=1e-5)


def test_box_refinement_hand_made():
    deltas = utils.box_refinement(np.array([[0, 0, 10, 10]]), np.array([[-4, 0, 16, 10]]))
    np.testing.assert_allclose(deltas, [[0.1, 0.0, np.log(2.0), 0.0]], atol=1e-6)


def test_box_refinement_apply_box_deltas_round_trip():
    rng = np.random.default_rng(4)
    boxes = random_boxes(rng, 50, size=200, min_side=2).astype(np.float32)
    gt_boxes = random_boxes(rng, 50, size=200, min_side=2).astype(np.float32)
    deltas = utils.box_refinement(boxes, gt_boxes)
    np.testing.assert_allclose(utils.apply_box_deltas(boxes, deltas), gt_boxes, atol=1e-3)


def test_norm_boxes_hand_made_and_round_trip():
    np.testing.assert_allclose(utils.norm_boxes(np.array([[0, 0, 100, 50]]), (100, 50)),
                               [[0, 0, 1, 1]])
    np.testing.assert_allclose(utils.norm_boxes(np.array([[33, 0, 67, 50]]), (100, 50)),
                               [[1 / 3, 0, 2 / 3, 1]], rtol=1e-6)
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 30, size=97)
    normalized = utils.norm_boxes(boxes, (97, 120))
    assert normalized.dtype == np.float32
    restored = utils.denorm_boxes(normalized, (97, 120))
    assert restored.dtype == np.int32
    np.testing.assert_array_equal(restored, boxes)


def test_trim_zeros():
    x = np.array([[1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 5], [0, 0, 0, 0]])
    np.testing.assert_array_equal(utils.trim_zeros(x), [[1, 2, 3, 4], [0, 0, 0, 5]])
    with pytest.raises(ValueError, match="2-D"):
        utils.trim_zeros(np.zeros(4))


############################################################
#  Anchors
############################################################


############################################################
#  Images and resizing
############################################################


def test_resize_defaults_are_the_originals():
    image = gradient_image(40, 60).astype(np.float64)
    expected = skimage.transform.resize(image, (20, 30), order=1, mode="constant",
                                        preserve_range=True, anti_aliasing=False)
    np.testing.assert_array_equal(utils.resize(image, (20, 30), preserve_range=True), expected)


def test_resize_interpolates_bool_as_float():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:, :2] = True
    resized = utils.resize(mask, (4, 8))
    assert resized.dtype.kind == "f"
    expected = skimage.transform.resize(mask.astype(np.float64), (4, 8), order=1,
                                        mode="constant", anti_aliasing=False)
    np.testing.assert_allclose(resized, expected, atol=1e-6)
    assert 0 < resized[0, 3] < 1 and 0 < resized[0, 4] < 1


############################################################
#  Masks
############################################################

def test_minimize_and_expand_mask_round_trip_of_rectangles():
    mask = np.zeros((60, 80, 2), dtype=bool)
    mask[5:25, 10:70, 0] = True
    mask[30:58, 40:50, 1] = True
    boxes = utils.extract_bboxes(mask)
    mini = utils.minimize_mask(boxes, mask, (16, 16))
    assert mini.shape == (16, 16, 2) and mini.dtype == bool and mini.all()
    np.testing.assert_array_equal(utils.expand_mask(boxes, mini, (60, 80, 3)), mask)


def test_minimize_and_expand_mask_round_trip_of_disc():
    y, x = np.mgrid[0:100, 0:100]
    disc = ((y - 50) ** 2 + (x - 40) ** 2 < 30 ** 2)[:, :, None]
    boxes = utils.extract_bboxes(disc)
    mini = utils.minimize_mask(boxes, disc, (28, 28))
    restored = utils.expand_mask(boxes, mini, (100, 100))
    assert pixel_iou(restored[:, :, 0], disc[:, :, 0]) > 0.95


def test_minimize_mask_rejects_empty_box():
    with pytest.raises(ValueError, match=r"box \(5, 5, 5, 9\) of instance 0: its area is zero"):
        utils.minimize_mask(np.array([[5, 5, 5, 9]]), np.ones((10, 10, 1), bool), (8, 8))


############################################################
#  Evaluation
############################################################

def instance_set(boxes, shape=(40, 40)):
    """Pixel boxes and their rectangular masks [H, W, N]."""
    boxes = np.array(boxes, dtype=np.int32).reshape(-1, 4)
    masks = np.stack([box_mask(shape, b) for b in boxes], axis=-1) if len(boxes) \
        else np.zeros(shape + (0,), dtype=bool)
    return boxes, masks


GT_BOXES, GT_MASKS = instance_set([[0, 0, 10, 10], [20, 20, 30, 30]])
GT_CLASSES = np.array([1, 2])


def ap_of(pred_boxes, pred_classes, scores, iou_threshold=0.5):
    boxes, masks = instance_set(pred_boxes)
    return utils.compute_ap(GT_BOXES, GT_CLASSES, GT_MASKS, boxes,
                            np.array(pred_classes), np.array(scores), masks,
                            iou_threshold)


def test_compute_ap_perfect():
    ap, _, recalls, overlaps = ap_of([[20, 20, 30, 30], [0, 0, 10, 10]], [2, 1], [0.8, 0.9])
    assert ap == pytest.approx(1.0)
    np.testing.assert_allclose(recalls, [0, 0.5, 1, 1])
    np.testing.assert_allclose(overlaps, [[1, 0], [0, 1]])


def test_compute_ap_one_missed():
    ap, _, recalls, _ = ap_of([[0, 0, 10, 10]], [1], [0.9])
    assert ap == pytest.approx(0.5)
    np.testing.assert_allclose(recalls, [0, 0.5, 1])


def test_compute_ap_false_positive_below_true_positives():
    ap, _, _, _ = ap_of([[0, 0, 10, 10], [20, 20, 30, 30], [0, 30, 5, 40]], [1, 2, 1],
                        [0.9, 0.8, 0.1])
    assert ap == pytest.approx(1.0)


def test_compute_ap_false_positive_ranked_first():
    # Ranks: FP, TP, TP -> precisions 0, 1/2, 2/3 at recalls 0, 1/2, 1.
    ap, precisions, _, _ = ap_of([[0, 30, 5, 40], [0, 0, 10, 10], [20, 20, 30, 30]], [1, 1, 2],
                                 [0.95, 0.9, 0.8])
    assert ap == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)
    np.testing.assert_allclose(precisions, [2 / 3, 2 / 3, 2 / 3, 2 / 3, 0])


def test_compute_ap_wrong_class_and_low_iou():
    assert ap_of([[0, 0, 10, 10], [20, 20, 30, 30]], [2, 1], [0.9, 0.8])[0] == 0.0
    # IoU of [0, 0, 10, 6] with [0, 0, 10, 10] is 0.6.
    assert ap_of([[0, 0, 10, 6]], [1], [0.9], iou_threshold=0.5)[0] == pytest.approx(0.5)
    assert ap_of([[0, 0, 10, 6]], [1], [0.9], iou_threshold=0.7)[0] == 0.0


def test_compute_matches_sorts_by_score_and_ignores_padding():
    boxes, masks = instance_set([[20, 20, 30, 30], [0, 0, 10, 10], [0, 30, 5, 40]])
    boxes = np.concatenate([boxes, np.zeros((2, 4), np.int32)])
    gt_match, pred_match, overlaps = utils.compute_matches(
        np.concatenate([GT_BOXES, np.zeros((1, 4), np.int32)]), GT_CLASSES, GT_MASKS,
        boxes, np.array([2, 1, 1, 0, 0]), np.array([0.5, 0.9, 0.7, 0, 0]), masks)
    # Score order: pred 1 (gt 0), pred 2 (no match), pred 0 (gt 1).
    np.testing.assert_array_equal(pred_match, [0, -1, 1])
    np.testing.assert_array_equal(gt_match, [0, 2])
    assert overlaps.shape == (3, 2)


def test_compute_matches_takes_the_best_unmatched_ground_truth():
    gt_boxes, gt_masks = instance_set([[0, 0, 10, 10], [0, 2, 10, 12]])
    pred_boxes, pred_masks = instance_set([[0, 1, 10, 11], [0, 2, 10, 12]])
    gt_match, pred_match, _ = utils.compute_matches(
        gt_boxes, np.array([1, 1]), gt_masks, pred_boxes, np.array([1, 1]),
        np.array([0.9, 0.8]), pred_masks)
    # The first prediction overlaps both ground truths equally (IoU 9/11),
    # takes one, and the second prediction gets the other.
    assert sorted(pred_match) == [0, 1] and sorted(gt_match) == [0, 1]


def test_compute_ap_counts_a_duplicate_detection_as_false_positive():
    # The first prediction takes ground truth 0; its duplicate may not.
    ap, precisions, recalls, _ = ap_of([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]],
                                       [1, 1, 2], [0.9, 0.8, 0.7])
    np.testing.assert_allclose(recalls, [0, 0.5, 0.5, 1, 1])
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_compute_ap_range(capsys):
    # IoU of [0, 0, 10, 8] with [0, 0, 10, 10] is 0.8: found at 0.50..0.80.
    # Above that, the exact box (ranked first) alone gives AP 0.5.
    boxes, masks = instance_set([[0, 0, 10, 8], [20, 20, 30, 30]])
    ap = utils.compute_ap_range(GT_BOXES, GT_CLASSES, GT_MASKS, boxes, np.array([1, 2]),
                                np.array([0.8, 0.9]), masks, verbose=1)
    assert ap == pytest.approx((7 * 1.0 + 3 * 0.5) / 10)
    out = capsys.readouterr().out
    assert "AP @0.50:\t 1.000" in out and "AP @0.95:\t 0.500" in out
    assert "AP @0.50-0.95:\t 0.850" in out
    assert utils.compute_ap_range(GT_BOXES, GT_CLASSES, GT_MASKS, boxes, np.array([1, 2]),
                                  np.array([0.8, 0.9]), masks, [0.5], verbose=0) == 1.0
    assert capsys.readouterr().out == ""


def test_compute_recall():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    pred = np.array([[0, 0, 10, 9], [1, 0, 10, 10], [20, 20, 30, 40], [70, 70, 80, 80]])
    recall, positive_ids = utils.compute_recall(pred, gt, 0.5)
    assert recall == pytest.approx(2 / 3)
    np.testing.assert_array_equal(positive_ids, [0, 1, 2])
    recall, positive_ids = utils.compute_recall(pred, gt, 0.85)
    assert recall == pytest.approx(1 / 3)
    np.testing.assert_array_equal(positive_ids, [0, 1])


############################################################
#  TensorFlow and logging helpers
############################################################


def test_log(capsys):
    utils.log("image", np.array([[0, 255]], dtype=np.uint8))
    utils.log("masks", np.zeros((2, 0), dtype=bool))
    utils.log("flags", np.array([True, False]))
    utils.log("just text")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("image" + " " * 20 + "shape: (1, 2)")
    assert "min:    0.00000  max:  255.00000  uint8" in lines[0]
    assert "shape: (2, 0)" in lines[1] and lines[1].endswith("bool")
    assert "min:    0.00000  max:    1.00000  bool" in lines[2]
    assert lines[3] == "just text"


############################################################
#  Images: to_rgb8 and Dataset
############################################################

@pytest.mark.parametrize("image, expected", [
    (np.array([[0, 128]], np.uint8), [[0, 0, 0], [128, 128, 128]]),
    (np.array([[[10], [20]]], np.uint8), [[10, 10, 10], [20, 20, 20]]),
    (np.array([[[1, 2, 3, 4]]], np.uint8), [[1, 2, 3]]),
    (np.array([[[9, 200]]], np.uint8), [[9, 9, 9]]),
    (np.array([[0, 65535, 257 * 100]], np.uint16), [[0] * 3, [255] * 3, [100] * 3]),
    (np.array([[0.0, 1.0, 0.5]]), [[0] * 3, [255] * 3, [128] * 3]),
    (np.array([[0.0, 255.0, 300.0]], np.float32), [[0] * 3, [255] * 3, [255] * 3]),
    (np.array([[3, 250]], np.int64), [[3] * 3, [250] * 3]),
    (np.array([[1000, 65535]], np.int32), [[4] * 3, [255] * 3]),
    (np.array([[True, False]]), [[255] * 3, [0] * 3]),
])
def test_to_rgb8(image, expected):
    rgb = utils.to_rgb8(image)
    assert rgb.dtype == np.uint8 and rgb.shape == image.shape[:2] + (3,)
    np.testing.assert_array_equal(rgb[0], expected)


def test_to_rgb8_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 5\)"):
        utils.to_rgb8(np.zeros((2, 2, 5)))


class TwoSourceDataset(utils.Dataset):
    def load(self):
        self.add_class("shapes", 1, "square")
        self.add_class("shapes", 2, "circle")
        self.add_class("shapes", 1, "square again")
        self.add_class("coco", 5, "person, human")
        self.add_image("shapes", image_id="a", path="a.png", width=10)
        self.add_image("coco", image_id=42, path="b.png")


def test_dataset_prepare_and_mappings():
    dataset = TwoSourceDataset()
    dataset.load()
    dataset.prepare()
    assert dataset.num_classes == 4 and dataset.num_images == 2
    assert dataset.class_names == ["BG", "square", "circle", "person"]
    np.testing.assert_array_equal(dataset.class_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(dataset.image_ids, [0, 1])
    assert dataset.map_source_class_id("shapes.2") == 2
    assert dataset.map_source_class_id("coco.5") == 3
    assert dataset.class_from_source_map[".0"] == 0
    assert dataset.image_from_source_map == {"shapes.a": 0, "coco.42": 1}
    assert dataset.get_source_class_id(3, "coco") == 5
    with pytest.raises(ValueError, match="not 'shapes'"):
        dataset.get_source_class_id(3, "shapes")
    assert dataset.source_class_ids == {"": [0], "coco": [0, 3], "shapes": [0, 1, 2]}
    assert dataset.image_info[0] == {"id": "a", "source": "shapes", "path": "a.png", "width": 10}
    assert dataset.source_image_link(1) == "b.png"
    assert dataset.image_reference(0) == ""


def test_dataset_rejects_dotted_source():
    with pytest.raises(ValueError, match="dot"):
        utils.Dataset().add_class("my.data", 1, "thing")


def test_dataset_default_load_mask_warns(caplog):
    with caplog.at_level(logging.WARNING):
        masks, class_ids = utils.Dataset().load_mask(0)
    assert masks.shape == (0, 0, 0) and class_ids.shape == (0,) and class_ids.dtype == np.int32
    assert "default load_mask()" in caplog.text


def dataset_of(path):
    dataset = utils.Dataset()
    dataset.add_image("files", image_id=0, path=str(path))
    dataset.prepare()
    return dataset


def test_load_image_conversions(tmp_path):
    rgb = gradient_image(6, 8)
    cases = {
        "gray.png": (PIL.Image.fromarray(rgb[:, :, 0], "L"), np.repeat(rgb[:, :, :1], 3, axis=2)),
        "rgba.png": (PIL.Image.fromarray(np.dstack([rgb, np.full((6, 8), 9, np.uint8)]), "RGBA"),
                     rgb),
        "gray16.png": (PIL.Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257),
                       np.repeat(rgb[:, :, 1:2], 3, axis=2)),
        "palette.png": (PIL.Image.fromarray(rgb).quantize(colors=256), None),
        "rgb.png": (PIL.Image.fromarray(rgb), rgb),
    }
    for name, (image, expected) in cases.items():
        image.save(tmp_path / name)
        loaded = dataset_of(tmp_path / name).load_image(0)
        assert loaded.shape == (6, 8, 3) and loaded.dtype == np.uint8, name
        if expected is None:
            expected = np.asarray(PIL.Image.open(tmp_path / name).convert("RGB"))
        np.testing.assert_array_equal(loaded, expected, err_msg=name)
    assert PIL.Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert PIL.Image.open(tmp_path / "palette.png").mode == "P"


def test_load_image_applies_exif_orientation(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:20, :20] = [255, 0, 0]
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    PIL.Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = dataset_of(tmp_path / "rotated.jpg").load_image(0)
    assert loaded.shape == (60, 40, 3)
    # The red top-left corner of the stored pixels is displayed top-right.
    assert loaded[5, 35, 0] > 200 and loaded[5, 35, 1] < 50
    assert loaded[5, 5].max() < 50


def test_load_image_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        dataset_of(missing).load_image(0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="broken.png"):
        dataset_of(broken).load_image(0)
    truncated = tmp_path / "truncated.jpg"
    PIL.Image.fromarray(gradient_image(64, 64)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.jpg"):
        dataset_of(truncated).load_image(0)


def test_compute_iou_of_zero_area_boxes_is_zero_without_warnings():
    import warnings

    box = np.array([5, 5, 5, 5])
    boxes = np.array([[5, 5, 5, 5], [0, 0, 10, 10]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iou = utils.compute_iou(box, boxes, 0.0, np.array([0.0, 100.0]))
    np.testing.assert_array_equal(iou, [0.0, 0.0])
