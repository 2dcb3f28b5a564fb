"""The torchvision side of the side-by-side benchmarks (run by them, not by hand).

Runs with a Python that has torch and torchvision, which are no dependency of mrcnn::

    python -m venv ~/venv-torch
    ~/venv-torch/bin/pip install torch torchvision

and is started by ``bench/compare_torchvision.py`` (``--torch-python ~/venv-torch/bin/python``
or ``MRCNN_TORCH_PYTHON``) as::

    python bench/torchvision_worker.py --case detect_r101_1024 --scene scene.npz --threads 2

It builds torchvision's Mask R-CNN with the case's sizes (see side_by_side.CASES), Glorot-uniform
random weights and zero biases (Keras' default initialisation, which mrcnn's side uses too),
and then serves the side_by_side protocol. With ``--learn`` it trains torchvision's model
from scratch for bench/learning_vs_torchvision.py instead. Only the standard library, numpy,
torch and torchvision are imported here.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import torch
    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
except ImportError as error:
    sys.exit(f"{error}: this worker runs in a Python with torch and torchvision (see "
             "bench/compare_torchvision.py for how to install them beside mrcnn), started by "
             "bench/compare_torchvision.py or bench/learning_vs_torchvision.py.")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side  # noqa: E402

# torchvision's module names -> the benchmark's stages.
STAGE_PREFIXES = (("backbone.body", "backbone"), ("backbone.fpn", "fpn"), ("rpn", "rpn"),
                  ("roi_heads.box", "box_head"), ("roi_heads.mask", "mask_head"))


def as_tensor(image):
    """uint8 [H, W, 3] -> float [3, H, W] in [0, 1], as torchvision's models take images."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255)


def target_of(masks, class_ids):
    """torchvision's training target of one image: boxes (x1, y1, x2, y2), labels, masks."""
    boxes = []
    for i in range(masks.shape[2]):
        ys, xs = np.nonzero(masks[:, :, i])
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.from_numpy(class_ids.astype(np.int64)),
            "masks": torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1))).to(
                torch.uint8)}


def build_model(spec):
    """torchvision's Mask R-CNN with the case's sizes and Glorot-uniform random weights."""
    trainable = 5 if spec.get("layers", "all") == "all" else 0
    backbone = resnet_fpn_backbone(backbone_name=spec["backbone"], weights=None,
                                   trainable_layers=trainable)
    model = MaskRCNN(
        backbone, num_classes=spec["classes"], min_size=spec["size"], max_size=spec["size"],
        rpn_post_nms_top_n_test=spec["proposals_inference"],
        rpn_post_nms_top_n_train=spec["proposals_training"],
        rpn_pre_nms_top_n_train=spec["proposals_training"],
        rpn_batch_size_per_image=spec["rpn_train_anchors"],
        box_batch_size_per_image=spec["train_rois"], box_positive_fraction=spec["positive_ratio"],
        box_detections_per_img=spec["max_detections"],
        box_score_thresh=spec.get("min_confidence", 0.0))
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def stage_of(module_name):
    for prefix, stage in STAGE_PREFIXES:
        if module_name.startswith(prefix):
            return stage
    raise ValueError(f"No stage for torchvision module {module_name!r}.")


class MacCounter:
    """Forward hooks that count the multiply-accumulates of one call, per stage.

    ``forward`` counts the call itself; ``training`` adds the backward pass's kernel and
    input gradients of each layer that needs them (side_by_side.training_macs).
    """

    def __init__(self, model):
        self.forward = dict.fromkeys(side_by_side.STAGES, 0)
        self.training = dict.fromkeys(side_by_side.STAGES, 0)
        self.handles = [module.register_forward_hook(self._hook(name))
                        for name, module in model.named_modules()
                        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]

    def _hook(self, name):
        stage = stage_of(name)

        def count(module, inputs, output):
            x = inputs[0]
            if isinstance(module, nn.Linear):
                macs = output.numel() * module.in_features
            elif isinstance(module, nn.ConvTranspose2d):
                kh, kw = module.kernel_size
                macs = x.numel() * module.out_channels * kh * kw // module.groups
            else:
                kh, kw = module.kernel_size
                macs = output.numel() * (module.in_channels // module.groups) * kh * kw
            self.forward[stage] += macs
            self.training[stage] += side_by_side.training_macs(
                macs, module.weight.requires_grad, x.requires_grad)
        return count

    def remove(self):
        for handle in self.handles:
            handle.remove()


def scale_class_logits(model, image, threshold, count):
    """Sharpen the class softmax so that about ``count`` ROIs pass ``threshold``."""
    captured = []
    layer = model.roi_heads.box_predictor.cls_score
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    with torch.inference_mode():
        model([image])
    handle.remove()
    scale = side_by_side.logit_scale_for(captured[0].numpy(), threshold, count)
    with torch.no_grad():
        layer.weight.mul_(scale)
    return scale


def build_learner(settings):
    """torchvision's Mask R-CNN as it trains from scratch (its own initialisation and
    trainable BatchNorm), with the sizes of ``settings`` (see bench/learning_vs_torchvision)."""
    from torchvision.models import resnet50
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    levels = len(settings["anchor_scales"])
    anchors = AnchorGenerator(sizes=tuple((scale,) for scale in settings["anchor_scales"]),
                              aspect_ratios=(tuple(settings["anchor_ratios"]),) * levels)
    fc = settings["fc_layers_size"]
    # What maskrcnn_resnet50_fpn(weights=None, weights_backbone=None) builds, with the
    # demo's heads: a ResNet50 with trainable BatchNorm, every stage trained.
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=nn.BatchNorm2d), 5)
    return MaskRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors,
        min_size=settings["size"], max_size=settings["size"],
        rpn_pre_nms_top_n_train=settings["pre_nms"], rpn_pre_nms_top_n_test=settings["pre_nms"],
        rpn_post_nms_top_n_train=settings["proposals_training"],
        rpn_post_nms_top_n_test=settings["proposals_inference"],
        rpn_batch_size_per_image=settings["rpn_train_anchors"],
        box_batch_size_per_image=settings["train_rois"],
        box_positive_fraction=settings["positive_ratio"],
        box_head=TwoMLPHead(256 * 7 * 7, fc),
        box_predictor=FastRCNNPredictor(fc, settings["classes"]),
        mask_predictor=MaskRCNNPredictor(256, 256, settings["classes"]),
        box_score_thresh=settings["min_confidence"],
        box_detections_per_img=settings["max_detections"])


