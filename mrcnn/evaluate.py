"""Evaluation of detections: the original's per-image AP and the COCO metrics.

One pass over a dataset gives two families of numbers:

* the original's per-image numbers, from ``utils.compute_ap`` (AP@0.5) and
  ``utils.compute_ap_range`` (AP@[.5:.95]), both with mask IoU, plus precision and recall at
  IoU 0.5 from ``utils.compute_matches``; their means over the images are mAP@0.5, mAP@[.5:.95],
  mean precision and mean recall;
* the standard COCO numbers for ``bbox`` and ``segm`` (AP, AP50, AP75, APs, APm, APl, AR@100),
  computed by pycocotools' ``COCOeval`` from the dataset's ground truth and the detections.

Conventions: boxes are [N, (y1, x1, y2, x2)] int pixels with y2/x2 exclusive (as
``utils.extract_bboxes`` gives them); COCO boxes are [x, y, width, height]. Masks are
[H, W, N] bool at the original image size, as ``MaskRCNN.detect()`` returns them; COCO masks are
compressed RLE. COCO category ids are the dataset's class ids (1 .. num_classes - 1; 0, the
background, is no category) and COCO image ids are the dataset's image ids.

Typical use::

    result = evaluate.evaluate_model(model, dataset)
    print(result.summary())
    result.to_csv("per_image.csv")
    evaluate.save_precision_recall_plot(result, "precision_recall.png")
    evaluate.export_coco_detections(result, "detections.json")
    evaluate.export_coco_ground_truth(dataset, "ground_truth.json")
"""

import contextlib
import copy
import csv
import dataclasses
import io
import math
import os

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from mrcnn import files, utils
from mrcnn.coco import coco_api

IOU_TYPES = ("bbox", "segm")
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@100")
# Where each metric sits in COCOeval.stats after summarize().
_COCO_STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR@100": 8}
_DETECTION_KEYS = ("rois", "class_ids", "scores", "masks")


# ----------------------------------------------------------------------------------------------
# Ground truth and per-image metrics (the original's)
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class GroundTruth:
    """One image's ground truth at its original size.

    boxes: [N, (y1, x1, y2, x2)] int32 pixels, y2/x2 exclusive.
    class_ids: [N] int32 dataset class ids; a negative id marks a crowd region (COCO
        ``iscrowd``) of class -id: no detection has to find it, and detections on it are
        neither right nor wrong.
    masks: [height, width, N] bool.
    """
    boxes: np.ndarray
    class_ids: np.ndarray
    masks: np.ndarray
    height: int
    width: int

    def objects(self):
        """The ground truth without its crowd regions: (boxes, class_ids, masks)."""
        keep = self.class_ids > 0
        return self.boxes[keep], self.class_ids[keep], self.masks[..., keep]


def load_ground_truth(dataset, image_id):
    """Loads an image's instances with ``dataset.load_mask`` and their boxes.

    Instances with an empty mask are dropped, as the original's ``load_image_gt`` drops them.
    The image size comes from the masks; the image itself is read only when ``load_mask``
    returns no instances without a size (the base ``Dataset`` returns [0, 0, 0] masks).

    Returns a ``GroundTruth``.
    """
    masks, class_ids = dataset.load_mask(image_id)
    masks = np.asarray(masks).astype(bool)
    class_ids = np.asarray(class_ids, dtype=np.int32)
    if masks.ndim != 3 or class_ids.shape != (masks.shape[-1],):
        raise ValueError(
            f"{type(dataset).__name__}.load_mask({image_id}) returned masks of shape "
            f"{masks.shape} and class ids of shape {class_ids.shape}; it must return "
            "masks [H, W, N] and class ids [N]. Fix load_mask in your Dataset class.")
    if masks.shape[0] and masks.shape[1]:
        height, width = masks.shape[:2]
    else:
        height, width = dataset.load_image(image_id).shape[:2]
        masks = np.zeros((height, width, 0), bool)
    keep = masks.any(axis=(0, 1))
    masks, class_ids = masks[..., keep], class_ids[keep]
    return GroundTruth(utils.extract_bboxes(masks), class_ids, masks, height, width)


