"""Learning per CPU-minute: mrcnn against torchvision's Mask R-CNN, trained from scratch.

Both models train from random weights on the same synthetic scenes (mrcnn.synthetic) at the
same image size with the same backbone (ResNet50-FPN) and the sizes of the synthetic demo
(``mrcnn.synthetic.DEMO_SETTINGS``: 128x128 images, 2 a batch, anchors of 8 to 128 pixels,
32 training ROIs an image, a 256-wide box head, SGD at 0.01 with momentum 0.9), each for the
same wall-clock minutes on the same machine, one after the other (graph building
included). Then each detects the same held-out scenes with confidence 0.7 and the same COCO
evaluation code (mrcnn.evaluate: pycocotools' COCOeval and the original's mAP) scores both.

Each side trains with its own recipe for training from scratch: mrcnn with frozen
BatchNorm statistics (TRAIN_BN False), gradient clipping and ROIAlign by stride
(ROI_ALIGN_BY_STRIDE; ``--original-roi-align`` for the original's sampling), torchvision
with trainable BatchNorm, its own initialisation and its reference recipe's linear warm-up.

torch and torchvision are not dependencies of mrcnn (see bench/compare_torchvision.py for
how to install them beside it)::

    python bench/learning_vs_torchvision.py --torch-python ~/venv-torch/bin/python --minutes 10
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(BENCH_DIR)
sys.path[:0] = [ROOT_DIR, BENCH_DIR]

import compare_torchvision  # noqa: E402
import side_by_side  # noqa: E402
from mrcnn import cli  # noqa: E402

SCENE_SIZE = 128


def demo_settings(args, folder):
    """The run's settings, the synthetic demo's sizes, shared with the torchvision side."""
    from mrcnn import synthetic

    config = synthetic.demo_config()
    return {
        "minutes": args.minutes, "seed": 0, "classes": config.NUM_CLASSES,
        "size": int(config.IMAGE_MAX_DIM), "batch": config.BATCH_SIZE,
        "anchor_scales": list(config.RPN_ANCHOR_SCALES),
        "anchor_ratios": list(config.RPN_ANCHOR_RATIOS), "pre_nms": config.PRE_NMS_LIMIT,
        "proposals_training": config.POST_NMS_ROIS_TRAINING,
        "proposals_inference": config.POST_NMS_ROIS_INFERENCE,
        "rpn_train_anchors": config.RPN_TRAIN_ANCHORS_PER_IMAGE,
        "train_rois": config.TRAIN_ROIS_PER_IMAGE, "positive_ratio": config.ROI_POSITIVE_RATIO,
        "fc_layers_size": config.FPN_CLASSIF_FC_LAYERS_SIZE,
        "min_confidence": config.DETECTION_MIN_CONFIDENCE,
        "max_detections": config.DETECTION_MAX_INSTANCES,
        "learning_rate": config.LEARNING_RATE, "momentum": config.LEARNING_MOMENTUM,
        "weight_decay": config.WEIGHT_DECAY,
        "torch_learning_rate": args.torch_learning_rate or config.LEARNING_RATE,
        "warmup_steps": 100, "roi_align_by_stride": not args.original_roi_align,
        "train_scenes": compare_torchvision.write_scenes(
            os.path.join(folder, "train.npz"), args.train_scenes, SCENE_SIZE, seed=1),
        "heldout_scenes": compare_torchvision.write_scenes(
            os.path.join(folder, "heldout.npz"), args.heldout_scenes, SCENE_SIZE, seed=2),
    }


def mrcnn_learn(settings_path, detections_path, threads):
    """The mrcnn side (a worker subprocess): train for the minutes, detect the held-out scenes."""
    import keras
    import numpy as np

    from mrcnn import synthetic, weights
    from mrcnn.model import MaskRCNN

    with open(settings_path, encoding="utf-8") as f:
        settings = json.load(f)
    keras.utils.set_random_seed(settings["seed"])
    overrides = {"ROI_ALIGN_BY_STRIDE": settings["roi_align_by_stride"]}
    if threads:
        overrides["CPU_THREADS"] = threads
    config = synthetic.demo_config(**overrides)
    # In the parent's folder, which it removes: the checkpoints of a run take gigabytes.
    logs = os.path.join(os.path.dirname(os.path.abspath(settings_path)), "mrcnn_logs")
    os.makedirs(logs, exist_ok=True)
    train_set = compare_torchvision.scenes_dataset(settings["train_scenes"], config.NUM_CLASSES)
    model = MaskRCNN("training", config, logs)
    budget = settings["minutes"] * 60

    class TimeBudget(keras.callbacks.Callback):
        """Stops training once the wall-clock budget is spent; records the losses."""

        def __init__(self):
            super().__init__()
            self.start = time.perf_counter()
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))
            if time.perf_counter() - self.start > budget:
                self.model.stop_training = True

    timer = TimeBudget()
    model.train(train_set, None, learning_rate=config.LEARNING_RATE, epochs=10 ** 6,
                layers="all", custom_callbacks=[timer], verbose=0)
    seconds = time.perf_counter() - timer.start
    trained = os.path.join(logs, "trained.h5")
    weights.save_weights(model.keras_model, trained)

    inference = MaskRCNN("inference", synthetic.demo_config(inference=True, **overrides),
                         logs)
    inference.load_weights(trained, by_name=True)
    heldout = side_by_side.load_scenes(settings["heldout_scenes"])
    side_by_side.save_detections(detections_path,
                                 [inference.detect([image])[0] for image, _, _ in heldout])
    # Keras reports the running mean of the epoch: take the step's own loss from it.
    steps = np.arange(1, len(timer.losses) + 1) % config.STEPS_PER_EPOCH
    steps[steps == 0] = config.STEPS_PER_EPOCH
    running = np.array(timer.losses)
    own = running * steps - np.concatenate([[0.0], running[:-1]]) * (steps - 1)
    side_by_side.answer(steps=len(own), seconds=seconds, first_loss=float(np.mean(own[:20])),
                        last_loss=float(np.mean(own[-20:])),
                        peak_rss_mib=side_by_side.peak_rss_mib())


def run_side(command):
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {result.returncode}.")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=cli.positive_number, default=10,
                        help="wall-clock minutes of training for each side (default 10)")
    parser.add_argument("--train-scenes", type=cli.positive_int, default=500)
    parser.add_argument("--heldout-scenes", type=cli.positive_int, default=50)
    parser.add_argument("--threads", type=cli.positive_int, default=os.cpu_count(),
                        help="threads of each side (default: the CPU count)")
    parser.add_argument("--torch-python",
                        help=f"Python with torch and torchvision (default: "
                             f"${compare_torchvision.TORCH_PYTHON_VARIABLE}, else this Python)")
    parser.add_argument("--torch-learning-rate", type=cli.positive_number,
                        help="torchvision's learning rate (default: mrcnn's, 0.01)")
    parser.add_argument("--original-roi-align", action="store_true",
                        help="train mrcnn with the original's ROIAlign sampling "
                             "(ROI_ALIGN_BY_STRIDE False) instead of the demo's")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", nargs=2, metavar=("SETTINGS", "DETECTIONS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return mrcnn_learn(*args.worker, args.threads)

    from mrcnn import evaluate

    torch_python = compare_torchvision.resolve_torch_python(args.torch_python)
    with tempfile.TemporaryDirectory(prefix="mrcnn_learning_") as folder:
        settings = demo_settings(args, folder)
        settings_path = os.path.join(folder, "settings.json")
        with open(settings_path, "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=1)
        torch_settings_path = os.path.join(folder, "torch_settings.json")
        with open(torch_settings_path, "w", encoding="utf-8") as f:
            json.dump(dict(settings, learning_rate=settings["torch_learning_rate"]), f, indent=1)

        heldout = compare_torchvision.scenes_dataset(settings["heldout_scenes"],
                                                     settings["classes"])
        commands = {
            "mrcnn": [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
                      "--worker", settings_path],
            "torchvision": [torch_python, os.path.join(BENCH_DIR, "torchvision_worker.py"),
                            "--threads", str(args.threads), "--learn", torch_settings_path,
                            "--detections"],
        }
        results = {}
        for side, command in commands.items():
            print(f"== {side}: training {args.minutes:g} minutes", file=sys.stderr, flush=True)
            detections_path = os.path.join(folder, f"{side}_detections.npz")
            run = run_side(command + [detections_path])
            detections = side_by_side.load_detections(detections_path)
            evaluation = evaluate.evaluate_detections(heldout, dict(enumerate(detections)))
            results[side] = dict(run, mAP50=evaluation.mAP50, mAP=evaluation.mAP,
                                 segm=evaluation.coco["segm"], bbox=evaluation.coco["bbox"],
                                 images_per_s=run["steps"] * settings["batch"] / run["seconds"])
            print(evaluation.summary(), file=sys.stderr, flush=True)

    report = {"machine": compare_torchvision.machine(), "threads": args.threads,
              "command": " ".join(sys.argv), "settings": settings, "results": results,
              "segm_ap50_ratio": results["mrcnn"]["segm"]["AP50"]
              / max(results["torchvision"]["segm"]["AP50"], 1e-9)}
    print(json.dumps(report, indent=2))
    print(f"\n{report['machine']['cpu']}, {report['machine']['cores']} cores, {args.threads} "
          f"threads a side; {args.minutes:g} minutes of training each, from random weights; "
          f"{args.heldout_scenes} held-out scenes")
    print("| side | steps | images/s | loss first 20 -> last 20 | mask mAP@0.5 | COCO segm AP50 "
          "| segm AP | bbox AP | peak RSS MiB |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for side, r in results.items():
        print(f"| {side} | {r['steps']} | {r['images_per_s']:.1f} | {r['first_loss']:.2f} -> "
              f"{r['last_loss']:.2f} | {r['mAP50']:.3f} | {r['segm']['AP50']:.3f} "
              f"| {r['segm']['AP']:.3f} | {r['bbox']['AP']:.3f} | {r['peak_rss_mib']:.0f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
