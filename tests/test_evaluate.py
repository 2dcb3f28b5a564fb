"""Tests of mrcnn.evaluate and the AP helpers of mrcnn.utils it builds on.

Every expected number is derived by hand in a comment next to it. Masks are axis-aligned squares,
so a mask IoU equals the box IoU: a 20 x 20 square shifted 3 px sideways overlaps its original on
17 x 20 = 340 px, union 2 * 400 - 340 = 460, IoU 0.739. That IoU passes the thresholds 0.50, 0.55,
0.60, 0.65 and 0.70 and fails 0.75 .. 0.95: 5 of the 10 COCO thresholds.
"""

import csv
import json
import math
import types

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrcnn import evaluate, utils

SHIFTED_IOU = 340 / 460


def square_masks(height, width, squares):
    """[height, width, N] bool masks of squares given as (y, x, size)."""
    masks = np.zeros((height, width, len(squares)), bool)
    for i, (y, x, size) in enumerate(squares):
        masks[y:y + size, x:x + size, i] = True
    return masks


def instances(height, width, squares, class_ids, scores=None):
    """(boxes, class_ids, masks[, scores]) of squares, boxes from the masks."""
    masks = square_masks(height, width, squares)
    boxes = utils.extract_bboxes(masks)
    class_ids = np.array(class_ids, np.int32)
    if scores is None:
        return boxes, class_ids, masks
    return boxes, class_ids, np.array(scores, np.float32), masks


def detection(height, width, squares, class_ids, scores):
    boxes, class_ids, scores, masks = instances(height, width, squares, class_ids, scores)
    return {"rois": boxes, "class_ids": class_ids, "scores": scores, "masks": masks}


def average_precision(gt, pred, **kwargs):
    """utils.compute_ap on (boxes, class_ids, masks) and (boxes, class_ids, scores, masks)."""
    return utils.compute_ap(*gt, *pred, **kwargs)[0]


TWO_SQUARES = [(5, 5, 20), (40, 40, 20)]


# ----------------------------------------------------------------------------------------------
# The original's AP helpers on hand-made cases
# ----------------------------------------------------------------------------------------------

def test_compute_ap_perfect_detections_give_one():
    gt = instances(64, 64, TWO_SQUARES, [1, 2])
    pred = instances(64, 64, TWO_SQUARES, [1, 2], [0.9, 0.8])
    assert average_precision(gt, pred) == pytest.approx(1.0)
    assert utils.compute_ap_range(*gt, *pred, verbose=0) == pytest.approx(1.0)


def test_compute_ap_one_missed_instance_halves_ap():
    # One of two found: recall 0.5 at precision 1, nothing beyond -> AP = 0.5 * 1 = 0.5.
    gt = instances(64, 64, TWO_SQUARES, [1, 1])
    pred = instances(64, 64, TWO_SQUARES[:1], [1], [0.9])
    assert average_precision(gt, pred) == pytest.approx(0.5)
    gt_match, pred_match, _ = utils.compute_matches(*gt, *pred)
    np.testing.assert_array_equal(gt_match, [0, -1])
    np.testing.assert_array_equal(pred_match, [0])


def test_compute_ap_false_positive_counts_only_when_ranked_first():
    gt = instances(64, 64, TWO_SQUARES[:1], [1])
    # The false positive (the second square, no ground truth there) scores lower: the true
    # positive reaches recall 1 at precision 1 first -> AP 1.
    pred_fp_last = instances(64, 64, TWO_SQUARES, [1, 1], [0.9, 0.3])
    assert average_precision(gt, pred_fp_last) == pytest.approx(1.0)
    # The false positive scores higher: recall 1 is reached at precision 1/2 -> AP 0.5.
    pred_fp_first = instances(64, 64, TWO_SQUARES, [1, 1], [0.3, 0.9])
    assert average_precision(gt, pred_fp_first) == pytest.approx(0.5)