@dataclasses.dataclass
class ImageResult:
    """The original's metrics for one image.

    ap50: AP at mask IoU 0.5 (utils.compute_ap); ap: mean AP over IoU 0.5:0.05:0.95
    (utils.compute_ap_range); precision and recall: matched fraction of the detections and of
    the ground-truth instances at IoU 0.5 with the class right (utils.compute_matches).
    An image without ground truth has no AP or recall (NaN); an image without detections has
    no precision (NaN). NaNs are left out of the means.
    """
    image_id: int
    source_id: str
    path: str
    n_gt: int
    n_pred: int
    ap50: float
    ap: float
    precision: float
    recall: float


def image_metrics(ground_truth, detection):
    """The original's AP@0.5, AP@[.5:.95], precision and recall of one image.

    ground_truth: a ``GroundTruth`` (its crowd regions are left out, as the original's
    per-image AP knew none). detection: a dict as ``MaskRCNN.detect()`` returns per image
    (rois [N, (y1, x1, y2, x2)], class_ids [N], scores [N], masks [H, W, N]).
    Returns a dict with keys ap50, ap, precision, recall (NaN where undefined, see ImageResult).
    """
    objects = ground_truth.objects()
    n_gt, n_pred = len(objects[1]), len(detection["class_ids"])
    if n_gt == 0:
        return {"ap50": math.nan, "ap": math.nan, "recall": math.nan,
                "precision": 0.0 if n_pred else math.nan}
    instances = (*objects, detection["rois"], detection["class_ids"], detection["scores"],
                 detection["masks"])
    ap50 = utils.compute_ap(*instances, iou_threshold=0.5)[0]
    ap = utils.compute_ap_range(*instances, verbose=0)
    gt_match, pred_match, _ = utils.compute_matches(*instances, iou_threshold=0.5)
    return {"ap50": float(ap50), "ap": float(ap),
            "precision": float(np.mean(pred_match > -1)) if n_pred else math.nan,
            "recall": float(np.mean(gt_match > -1))}


# ----------------------------------------------------------------------------------------------
# COCO format
# ----------------------------------------------------------------------------------------------

def encode_masks(masks):
    """[H, W, N] bool masks -> N COCO compressed RLEs, ``counts`` as str (JSON-ready)."""
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8)))
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]


