"""The Mask R-CNN model: ``MaskRCNN(mode, config, model_dir)``.

The public API of the original implementation is kept::

    import mrcnn.model as modellib
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir="logs")
    model.load_weights("mask_rcnn_coco.h5", by_name=True)
    results = model.detect([image])

The original module's other names now live with their stage: the data
path in :mod:`mrcnn.data` (``load_image_gt``, ``data_generator``), the
pre- and post-processing in :mod:`mrcnn.transform` (``mold_image``,
``compose_image_meta``, ...), the numpy targets in :mod:`mrcnn.targets`, the
anchors in :mod:`mrcnn.anchors`, the graph functions in :mod:`mrcnn.backbone`
(``resnet_graph``, ``identity_block``, ...), :mod:`mrcnn.heads` (``rpn_graph``,
``fpn_classifier_graph``, ...) and :mod:`mrcnn.layers`, and the losses in
:mod:`mrcnn.losses`; they are re-exported here so that the old
``modellib.<name>`` paths keep working. Training runs (folders, checkpoints,
settings) are :mod:`mrcnn.runs`; ``run_graph`` and ``ancestor`` look inside the
graph with :mod:`mrcnn.inspection`.
"""

import functools
import logging
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from keras import layers as KL

from mrcnn import (cpu, distribute, files, input_pipeline, inspection, runs, threads, transform,
                   utils, weights)
from mrcnn import export as export_module
from mrcnn.anchors import compute_backbone_shapes, pyramid_anchors
from mrcnn.backbone import conv_block, fpn_graph, identity_block, resnet_graph
from mrcnn.data import DataGenerator, check_augmentation, data_generator, load_image_gt
from mrcnn.heads import build_fpn_mask_graph, build_rpn_model, fpn_classifier_graph, rpn_graph
from mrcnn.layers import (ActiveRows, AnchorsLayer, BatchNorm, DetectionLayer,
                          DetectionTargetLayer, ProposalLayer, PyramidROIAlign,
                          apply_box_deltas_graph, batch_pack_graph, clip_boxes_graph,
                          denorm_boxes_graph, detection_targets_graph, log2_graph,
                          norm_boxes_graph, overlaps_graph, parse_image_meta_graph,
                          refine_detections_graph, trim_zeros_graph, use_cpu_convolutions)
from mrcnn.losses import (LossLayer, mrcnn_bbox_loss_graph, mrcnn_class_loss_graph,
                          mrcnn_mask_loss_graph, rpn_bbox_loss_graph, rpn_class_loss_graph,
                          smooth_l1_loss)
from mrcnn.targets import build_detection_targets, build_rpn_targets, generate_random_rois
from mrcnn.training import (LAYER_REGEX, CheckpointSaver, DecaySGD, EpochCounter, TrainingModel,
                            TrainingStage, continued_schedule, set_trainable,
                            trainable_layers)
from mrcnn.transform import compose_image_meta, mold_image, parse_image_meta, unmold_image
from mrcnn.utils import log

logger = logging.getLogger(__name__)

# The original model.py's public names: the model, and the backbone, heads,
# layers, losses and data path that now live in their own modules
# (``modellib.load_image_gt``, ``modellib.resnet_graph``, ...).
__all__ = [
    "MaskRCNN", "log",
    # data path (mrcnn.data, mrcnn.targets, mrcnn.transform, mrcnn.anchors)
    "DataGenerator", "data_generator", "load_image_gt", "build_rpn_targets",
    "build_detection_targets", "generate_random_rois", "mold_image", "unmold_image",
    "compose_image_meta", "parse_image_meta", "compute_backbone_shapes",
    # graph: backbone and heads (mrcnn.backbone, mrcnn.heads)
    "identity_block", "conv_block", "resnet_graph", "rpn_graph", "build_rpn_model",
    "fpn_classifier_graph", "build_fpn_mask_graph",
    # graph: layers and their TensorFlow helpers (mrcnn.layers)
    "BatchNorm", "ProposalLayer", "PyramidROIAlign", "DetectionTargetLayer", "DetectionLayer",
    "apply_box_deltas_graph", "clip_boxes_graph", "log2_graph", "overlaps_graph",
    "detection_targets_graph", "refine_detections_graph", "trim_zeros_graph",
    "batch_pack_graph", "norm_boxes_graph", "denorm_boxes_graph", "parse_image_meta_graph",
    # losses (mrcnn.losses)
    "smooth_l1_loss", "rpn_class_loss_graph", "rpn_bbox_loss_graph", "mrcnn_class_loss_graph",
    "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph",
]


class InferenceModel(cpu.LightGraphOptimization, weights.Keras2WeightsModel):
    """The inference graph's Keras model: Keras-2 weight files (``weights.Keras2WeightsModel``)
    and, where ``MaskRCNN`` sets it, Grappler's light passes (``cpu.LightGraphOptimization``)."""