def test_compute_ap_wrong_class_is_no_match():
    gt = instances(64, 64, TWO_SQUARES[:1], [1])
    pred = instances(64, 64, TWO_SQUARES[:1], [2], [0.9])
    assert average_precision(gt, pred) == 0.0
    gt_match, pred_match, overlaps = utils.compute_matches(*gt, *pred)
    assert overlaps[0, 0] == pytest.approx(1.0)
    assert gt_match[0] == -1 and pred_match[0] == -1


def test_compute_ap_range_counts_the_thresholds_an_iou_passes():
    gt = instances(64, 64, [(10, 10, 20)], [1])
    pred = instances(64, 64, [(10, 13, 20)], [1], [0.9])
    assert utils.compute_matches(*gt, *pred)[2][0, 0] == pytest.approx(SHIFTED_IOU)
    assert average_precision(gt, pred, iou_threshold=0.7) == 1.0
    assert average_precision(gt, pred, iou_threshold=0.75) == 0.0
    assert utils.compute_ap_range(*gt, *pred, verbose=0) == pytest.approx(5 / 10)


def test_compute_recall_counts_found_boxes():
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    # First box exact, second off by 5 px (IoU 50/150 = 0.33), third missing.
    pred_boxes = np.array([[0, 0, 10, 10], [20, 25, 30, 35]])
    recall, positive_ids = utils.compute_recall(pred_boxes, gt_boxes, iou=0.3)
    assert recall == pytest.approx(2 / 3)
    np.testing.assert_array_equal(positive_ids, [0, 1])
    recall, positive_ids = utils.compute_recall(pred_boxes, gt_boxes, iou=0.5)
    assert recall == pytest.approx(1 / 3)
    np.testing.assert_array_equal(positive_ids, [0])


def test_image_metrics_precision_recall_and_undefined_cases():
    gt = evaluate.GroundTruth(*instances(64, 64, TWO_SQUARES, [1, 1]), height=64, width=64)
    # One hit, one miss, one false positive scored lowest: AP50 = recall 0.5 at precision 1.
    found = detection(64, 64, [TWO_SQUARES[0], (5, 40, 10)], [1, 1], [0.9, 0.2])
    metrics = evaluate.image_metrics(gt, found)
    assert metrics == pytest.approx({"ap50": 0.5, "ap": 0.5, "precision": 0.5, "recall": 0.5})

    no_detections = detection(64, 64, [], [], [])
    metrics = evaluate.image_metrics(gt, no_detections)
    assert metrics["ap50"] == 0.0 and metrics["recall"] == 0.0 and math.isnan(metrics["precision"])

    empty_gt = evaluate.GroundTruth(*instances(64, 64, [], []), height=64, width=64)
    metrics = evaluate.image_metrics(empty_gt, found)
    assert math.isnan(metrics["ap50"]) and math.isnan(metrics["recall"])
    assert metrics["precision"] == 0.0


# ----------------------------------------------------------------------------------------------
# COCO format and COCOeval
# ----------------------------------------------------------------------------------------------

def test_coco_boxes_are_x_y_width_height():
    # (y1, x1, y2, x2) = (10, 20, 30, 60), x2/y2 exclusive -> x 20, y 10, width 40, height 20.
    assert evaluate.coco_boxes(np.array([[10, 20, 30, 60]])) == [[20.0, 10.0, 40.0, 20.0]]
    assert evaluate.coco_boxes(np.zeros((0, 4))) == []


def test_encode_masks_round_trips_and_agrees_with_the_boxes():
    from pycocotools import mask as mask_utils

    masks = square_masks(30, 40, [(2, 3, 5), (10, 20, 12)])
    rles = evaluate.encode_masks(masks)
    assert all(isinstance(rle["counts"], str) for rle in rles)
    json.dumps(rles)
    np.testing.assert_array_equal(mask_utils.decode(rles).astype(bool), masks)
    np.testing.assert_array_equal(mask_utils.toBbox(rles),
                                  evaluate.coco_boxes(utils.extract_bboxes(masks)))
    assert evaluate.encode_masks(np.zeros((30, 40, 0), bool)) == []