def coco_boxes(boxes):
    """[N, (y1, x1, y2, x2)] pixels, y2/x2 exclusive -> list of N COCO [x, y, width, height]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    y1, x1, y2, x2 = boxes.T
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).tolist()


def coco_categories(dataset):
    """The dataset's classes, background excluded, as COCO categories.

    id is the dataset's class id, name its class name, supercategory the class's source.
    """
    return [{"id": class_id, "name": info["name"], "supercategory": info["source"]}
            for class_id, info in enumerate(dataset.class_info) if class_id > 0]


def coco_image(dataset, image_id, height, width):
    """A COCO image entry for one dataset image (id = the dataset's image id)."""
    info = dataset.image_info[image_id]
    path = info.get("path")
    return {"id": int(image_id), "width": int(width), "height": int(height),
            "file_name": os.path.basename(str(path)) if path else str(info["id"]),
            "source": info["source"], "source_id": str(info["id"])}


def coco_annotations(image_id, ground_truth, first_annotation_id=1):
    """COCO annotations of one image's ground truth, ids numbered from first_annotation_id.

    A crowd region (negative class id) becomes an annotation of category -id with iscrowd 1,
    which COCOeval ignores along with the detections it matches.
    """
    rles = encode_masks(ground_truth.masks)
    areas = mask_utils.area(rles) if rles else []
    return [{"id": first_annotation_id + i, "image_id": int(image_id),
             "category_id": abs(int(class_id)), "segmentation": rle, "area": float(area),
             "bbox": box, "iscrowd": int(class_id < 0)}
            for i, (class_id, rle, area, box) in enumerate(
                zip(ground_truth.class_ids, rles, areas, coco_boxes(ground_truth.boxes)))]


def coco_detections(image_id, detection):
    """COCO results of one image's detections: image_id, category_id, score, bbox, segmentation."""
    return [{"image_id": int(image_id), "category_id": int(class_id), "score": float(score),
             "bbox": box, "segmentation": rle}
            for class_id, score, box, rle in zip(
                detection["class_ids"], detection["scores"], coco_boxes(detection["rois"]),
                encode_masks(detection["masks"]))]


def coco_ground_truth(dataset, image_ids=None):
    """A dataset's ground truth as a COCO dict (info, images, annotations, categories).

    image_ids: dataset image ids to include (default all).
    """
    image_ids = dataset.image_ids if image_ids is None else image_ids
    images, annotations = [], []
    for image_id in image_ids:
        ground_truth = load_ground_truth(dataset, image_id)
        images.append(coco_image(dataset, image_id, ground_truth.height, ground_truth.width))
        annotations += coco_annotations(image_id, ground_truth, len(annotations) + 1)
    return _coco_dict(dataset, images, annotations)


def _coco_dict(dataset, images, annotations):
    return {"info": {"description": f"{type(dataset).__name__} ground truth exported by mrcnn"},
            "images": images, "annotations": annotations, "categories": coco_categories(dataset)}


def export_coco_ground_truth(dataset, path, image_ids=None):
    """Writes a dataset's ground truth as a COCO JSON file (atomically); returns path.

    The file loads with ``pycocotools.coco.COCO(path)``; masks are compressed RLE.
    """
    return files.write_json(path, coco_ground_truth(dataset, image_ids), indent=None)


def export_coco_detections(results, path):
    """Writes detections as a COCO results JSON file (atomically); returns path.

    results: an ``EvaluationResult`` or a list of COCO result dicts (see ``coco_detections``).
    Each entry has image_id, category_id, score, bbox [x, y, w, h] and an RLE segmentation;
    the file loads with ``COCO(ground_truth_path).loadRes(path)``.
    """
    detections = results.coco_detections if isinstance(results, EvaluationResult) else results
    return files.write_json(path, list(detections), indent=None)


def coco_evaluate(ground_truth, detections, iou_type):
    """Runs pycocotools' COCOeval on a COCO ground-truth dict and a list of COCO results.

    iou_type: "bbox" or "segm"; for each, detections are read by that geometry alone (their
    area is the box area for "bbox" and the mask area for "segm", as COCO's own results are).
    Returns (metrics, recalls, precisions): metrics maps each of COCO_METRICS to its value
    (-1 where COCOeval has nothing to average); recalls [101] are COCO's recall thresholds and
    precisions [101] the interpolated precision at IoU 0.5 over all areas, averaged over the
    categories that have ground truth (empty when none has).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, not {iou_type!r}.")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_api(copy.deepcopy(ground_truth))
        coco_dt = load_results(coco_gt, detections, iou_type)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    metrics = {name: float(coco_eval.stats[index]) for name, index in _COCO_STATS_INDEX.items()}
    # precision: [iou thresholds, recall thresholds, categories, area ranges, max detections]
    precision = coco_eval.eval["precision"][0, :, :, 0, -1]
    with_ground_truth = (precision > -1).all(axis=0)
    if not with_ground_truth.any():
        return metrics, np.zeros(0), np.zeros(0)
    return metrics, coco_eval.params.recThrs, precision[:, with_ground_truth].mean(axis=1)


def load_results(coco_gt, detections, iou_type):
    """``coco_gt.loadRes(detections)`` for COCOeval of ``iou_type``; also takes no detections.

    Detections are read by iou_type's geometry alone (see coco_evaluate). loadRes adds keys
    (id, area, ...) to the dicts it gets: it gets copies.
    """
    other_geometry = "segmentation" if iou_type == "bbox" else "bbox"
    results = [{key: value for key, value in detection.items() if key != other_geometry}
               for detection in detections]
    if results:
        return coco_gt.loadRes(results)
    return coco_api({"images": coco_gt.dataset["images"], "annotations": [],
                     "categories": coco_gt.dataset["categories"]})


# ----------------------------------------------------------------------------------------------
# Running a model and accumulating results
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class EvaluationResult:
    """Everything one evaluation measured.

    per_image: an ImageResult per image, in evaluation order.
    coco: {"bbox": {metric: value}, "segm": {metric: value}} for the COCO_METRICS, -1 where
        COCOeval had nothing to average (e.g. APl without large objects).
    precision_recall: {iou type: (recalls [R], precisions [R])}, COCO's interpolated curve at
        IoU 0.5 (see coco_evaluate).
    coco_detections: the detections as COCO results (see coco_detections).
    category_names: {category id: class name}.
    """
    per_image: list
    coco: dict
    precision_recall: dict
    coco_detections: list
    category_names: dict

    @property
    def mAP50(self):
        """Mean over images with ground truth of the original's AP at IoU 0.5."""
        return _nanmean([image.ap50 for image in self.per_image])

    @property
    def mAP(self):
        """Mean over images with ground truth of the original's AP over IoU 0.5:0.05:0.95."""
        return _nanmean([image.ap for image in self.per_image])

    @property
    def mean_precision(self):
        """Mean over images with detections of the precision at IoU 0.5."""
        return _nanmean([image.precision for image in self.per_image])

    @property
    def mean_recall(self):
        """Mean over images with ground truth of the recall at IoU 0.5."""
        return _nanmean([image.recall for image in self.per_image])

    def summary(self):
        """Both tables as text: the original's per-image means and COCO's metrics."""
        with_gt = sum(image.n_gt > 0 for image in self.per_image)
        lines = [
            f"Original metrics (utils.compute_ap, mask IoU), images: {len(self.per_image)}, "
            f"with ground truth: {with_gt}",
            f"  mAP@0.5         {_format_metric(self.mAP50)}",
            f"  mAP@[.5:.95]    {_format_metric(self.mAP)}",
            f"  precision@0.5   {_format_metric(self.mean_precision)}",
            f"  recall@0.5      {_format_metric(self.mean_recall)}",
            "",
            f"COCO metrics (pycocotools COCOeval), classes: {len(self.category_names)}",
            "  " + "".join(f"{name:>8}" for name in ("type",) + COCO_METRICS),
        ]
        for iou_type, metrics in self.coco.items():
            lines.append("  " + f"{iou_type:>8}" + "".join(
                f"{_format_metric(metrics[name]):>8}" for name in COCO_METRICS))
        return "\n".join(lines)

    def to_csv(self, path):
        """Writes the per-image results as CSV (one row per image, ImageResult's fields)."""
        columns = [field.name for field in dataclasses.fields(ImageResult)]

        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(columns)
        for image in self.per_image:
            writer.writerow([getattr(image, column) for column in columns])
        return files.write_text(path, text.getvalue())


class Evaluator:
    """Accumulates ground truth and detections image by image, then computes every metric.

    Ground-truth and detection masks are reduced to the per-image metrics and to compact RLEs
    as each image is added, so memory stays small on large datasets. With a model of
    BATCH_SIZE 1::

        evaluator = Evaluator(dataset)
        for image_id in dataset.image_ids:
            evaluator.add(image_id, model.detect([dataset.load_image(image_id)])[0])
        result = evaluator.result()
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self._per_image = []
        self._image_ids = set()
        self._images = []
        self._annotations = []
        self._detections = []

    def add(self, image_id, detection):
        """Adds one image's detections (a dict as MaskRCNN.detect() returns per image)."""
        if image_id in self._image_ids:
            raise ValueError(f"Image {image_id} was already added to this Evaluator.")
        detection = _validated_detection(image_id, detection)
        ground_truth = load_ground_truth(self.dataset, image_id)
        _check_same_size(image_id, ground_truth, detection)
        info = self.dataset.image_info[image_id]
        self._per_image.append(ImageResult(
            image_id=int(image_id), source_id=str(info["id"]), path=str(info.get("path") or ""),
            n_gt=int((ground_truth.class_ids > 0).sum()), n_pred=len(detection["class_ids"]),
            **image_metrics(ground_truth, detection)))
        self._image_ids.add(image_id)
        self._images.append(
            coco_image(self.dataset, image_id, ground_truth.height, ground_truth.width))
        self._annotations += coco_annotations(image_id, ground_truth, len(self._annotations) + 1)
        self._detections += coco_detections(image_id, detection)

    def result(self):
        """Computes the COCO metrics over everything added; returns an EvaluationResult."""
        if not self._per_image:
            raise ValueError("No images were evaluated: the dataset or image_ids is empty.")
        ground_truth = _coco_dict(self.dataset, self._images, self._annotations)
        coco, precision_recall = {}, {}
        for iou_type in IOU_TYPES:
            metrics, recalls, precisions = coco_evaluate(ground_truth, self._detections, iou_type)
            coco[iou_type] = metrics
            precision_recall[iou_type] = (recalls, precisions)
        names = {category["id"]: category["name"] for category in ground_truth["categories"]}
        return EvaluationResult(list(self._per_image), coco, precision_recall,
                                list(self._detections), names)


def detect_dataset(model, dataset, image_ids=None, verbose=1):
    """Runs ``model.detect`` over dataset images in batches of ``model.config.BATCH_SIZE``.

    The last batch is filled up by repeating its last image; those extra results are dropped.
    verbose: 1 shows a progress bar on stderr.
    Yields (image_id, detection) in image_ids order, detection as ``detect()`` returns it:
    rois [N, (y1, x1, y2, x2)] and masks [H, W, N] at the original image size.
    """
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    batch_size = model.config.BATCH_SIZE
    progress = files.ProgressBar(len(image_ids), "Detecting") if verbose else None
    for start in range(0, len(image_ids), batch_size):
        batch_ids = image_ids[start:start + batch_size]
        images = [dataset.load_image(image_id) for image_id in batch_ids]
        images += [images[-1]] * (batch_size - len(images))
        detections = model.detect(images, verbose=0)
        yield from zip(batch_ids, detections[:len(batch_ids)])
        if progress:
            progress.advance(len(batch_ids))
    if progress:
        progress.close()


def evaluate_model(model, dataset, image_ids=None, verbose=1):
    """Runs a model over a dataset and evaluates its detections; returns an EvaluationResult.

    model: anything with ``detect(images, verbose=0)`` and ``config.BATCH_SIZE`` (a MaskRCNN in
    inference mode). image_ids: dataset image ids to evaluate (default all).
    """
    evaluator = Evaluator(dataset)
    for image_id, detection in detect_dataset(model, dataset, image_ids, verbose):
        evaluator.add(image_id, detection)
    return evaluator.result()


def evaluate_detections(dataset, detections):
    """Evaluates detections made already: {image_id: detect() dict}; returns an EvaluationResult."""
    evaluator = Evaluator(dataset)
    for image_id, detection in detections.items():
        evaluator.add(image_id, detection)
    return evaluator.result()


def save_precision_recall_plot(result, path, iou_type="segm"):
    """Plots COCO's precision-recall curve at IoU 0.5 and saves it as PNG (atomically).

    Drawn by ``visualize.plot_precision_recall``, titled with the curve's COCO AP50.
    Returns path.
    """
    from matplotlib.figure import Figure

    from mrcnn import visualize

    recalls, precisions = result.precision_recall[iou_type]
    figure = Figure(figsize=(6, 5))
    axes = figure.subplots()
    visualize.plot_precision_recall(max(result.coco[iou_type]["AP50"], 0.0), precisions, recalls,
                                    ax=axes)
    axes.set_xlabel(f"recall ({iou_type}, IoU 0.5)")
    axes.set_ylabel("precision")
    return files.write_atomically(path, lambda temporary: figure.savefig(temporary, format="png"))


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def _validated_detection(image_id, detection):
    """The detection's four entries as numpy arrays, after checking they agree."""
    missing = [key for key in _DETECTION_KEYS if key not in detection]
    if missing:
        raise ValueError(f"Detections of image {image_id} lack {missing}; a detection is a dict "
                         f"with {list(_DETECTION_KEYS)} as MaskRCNN.detect() returns it.")
    arrays = {key: np.asarray(detection[key]) for key in _DETECTION_KEYS}
    arrays["rois"] = arrays["rois"].reshape(-1, 4)
    counts = {key: array.shape[-1 if key == "masks" else 0] for key, array in arrays.items()}
    if arrays["masks"].ndim != 3 or len(set(counts.values())) != 1:
        raise ValueError(f"Detections of image {image_id} disagree on the number of instances "
                         f"({counts}); masks must be [H, W, N], the others [N] or [N, 4].")
    arrays["masks"] = arrays["masks"].astype(bool)
    return arrays


def _check_same_size(image_id, ground_truth, detection):
    detection_size = tuple(np.shape(detection["masks"])[:2])
    if detection_size != (ground_truth.height, ground_truth.width):
        raise ValueError(
            f"Image {image_id}: detection masks are {detection_size} but the ground truth is "
            f"{(ground_truth.height, ground_truth.width)}; detections must be at the original "
            "image size, as MaskRCNN.detect() returns them.")


def _nanmean(values):
    finite = [value for value in values if not math.isnan(value)]
    return float(np.mean(finite)) if finite else math.nan


def _format_metric(value):
    return "-" if value is None or math.isnan(value) or value < 0 else f"{value:.3f}"