class MaskRCNN:
    """Mask R-CNN: a Keras model and the code to train it and run it.

    Args of the constructor: mode, config, model_dir (below) and
    ``strategy``: None (one device, or "mirrored" when GPU_COUNT > 1),
    "mirrored", "multiworker" or a tf.distribute.Strategy (see
    mrcnn.distribute.make_strategy).

    Attributes:
        mode: "training" or "inference".
        config: the Config the model was built from.
        strategy: the tf.distribute strategy the model was built under;
            ``distributed`` tells whether it is another than TensorFlow's
            default one-device strategy.
        model_dir: folder under which each training run gets a log folder.
        keras_model: the Keras model (a TrainingModel in training mode).
        log_dir, checkpoint_path: where the current run writes.
        epoch: the number of epochs already trained (0 for a new model,
            the checkpoint's epoch after loading ``mask_rcnn_<name>_<epoch>.h5``).
        pretrained: whether training starts from a weights file (True after
            ``load_pretrained`` or ``load_weights``) or from random weights; after
            ``resume``, whether the run did. Saved in the run settings, so that a
            resumed run keeps its schedule.
        schedule: the stages ``train_schedule`` runs, or None; after ``resume``, the
            run's own (``runs.RunSettings.schedule``). Saved in the run settings.
    """

    def __init__(self, mode, config, model_dir, strategy=None):
        if mode not in ("training", "inference"):
            raise ValueError(f"mode must be 'training' or 'inference', not {mode!r}.")
        config.validate()
        self.mode = mode
        self.config = config
        self.model_dir = model_dir
        threads.configure_tensorflow(config.CPU_THREADS, config.CPU_INTER_OP_THREADS)
        self._anchor_cache = {}
        self._compiled_for = None  # the trained layers the compiled training step updates
        self._run_folder = None  # the run folder this model's train() created
        self.pretrained = False
        self.schedule = None
        self.set_log_dir()
        self.strategy = distribute.make_strategy(config, strategy)
        self.distributed = self.strategy is not tf.distribute.get_strategy()
        with self.strategy.scope():
            self.keras_model = self.build(mode=mode, config=config)
        if mode == "training":
            for layer in self._sparse_gradient_layers():
                layer.sparse_gradient = True
        if not tf.config.list_physical_devices("GPU"):
            self.keras_model.light_graph_optimization = True
            use_cpu_convolutions(
                self.keras_model,
                in_halves=config.IMAGES_PER_GPU == 1 and cpu.onednn_without_avx512(),
                matmul_kernel_gradient=(
                    mode == "training"
                    and config.IMAGE_MAX_DIM >= cpu.MATMUL_KERNEL_GRADIENT_MIN_IMAGE_SIDE),
                pointwise_matmul=mode == "training", flipped_input_gradient=mode == "training",
                winograd=mode == "inference" and cpu.onednn_without_avx512())

    def _sparse_gradient_layers(self):
        """The layers whose outputs' gradient is zero at all but a few pixels.

        The RPN (``heads.RegionProposalNetwork``) reaches the losses only through its own
        two, at the RPN_TRAIN_ANCHORS_PER_IMAGE anchors they sample (the proposals carry no
        gradient); the pyramid's 3x3 convolutions through the RPN and through ROIAlign, at
        the four pixels around each of its sample points: a few percent of P2's pixels in a
        training step.
        """
        model = self.keras_model
        return ([model.get_layer(name) for name in ("fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5")]
                + [model.get_layer("rpn_model")])

    # ------------------------------------------------------------------
    # Graph
    # ------------------------------------------------------------------

    def build(self, mode, config):
        """Build the Mask R-CNN graph for ``mode`` and return the Keras model.

        Training inputs: input_image [B, H, W, C] molded, input_image_meta
        [B, IMAGE_META_SIZE], input_rpn_match [B, anchors, 1],
        input_rpn_bbox [B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4],
        input_gt_class_ids [B, MAX_GT], input_gt_boxes [B, MAX_GT, 4] pixels,
        input_gt_masks [B, h, w, MAX_GT] bool (and input_roi [B, POST_NMS_ROIS_TRAINING, 4]
        pixels when USE_RPN_ROIS is False).

        Inference inputs: input_image, input_image_meta, input_anchors
        [B, anchors, 4] normalized. Outputs: mrcnn_detection
        [B, DETECTION_MAX_INSTANCES, (y1, x1, y2, x2, class_id, score)]
        normalized, mrcnn_class, mrcnn_bbox, mrcnn_mask, ROI, rpn_class, rpn_bbox.
        mrcnn_mask [B, n, MASK_SHAPE[0], MASK_SHAPE[1], NUM_CLASSES] covers the first n
        detection slots, n >= the detections of any image (layers.ActiveRows); in training,
        the first n ROIs, n >= the positive ROIs of any image.
        """
        input_image = keras.Input(shape=[None, None, config.IMAGE_SHAPE[2]], name="input_image")
        input_image_meta = keras.Input(shape=[config.IMAGE_META_SIZE], name="input_image_meta")
        training = mode == "training"

        if callable(config.BACKBONE):
            _, C2, C3, C4, C5 = config.BACKBONE(input_image, stage5=True, train_bn=config.TRAIN_BN)
        else:
            _, C2, C3, C4, C5 = resnet_graph(input_image, config.BACKBONE, stage5=True,
                                             train_bn=config.TRAIN_BN)
        rpn_feature_maps = fpn_graph(C2, C3, C4, C5, config.TOP_DOWN_PYRAMID_SIZE)
        mrcnn_feature_maps = rpn_feature_maps[:4]

        if training:
            anchors = AnchorsLayer(self.get_anchors(config.IMAGE_SHAPE), name="anchors")(input_image)
        else:
            input_anchors = keras.Input(shape=[None, 4], name="input_anchors")
            anchors = input_anchors

        rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS),
                              config.TOP_DOWN_PYRAMID_SIZE)
        level_outputs = [rpn(p) for p in rpn_feature_maps]
        rpn_class_logits, rpn_class, rpn_bbox = [
            KL.Concatenate(axis=1, name=name)(list(outputs))
            for name, outputs in zip(["rpn_class_logits", "rpn_class", "rpn_bbox"], zip(*level_outputs))]

        proposal_count = config.POST_NMS_ROIS_TRAINING if training else config.POST_NMS_ROIS_INFERENCE
        rpn_rois = ProposalLayer(proposal_count, config.RPN_NMS_THRESHOLD, config=config,
                                 name="ROI")([rpn_class, rpn_bbox, anchors])

        if training:
            return self._build_training_heads(config, input_image, input_image_meta, rpn_rois,
                                              rpn_class_logits, rpn_class, rpn_bbox,
                                              mrcnn_feature_maps)

        mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
            rpn_rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
            train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE,
            roi_align_by_stride=config.ROI_ALIGN_BY_STRIDE)
        detections = DetectionLayer(config=config, name="mrcnn_detection")(
            [rpn_rois, mrcnn_class, mrcnn_bbox, input_image_meta])
        detection_boxes = KL.Lambda(lambda x: x[..., :4], name="detection_boxes")(detections)
        # The mask head runs on the detections only, not on the empty slots after them.
        detected = KL.Lambda(lambda x: x[..., 4] > 0, name="detected")(detections)
        detection_boxes = ActiveRows(name="mask_rois")([detection_boxes, detected])
        mrcnn_mask = build_fpn_mask_graph(detection_boxes, mrcnn_feature_maps, input_image_meta,
                                          config.MASK_POOL_SIZE, config.NUM_CLASSES,
                                          train_bn=config.TRAIN_BN,
                                          roi_align_by_stride=config.ROI_ALIGN_BY_STRIDE)
        return InferenceModel([input_image, input_image_meta, input_anchors],
                              [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask,
                               rpn_rois, rpn_class, rpn_bbox],
                              name="mask_rcnn")

    def _build_training_heads(self, config, input_image, input_image_meta, rpn_rois,
                              rpn_class_logits, rpn_class, rpn_bbox, mrcnn_feature_maps):
        """The training half of the graph: targets, heads and the five losses."""
        input_rpn_match = keras.Input(shape=[None, 1], name="input_rpn_match", dtype="int32")
        input_rpn_bbox = keras.Input(shape=[None, 4], name="input_rpn_bbox", dtype="float32")
        input_gt_class_ids = keras.Input(shape=[None], name="input_gt_class_ids", dtype="int32")
        input_gt_boxes = keras.Input(shape=[None, 4], name="input_gt_boxes", dtype="float32")
        mask_shape = config.MINI_MASK_SHAPE if config.USE_MINI_MASK else config.IMAGE_SHAPE[:2]
        input_gt_masks = keras.Input(shape=[mask_shape[0], mask_shape[1], None],
                                     name="input_gt_masks", dtype="bool")
        inputs = [input_image, input_image_meta, input_rpn_match, input_rpn_bbox,
                  input_gt_class_ids, input_gt_boxes, input_gt_masks]

        gt_boxes = KL.Lambda(_normalize_boxes, output_shape=_boxes_shape,
                             name="gt_boxes_normalized")([input_gt_boxes, input_image])
        active_class_ids = KL.Lambda(lambda x: parse_image_meta_graph(x)["active_class_ids"],
                                     name="active_class_ids")(input_image_meta)
        if config.USE_RPN_ROIS:
            target_rois = rpn_rois
        else:
            input_rois = keras.Input(shape=[config.POST_NMS_ROIS_TRAINING, 4], name="input_roi",
                                     dtype="int32")
            inputs.append(input_rois)
            target_rois = KL.Lambda(_normalize_boxes, output_shape=_boxes_shape,
                                    name="input_roi_normalized")([input_rois, input_image])

        rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
            config=config, name="proposal_targets")(
            [target_rois, input_gt_class_ids, gt_boxes, input_gt_masks])

        mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
            rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
            train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE,
            roi_align_by_stride=config.ROI_ALIGN_BY_STRIDE)
        # Only positive ROIs train the mask head, and the targets list them
        # first: running the head on the others would be wasted work.
        max_positives = int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)
        positive = KL.Lambda(lambda x: x > 0, name="positive_rois")(target_class_ids)
        mask_rois = ActiveRows(limit=max_positives, name="mask_rois")([rois, positive])
        mrcnn_mask = build_fpn_mask_graph(mask_rois, mrcnn_feature_maps, input_image_meta,
                                          config.MASK_POOL_SIZE, config.NUM_CLASSES,
                                          train_bn=config.TRAIN_BN,
                                          roi_align_by_stride=config.ROI_ALIGN_BY_STRIDE)
        output_rois = KL.Identity(name="output_rois")(rois)

        rpn_bbox_loss = functools.partial(rpn_bbox_loss_graph, config)
        losses = [
            LossLayer(rpn_class_loss_graph, name="rpn_class_loss")([input_rpn_match, rpn_class_logits]),
            LossLayer(rpn_bbox_loss, name="rpn_bbox_loss")([input_rpn_bbox, input_rpn_match, rpn_bbox]),
            LossLayer(mrcnn_class_loss_graph, name="mrcnn_class_loss")(
                [target_class_ids, mrcnn_class_logits, active_class_ids]),
            LossLayer(mrcnn_bbox_loss_graph, name="mrcnn_bbox_loss")(
                [target_bbox, target_class_ids, mrcnn_bbox]),
            LossLayer(mrcnn_mask_loss_graph, name="mrcnn_mask_loss")(
                [target_mask, target_class_ids, mrcnn_mask]),
        ]
        outputs = [rpn_class_logits, rpn_class, rpn_bbox, mrcnn_class_logits, mrcnn_class,
                   mrcnn_bbox, mrcnn_mask, rpn_rois, output_rois] + losses
        return TrainingModel(inputs, outputs, config=config, name="mask_rcnn")

    # ------------------------------------------------------------------
    # Weights, log folders and checkpoints
    # ------------------------------------------------------------------

    def find_last(self):
        """Path of the last complete checkpoint of the newest log folder of this config's NAME.

        Raises FileNotFoundError, naming model_dir, when there is none.
        """
        return runs.find_last_checkpoint(self.model_dir, self.config.NAME.lower())

    def load_weights(self, filepath, by_name=False, exclude=None):
        """Load a Keras-2 by-name HDF5 weights file (the original's or ours), as the original did.

        Args:
            filepath: path of the .h5 file.
            by_name: match layers by name (True) or by order (False).
            exclude: layer names to skip, e.g. the heads whose shapes depend
                on NUM_CLASSES: ["mrcnn_class_logits", "mrcnn_bbox_fc",
                "mrcnn_bbox", "mrcnn_mask"] (``weights.CLASS_SPECIFIC_LAYERS``).

        Returns:
            The report of weights.load_weights (loaded, missing and unexpected layers).

        Like the original, loading one of its checkpoints
        (``.../<name><date>/mask_rcnn_<name>_<epoch>.h5``) also moves the log
        folder there and sets ``epoch``, so that training continues that run.
        To start a new run from a checkpoint use ``load_pretrained``; to
        continue one explicitly, ``resume``.

        A checkpoint of this project trained with other values of the settings
        that change what its weights compute (``runs.WEIGHT_MEANING_SETTINGS``,
        e.g. ROI_ALIGN_BY_STRIDE) loads, with a warning naming them.
        """
        try:
            report = weights.load_weights(self.keras_model, filepath, by_name=by_name,
                                          exclude=exclude)
        except weights.WeightShapeError as error:
            differences = self._architecture_differences(filepath)
            if not differences:
                raise
            raise weights.WeightShapeError(
                error.filepath, error.mismatches,
                f"The checkpoint was trained with {differences}.") from None
        settings = runs.load_run_settings(filepath)
        self._warn_of_meaning_changes(filepath, settings)
        self.set_log_dir(filepath)
        if self.epoch:
            self._take_run_record(settings)
        else:
            self.pretrained = True
        return report

    def save_weights(self, filepath):
        """Write the model's weights to ``filepath`` in the Keras-2 by-name layout.

        The original's ``model.keras_model.save_weights("mask_rcnn_shapes.h5")``
        does the same. The file loads with ``load_weights(filepath,
        by_name=True)`` into any configuration, here and in the original. It
        is written atomically (see ``weights.save_weights``).
        """
        weights.save_weights(self.keras_model, filepath)

    def load_pretrained(self, filepath, exclude=None):
        """Load weights to start a new training run from (transfer learning).

        Layers are matched by name. The class-specific heads
        (``weights.CLASS_SPECIFIC_LAYERS``) are left untrained when their
        shapes in the file differ from the model's (another class count) and
        loaded when they match. ``log_dir`` and ``epoch`` are not touched: the
        model trains in a new run folder from epoch 0.

        Args:
            filepath: any weights file of the Keras-2 layout: the COCO or
                ImageNet weights, the original's files, our checkpoints.
            exclude: more layer names to leave unchanged.

        Returns:
            The ``weights.LoadResult``; its ``skipped`` lists the heads left untrained.

        Raises:
            weights.WeightsError: other layers differ in shape. For a
                checkpoint of this project, the message names the saved
                settings that differ from this model's configuration.
        """
        try:
            report = weights.load_weights(self.keras_model, filepath, by_name=True,
                                          exclude=exclude,
                                          skip_mismatched=weights.CLASS_SPECIFIC_LAYERS)
        except weights.WeightShapeError as error:
            raise weights.WeightsError(f"Cannot start from {filepath}: {error.summary()}. "
                                       f"{self._architecture_hint(filepath)}") from None
        self.pretrained = True
        return report

    def _take_run_record(self, settings):
        """``pretrained`` and ``schedule`` from a checkpoint's ``runs.RunSettings`` (or
        None: pretrained True where they do not say)."""
        self.pretrained = True if settings is None or settings.pretrained is None else \
            settings.pretrained
        self.schedule = None if settings is None or settings.schedule is None else \
            continued_schedule(settings.schedule)

    def _warn_of_meaning_changes(self, filepath, settings):
        """Log a warning when ``filepath``'s run (its ``runs.RunSettings``, or None) trained
        its weights with other ``runs.WEIGHT_MEANING_SETTINGS`` than this model's
        configuration."""
        changes = settings.meaning_changes(self.config) if settings else {}
        if changes:
            logger.warning(
                "%s was trained with %s; this model has %s, so it will detect worse with "
                "these weights. Build its Config from the run's settings "
                "(runs.load_run_settings(path).to_config()) or set those values.", filepath,
                ", ".join(f"{key} {old!r}" for key, (old, _) in changes.items()),
                ", ".join(f"{key} {new!r}" for key, (_, new) in changes.items()))

    def _architecture_hint(self, filepath):
        """A sentence naming the saved architecture settings that differ from this model's."""
        differences = self._architecture_differences(filepath)
        if not differences:
            return ("The file holds another architecture (backbone, head sizes): start from "
                    "weights made for this model's, or build the model to match the file.")
        return (f"The checkpoint was trained with {differences}: build the model with those "
                "settings (runs.load_run_settings(path).architecture()).")

    def _architecture_differences(self, filepath):
        """The ``runs.ARCHITECTURE_SETTINGS`` saved beside the checkpoint ``filepath`` that
        differ from this model's configuration, as "NAME value (this model: value), ...";
        "" when none differ or no settings are saved."""
        settings = runs.load_run_settings(filepath)
        ours = self.config.to_dict()
        return ", ".join(f"{key} {value!r} (this model: {ours.get(key)!r})"
                         for key, value in (settings.architecture() if settings else {}).items()
                         if value is not None and not runs.same_setting(value, ours.get(key)))

    def resume(self, filepath=None):
        """Continue a training run from one of its checkpoints.

        Loads every weight (by name) and moves ``log_dir`` and ``epoch`` to
        the checkpoint's run, so that ``train(..., epochs=N)`` goes on from
        the next epoch in the same folder.

        Args:
            filepath: a checkpoint ``<run>/mask_rcnn_<name>_<epoch>.h5``
                (default: ``find_last()``).

        Returns:
            The checkpoint's path.

        Raises:
            FileNotFoundError: no checkpoint to resume.
            ValueError: ``filepath`` is not a checkpoint of a training run.
        """
        filepath = os.fspath(filepath) if filepath is not None else self.find_last()
        if runs.epoch_from_checkpoint(filepath) is None:
            raise ValueError(
                f"{filepath} is not a checkpoint of a training run "
                "(<run folder>/mask_rcnn_<name>_<epoch>.h5), so there is no run to resume: "
                "start a new run from it with load_pretrained().")
        weights.load_weights(self.keras_model, filepath, by_name=True)
        self.set_log_dir(filepath)
        self._take_run_record(runs.load_run_settings(filepath))
        return filepath

    def get_imagenet_weights(self):
        """Path of the ResNet50 ImageNet weights file (downloaded when missing and online)."""
        return weights.get_imagenet_weights()

    def set_log_dir(self, model_path=None):
        """Set log_dir, checkpoint_path and epoch.

        With a checkpoint path written by this project or the original
        (``<model_dir>/<name>YYYYmmddTHHMM/mask_rcnn_<name>_<epoch:04d>.h5``),
        continue in that folder from the next epoch; otherwise start a new
        folder named after NAME and the current time, at epoch 0.
        """
        self.epoch = runs.epoch_from_checkpoint(model_path) if model_path else None
        if self.epoch is None:
            self.epoch = 0
            self.log_dir = os.path.join(self.model_dir, runs.log_dir_name(self._run_name))
            self._run_folder = None   # a new run: train() makes it a folder of its own
            self.schedule = None
        else:
            self.log_dir = os.path.dirname(os.path.abspath(model_path))
        self.checkpoint_path = runs.checkpoint_path_template(self.log_dir, self._run_name)

    @property
    def _run_name(self):
        return (self.config.NAME or "mrcnn").lower()

    @property
    def run_folder(self):
        """The folder of the run this model continues or has started: ``log_dir`` once a
        checkpoint set the epoch or ``train()`` made the run's folder; None for a new run not
        started yet (``log_dir`` is then the name set_log_dir chose, which a run started in
        the same minute may hold)."""
        return self.log_dir if self.epoch > 0 or self.log_dir == self._run_folder else None

    def _start_run_folder(self):
        """Make ``log_dir`` this run's; return the folders made for it, innermost first.

        A new run (epoch 0) gets a folder of its own, ``runs.new_run_folder``: the one
        set_log_dir named after the minute may be another run's, started in the same
        minute. A run that goes on from a checkpoint, or from this model's stage before,
        writes in that folder (made again if it is gone).
        """
        if self.run_folder is not None:
            return files.missing_folders(self.log_dir)
        created = files.missing_folders(self.model_dir)
        self.log_dir = self._run_folder = runs.new_run_folder(self.model_dir, self._run_name)
        self.checkpoint_path = runs.checkpoint_path_template(self.log_dir, self._run_name)
        return [self.log_dir] + created

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def set_trainable(self, layer_regex, keras_model=None, indent=0, verbose=1):
        """Train only the layers whose names fully match ``layer_regex``."""
        return set_trainable(keras_model or self.keras_model, layer_regex, verbose=verbose,
                             indent=indent)

    def compile(self, learning_rate, momentum):
        """Compile with SGD (momentum, per-tensor gradient-norm clipping at GRADIENT_CLIP_NORM).

        The five losses are the model's own (TrainingModel.compute_loss); the optimizer
        (training.DecaySGD) adds the L2 weight decay's gradient and clips each tensor of
        the gradient, under a strategy the gradient summed over the replicas.
        """
        with self.strategy.scope():
            optimizer = DecaySGD(self.config.WEIGHT_DECAY, self.config.GRADIENT_CLIP_NORM,
                                 learning_rate=learning_rate, momentum=momentum)
            self.keras_model.compile(optimizer=optimizer, jit_compile=False)
            # Create the momentum slots now: created inside the first training step, they
            # make TensorFlow trace the whole step a second time.
            optimizer.build(self.keras_model.trainable_variables)

    def _restart_optimizer(self, learning_rate):
        """A fresh optimizer state at ``learning_rate`` without a new training step.

        What compile() does (momentum 0, iteration 0), keeping the traced training step:
        a train() stage that trains the same layers as the one before it does not pay for
        tracing and optimising the graph again.
        """
        optimizer = self.keras_model.optimizer
        for variable in optimizer.momentums:
            variable.assign(tf.zeros_like(variable))
        optimizer.iterations.assign(0)
        optimizer.learning_rate.assign(learning_rate)

    def train(self, train_dataset, val_dataset, learning_rate, epochs, layers, augmentation=None,
              custom_callbacks=None, no_augmentation_sources=None, verbose=1, seed=None):
        """Train the model.

        Args:
            train_dataset, val_dataset: prepared utils.Dataset objects;
                val_dataset may be None (no validation losses then).
            learning_rate: SGD learning rate (used as given, whatever the
                number of replicas).
            epochs: the epoch to train up to, counted from the first ever
                epoch: a second stage with epochs=40 after one with epochs=20
                runs 20 more.
            layers: "heads", "3+", "4+", "5+", "all", or a regular expression of layer names.
            augmentation: an albumentations transform, or a callable
                ``(image, masks) -> (image, masks)`` (see mrcnn.data).
            custom_callbacks: extra keras callbacks (run on every worker).
            no_augmentation_sources: dataset sources never augmented.
            verbose: Keras fit verbosity (1 shows the progress bar with all five losses,
                and each epoch's training rate beside the data pipeline's).
            seed: seed of the data stream (image order, anchor and ROI
                sampling); None draws one (the chief's, on every worker of
                a cluster).

        Each stage starts a fresh optimizer (momentum 0). A stage that trains the same
        layers as the stage before it keeps the traced training step: only a change of
        layers pays for tracing and optimising the graph again.

        Under a tf.distribute strategy (``self.distributed``) each step
        trains on IMAGES_PER_GPU images per replica, STEPS_PER_EPOCH global
        steps an epoch, and only the chief writes checkpoints and
        TensorBoard logs; see mrcnn.distribute.

        Returns:
            The keras History of this stage.
        """
        if self.mode != "training":
            raise RuntimeError("Create the model with mode='training' to train it.")
        check_augmentation(augmentation)
        if epochs <= self.epoch:
            print(f"Nothing to train: the model is at epoch {self.epoch}, and epochs={epochs} "
                  "counts from the first epoch ever (a second stage after 20 epochs of a first "
                  f"one gives epochs=40 to train 20 more). It continues the run in "
                  f"{self.log_dir}; to start a new run from a checkpoint's weights (fine-tuning "
                  "on other data), load it with load_pretrained(path), not load_weights.")
            return keras.callbacks.History()
        layer_regex = LAYER_REGEX.get(layers, layers)
        if not trainable_layers(self.keras_model, layer_regex):
            raise ValueError(
                f"layers={layers!r} names no layer with weights, so there would be nothing to "
                f"train: use one of {', '.join(map(repr, LAYER_REGEX))} or a regular "
                "expression of layer names, e.g. r'(mrcnn_.*)|(rpn_.*)'.")
        steps = self.config.STEPS_PER_EPOCH
        if self.distributed:
            seed = distribute.shared_seed(self.strategy, seed)
        workers = threads.data_workers(self.config.DATA_WORKERS)
        train_meter = input_pipeline.PipelineMeter(workers)
        train_data = self._training_batches(train_dataset, steps, seed, train_meter,
                                            augmentation, no_augmentation_sources)
        val_meter = val_data = None
        if val_dataset is not None:
            val_meter = input_pipeline.PipelineMeter(workers)
            val_data = self._training_batches(val_dataset, self.config.VALIDATION_STEPS, seed,
                                              val_meter)

        chief = distribute.is_chief(self.strategy)
        # A new run's folder, maybe model_dir; only the chief writes files.
        created = self._start_run_folder() if chief else []
        try:
            callbacks = [keras.callbacks.TerminateOnNaN()]
            if chief:
                callbacks += [
                    keras.callbacks.TensorBoard(log_dir=self.log_dir, histogram_freq=0,
                                                write_graph=False),
                    CheckpointSaver(self.checkpoint_path),
                ]
            callbacks.append(EpochCounter(self))
            callbacks += list(custom_callbacks or [])
            if verbose and chief:
                callbacks.append(input_pipeline.ThroughputReport(train_meter,
                                                                 self.config.BATCH_SIZE))

            print(f"\nStarting at epoch {self.epoch}. LR={learning_rate}\n")
            if self.distributed:
                print(distribute.describe(self.strategy, self.config))
            print(f"Checkpoint Path: {self.checkpoint_path}")
            trained = tuple(self.set_trainable(layer_regex, verbose=verbose))
            if trained == self._compiled_for:
                self._restart_optimizer(learning_rate)
            else:
                self.compile(learning_rate, self.config.LEARNING_MOMENTUM)
                self._compiled_for = trained
            if chief:
                runs.save_run_settings(self.log_dir, self.config, train_dataset.class_names[1:],
                                       self.pretrained, self.schedule)
            history = self.keras_model.fit(
                train_data,
                initial_epoch=self.epoch,
                epochs=epochs,
                steps_per_epoch=steps,
                callbacks=callbacks,
                validation_data=val_data,
                validation_steps=self.config.VALIDATION_STEPS if val_data is not None else None,
                shuffle=False,  # the generator's stream of images is shuffled already
                verbose=verbose,
            )
        except tf.errors.OpError as error:
            input_pipeline.reraise(error, train_meter, val_meter)
        finally:
            # A run that wrote no checkpoint (it failed or diverged in its
            # first epoch) leaves no folder behind, nor a model_dir made for it.
            if created and not runs.has_checkpoint(self.log_dir):
                shutil.rmtree(self.log_dir, ignore_errors=True)
                files.remove_empty_folders(created[1:])
        return history

    def train_schedule(self, train_dataset, val_dataset, stages, **train_kwargs):
        """Train through the stages of a schedule (``training.transfer_schedule``).

        Stages that end at or before the current epoch are skipped, so a
        resumed run goes on where it stopped.

        Args:
            train_dataset, val_dataset: as for ``train``.
            stages: [training.TrainingStage(layers, epochs, learning_rate)].
            **train_kwargs: more arguments of ``train`` (augmentation, ...).

        Returns:
            The keras History of each stage run.
        """
        self.schedule = [TrainingStage(*stage) for stage in stages]
        histories = []
        for stage in self.schedule:
            if stage.epochs > self.epoch:
                print(f"Training {stage.layers} layers up to epoch {stage.epochs}")
                histories.append(self.train(train_dataset, val_dataset, stage.learning_rate,
                                            stage.epochs, stage.layers, **train_kwargs))
        return histories

    def _training_batches(self, dataset, steps, seed, meter, augmentation=None,
                          no_augmentation_sources=None):
        """What ``fit`` reads: the DataGenerator's batches as a tf.data pipeline
        (mrcnn.input_pipeline), distributed over the replicas under a strategy.

        The stream starts after the batches of the epochs already trained, so a
        resumed run goes on with the images after those its earlier epochs used.
        ``meter`` (an input_pipeline.PipelineMeter) counts the pipeline's work.
        """
        # Without the RPN's ROIs the heads train on random ROIs fed as the input_roi input.
        random_rois = 0 if self.config.USE_RPN_ROIS else self.config.POST_NMS_ROIS_TRAINING
        options = dict(shuffle=True, augmentation=augmentation,
                       no_augmentation_sources=no_augmentation_sources, random_rois=random_rois,
                       steps=steps, seed=seed)
        first_step = self.epoch * steps
        if not self.distributed:
            return input_pipeline.batches(DataGenerator(dataset, self.config, **options),
                                          first_step, meter)
        generator = DataGenerator(dataset, self.config, batch_size=self.config.IMAGES_PER_GPU,
                                  **options)
        return distribute.distributed_batches(self.strategy, generator, meter, first_step)

    # ------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------

    def mold_inputs(self, images):
        """``transform.mold_inputs(images, self.config)``: molded images [N, h, w, 3]
        float32, image metas [N, IMAGE_META_SIZE] and windows [N, (y1, x1, y2, x2)]."""
        return transform.mold_inputs(images, self.config)

    def unmold_detections(self, detections, mrcnn_mask, original_image_shape, image_shape, window):
        """``transform.unmold_detections``: one image's boxes [N, (y1, x1, y2, x2)] int32
        pixels, class_ids [N], scores [N] and masks [H, W, N] bool in the original image."""
        return transform.unmold_detections(detections, mrcnn_mask, original_image_shape,
                                           image_shape, window)

    def detect(self, images, verbose=0):
        """Detect instances in a list of images.

        Args:
            images: list of BATCH_SIZE images [H, W, C] (sizes may differ;
                grayscale, RGB, RGBA, 8 or 16 bit).

        Returns:
            One dict per image: rois [N, (y1, x1, y2, x2)] int32 pixels,
            class_ids [N] int32, scores [N] float32, masks [H, W, N] bool.
        """
        self._check_batch(images)
        if verbose:
            log(f"Processing {len(images)} images")
            for image in images:
                log("image", image)
        molded_images, image_metas, _ = self.mold_inputs(images)
        return self.detect_molded(molded_images, image_metas, verbose)

    def detect_molded(self, molded_images, image_metas, verbose=0):
        """Detect instances in images already molded (e.g. by load_image_gt + mold_image).

        Args:
            molded_images: [BATCH_SIZE, H, W, 3] float32 as mold_image returns them,
                all of one shape.
            image_metas: [BATCH_SIZE, IMAGE_META_SIZE]; their window and
                original_image_shape place the results.

        Returns:
            As detect(), in the coordinates of the original images described by the metas.
        """
        self._check_batch(molded_images, "detect_molded")
        molded_images = np.asarray(molded_images, dtype=np.float32)
        image_shape = molded_images.shape[1:]
        metas = parse_image_meta(image_metas)
        detections, _, _, mrcnn_mask, _, _, _ = self.predict_molded(molded_images, image_metas,
                                                                    verbose)
        results = []
        for i in range(len(molded_images)):
            rois, class_ids, scores, masks = self.unmold_detections(
                detections[i], mrcnn_mask[i], metas["original_image_shape"][i], image_shape,
                metas["window"][i])
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores, "masks": masks})
        return results

    def predict_molded(self, molded_images, image_metas, verbose=0):
        """The inference network's outputs for molded images, by the graph detect() runs.

        The inputs are passed as float32 with the batch's anchors, whatever their dtype (a
        float64 input, such as mold_inputs' image metas, would trace a second graph).

        Args:
            molded_images: [BATCH_SIZE, H, W, 3], all of one shape; image_metas:
                [BATCH_SIZE, IMAGE_META_SIZE].

        Returns:
            [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois, rpn_class, rpn_bbox],
            numpy arrays: detections [B, DETECTION_MAX_INSTANCES, (y1, x1, y2, x2, class_id,
            score)] in normalized molded coordinates, mrcnn_mask [B, DETECTION_MAX_INSTANCES,
            MASK_SHAPE..., NUM_CLASSES], the others per proposal or anchor as the model names.
        """
        molded_images = np.asarray(molded_images, dtype=np.float32)
        image_metas = np.asarray(image_metas, dtype=np.float32)
        anchors = self._batch_anchors(molded_images.shape[1:])
        if verbose:
            log("molded_images", molded_images)
            log("image_metas", image_metas)
            log("anchors", anchors)
        return self.keras_model.predict_on_batch([molded_images, image_metas, anchors])

    def _check_batch(self, images, caller="detect"):
        if self.mode != "inference":
            raise RuntimeError(f"Create the model with mode='inference' to call {caller}().")
        if len(images) != self.config.BATCH_SIZE:
            raise ValueError(f"{caller}() got {len(images)} images but the model was built for "
                             f"BATCH_SIZE={self.config.BATCH_SIZE}: pass exactly that many, "
                             "or set GPU_COUNT and IMAGES_PER_GPU in the inference config.")

    def get_anchors(self, image_shape):
        """Anchors of every pyramid level for a molded image shape.

        Also sets ``self.anchors`` to the same anchors in pixels, as the
        original did (the inspection notebooks pass them to
        ``build_rpn_targets``).

        Returns:
            [num_anchors, (y1, x1, y2, x2)] float32 normalized anchors, cached per shape.
        """
        key = tuple(int(d) for d in image_shape[:2])
        self.anchors = pyramid_anchors(self.config, image_shape)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = utils.norm_boxes(self.anchors, key).astype(np.float32)
        return self._anchor_cache[key]

    def _batch_anchors(self, image_shape):
        """get_anchors() repeated for every image of a batch: [BATCH_SIZE, anchors, 4]."""
        anchors = self.get_anchors(image_shape)
        return np.broadcast_to(anchors, (self.config.BATCH_SIZE,) + anchors.shape)

    def export(self, path, class_names=None, format="saved_model"):
        """Write this model for serving: a TensorFlow SavedModel folder or a TFLite file.

        The SavedModel's ``serving_default`` signature takes one uint8 RGB
        image of any size (``image``) and returns what detect() returns for
        it, plus ``class_names``; it runs without mrcnn. See mrcnn.export.export
        for the arguments and the README for serving it.

        Returns:
            ``path``.
        """
        return export_module.export(self, path, class_names=class_names, format=format)

    # ------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------

    def find_trainable_layer(self, layer):
        """The layer that owns the weights of ``layer`` (the inner layer of a TimeDistributed)."""
        return layer.layer if isinstance(layer, KL.Wrapper) else layer

    def get_trainable_layers(self):
        """Layers with weights, wrappers resolved to their inner layer."""
        return [self.find_trainable_layer(layer) for layer in self.keras_model.layers
                if layer.weights]

    def run_graph(self, images, outputs, image_metas=None):
        """Run the inference graph on a batch and return intermediate tensors by name.

        Args:
            images: BATCH_SIZE images, as for ``detect``; or, with
                ``image_metas``, images already molded (as the original took
                them then): [BATCH_SIZE, H, W, 3], used as given.
            outputs: (name, target) pairs (or a dict), each target one of:
                a symbolic tensor of this model, e.g.
                ``model.keras_model.get_layer("ROI").output``; a handle from
                ``model.ancestor(...)``; a layer name ("rpn_class") or an
                intermediate tensor's name ("ROI/refined_anchors:0").
            image_metas: [BATCH_SIZE, IMAGE_META_SIZE] metas of molded images.

        Returns:
            A dict name -> numpy array, in the order of ``outputs``; each is
            also printed with ``log``.
        """
        self._check_batch(images, "run_graph")
        if image_metas is None:
            images, image_metas, _ = self.mold_inputs(images)
        molded_images = np.asarray(images, dtype=np.float32)
        inputs = [molded_images, np.asarray(image_metas, dtype=np.float32),
                  self._batch_anchors(molded_images.shape[1:])]
        result = inspection.run(self.keras_model, inputs, outputs)
        for name, value in result.items():
            log(name, value)
        return result

    def ancestor(self, tensor, name, checked=None):
        """The intermediate tensor that the original's TF1 graph-node ``name`` denotes.

        A Keras 3 model has no TF1 graph to walk; the tensors the original's
        inspection notebook looked up this way are computed by the layers
        themselves (``ProposalLayer.stages``). This returns a handle on one of
        them for ``run_graph``::

            pillar = model.keras_model.get_layer("ROI").output
            rpn = model.run_graph([image], [
                ("pre_nms_anchors", model.ancestor(pillar, "ROI/pre_nms_anchors:0")),
                ("post_nms_anchor_ix", model.ancestor(pillar, "ROI/rpn_non_max_suppression:0")),
            ])

        Known names: "ROI/pre_nms_anchors:0", "ROI/refined_anchors:0",
        "ROI/refined_anchors_clipped:0" ([batch, K, 4] normalized), and
        "ROI/rpn_non_max_suppression:0" (and its "/NonMaxSuppressionV2:0",
        "V3" variants): the indices NMS keeps for the first image.

        Args:
            tensor: the symbolic tensor to search from (upstream of it).
            name: the TF1 node name.
            checked: ignored (the original's recursion state).

        Returns:
            A ``inspection.LayerStage``, or None when that layer is not
            upstream of ``tensor``.

        Raises:
            ValueError: for any other name, saying what to call instead.
        """
        return inspection.find_stage(self.keras_model, tensor, name)


def _normalize_boxes(inputs):
    """[boxes [B, N, 4] pixels, image [B, H, W, C]] -> boxes normalized to that image."""
    boxes, image = inputs
    return norm_boxes_graph(boxes, tf.shape(image)[1:3])


def _boxes_shape(input_shapes):
    """_normalize_boxes's output shape: that of its boxes. (Keras 3.12 cannot infer it.)"""
    return input_shapes[0]