def coco_case(detected_squares, detected_class_ids, scores):
    """COCO ground truth and results on one 100 x 100 image.

    Ground truth: a small 20 x 20 square of class 1 and a medium 40 x 40 square of class 2.
    """
    dataset = SquaresDataset([(100, 100, [(10, 10, 20, 1), (50, 50, 40, 2)])])
    ground_truth = evaluate.coco_ground_truth(dataset)
    detections = evaluate.coco_detections(
        0, detection(100, 100, detected_squares, detected_class_ids, scores))
    return ground_truth, detections


@pytest.mark.parametrize("iou_type", evaluate.IOU_TYPES)
def test_coco_evaluate_perfect_detections_give_one(iou_type):
    ground_truth, detections = coco_case([(10, 10, 20), (50, 50, 40)], [1, 2], [0.9, 0.8])
    metrics, recalls, precisions = evaluate.coco_evaluate(ground_truth, detections, iou_type)
    assert metrics == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "APs": 1.0,
                                     "APm": 1.0, "APl": -1.0, "AR@100": 1.0})
    np.testing.assert_allclose(recalls, np.linspace(0, 1, 101))
    np.testing.assert_allclose(precisions, 1.0)


@pytest.mark.parametrize("iou_type", evaluate.IOU_TYPES)
def test_coco_evaluate_shifted_detection_passes_half_the_thresholds(iou_type):
    # Class 1 shifted 3 px (IoU 0.739, 5 of 10 thresholds): AP 0.5, AP50 1, AP75 0, recall
    # averaged over thresholds 0.5. Class 2 perfect: all 1. Means over the two classes:
    # AP 0.75, AP50 1, AP75 0.5, AR@100 0.75. APs sees class 1 only (0.5), APm class 2 only (1);
    # nothing is large (-1).
    ground_truth, detections = coco_case([(10, 13, 20), (50, 50, 40)], [1, 2], [0.9, 0.8])
    metrics, _, _ = evaluate.coco_evaluate(ground_truth, detections, iou_type)
    assert metrics == pytest.approx({"AP": 0.75, "AP50": 1.0, "AP75": 0.5, "APs": 0.5,
                                     "APm": 1.0, "APl": -1.0, "AR@100": 0.75})


def test_coco_evaluate_wrong_class_and_no_detections_give_zero():
    # Class 2 predicted on the class-1 square: class 1 has a miss (AP 0), class 2 a miss and a
    # false positive (AP 0).
    ground_truth, detections = coco_case([(10, 10, 20)], [2], [0.9])
    metrics, _, precisions = evaluate.coco_evaluate(ground_truth, detections, "segm")
    assert metrics["AP"] == 0.0 and metrics["AR@100"] == 0.0
    np.testing.assert_allclose(precisions, 0.0)
    metrics, _, _ = evaluate.coco_evaluate(ground_truth, [], "bbox")
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0


def test_coco_evaluate_rejects_unknown_iou_type():
    with pytest.raises(ValueError, match="iou_type"):
        evaluate.coco_evaluate({}, [], "keypoints")


# ----------------------------------------------------------------------------------------------
# A small dataset and a fake model
# ----------------------------------------------------------------------------------------------

class SquaresDataset(utils.Dataset):
    """Images of squares. images: [(height, width, [(y, x, size, class_id), ...])].

    Each image is filled with its image id, so a fake model can tell which one it was given.
    """

    def __init__(self, images):
        super().__init__()
        self.add_class("squares", 1, "small square")
        self.add_class("squares", 2, "big square")
        for i, (height, width, squares) in enumerate(images):
            self.add_image("squares", image_id=f"img{i}", path=f"/data/img{i}.png",
                           height=height, width=width, squares=squares)
        self.prepare()

    def load_image(self, image_id):
        info = self.image_info[image_id]
        return np.full((info["height"], info["width"], 3), image_id, np.uint8)

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        squares = info["squares"]
        masks = square_masks(info["height"], info["width"], [s[:3] for s in squares])
        return masks, np.array([s[3] for s in squares], np.int32)


