"""mrcnn against torchvision's Mask R-CNN on the same CPU, measured side by side in one run.

Both models are built with the same sizes and random weights (Glorot-uniform kernels, zero
biases) for each case of ``side_by_side.CASES``: detect() of ResNet101-FPN at 1024x1024 with
81 classes, 1000 proposals and up to 100 detections at confidence 0 (equal work), the same at
confidence 0.7 with a handful of detections, ResNet50-FPN at 512x512, and a training step of
ResNet101-FPN at 1024x1024 (batch 1, 2000 proposals, 200 training ROIs) with layers "all" and
"heads". Each model runs in its own subprocess, so its peak resident memory is its own, and
the parent alternates the two call by call, so that other load on the machine falls on both.

Printed, as a table and as JSON: per case and side the first call, the median of the steady
calls, the ratio mrcnn / torchvision, the peak RSS, the network's multiply-accumulates (MACs)
per call and the achieved GFLOP/s (2 FLOPs per MAC; a training step counts the forward pass
and each layer's kernel and input gradients).

torch and torchvision are not dependencies of mrcnn: install them in a separate environment
and point the script at its Python::

    python -m venv ~/venv-torch && ~/venv-torch/bin/pip install torch torchvision
    python bench/compare_torchvision.py --torch-python ~/venv-torch/bin/python
    # or: export MRCNN_TORCH_PYTHON=~/venv-torch/bin/python

Usage::

    python bench/compare_torchvision.py                          # every case, 3 steady calls
    python bench/compare_torchvision.py --cases detect_r50_512 --repeats 5
    python bench/compare_torchvision.py --json results.json      # also write the JSON
    python bench/compare_torchvision.py --isa avx2               # as on a CPU without AVX-512
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]

import numpy as np  # noqa: E402

import side_by_side  # noqa: E402
from mrcnn import cli  # noqa: E402

TORCH_PYTHON_VARIABLE = "MRCNN_TORCH_PYTHON"
INSTALL_HINT = (
    "torch and torchvision are not installed for {python}. They are no dependency of mrcnn: "
    "install them in a separate environment and name its Python, e.g.\n"
    "  python -m venv ~/venv-torch && ~/venv-torch/bin/pip install torch torchvision\n"
    "  python bench/compare_torchvision.py --torch-python ~/venv-torch/bin/python\n"
    f"(or set {TORCH_PYTHON_VARIABLE}).")
# Above this much CPU used by other processes during the steady calls, a run is not quiet.
QUIET_LOAD_CORES = 0.2
# Environment variables that limit oneDNN (TensorFlow and torch) and ATen to an instruction
# set, to measure as on a CPU without AVX-512.
ISA_ENVIRONMENT = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


# ----------------------------------------------------------------------------------------------
# The mrcnn side (a worker subprocess)
# ----------------------------------------------------------------------------------------------

def mrcnn_config(spec):
    """The mrcnn Config of a case."""
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = spec["classes"]
        IMAGES_PER_GPU = 1
        BACKBONE = spec["backbone"]
        IMAGE_MIN_DIM = IMAGE_MAX_DIM = spec["size"]
        PRE_NMS_LIMIT = spec["pre_nms"]
        POST_NMS_ROIS_INFERENCE = spec["proposals_inference"]
        POST_NMS_ROIS_TRAINING = spec["proposals_training"]
        RPN_TRAIN_ANCHORS_PER_IMAGE = spec["rpn_train_anchors"]
        TRAIN_ROIS_PER_IMAGE = spec["train_rois"]
        ROI_POSITIVE_RATIO = spec["positive_ratio"]
        DETECTION_MAX_INSTANCES = spec["max_detections"]
        DETECTION_MIN_CONFIDENCE = spec.get("min_confidence", 0.0)

    return BenchConfig()


def mrcnn_macs(model, spec, mask_rois):
    """Multiply-accumulates of one call of ``model`` (a MaskRCNN), per stage.

    Backbone and FPN: every convolution of the graph rebuilt on an input of the case's size
    (its output size times its kernel). RPN: the shared head on every pyramid level. Heads:
    per ROI, times the ROIs the graph feeds them: the box head gets the proposals at
    inference and the training ROIs in training, the mask head ``mask_rois`` (the rows of
    the mrcnn_mask output of a call). A training step adds each layer's kernel gradient
    (trainable layers) and input gradient (layers with a trainable layer before them),
    but for the layers that back-propagate from a few pixels only (MaskRCNN's
    ``_sparse_gradient_layers``): the RPN adds three times its per-pixel MACs for each of
    the RPN_TRAIN_ANCHORS_PER_IMAGE pixels it may back-propagate from (recomputing the
    shared features there, its kernels' and its input's gradients), and the pyramid's 3x3
    convolutions, whose gradient reaches a few percent of their pixels (about 3 % of P2 at
    1024²), add none.
    """
    import keras

    from mrcnn.backbone import fpn_graph, resnet_graph
    from mrcnn.training import LAYER_REGEX

    config = model.config
    training = spec["mode"] == "train"
    trainable = LAYER_REGEX[spec.get("layers", "all")] if training else None

    def trains(name):
        return training and re.fullmatch(trainable, name) is not None

    def conv_macs(layer, out_hw):
        kernel = layer.kernel.shape  # conv: [kh, kw, in, out]; transposed: [kh, kw, out, in]
        return int(np.prod(out_hw)) * int(np.prod(kernel))

    macs = dict.fromkeys(side_by_side.STAGES, 0)
    # Backbone and FPN, on a fixed-size copy of the graph.
    image = keras.Input(shape=(spec["size"], spec["size"], 3), batch_size=1)
    _, c2, c3, c4, c5 = resnet_graph(image, config.BACKBONE, stage5=True, train_bn=False)
    pyramid = fpn_graph(c2, c3, c4, c5, config.TOP_DOWN_PYRAMID_SIZE)
    trunk = keras.Model(image, pyramid)
    backbone_trains = trains("res2a_branch2a")
    for layer in trunk.layers:
        if isinstance(layer, keras.layers.Conv2D):
            stage = "fpn" if layer.name.startswith("fpn_") else "backbone"
            lateral = layer.name.startswith("fpn_c")
            input_grad = (backbone_trains and layer.name != "conv1") or (
                stage == "fpn" and not lateral and trains(layer.name))
            forward = conv_macs(layer, layer.output.shape[1:3])
            sparse_backward = stage == "fpn" and not lateral
            macs[stage] += (side_by_side.training_macs(forward, trains(layer.name), input_grad)
                            if training and not sparse_backward else forward)
    # RPN: the shared model on every level.
    positions = sum(int(np.prod(p.shape[1:3])) for p in pyramid)
    rpn = model.keras_model.get_layer("rpn_model")
    forward = sum(conv_macs(layer, (1, 1)) for layer in rpn.layers
                  if isinstance(layer, keras.layers.Conv2D)) * positions
    macs["rpn"] = forward
    if training and trains("rpn_model"):
        macs["rpn"] += 3 * forward // positions * config.RPN_TRAIN_ANCHORS_PER_IMAGE
    # Heads, per ROI.
    box_rois = config.TRAIN_ROIS_PER_IMAGE if training else config.POST_NMS_ROIS_INFERENCE
    for stage, rois, names, side in (
            ("box_head", box_rois, ["mrcnn_class_conv1", "mrcnn_class_conv2",
                                    "mrcnn_class_logits", "mrcnn_bbox_fc"], config.POOL_SIZE),
            ("mask_head", mask_rois, [f"mrcnn_mask_conv{i}" for i in range(1, 5)]
             + ["mrcnn_mask_deconv", "mrcnn_mask"], config.MASK_POOL_SIZE)):
        shape = (None, side, side, config.TOP_DOWN_PYRAMID_SIZE)
        for name in names:
            inner = model.keras_model.get_layer(name).layer
            if isinstance(inner, keras.layers.Dense):
                forward = int(np.prod(inner.kernel.shape))
            else:
                out = inner.compute_output_shape(shape)
                hw = shape[1:3] if isinstance(inner, keras.layers.Conv2DTranspose) else out[1:3]
                forward = conv_macs(inner, hw)
                shape = out
            forward *= rois
            macs[stage] += side_by_side.training_macs(forward, trains(name), True) if training \
                else forward
    return macs


def scenes_dataset(path, classes):
    """A prepared utils.Dataset of the scenes of a side_by_side.save_scenes file."""
    from mrcnn import utils

    scenes = side_by_side.load_scenes(path)

    class Scenes(utils.Dataset):
        def load_image(self, image_id):
            return scenes[image_id][0]

        def load_mask(self, image_id):
            return scenes[image_id][1], scenes[image_id][2]

    dataset = Scenes()
    for class_id in range(1, classes):
        dataset.add_class("bench", class_id, f"class_{class_id}")
    for image_id in range(len(scenes)):
        dataset.add_image("bench", image_id=image_id, path=f"{path}#{image_id}")
    dataset.prepare()
    return dataset


def inference_outputs(model, image):
    """The inference model's outputs for ``image``, by the graph detect() runs (no other graph
    is traced, so the worker's memory is detect()'s): detections, mrcnn_class, mrcnn_bbox,
    mrcnn_mask, rpn_rois, rpn_class, rpn_bbox."""
    molded_images, image_metas, _ = model.mold_inputs([image])
    return model.predict_molded(molded_images, image_metas)


def scale_class_logits(model, image, threshold, count):
    """Sharpen the class softmax so that about ``count`` ROIs pass ``threshold``.

    The logits are taken as the log of detect()'s class probabilities: they differ from the
    logits by a constant per ROI, which no softmax sees.
    """
    probabilities = inference_outputs(model, image)[1][0]
    logits = np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))
    scale = side_by_side.logit_scale_for(logits, threshold, count)
    layer = model.keras_model.get_layer("mrcnn_class_logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * scale, bias])
    return scale


def mask_head_rows(model, image, batch):
    """ROIs the mask head runs on in one call: detect() of ``image``, or the training step
    of ``batch`` (the rows of the mrcnn_mask output; see layers.ActiveRows). The training
    model's probe traces a graph of its own: call it after the peak memory is read."""
    import keras

    if batch is None:
        return inference_outputs(model, image)[3].shape[1]
    probe = keras.Model(model.keras_model.inputs, model.keras_model.get_layer("mrcnn_mask").output)
    return probe.predict_on_batch(batch).shape[1]