def learn(args):
    """Train from scratch for ``--minutes`` of wall clock, then detect the held-out scenes.

    Answers one JSON line (steps, seconds, mean loss of the first and last 20 steps) and
    writes the detections with side_by_side.save_detections.
    """
    with open(args.learn, encoding="utf-8") as f:
        settings = json.load(f)
    torch.set_num_threads(args.threads)
    torch.manual_seed(settings["seed"])
    examples = [(as_tensor(image), target_of(masks, class_ids))
                for image, masks, class_ids in side_by_side.load_scenes(settings["train_scenes"])
                if len(class_ids)]
    model = build_learner(settings)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    rate = settings["learning_rate"]
    optimizer = torch.optim.SGD(parameters, lr=rate, momentum=settings["momentum"],
                                weight_decay=settings["weight_decay"])
    rng = np.random.default_rng(settings["seed"])
    order, losses = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < settings["minutes"] * 60:
        if len(order) < settings["batch"]:
            order.extend(rng.permutation(len(examples)))
        batch = [examples[order.pop()] for _ in range(settings["batch"])]
        for group in optimizer.param_groups:  # torchvision's reference recipe: linear warm-up
            group["lr"] = rate * min(1.0, (len(losses) + 1) / settings["warmup_steps"])
        loss = sum(model([image for image, _ in batch], [target for _, target in batch]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if not np.isfinite(losses[-1]):
            break
    seconds = time.perf_counter() - start
    model.eval()
    detections = []
    with torch.inference_mode():
        for image, _, _ in side_by_side.load_scenes(settings["heldout_scenes"]):
            output = model([as_tensor(image)])[0]
            x1, y1, x2, y2 = output["boxes"].round().int().numpy().T
            detections.append({"rois": np.stack([y1, x1, y2, x2], axis=1),
                               "class_ids": output["labels"].numpy(),
                               "scores": output["scores"].numpy(),
                               "masks": (output["masks"][:, 0] > 0.5).numpy().transpose(1, 2, 0)})
    side_by_side.save_detections(args.detections, detections)
    side_by_side.answer(steps=len(losses), seconds=seconds, first_loss=float(np.mean(losses[:20])),
                        last_loss=float(np.mean(losses[-20:])), peak_rss_mib=side_by_side.peak_rss_mib(),
                        versions={"torch": torch.__version__,
                                  "torchvision": __import__("torchvision").__version__})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(side_by_side.CASES))
    parser.add_argument("--scene", help="scene file written by the parent")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--learn", metavar="SETTINGS_JSON",
                        help="train from scratch with these settings (learning benchmark)")
    parser.add_argument("--detections", help="where --learn writes the held-out detections")
    args = parser.parse_args()
    if args.learn:
        if not args.detections:
            parser.error("--learn needs --detections")
        return learn(args)
    if not (args.case and args.scene):
        parser.error("give --case and --scene, or --learn and --detections")

    torch.set_num_threads(args.threads)
    spec = side_by_side.case_spec(args.case)
    image, masks, class_ids = side_by_side.load_scenes(args.scene)[0]
    start = time.perf_counter()
    model = build_model(spec)
    build_seconds = time.perf_counter() - start
    extra = {}

    if spec["mode"] == "detect":
        model.eval()
        if spec.get("handful"):
            extra["logit_scale"] = scale_class_logits(model, as_tensor(image),
                                                      spec["min_confidence"], spec["handful"])

        def step():
            with torch.inference_mode():
                start = time.perf_counter()
                output = model([as_tensor(image)])[0]
                output["masks"] = output["masks"][:, 0] > 0.5
                seconds = time.perf_counter() - start
            return {"seconds": seconds, "detections": int(len(output["boxes"]))}
    else:
        model.train()
        targets = [target_of(masks, class_ids)]
        images = [as_tensor(image)]
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(parameters, lr=spec["learning_rate"], momentum=0.9,
                                    weight_decay=1e-4)
        extra["trainable_weights"] = sum(p.numel() for p in parameters)

        def step():
            start = time.perf_counter()
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            return {"seconds": time.perf_counter() - start, "loss": float(loss.detach())}

    # The first call, counted but not timed as a steady one, also counts the MACs.
    counter = MacCounter(model)
    first = step()
    counter.remove()
    macs = counter.forward if spec["mode"] == "detect" else counter.training
    side_by_side.answer(ready=True, build_s=build_seconds, first=first, macs=macs,
                        versions={"torch": torch.__version__,
                                  "torchvision": __import__("torchvision").__version__},
                        **extra)
    side_by_side.serve(step)


if __name__ == "__main__":
    main()
