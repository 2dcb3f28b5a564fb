"""What both sides of a side-by-side benchmark share: cases, workers' protocol, numbers.

This module needs only the standard library and numpy, so that both the mrcnn worker
(TensorFlow environment) and the torchvision worker (a separate environment with torch and
torchvision) import it.

A worker is a subprocess that builds one model and then obeys one command per line on its
standard input, answering one JSON object per line on its standard output:

* on start: ``{"ready": true, "build_s": ..., "macs": {stage: MACs of one call}, ...}``;
* ``step``: runs one ``detect()`` call or one training step,
  ``{"seconds": ..., "detections": ...}``;
* ``quit``: ``{"peak_rss_mib": ...}`` (the worker's own peak resident memory), then exits.

The parent alternates the workers call by call, so that a change in the machine's load
(other processes on the same cores) touches both sides alike and the ratio stays fair.
"""

import json
import os
import resource
import sys

import numpy as np

# One entry per benchmark case. Sizes are the original COCO configuration's unless a case
# says otherwise: 81 classes, 1000 proposals at inference, 2000 in training, 200 training
# ROIs per image (a third positive), up to 100 detections, batch of one image.
CASES = {
    "detect_r101_1024": dict(
        mode="detect", backbone="resnet101", size=1024, min_confidence=0.0,
        about="detect(), ResNet101-FPN 1024², confidence 0: 100 detections (equal work)"),
    "detect_r101_1024_typical": dict(
        mode="detect", backbone="resnet101", size=1024, min_confidence=0.7, handful=5,
        about="detect(), ResNet101-FPN 1024², confidence 0.7: a handful of detections"),
    "detect_r50_512": dict(
        mode="detect", backbone="resnet50", size=512, min_confidence=0.0,
        about="detect(), ResNet50-FPN 512², confidence 0: 100 detections"),
    "train_r101_1024_all": dict(
        mode="train", backbone="resnet101", size=1024, layers="all",
        about="training step, ResNet101-FPN 1024², batch 1, layers='all'"),
    "train_r101_1024_heads": dict(
        mode="train", backbone="resnet101", size=1024, layers="heads",
        about="training step, ResNet101-FPN 1024², batch 1, layers='heads'"),
}
COMMON = dict(classes=81, proposals_inference=1000, proposals_training=2000, pre_nms=6000,
              train_rois=200, positive_ratio=0.33, max_detections=100, learning_rate=0.001,
              rpn_train_anchors=256)

# Stages of the network, in order, for the MAC counts and profiles.
STAGES = ("backbone", "fpn", "rpn", "box_head", "mask_head")


def case_spec(name):
    """The full settings of a case: CASES[name] on top of COMMON."""
    return dict(COMMON, name=name, **CASES[name])


def logit_scale_for(logits, threshold, count):
    """Factor for class logits that lets about ``count`` ROIs pass a confidence threshold.

    Random weights give near-uniform class probabilities, so no ROI reaches a typical
    threshold such as 0.7. Scaling the last layer's kernel by a factor ``a`` scales the
    logits (its bias is zero), which sharpens the softmax: this returns the smallest ``a``
    (by bisection) for which at least ``count`` ROIs have a non-background best class with
    probability >= ``threshold``.

    Args:
        logits: [rois, classes] float logits of the proposals (class 0 the background).
        threshold: the detection confidence threshold.
        count: how many ROIs should pass it.
    """
    logits = np.asarray(logits, dtype=np.float64)

    def passing(scale):
        z = logits * scale
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        best = p.argmax(axis=1)
        return int(np.sum((best > 0) & (p.max(axis=1) >= threshold)))

    low, high = 0.0, 1.0
    while passing(high) < count:
        high *= 2
        if high > 1e6:
            raise ValueError("No logit scale lets that many ROIs pass the threshold.")
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if passing(middle) < count else (low, middle)
    return high


def training_macs(forward, weight_grad, input_grad):
    """MACs of a training step from a layer's forward MACs and which gradients it computes.

    A convolution's backward pass costs one forward for the kernel's gradient and one for the
    input's: 1x, 2x or 3x its forward MACs in all.
    """
    return forward * (1 + int(weight_grad) + int(input_grad))


def peak_rss_mib():
    """Peak resident memory of this process, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def answer(**values):
    """Write one protocol line to stdout."""
    sys.stdout.write(json.dumps(values) + "\n")
    sys.stdout.flush()


def cpu_seconds():
    """CPU time (user + system) this process has used, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def busy_cpu_seconds():
    """CPU time all processes of the machine have used since boot (Linux /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def serve(step, last=None):
    """The worker's command loop: ``step() -> dict`` for each ``step`` line.

    Each answer also gives ``cpu_s``, the CPU time the worker used during the step. The
    answer to ``quit`` gives the peak RSS, and then ``last() -> dict`` (probes that would
    add to the peak, run once it is read).
    """
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            start = cpu_seconds()
            values = step()
            answer(cpu_s=cpu_seconds() - start, **values)
        elif command == "quit":
            peak = peak_rss_mib()
            answer(peak_rss_mib=peak, **(last() if last else {}))
            return
        else:
            raise ValueError(f"Unknown worker command {command!r}.")


def save_scenes(path, scenes):
    """Write scenes to an .npz file both environments read.

    Args:
        scenes: list of (image uint8 [H, W, 3], masks bool [H, W, N], class_ids int [N]),
            all of one image size.
    """
    np.savez(path, images=np.stack([image for image, _, _ in scenes]),
             masks=np.concatenate([np.moveaxis(masks, -1, 0) for _, masks, _ in scenes]),
             class_ids=np.concatenate([class_ids for _, _, class_ids in scenes]).astype(np.int32),
             counts=np.array([len(class_ids) for _, _, class_ids in scenes]))


def load_scenes(path):
    """The scenes of a save_scenes file: [(image, masks [H, W, N] bool, class_ids [N])]."""
    with np.load(path) as data:
        images, masks, class_ids, counts = (data[k] for k in ("images", "masks", "class_ids",
                                                               "counts"))
    ends = np.cumsum(counts)
    return [(image, np.moveaxis(masks[end - count:end], 0, -1), class_ids[end - count:end])
            for image, end, count in zip(images, ends, counts)]


def save_detections(path, detections):
    """Write per-image detections (dicts of rois, class_ids, scores, masks [H, W, N]) to .npz."""
    np.savez(path, counts=np.array([len(d["scores"]) for d in detections]),
             rois=np.concatenate([np.reshape(d["rois"], (-1, 4)) for d in detections]),
             class_ids=np.concatenate([d["class_ids"] for d in detections]),
             scores=np.concatenate([d["scores"] for d in detections]),
             masks=np.concatenate([np.moveaxis(d["masks"], -1, 0) for d in detections]))


def load_detections(path):
    """The detections of a save_detections file, as detect() returns them."""
    with np.load(path) as data:
        counts, rois, class_ids, scores, masks = (data[k] for k in (
            "counts", "rois", "class_ids", "scores", "masks"))
    ends = np.cumsum(counts)
    return [{"rois": rois[end - n:end].astype(np.int32),
             "class_ids": class_ids[end - n:end].astype(np.int32),
             "scores": scores[end - n:end].astype(np.float32),
             "masks": np.moveaxis(masks[end - n:end], 0, -1).astype(bool)}
            for end, n in zip(ends, counts)]