def mrcnn_worker(args):
    import keras

    from mrcnn.data import DataGenerator
    from mrcnn.model import MaskRCNN
    from mrcnn.training import LAYER_REGEX
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    spec = side_by_side.case_spec(args.case)
    config = mrcnn_config(spec)
    image = side_by_side.load_scenes(args.scene)[0][0]
    keras.utils.set_random_seed(0)
    mode = "inference" if spec["mode"] == "detect" else "training"
    # In the parent's folder beside the scene, which the parent removes.
    logs = os.path.join(os.path.dirname(os.path.abspath(args.scene)), "mrcnn_logs")
    start = time.perf_counter()
    model = MaskRCNN(mode, config, logs)
    build_seconds = time.perf_counter() - start
    extra = {}

    batch = None
    if mode == "inference":
        if spec.get("handful"):
            # Its first call of the graph traces it: the first detect() below does not.
            start = time.perf_counter()
            extra["logit_scale"] = scale_class_logits(model, image, spec["min_confidence"],
                                                      spec["handful"])
            extra["logit_scale_s"] = time.perf_counter() - start

        def step():
            start = time.perf_counter()
            result = model.detect([image])[0]
            return {"seconds": time.perf_counter() - start, "detections": len(result["scores"])}
    else:
        dataset = scenes_dataset(args.scene, spec["classes"])
        generator = DataGenerator(dataset, config, shuffle=False, steps=1)
        start = time.perf_counter()
        batch = list(generator[0][0])
        extra["data_s"] = time.perf_counter() - start
        model.set_trainable(LAYER_REGEX[spec["layers"]], verbose=0)
        model.compile(spec["learning_rate"], config.LEARNING_MOMENTUM)
        extra["trainable_weights"] = int(sum(np.prod(w.shape)
                                             for w in model.keras_model.trainable_weights))

        def step():
            start = time.perf_counter()
            loss = model.keras_model.train_on_batch(batch)
            return {"seconds": time.perf_counter() - start, "loss": float(np.ravel(loss)[0])}

    first = step()
    side_by_side.answer(ready=True, build_s=build_seconds, first=first,
                        versions={"tensorflow": tf.__version__, "keras": keras.__version__},
                        **extra)
    side_by_side.serve(step, last=lambda: {
        "macs": mrcnn_macs(model, spec, mask_head_rows(model, image, batch))})


