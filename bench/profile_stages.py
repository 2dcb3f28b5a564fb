"""Where the time goes: a per-stage profile of one detect() call and one training step.

Runs TensorFlow's profiler over one steady detect() call and one steady training step of
the full-size model (random weights, the original COCO sizes; see side_by_side.CASES), and
adds up the time of every TensorFlow operation by the stage of the Keras layer it belongs
to: backbone, FPN, RPN, proposals, ROIAlign, box head, mask head, detection targets,
detection layer, losses, and the optimizer; training splits each stage into its forward
and backward (gradient) time. The numpy parts are timed around their calls: molding the
image and unmolding the detections at inference, building the batch (DataGenerator) in
training. The profiler itself slows the run down: read the shares, not the absolute times.

Usage::

    python bench/profile_stages.py                                  # ResNet101, 1024x1024
    python bench/profile_stages.py --backbone resnet50 --size 512 --modes detect
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]

import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import compare_torchvision  # noqa: E402
import side_by_side  # noqa: E402
from mrcnn import cli  # noqa: E402
from mrcnn.data import DataGenerator  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from mrcnn.training import LAYER_REGEX  # noqa: E402

# Named layers -> stage, by name prefix; unnamed layers (activation_3, add_7, ...) take the
# stage of the layer that feeds them.
STAGE_PREFIXES = (
    ("fpn_", "FPN"), ("rpn_", "RPN"), ("anchors", "RPN"), ("ROI", "proposals"),
    ("roi_align", "ROIAlign"), ("mrcnn_class", "box head"), ("mrcnn_bbox", "box head"),
    ("pool_squeeze", "box head"), ("mrcnn_mask", "mask head"), ("mask_rois", "mask head"),
    ("mrcnn_detection", "detection layer"), ("detection_boxes", "detection layer"),
    ("proposal_targets", "detection targets"), ("gt_boxes_normalized", "detection targets"),
    ("active_class_ids", "losses"), ("output_rois", "detection targets"),
    ("input_", "inputs"), ("conv1", "backbone"), ("bn_conv1", "backbone"), ("res", "backbone"),
    ("bn", "backbone"),
)
# Events that run a whole function: their ops are counted one by one.
FUNCTION_CALLS = ("StatefulPartitionedCall", "PartitionedCall")
STAGE_ORDER = ("mold (numpy)", "data (numpy)", "backbone", "FPN", "RPN", "proposals",
               "detection targets", "ROIAlign", "box head", "detection layer", "mask head",
               "losses", "optimizer and other", "unmold (numpy)")


def layer_stages(keras_model):
    """{layer name: stage} for every layer of the model (nested rpn_model as one)."""
    stages = {}
    for layer in keras_model.layers:
        if layer.name.endswith("_loss"):
            stages[layer.name] = "losses"
            continue
        stage = next((s for prefix, s in STAGE_PREFIXES if layer.name.startswith(prefix)), None)
        if stage is None:  # an unnamed layer: the stage of its first input
            node = layer._inbound_nodes[0]
            parents = [t._keras_history.operation.name for t in node.input_tensors]
            stage = next((stages[p] for p in parents if p in stages), "backbone")
        stages[layer.name] = stage
    return stages


def op_stage(op_name, stages, model_scope):
    """(stage, backward?) of a TensorFlow op name such as
    ``gradient_tape/mask_rcnn_1/res2a_branch2a_1/convolution``."""
    parts = op_name.split("/")
    backward = parts[0] == "gradient_tape"
    if backward:
        parts = parts[1:]
    if len(parts) < 2 or parts[0] != model_scope:
        return "optimizer and other", backward
    scope = parts[1]
    for candidate in (scope, scope.rsplit("_", 1)[0]):
        if candidate in stages:
            return stages[candidate], backward
    return "optimizer and other", backward


def profiled(run, log_dir):
    """Run ``run()`` under the profiler; return {op name: seconds} of the TensorFlow ops."""
    tf.profiler.experimental.start(log_dir)
    run()
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    seconds = collections.Counter()
    for plane in space.planes:
        metadata = plane.event_metadata
        for line in plane.lines:
            for event in line.events:
                name = metadata[event.metadata_id].name
                if ":" not in name or "::" in name:  # not "op/name:OpType"
                    continue
                op, op_type = name.rsplit(":", 1)
                if op.startswith("Eager") or op_type in FUNCTION_CALLS:  # they hold ops
                    continue
                seconds[op] += event.duration_ps * 1e-12
    return seconds


def stage_seconds(op_seconds, keras_model):
    """{(stage, backward): seconds} from op_seconds."""
    stages = layer_stages(keras_model)
    scope = next(iter(name.split("/")[1] for name in op_seconds
                      if name.startswith("gradient_tape/")), None) or next(
        iter(name.split("/")[0] for name in op_seconds if "/" in name), "")
    totals = collections.Counter()
    for name, seconds in op_seconds.items():
        totals[op_stage(name, stages, scope)] += seconds
    return totals


def profile_detect(spec, scene, log_dir):
    config = compare_torchvision.mrcnn_config(spec)
    model = MaskRCNN("inference", config, log_dir)
    image = side_by_side.load_scenes(scene)[0][0]
    model.detect([image])  # trace and warm up
    timings = {}

    def run():
        start = time.perf_counter()
        molded, metas, windows = model.mold_inputs([image])
        timings["mold (numpy)"] = time.perf_counter() - start
        detections, _, _, masks, _, _, _ = model.predict_molded(molded, metas)
        start = time.perf_counter()
        model.unmold_detections(detections[0], masks[0], image.shape, molded.shape[1:],
                                windows[0])
        timings["unmold (numpy)"] = time.perf_counter() - start

    start = time.perf_counter()
    model.detect([image])
    steady = time.perf_counter() - start
    totals = stage_seconds(profiled(run, os.path.join(log_dir, "detect")), model.keras_model)
    for stage, seconds in timings.items():
        totals[(stage, False)] = seconds
    return steady, totals


def profile_train(spec, scene, log_dir):
    config = compare_torchvision.mrcnn_config(spec)
    model = MaskRCNN("training", config, log_dir)
    dataset = compare_torchvision.scenes_dataset(scene, spec["classes"])
    generator = DataGenerator(dataset, config, shuffle=False, steps=1)
    model.set_trainable(LAYER_REGEX[spec["layers"]], verbose=0)
    model.compile(spec["learning_rate"], config.LEARNING_MOMENTUM)
    batch = list(generator.batch(0)[0])
    model.keras_model.train_on_batch(batch)  # trace and warm up
    start = time.perf_counter()
    model.keras_model.train_on_batch(batch)
    steady = time.perf_counter() - start
    timings = {}

    def run():
        start = time.perf_counter()
        generator.batch(1)
        timings["data (numpy)"] = time.perf_counter() - start
        model.keras_model.train_on_batch(batch)

    totals = stage_seconds(profiled(run, os.path.join(log_dir, "train")), model.keras_model)
    for stage, seconds in timings.items():
        totals[(stage, False)] = seconds
    return steady, totals


def report(title, steady, totals, training):
    total = sum(totals.values())
    print(f"\n{title}: {steady:.2f} s unprofiled; {total:.2f} s of operations under the "
          "profiler")
    header = "| stage | forward s | backward s | share |" if training else "| stage | s | share |"
    print(header)
    print("| --- |" + " ---: |" * (header.count("|") - 2))
    for stage in STAGE_ORDER:
        forward, backward = totals.get((stage, False), 0.0), totals.get((stage, True), 0.0)
        if forward + backward == 0:
            continue
        share = f"{100 * (forward + backward) / total:.0f}%"
        if training:
            print(f"| {stage} | {forward:.3f} | {backward:.3f} | {share} |")
        else:
            print(f"| {stage} | {forward:.3f} | {share} |")


def profile(args, log_dir):
    """Profile the chosen modes, writing the scene and the model's logs into ``log_dir``."""
    scene = compare_torchvision.write_scene(log_dir, args.size)
    case = f"{args.backbone}, {args.size}x{args.size}, 81 classes, random weights"
    if "detect" in args.modes:
        spec = dict(side_by_side.case_spec("detect_r101_1024"), backbone=args.backbone,
                    size=args.size)
        steady, totals = profile_detect(spec, scene, log_dir)
        report(f"detect() ({case}, confidence 0: 100 detections)", steady, totals, False)
    if "train" in args.modes:
        spec = dict(side_by_side.case_spec("train_r101_1024_all"), backbone=args.backbone,
                    size=args.size, layers=args.layers)
        steady, totals = profile_train(spec, scene, log_dir)
        report(f"training step ({case}, batch 1, layers={args.layers!r})", steady, totals, True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet101", choices=("resnet50", "resnet101"))
    parser.add_argument("--size", type=cli.image_size, default=1024,
                        help="image side (default 1024)")
    parser.add_argument("--layers", default="all", choices=("all", "heads"),
                        help="layers trained in the training step (default all)")
    parser.add_argument("--modes", nargs="+", default=["detect", "train"],
                        choices=("detect", "train"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mrcnn_profile_") as log_dir:
        profile(args, log_dir)


if __name__ == "__main__":
    main()