class FakeModel:
    """Answers detect() with prepared detections: {image_id: detection dict}."""

    def __init__(self, detections, batch_size):
        self.detections = detections
        self.config = types.SimpleNamespace(BATCH_SIZE=batch_size)
        self.batches = []

    def detect(self, images, verbose=0):
        assert len(images) == self.config.BATCH_SIZE
        image_ids = [int(image[0, 0, 0]) for image in images]
        self.batches.append(image_ids)
        return [self.detections[image_id] for image_id in image_ids]


# Four images of different sizes: two squares of class 1; two squares, one missed; one square
# plus a false positive scored lowest; only an empty mask (dropped: no instances) and no
# detections.
IMAGES = [(64, 64, [(5, 5, 20, 1), (40, 40, 20, 1)]),
          (48, 80, [(5, 5, 20, 1), (20, 50, 20, 1)]),
          (64, 72, [(10, 10, 20, 1)]),
          (40, 40, [(10, 10, 0, 1)])]
DETECTIONS = {0: detection(64, 64, [(5, 5, 20), (40, 40, 20)], [1, 1], [0.9, 0.8]),
              1: detection(48, 80, [(5, 5, 20)], [1], [0.7]),
              2: detection(64, 72, [(10, 10, 20), (40, 40, 20)], [1, 1], [0.95, 0.3]),
              3: detection(40, 40, [], [], [])}


@pytest.fixture(scope="module")
def dataset():
    return SquaresDataset(IMAGES)


@pytest.fixture(scope="module")
def evaluated(dataset):
    model = FakeModel(DETECTIONS, batch_size=3)
    return evaluate.evaluate_model(model, dataset, verbose=0), model


def test_evaluate_model_batches_and_pads_with_a_repeated_image(evaluated):
    _, model = evaluated
    assert model.batches == [[0, 1, 2], [3, 3, 3]]


def test_detect_dataset_pads_the_last_batch_with_its_last_image(dataset):
    model = FakeModel(DETECTIONS, batch_size=3)
    detected = list(evaluate.detect_dataset(model, dataset, [0, 1, 2, 3, 1], verbose=0))
    assert model.batches == [[0, 1, 2], [3, 1, 1]]
    assert [image_id for image_id, _ in detected] == [0, 1, 2, 3, 1]
    assert all(found is DETECTIONS[image_id] for image_id, found in detected)


def test_evaluate_model_per_image_results(evaluated):
    result, _ = evaluated
    rows = [(r.image_id, r.source_id, r.path, r.n_gt, r.n_pred) for r in result.per_image]
    assert rows == [(0, "img0", "/data/img0.png", 2, 2), (1, "img1", "/data/img1.png", 2, 1),
                    (2, "img2", "/data/img2.png", 1, 2), (3, "img3", "/data/img3.png", 0, 0)]
    # Perfect; one of two found (AP 0.5); false positive ranked last (AP 1); no ground truth.
    ap50 = [r.ap50 for r in result.per_image]
    assert ap50[:3] == pytest.approx([1.0, 0.5, 1.0]) and math.isnan(ap50[3])
    assert [r.ap for r in result.per_image[:3]] == pytest.approx([1.0, 0.5, 1.0])
    assert [r.precision for r in result.per_image[:3]] == pytest.approx([1.0, 1.0, 0.5])
    assert [r.recall for r in result.per_image[:3]] == pytest.approx([1.0, 0.5, 1.0])
    # Means over the images where each is defined (the fourth has none of them).
    assert result.mAP50 == pytest.approx(2.5 / 3)
    assert result.mAP == pytest.approx(2.5 / 3)
    assert result.mean_precision == pytest.approx(2.5 / 3)
    assert result.mean_recall == pytest.approx(2.5 / 3)