# ----------------------------------------------------------------------------------------------
# The parent: scene, workers, alternation, report
# ----------------------------------------------------------------------------------------------

class Worker:
    """A worker subprocess speaking the side_by_side protocol."""

    def __init__(self, command, env):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        self.ready = self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"Worker {' '.join(self.process.args)} ended with status "
                               f"{self.process.wait()} (its error output is above).")
        return json.loads(line)

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def quit(self):
        answer = self.ask("quit")
        self.process.wait()
        return answer


def resolve_torch_python(option):
    """The Python that runs the torchvision side; exits with install instructions if unusable."""
    python = option or os.environ.get(TORCH_PYTHON_VARIABLE) or sys.executable
    try:
        ok = subprocess.run([python, "-c", "import torch, torchvision"], capture_output=True,
                            timeout=300).returncode == 0
    except OSError:
        ok = False
    if not ok:
        print(INSTALL_HINT.format(python=python), file=sys.stderr)
        sys.exit(2)
    return python


def write_scenes(path, count, size, seed):
    """``count`` synthetic scenes of ``size`` pixels (mrcnn.synthetic, ``seed``) in a scenes file."""
    from mrcnn.synthetic import SyntheticDataset

    dataset = SyntheticDataset()
    dataset.load_synthetic(count, size, size, seed=seed)
    dataset.prepare()
    side_by_side.save_scenes(path, [(dataset.load_image(i), *dataset.load_mask(i))
                                    for i in dataset.image_ids])
    return path


def write_scene(folder, size):
    """One synthetic scene of ``size`` pixels (seed 0) in ``folder``; its path."""
    return write_scenes(os.path.join(folder, f"scene_{size}.npz"), 1, size, seed=0)


def machine():
    """CPU model, core count and software of this machine."""
    model_name = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model_name = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                          if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model_name, "cores": os.cpu_count(), "python": platform.python_version()}


def run_case(name, args, scene, torch_python, env):
    """Both workers of one case, alternated; returns the case's result dict."""
    spec = side_by_side.case_spec(name)
    common = ["--case", name, "--scene", scene, "--threads", str(args.threads)]
    sides = {
        "mrcnn": [sys.executable, os.path.abspath(__file__), "--worker"] + common,
        "torchvision": [torch_python, os.path.join(BENCH_DIR, "torchvision_worker.py")] + common,
    }
    workers = {}
    for side, command in sides.items():  # one at a time: building competes for the cores
        workers[side] = Worker(command, env)
    steady = {side: [] for side in sides}
    start, busy = time.perf_counter(), side_by_side.busy_cpu_seconds()
    for _ in range(args.repeats):
        for side, worker in workers.items():
            steady[side].append(worker.ask("step"))
    wall, busy = time.perf_counter() - start, side_by_side.busy_cpu_seconds() - busy
    own = sum(s["cpu_s"] for answers in steady.values() for s in answers)
    result = {"case": name, "about": spec["about"],
              # CPU time other processes took during the steady calls, in cores.
              "other_load_cores": max(0.0, busy - own) / wall}
    for side, worker in workers.items():
        ready = {**worker.ready, **worker.quit()}   # the MACs come in one or the other
        rss, macs = ready["peak_rss_mib"], sum(ready["macs"].values())
        seconds = statistics.median(s["seconds"] for s in steady[side])
        result[side] = {
            "first_s": ready["first"]["seconds"], "median_s": seconds,
            "steady_s": [s["seconds"] for s in steady[side]],
            "steady_cpu_s": [s["cpu_s"] for s in steady[side]],
            "peak_rss_mib": rss, "gmac": macs / 1e9, "gmac_by_stage":
                {k: v / 1e9 for k, v in ready["macs"].items()},
            "gflops": 2 * macs / 1e9 / seconds, "build_s": ready["build_s"],
            "detections": steady[side][-1].get("detections"),
            "versions": ready["versions"],
            **{k: ready[k] for k in ("logit_scale", "logit_scale_s", "data_s", "trainable_weights")
               if k in ready}}
    result["time_ratio"] = result["mrcnn"]["median_s"] / result["torchvision"]["median_s"]
    result["memory_ratio"] = result["mrcnn"]["peak_rss_mib"] / result["torchvision"]["peak_rss_mib"]
    return result