def test_evaluate_model_coco_metrics_match_pycocotools_on_the_exported_files(
        evaluated, dataset, tmp_path):
    result, _ = evaluated
    gt_path = evaluate.export_coco_ground_truth(dataset, tmp_path / "gt.json")
    dt_path = evaluate.export_coco_detections(result, tmp_path / "dt.json")
    coco_gt = COCO(str(gt_path))
    for iou_type in evaluate.IOU_TYPES:
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(dt_path)), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        expected = [coco_eval.stats[i] for i in (0, 1, 2, 3, 4, 5, 8)]
        assert [result.coco[iou_type][name] for name in evaluate.COCO_METRICS] == \
            pytest.approx(expected)
    # 5 instances, 4 found, one false positive scored last: below 1, above 0.
    assert 0.0 < result.coco["segm"]["AP50"] < 1.0
    assert result.category_names == {1: "small square", 2: "big square"}
    # COCOeval and loadRes add keys to what they get: the result's own entries stay clean.
    assert {frozenset(d) for d in result.coco_detections} == {
        frozenset({"image_id", "category_id", "score", "bbox", "segmentation"})}


def test_evaluate_model_perfect_detections_score_one(dataset):
    perfect = {}
    for image_id in dataset.image_ids:
        gt = evaluate.load_ground_truth(dataset, image_id)
        perfect[image_id] = {"rois": gt.boxes, "class_ids": gt.class_ids,
                             "scores": np.linspace(0.9, 0.5, len(gt.class_ids)), "masks": gt.masks}
    result = evaluate.evaluate_model(FakeModel(perfect, batch_size=2), dataset, verbose=0)
    assert result.mAP50 == 1.0 and result.mAP == 1.0
    for iou_type in evaluate.IOU_TYPES:
        assert result.coco[iou_type]["AP"] == pytest.approx(1.0)
        assert result.coco[iou_type]["AR@100"] == pytest.approx(1.0)


def test_evaluate_model_shows_progress_on_stderr(dataset, capsys):
    evaluate.evaluate_model(FakeModel(DETECTIONS, batch_size=2), dataset, image_ids=[1, 2])
    assert "2/2" in capsys.readouterr().err


def test_evaluate_detections_checks_the_detections(dataset):
    with pytest.raises(ValueError, match="lack \\['masks'\\]"):
        evaluate.evaluate_detections(dataset, {0: {"rois": [], "class_ids": [], "scores": []}})
    wrong_size = detection(32, 32, [(5, 5, 20)], [1], [0.9])
    with pytest.raises(ValueError, match="original image size"):
        evaluate.evaluate_detections(dataset, {0: wrong_size})
    disagreeing = dict(DETECTIONS[0], scores=np.array([0.9], np.float32))
    with pytest.raises(ValueError, match="disagree on the number of instances"):
        evaluate.evaluate_detections(dataset, {0: disagreeing})
    with pytest.raises(ValueError, match="No images"):
        evaluate.evaluate_detections(dataset, {})


def test_summary_shows_both_tables(evaluated):
    result, _ = evaluated
    summary = result.summary()
    assert f"mAP@0.5         {2.5 / 3:.3f}" in summary
    segm_row = next(line for line in summary.splitlines() if line.strip().startswith("segm"))
    assert segm_row.split()[1:] == [
        "-" if result.coco["segm"][name] < 0 else f"{result.coco['segm'][name]:.3f}"
        for name in evaluate.COCO_METRICS]