def table(results):
    """The results as a Markdown table (ratios and the other load on the mrcnn row)."""
    rows = ["| case | side | first s | median s | ratio | peak RSS MiB | ratio | GMAC | GFLOP/s "
            "| detections | other load |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        for side in ("mrcnn", "torchvision"):
            s = r[side]
            first_row = side == "mrcnn"
            case = r["case"] if first_row else ""
            time_ratio = f"{r['time_ratio']:.2f}" if first_row else ""
            memory_ratio = f"{r['memory_ratio']:.2f}" if first_row else ""
            load = f"{r['other_load_cores']:.2f} cores" if first_row else ""
            detections = "" if s["detections"] is None else s["detections"]
            rows.append(f"| {case} | {side} | {s['first_s']:.1f} | {s['median_s']:.2f} "
                        f"| {time_ratio} | {s['peak_rss_mib']:.0f} | {memory_ratio} "
                        f"| {s['gmac']:.0f} | {s['gflops']:.0f} | {detections} | {load} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(side_by_side.CASES),
                        default=list(side_by_side.CASES), help="cases to run (default: all)")
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="steady calls per side after the first (default 3)")
    parser.add_argument("--threads", type=cli.positive_int, default=os.cpu_count(),
                        help="threads of each side (default: the CPU count)")
    parser.add_argument("--torch-python",
                        help=f"Python with torch and torchvision (default: ${TORCH_PYTHON_VARIABLE}, "
                             "else this Python)")
    parser.add_argument("--isa", choices=sorted(ISA_ENVIRONMENT),
                        help="limit both sides to an instruction set (e.g. avx2)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return mrcnn_worker(args)

    torch_python = resolve_torch_python(args.torch_python)
    env = dict(os.environ, **ISA_ENVIRONMENT.get(args.isa, {}))
    scenes = {}
    results = []
    with tempfile.TemporaryDirectory(prefix="mrcnn_compare_") as folder:
        for name in args.cases:
            size = side_by_side.CASES[name]["size"]
            if size not in scenes:
                scenes[size] = write_scene(folder, size)
            print(f"== {name}: {side_by_side.CASES[name]['about']}", file=sys.stderr, flush=True)
            results.append(run_case(name, args, scenes[size], torch_python, env))
    report = {"machine": machine(), "threads": args.threads, "isa": args.isa or "native",
              "repeats": args.repeats, "command": " ".join(sys.argv), "results": results}
    print(json.dumps(report, indent=2))
    print()
    print(f"{report['machine']['cpu']}, {report['machine']['cores']} cores, {args.threads} "
          f"threads a side, instruction set {report['isa']}; ratio = mrcnn / torchvision")
    print(table(results))
    busy = [r["case"] for r in results if r["other_load_cores"] > QUIET_LOAD_CORES]
    if busy:
        print(f"\nWarning: other processes used more than {QUIET_LOAD_CORES} cores during "
              f"{', '.join(busy)}: those times are not fair figures (torch's OpenMP threads "
              "suffer more from sharing cores than TensorFlow's). Measure on a quiet machine.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