def test_to_csv_writes_one_row_per_image(evaluated, tmp_path):
    result, _ = evaluated
    path = result.to_csv(tmp_path / "out" / "per_image.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["image_id"] for row in rows] == ["0", "1", "2", "3"]
    assert float(rows[1]["ap50"]) == pytest.approx(0.5)
    assert rows[3]["ap50"] == "nan" and rows[3]["path"] == "/data/img3.png"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["per_image.csv"]


def test_precision_recall_plot_is_a_png(evaluated, tmp_path):
    result, _ = evaluated
    path = evaluate.save_precision_recall_plot(result, tmp_path / "pr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# COCO JSON export
# ----------------------------------------------------------------------------------------------

def test_exported_ground_truth_loads_back_with_pycocotools(dataset, tmp_path):
    path = evaluate.export_coco_ground_truth(dataset, tmp_path / "gt.json", image_ids=[0, 1, 3])
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [0, 1, 3]
    assert coco.imgs[1]["height"] == 48 and coco.imgs[1]["width"] == 80
    assert coco.imgs[1]["file_name"] == "img1.png"
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["small square", "big square"]
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    masks, _ = dataset.load_mask(1)
    np.testing.assert_array_equal(np.stack([coco.annToMask(a) for a in annotations], -1), masks)
    assert [a["bbox"] for a in annotations] == [[5, 5, 20, 20], [50, 20, 20, 20]]
    assert [a["area"] for a in annotations] == [400, 400]
    assert coco.getAnnIds(imgIds=[3]) == []
    assert len({a["id"] for a in coco.dataset["annotations"]}) == 4


def test_exported_detections_load_back_with_pycocotools(evaluated, dataset, tmp_path):
    result, _ = evaluated
    gt_path = evaluate.export_coco_ground_truth(dataset, tmp_path / "gt.json")
    dt_path = evaluate.export_coco_detections(result.coco_detections, tmp_path / "dt.json")
    results = COCO(str(gt_path)).loadRes(str(dt_path))
    annotations = results.loadAnns(results.getAnnIds(imgIds=[2]))
    assert [a["score"] for a in annotations] == pytest.approx([0.95, 0.3])
    assert [a["bbox"] for a in annotations] == [[10, 10, 20, 20], [40, 40, 20, 20]]
    np.testing.assert_array_equal(np.stack([results.annToMask(a) for a in annotations], -1),
                                  DETECTIONS[2]["masks"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dt.json", "gt.json"]


def test_crowd_regions_are_neither_to_find_nor_wrong_to_detect():
    # Image 0: a square of class 1 and a crowd region of class 1 (negative id), both detected,
    # the crowd detection scored highest. Image 1: only a crowd region, not detected.
    crowds = SquaresDataset([(64, 64, [(5, 5, 20, 1), (40, 40, 20, -1)]),
                             (64, 64, [(10, 10, 30, -2)])])
    detections = {0: detection(64, 64, [(40, 40, 20), (5, 5, 20)], [1, 1], [0.9, 0.8]),
                  1: detection(64, 64, [], [], [])}
    result = evaluate.evaluate_detections(crowds, detections)
    # COCO: the detection on the crowd region is ignored, the square is found: AP 1 for both
    # geometries, and the undetected crowd region costs no recall.
    for iou_type in evaluate.IOU_TYPES:
        assert result.coco[iou_type]["AP"] == pytest.approx(1.0)
        assert result.coco[iou_type]["AR@100"] == pytest.approx(1.0)
    # The original's per-image numbers know one object in image 0 and none in image 1; the
    # crowd detection, ranked first, is a false positive there: the square reaches recall 1 at
    # precision 1/2, so AP@0.5 = 0.5 and precision 1/2.
    first, second = result.per_image
    assert (first.n_gt, second.n_gt) == (1, 0)
    assert first.ap50 == pytest.approx(0.5) and first.precision == pytest.approx(0.5)
    assert first.recall == 1.0 and math.isnan(second.ap50)
    ground_truth = evaluate.coco_ground_truth(crowds)
    assert [(a["category_id"], a["iscrowd"]) for a in ground_truth["annotations"]] == [
        (1, 0), (1, 1), (2, 1)]
