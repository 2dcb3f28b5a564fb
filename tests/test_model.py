"""MaskRCNN: building, detect() outputs, training, checkpoints and resuming."""

import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from mrcnn import model as modellib
from mrcnn import layers, utils
from mrcnn.training import TrainingStage

from conftest import TinyConfig, count_sparse_gradients

ORIGINAL_LAYER_NAMES = [
    "conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2a", "res2a_branch1", "bn2a_branch1",
    "res3d_branch2c", "res4f_branch2c", "res5c_branch2c", "bn5c_branch2c",
    "fpn_c5p5", "fpn_c4p4", "fpn_c3p3", "fpn_c2p2", "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6",
    "rpn_model", "rpn_class", "rpn_bbox", "ROI", "roi_align_classifier",
    "mrcnn_class_conv1", "mrcnn_class_bn1", "mrcnn_class_conv2", "mrcnn_class_bn2",
    "mrcnn_class_logits", "mrcnn_class", "mrcnn_bbox_fc", "mrcnn_bbox", "roi_align_mask",
    "mrcnn_mask_conv1", "mrcnn_mask_bn4", "mrcnn_mask_deconv", "mrcnn_mask",
]


def layer_names(keras_model):
    return {layer.name for layer in keras_model.layers}


def test_inference_model_has_the_original_layer_names(inference_model):
    names = layer_names(inference_model.keras_model)
    assert set(ORIGINAL_LAYER_NAMES + ["mrcnn_detection"]) <= names
    rpn = inference_model.keras_model.get_layer("rpn_model")
    assert [layer.name for layer in rpn.layers if layer.weights] == [
        "rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"]
    assert [i.name for i in inference_model.keras_model.inputs] == [
        "input_image", "input_image_meta", "input_anchors"]


@pytest.mark.parametrize("shape, dtype", [
    ((100, 150, 3), np.uint8),     # landscape RGB
    ((160, 90, 3), np.uint8),      # portrait, larger than IMAGE_MAX_DIM
    ((128, 128), np.uint8),        # grayscale
    ((90, 60, 4), np.uint8),       # RGBA
    ((70, 200, 3), np.uint16),     # 16 bit
])
def test_detect_returns_the_promised_keys_shapes_and_dtypes(inference_model, shape, dtype):
    rng = np.random.default_rng(0)
    image = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    (result,) = inference_model.detect([image])
    assert set(result) == {"rois", "class_ids", "scores", "masks"}
    n = len(result["class_ids"])
    assert n <= inference_model.config.DETECTION_MAX_INSTANCES
    assert result["rois"].shape == (n, 4) and result["rois"].dtype == np.int32
    assert result["class_ids"].dtype == np.int32 and result["scores"].dtype == np.float32
    assert result["scores"].shape == (n,)
    assert result["masks"].shape == shape[:2] + (n,) and result["masks"].dtype == bool
    if n:
        assert np.all(np.diff(result["scores"]) <= 1e-6), "scores are sorted, best first"
        assert np.all(result["class_ids"] >= 1)
        rois = result["rois"]
        assert np.all(rois[:, :2] >= 0) and np.all(rois[:, 2] <= shape[0]) and np.all(rois[:, 3] <= shape[1])
        assert np.all(rois[:, 2] > rois[:, 0]) and np.all(rois[:, 3] > rois[:, 1])


def test_detect_rejects_a_batch_of_the_wrong_size(inference_model):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="BATCH_SIZE=1"):
        inference_model.detect([image, image])


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 10, 3), (10, 0)])
def test_detect_names_an_empty_image(inference_model, shape):
    with pytest.raises(ValueError, match=r"The image is empty \(shape .*\): it needs at least"):
        inference_model.detect([np.zeros(shape, np.uint8)])


def test_unmold_detections_maps_boxes_back_to_the_original_image(inference_model):
    # A 64x128 image molded to 128x128: scale 1, window rows 32..96.
    detections = np.zeros((5, 6), np.float32)
    window = np.array([32, 0, 96, 128])
    box = np.array([[40, 10, 80, 60]])  # molded-image pixels
    from mrcnn import utils

    detections[0, :4] = utils.norm_boxes(box, (128, 128))
    detections[0, 4:] = [1, 0.9]
    masks = np.zeros((5, 28, 28, 2), np.float32)
    masks[0, :, :, 1] = 1.0
    boxes, class_ids, scores, full_masks = inference_model.unmold_detections(
        detections, masks, (64, 128, 3), (128, 128, 3), window)
    np.testing.assert_array_equal(boxes, [[8, 10, 48, 60]])
    np.testing.assert_array_equal(class_ids, [1])
    assert full_masks.shape == (64, 128, 1)
    assert full_masks[8:48, 10:60, 0].all() and full_masks[..., 0].sum() == 40 * 50


def test_resnet101_models_build_with_every_original_stage4_block(tmp_path):
    class Resnet101Config(TinyConfig):
        BACKBONE = "resnet101"
        NUM_CLASSES = 81

    for mode in ("training", "inference"):
        model = modellib.MaskRCNN(mode, Resnet101Config(), str(tmp_path))
        names = layer_names(model.keras_model)
        assert {f"res4{chr(98 + i)}_branch2c" for i in range(22)} <= names
        assert "res4x_branch2c" not in names
        assert model.keras_model.get_layer("mrcnn_class_logits").weights[0].shape == (128, 81)


def test_callable_backbone_is_used(tmp_path):
    from keras import layers as KL

    def tiny_backbone(image, stage5=True, train_bn=None):
        features = []
        x = image
        for i in range(5):
            x = KL.Conv2D(8, 3, strides=2, padding="same", name=f"tiny_c{i + 1}")(x)
            features.append(x)
        features[0] = KL.MaxPooling2D(1, name="tiny_pool")(features[0])
        # C1..C5 at strides 2, 4, 8, 16, 32.
        return features

    class CallableConfig(TinyConfig):
        BACKBONE = staticmethod(tiny_backbone)
        COMPUTE_BACKBONE_SHAPE = staticmethod(
            lambda shape: [[shape[0] // s, shape[1] // s] for s in (4, 8, 16, 32, 64)])

    model = modellib.MaskRCNN("inference", CallableConfig(), str(tmp_path))
    assert "tiny_c5" in layer_names(model.keras_model)
    assert "conv1" not in layer_names(model.keras_model)
    (result,) = model.detect([np.zeros((128, 128, 3), np.uint8)])
    assert result["masks"].shape[:2] == (128, 128)


def test_set_log_dir_resumes_from_a_checkpoint_name(tiny_config, tmp_path):
    model = modellib.MaskRCNN.__new__(modellib.MaskRCNN)
    model.config, model.model_dir = tiny_config, str(tmp_path)
    model.set_log_dir(str(tmp_path / "tiny20261124T0930" / "mask_rcnn_tiny_0007.h5"))
    assert model.epoch == 7
    assert model.log_dir == str(tmp_path / "tiny20261124T0930")
    assert model.checkpoint_path.format(epoch=8) == str(tmp_path / "tiny20261124T0930" / "mask_rcnn_tiny_0008.h5")
    model.set_log_dir()
    assert model.epoch == 0 and os.path.basename(model.log_dir).startswith("tiny2")


class TrainConfig(TinyConfig):
    IMAGES_PER_GPU = 2
    LEARNING_RATE = 0.01


@pytest.fixture(scope="module")
def trained(synthetic_dataset, tmp_path_factory):
    """Two epochs of ten steps on the synthetic dataset: (model, history)."""
    model_dir = str(tmp_path_factory.mktemp("train_logs"))
    model = modellib.MaskRCNN("training", TrainConfig(), model_dir)
    history = model.train(synthetic_dataset, synthetic_dataset, learning_rate=0.01, epochs=2,
                          layers="all", verbose=0)
    return model, history


def test_training_reports_all_five_losses_and_the_loss_falls(trained):
    _, history = trained
    losses = ["rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"]
    for name in ["loss"] + losses:
        assert len(history.history[name]) == 2
        assert len(history.history["val_" + name]) == 2
    first, last = history.history["loss"]
    assert last < 0.8 * first, history.history
    # The total is the weighted sum of the five plus the (small) weight decay.
    five = sum(history.history[name][-1] for name in losses)
    assert five <= last < five + 0.5


def test_cpu_models_switch_their_convolutions_as_the_machine_needs(trained, inference_model,
                                                                  tmp_path):
    """Matmul kernel gradients for training from 512-pixel images on; halves and Winograd
    (inference) per mrcnn.cpu."""
    from mrcnn import cpu

    class Large(TrainConfig):
        IMAGE_MIN_DIM = IMAGE_MAX_DIM = cpu.MATMUL_KERNEL_GRADIENT_MIN_IMAGE_SIDE

    large = modellib.MaskRCNN("training", Large(), str(tmp_path)).keras_model.get_layer("fpn_p2")
    small = trained[0].keras_model.get_layer("fpn_p2")
    inference = inference_model.keras_model.get_layer("fpn_p2")
    assert large.matmul_kernel_gradient
    assert not small.matmul_kernel_gradient and not inference.matmul_kernel_gradient
    assert not large.in_halves and not small.in_halves  # two images a batch
    assert inference.in_halves == cpu.onednn_without_avx512()
    # Inference runs large 3x3 convolutions by Winograd's algorithm where oneDNN lacks AVX-512.
    for model, training in ((trained[0], True), (inference_model, False)):
        keras_model = model.keras_model
        assert keras_model.get_layer("fpn_p2").winograd == (
            not training and cpu.onednn_without_avx512())
        assert keras_model.get_layer("mrcnn_mask_conv1").layer.winograd == (
            not training and cpu.onednn_without_avx512())
    # Training computes the heads' input gradients and 1x1 convolutions the CPU's way.
    for model, training in ((trained[0], True), (inference_model, False)):
        keras_model = model.keras_model
        assert keras_model.get_layer("mrcnn_mask_conv2").layer.flipped_input_gradient == training
        assert keras_model.get_layer("res3b_branch2c").pointwise_matmul == training


def test_cpu_models_run_their_step_functions_with_grapplers_light_passes(trained,
                                                                         inference_model):
    """Without a GPU (as here), both models' step functions take mrcnn.cpu's light passes."""
    import tensorflow as tf

    assert not tf.config.list_physical_devices("GPU")
    training_model, inference = trained[0].keras_model, inference_model.keras_model
    assert training_model.light_graph_optimization and inference.light_graph_optimization
    assert hasattr(training_model.make_train_function(), "call_options")
    assert hasattr(inference.make_predict_function(), "call_options")


def test_rpn_and_pyramid_convolutions_back_propagate_sparse_gradients(synthetic_dataset, tmp_path,
                                                                     monkeypatch):
    """Only the RPN's losses reach the RPN, at the anchors they sample; the pyramid's 3x3
    convolutions also get ROIAlign's gradient. Their gradients take the sparse path and
    every gradient of the RPN and the FPN is the dense path's."""
    import tensorflow as tf
    from mrcnn.data import DataGenerator

    config = TinyConfig()
    keras.utils.set_random_seed(4)
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    inference = modellib.MaskRCNN("inference", config, str(tmp_path))
    names = ["fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "rpn_model"]
    sparse_layers = [model.keras_model.get_layer(name) for name in names]
    assert all(layer.sparse_gradient for layer in sparse_layers)
    assert not any(inference.keras_model.get_layer(name).sparse_gradient for name in names)
    (inputs,) = DataGenerator(synthetic_dataset, config, shuffle=False, seed=0)[0]
    weights = [w for layer in model.keras_model.layers if layer.name.startswith(("fpn_", "rpn_"))
               for w in layer.trainable_weights]
    calls = count_sparse_gradients(monkeypatch)
    gradients = []
    for sparse in (False, True):
        for layer in sparse_layers:
            layer.sparse_gradient = sparse
        with tf.GradientTape() as tape:
            outputs = model.keras_model(list(inputs), training=True)
            loss = tf.add_n([tf.reduce_sum(outputs[model.keras_model.output_names.index(name)])
                             for name in ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
                                          "mrcnn_bbox_loss", "mrcnn_mask_loss")])
        gradients.append(tape.gradient(loss, weights))
    # Every RPN level (P2 to P6) back-propagated from at most one pixel per sampled anchor.
    # In a 128-pixel image ROIAlign's sample points often cover more than an eighth of a
    # pyramid level, whose gradient then takes the dense path (at 1024 pixels they cover
    # about 3 % of P2).
    assert len(calls["rpn"]) == 5, calls
    assert 0 < sum(calls["rpn"]) <= config.RPN_TRAIN_ANCHORS_PER_IMAGE, calls
    assert len(weights) == 2 * 8 + 6  # fpn_c5p5-c2p2 and fpn_p2-p5; rpn_model's three convolutions
    assert sum(float(tf.reduce_max(tf.abs(gradient))) > 0 for gradient in gradients[0]) >= 18
    for expected, actual in zip(*gradients):
        # float32 sums in another order: within 5e-4 of the gradient's largest element. The
        # dense path's own sums vary between runs (threads): differences from 1e-6 to 4e-5 of
        # it here, 1.2e-4 in one CI run (a bias summed over every pixel); a pixel left out
        # or counted twice moves an element by a visible part of it.
        largest = float(tf.reduce_max(tf.abs(expected)))
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=0, atol=5e-4 * largest)


def test_the_heads_losses_send_no_gradient_back_to_the_rpn(synthetic_dataset, tmp_path):
    """The detection targets are constants of a step: in a traced step, where every branch of
    the graph is present, the heads' three losses reach the heads but not the RPN's weights
    (the original's box targets passed a gradient back through the proposals)."""
    import tensorflow as tf
    from mrcnn.data import DataGenerator

    config = TinyConfig()
    keras_model = modellib.MaskRCNN("training", config, str(tmp_path)).keras_model
    (inputs,) = DataGenerator(synthetic_dataset, config, shuffle=False, seed=0)[0]
    rpn = keras_model.get_layer("rpn_model").trainable_weights
    box_head = keras_model.get_layer("mrcnn_bbox_fc").trainable_weights
    reached = {}

    def gradients(inputs):
        for losses in (("mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"),
                       ("rpn_class_loss", "rpn_bbox_loss")):
            with tf.GradientTape() as tape:
                outputs = keras_model(list(inputs), training=True)
                loss = tf.add_n([tf.reduce_sum(outputs[keras_model.output_names.index(name)])
                                 for name in losses])
            grads = tape.gradient(loss, rpn + box_head)
            reached[losses[0][:4]] = [g is not None for g in grads]
        return tf.constant(0)

    tf.function(gradients).get_concrete_function(
        [tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)) for x in inputs])
    assert reached["mrcn"] == [False] * len(rpn) + [True] * len(box_head)
    assert reached["rpn_"] == [True] * len(rpn) + [False] * len(box_head)


def test_a_heads_step_traces_no_backward_pass_of_the_frozen_backbone(synthetic_dataset, tmp_path):
    """The tape records only what the trainable weights reach."""
    import tensorflow as tf
    from mrcnn.data import DataGenerator
    from mrcnn.training import LAYER_REGEX

    config = TinyConfig()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    (inputs,) = DataGenerator(synthetic_dataset, config, shuffle=False, seed=0)[0]
    specs = (tuple(tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)) for x in inputs),)

    def layers_with_gradients(layers):
        model.set_trainable(LAYER_REGEX[layers], verbose=0)
        model.compile(0.01, 0.9)
        model.keras_model.optimizer.build(model.keras_model.trainable_variables)
        graph = tf.function(model.keras_model.train_step).get_concrete_function(specs).graph
        # Gradient operations are named gradient_tape/<model>/<layer>_<call>/...
        return {op.name.split("/")[2].rsplit("_", 1)[0] for op in graph.get_operations()
                if op.name.startswith("gradient_tape/") and op.name.count("/") >= 3}

    heads, every_layer = layers_with_gradients("heads"), layers_with_gradients("all")
    assert {"fpn_p2", "fpn_c2p2", "mrcnn_mask_conv1", "mrcnn_class_conv1"} <= heads
    assert {"res2a_branch2a", "res4a_branch2b", "conv1"} <= every_layer
    assert not any(name.startswith(("res", "conv1")) for name in heads), sorted(heads)


def test_training_writes_one_checkpoint_per_epoch_and_resumes(trained, tmp_path):
    model, _ = trained
    assert model.epoch == 2
    files = sorted(os.listdir(model.log_dir))
    assert "mask_rcnn_tiny_0001.h5" in files and "mask_rcnn_tiny_0002.h5" in files
    assert not [f for f in files if f.endswith(".tmp")]

    resumed = modellib.MaskRCNN("training", TrainConfig(), model.model_dir)
    last = resumed.find_last()
    assert last == os.path.join(model.log_dir, "mask_rcnn_tiny_0002.h5")
    resumed.load_weights(last, by_name=True)
    assert resumed.epoch == 2 and resumed.log_dir == model.log_dir
    for a, b in zip(resumed.keras_model.weights, model.keras_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_trained_weights_run_in_an_inference_model(trained, synthetic_dataset, tmp_path):
    model, _ = trained

    class InferenceConfig(TrainConfig):
        IMAGES_PER_GPU = 1

    inference = modellib.MaskRCNN("inference", InferenceConfig(), str(tmp_path))
    inference.load_weights(model.find_last(), by_name=True)
    np.testing.assert_array_equal(inference.keras_model.get_layer("mrcnn_mask").weights[0].numpy(),
                                  model.keras_model.get_layer("mrcnn_mask").weights[0].numpy())
    (result,) = inference.detect([synthetic_dataset.load_image(0)])
    assert result["masks"].shape[:2] == (128, 128)


def test_train_refuses_an_inference_model(inference_model, synthetic_dataset):
    with pytest.raises(RuntimeError, match="mode='training'"):
        inference_model.train(synthetic_dataset, None, 0.01, 1, "heads")


def test_heads_train_on_input_rois_without_the_rpn(synthetic_dataset, tmp_path):
    from mrcnn.data import DataGenerator

    class InputRoisConfig(TinyConfig):
        USE_RPN_ROIS = False

    config = InputRoisConfig()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    assert model.keras_model.inputs[-1].name == "input_roi"
    (inputs,) = DataGenerator(synthetic_dataset, config, random_rois=config.POST_NMS_ROIS_TRAINING,
                              seed=0)[0]
    outputs = model.keras_model(list(inputs), training=False)
    output_rois = outputs[model.keras_model.output_names.index("output_rois")].numpy()[0]
    # The sampled training ROIs are (normalized) input ROIs, not RPN proposals.
    input_rois = utils.norm_boxes(inputs[-1][0], (128, 128))
    kept = output_rois[output_rois.any(axis=1)]
    assert len(kept) > 0
    distances = np.abs(kept[:, None, :] - input_rois[None]).sum(-1).min(axis=1)
    assert distances.max() < 1e-5
    assert all(np.isfinite(float(np.ravel(o)[0])) for o in outputs[-5:])


def test_trainable_layers_resolve_time_distributed_wrappers(inference_model):
    from keras import layers as KL

    wrapper = inference_model.keras_model.get_layer("mrcnn_class_conv1")
    inner = inference_model.find_trainable_layer(wrapper)
    assert isinstance(inner, KL.Conv2D) and inner.kernel.shape[:2] == (7, 7)
    layers = inference_model.get_trainable_layers()
    assert inner in layers and inference_model.keras_model.get_layer("conv1") in layers
    assert all(layer.weights for layer in layers)


def test_detect_molds_and_unmolds_as_computed_by_hand(inference_model, monkeypatch):
    """detect() on a 64x128 image against molding and unmolding done here by direct formulas.

    The image fits the 128-pixel square at scale 1 with 32 rows of zeros above and
    below. The network is replaced by a stub that records its inputs and returns
    three given detections and masks, so that the expected boxes and masks
    follow from them independently of mrcnn.transform.
    """
    import cv2

    config = inference_model.config
    image = np.random.default_rng(1).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 50, 100], [0, 0, 64, 128], [30, 5, 41, 17]])  # original pixels
    molded_boxes = boxes + [32, 0, 32, 0]
    detections = np.zeros((1, config.DETECTION_MAX_INSTANCES, 6), np.float32)
    detections[0, :3, :4] = (molded_boxes - [0, 0, 1, 1]) / 127.0
    detections[0, :3, 4:] = [[1, 0.9], [1, 0.8], [1, 0.7]]
    rows, cols = np.mgrid[:28, :28] + 0.5
    disk = np.clip(1.5 - np.hypot(rows - 14, cols - 14) / 10, 0, 1)  # 0.5 at radius 10
    masks = np.zeros((1, config.DETECTION_MAX_INSTANCES, 28, 28, config.NUM_CLASSES), np.float32)
    masks[0, :3, :, :, 1] = disk
    seen = []

    def network(inputs):
        seen.append(inputs)
        return [detections, None, None, masks, None, None, None]

    monkeypatch.setattr(inference_model.keras_model, "predict_on_batch", network)
    (result,) = inference_model.detect([image])

    molded, metas, anchors = seen[0]
    padded = np.zeros((128, 128, 3), np.float32)
    padded[32:96] = image
    np.testing.assert_allclose(molded[0], padded - config.MEAN_PIXEL, atol=1e-4)
    np.testing.assert_array_equal(metas[0, :12], [0, 64, 128, 3, 128, 128, 3, 32, 0, 96, 128, 1])
    np.testing.assert_array_equal(anchors[0], inference_model.get_anchors((128, 128)))
    np.testing.assert_array_equal(result["rois"], boxes)
    np.testing.assert_array_equal(result["class_ids"], [1, 1, 1])
    np.testing.assert_allclose(result["scores"], [0.9, 0.8, 0.7])
    assert result["masks"].shape == (64, 128, 3)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        expected = np.zeros((64, 128), bool)
        expected[y1:y2, x1:x2] = cv2.resize(disk, (x2 - x1, y2 - y1)) >= 0.5
        found = result["masks"][:, :, i]
        assert not found[:y1].any() and not found[y2:].any()  # nothing outside the box
        assert (expected & found).sum() / (expected | found).sum() > 0.9


def test_detect_molded_takes_molded_images_and_metas_from_the_data_path(inference_model,
                                                                       synthetic_dataset):
    from mrcnn import data

    image = synthetic_dataset.load_image(2)
    molded, meta, _, _, _ = data.load_image_gt(synthetic_dataset, inference_model.config, 2)
    (from_molded,) = inference_model.detect_molded(
        [modellib.mold_image(molded, inference_model.config)], [meta])
    (direct,) = inference_model.detect([image])
    np.testing.assert_array_equal(from_molded["rois"], direct["rois"])
    np.testing.assert_array_equal(from_molded["masks"], direct["masks"])


def test_predict_molded_gives_the_outputs_detect_unmolds(inference_model, synthetic_dataset):
    image = synthetic_dataset.load_image(2)
    molded, metas, windows = inference_model.mold_inputs([image])
    assert metas.dtype == np.float64  # passed as float32, as detect() passes them
    outputs = inference_model.predict_molded(molded, metas)
    assert len(outputs) == 7
    detections, mrcnn_mask = outputs[0], outputs[3]
    assert detections.shape == (1, inference_model.config.DETECTION_MAX_INSTANCES, 6)
    rois, class_ids, _, masks = inference_model.unmold_detections(
        detections[0], mrcnn_mask[0], image.shape, molded.shape[1:], windows[0])
    (direct,) = inference_model.detect([image])
    np.testing.assert_array_equal(rois, direct["rois"])
    np.testing.assert_array_equal(class_ids, direct["class_ids"])
    np.testing.assert_array_equal(masks, direct["masks"])


# ---------------------------------------------------------------------------
# Loading weights: the original's call, transfer learning, resuming


def test_load_pretrained_skips_other_class_heads_and_keeps_the_run(trained, tmp_path):
    model, _ = trained

    class ThreeClasses(TrainConfig):
        NUM_CLASSES = 3

    fresh = modellib.MaskRCNN("training", ThreeClasses(), str(tmp_path))
    log_dir, epoch = fresh.log_dir, fresh.epoch
    report = fresh.load_pretrained(model.find_last())
    assert set(report.skipped) == {"mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"}
    assert (fresh.log_dir, fresh.epoch) == (log_dir, epoch)
    for name in ("conv1", "rpn_model", "mrcnn_class_conv1", "mrcnn_mask_conv1"):
        for a, b in zip(fresh.keras_model.get_layer(name).weights,
                        model.keras_model.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert fresh.keras_model.get_layer("mrcnn_class_logits").weights[0].shape[-1] == 3


def test_load_pretrained_names_the_saved_settings_that_differ(trained, tmp_path):
    from mrcnn import weights

    model, _ = trained

    class WiderHead(TrainConfig):
        FPN_CLASSIF_FC_LAYERS_SIZE = 64

    other = modellib.MaskRCNN("training", WiderHead(), str(tmp_path))
    with pytest.raises(weights.WeightsError, match=r"(?s)mrcnn_class_conv1.*trained with "
                       r"FPN_CLASSIF_FC_LAYERS_SIZE 128 \(this model: 64\)"):
        other.load_pretrained(model.find_last())


def test_load_weights_of_another_architecture_names_the_saved_settings(trained, tmp_path):
    """The original's call, load_weights(by_name=True, exclude=heads), on one of our
    checkpoints with another head width: the error calls it another architecture (not a
    class count) and names the checkpoint's settings; a file without saved settings gets
    the shapes and the general advice only."""
    import shutil

    from mrcnn import weights

    model, _ = trained

    class WiderHead(TrainConfig):
        FPN_CLASSIF_FC_LAYERS_SIZE = 64

    other = modellib.MaskRCNN("training", WiderHead(), str(tmp_path))
    with pytest.raises(weights.WeightShapeError) as error:
        other.load_weights(model.find_last(), by_name=True, exclude=weights.CLASS_SPECIFIC_LAYERS)
    message = str(error.value)
    assert re.search(r"mrcnn_class_conv1/kernel:0 is \(\d+, \d+, \d+, 128\) in the file, "
                     r"\(\d+, \d+, \d+, 64\) in the model", message)
    assert ("These layers do not depend on the class count: the file holds another "
            "architecture") in message
    assert message.endswith("The checkpoint was trained with FPN_CLASSIF_FC_LAYERS_SIZE 128 "
                            "(this model: 64).")
    assert error.value.mismatches[0][0] == "mrcnn_class_conv1"

    loose = shutil.copy(model.find_last(), tmp_path / "loose.h5")
    with pytest.raises(weights.WeightShapeError) as error:
        other.load_weights(loose, by_name=True, exclude=weights.CLASS_SPECIFIC_LAYERS)
    assert "another architecture" in str(error.value)
    assert "trained with" not in str(error.value)


def test_resume_continues_the_run_of_a_checkpoint(trained):
    model, _ = trained
    resumed = modellib.MaskRCNN("training", TrainConfig(), model.model_dir)
    assert resumed.resume() == os.path.join(model.log_dir, "mask_rcnn_tiny_0002.h5")
    assert (resumed.epoch, resumed.log_dir) == (2, model.log_dir)
    with pytest.raises(ValueError, match="not a checkpoint of a training run"):
        resumed.resume(__file__)


def test_train_saves_the_run_settings(trained):
    from mrcnn import runs

    model, _ = trained
    settings = runs.load_run_settings(model.find_last())
    assert settings.class_names == ["pikachu"]
    assert settings.to_config().to_dict() == model.config.to_dict()
    assert settings.pretrained is False   # trained from random weights


def test_a_resumed_run_keeps_whether_it_started_from_weights(trained, tmp_path):
    """resume() and load_weights() of a run's checkpoint take the run's ``pretrained``, so that
    a run from random weights resumes with its own schedule, not the transfer-learning one."""
    model, _ = trained
    resumed = modellib.MaskRCNN("training", TrainConfig(), model.model_dir)
    assert resumed.pretrained is False
    resumed.resume()
    assert resumed.pretrained is False and resumed.epoch == 2
    resumed.load_pretrained(model.find_last())
    assert resumed.pretrained is True
    resumed.load_weights(model.find_last(), by_name=True)
    assert resumed.pretrained is False
    # A file that is not a run's checkpoint, and a run whose settings predate the record.
    outside = str(tmp_path / "weights.h5")
    resumed.save_weights(outside)
    resumed.load_weights(outside, by_name=True)
    assert resumed.pretrained is True and resumed.epoch == 0
    old_run = tmp_path / "tiny20250101T0000"
    old_run.mkdir()
    resumed.save_weights(str(old_run / "mask_rcnn_tiny_0001.h5"))
    (old_run / "run_settings.json").write_text('{"config": {}, "class_names": ["pikachu"]}')
    resumed.resume(str(old_run / "mask_rcnn_tiny_0001.h5"))
    assert resumed.pretrained is True


def test_loading_a_run_trained_to_compute_otherwise_warns(trained, tmp_path, caplog):
    """A checkpoint whose run had other ROI_ALIGN_BY_STRIDE or MEAN_PIXEL loads without an
    error into the model; load_weights says which settings differ and how to match them."""
    import json
    import logging
    import shutil

    from mrcnn import runs

    trained_model, _ = trained
    # A model of its own: load_weights moves the model to the checkpoint's run and epoch.
    model = modellib.MaskRCNN("training", TrainConfig(), str(tmp_path / "logs"))
    with caplog.at_level(logging.WARNING, logger="mrcnn.model"):
        model.load_weights(trained_model.find_last(), by_name=True)
    assert "was trained with" not in caplog.text

    other_run = tmp_path / "tiny20250101T0000"
    other_run.mkdir()
    checkpoint = shutil.copy(trained_model.find_last(), other_run / "mask_rcnn_tiny_0001.h5")
    saved = json.loads(open(runs.load_run_settings(trained_model.find_last()).path).read())
    saved["config"].update(ROI_ALIGN_BY_STRIDE=True, MEAN_PIXEL=[100.0, 100.0, 100.0],
                           LEARNING_RATE=0.5)
    (other_run / runs.SETTINGS_FILE).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="mrcnn.model"):
        model.load_weights(checkpoint, by_name=True)
    [warning] = [r.getMessage() for r in caplog.records if "was trained with" in r.getMessage()]
    assert warning.startswith(f"{checkpoint} was trained with ")
    assert ("MEAN_PIXEL [100.0, 100.0, 100.0], ROI_ALIGN_BY_STRIDE True; this model has "
            "MEAN_PIXEL [123.7, 116.8, 103.9], ROI_ALIGN_BY_STRIDE False") in warning
    assert "LEARNING_RATE" not in warning


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(synthetic_dataset, tmp_path):
    class Unreadable(type(synthetic_dataset)):
        def load_image(self, image_id):
            raise OSError("disk gone")

    broken = Unreadable()
    broken.load_synthetic(2, 128, 128)
    broken.prepare()
    model = modellib.MaskRCNN("training", TrainConfig(), str(tmp_path))
    with pytest.raises(OSError, match="disk gone"):
        model.train(broken, None, learning_rate=0.01, epochs=1, layers="heads", verbose=0)
    assert not os.path.exists(model.log_dir)


def test_a_new_run_never_writes_into_another_runs_folder(trained, synthetic_dataset):
    """A model made in the same minute as a finished run names the same folder (set_log_dir);
    its train() makes a folder of its own instead of rewriting the other run's settings."""
    model, _ = trained
    other_run = sorted(os.listdir(model.log_dir))
    settings = (Path(model.log_dir) / "run_settings.json").read_bytes()

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            assert os.path.exists(Path(same_minute.log_dir) / "run_settings.json")
            raise KeyboardInterrupt

    same_minute = modellib.MaskRCNN("training", TrainConfig(), model.model_dir)
    same_minute.log_dir = model.log_dir
    with pytest.raises(KeyboardInterrupt):
        same_minute.train(synthetic_dataset, None, learning_rate=0.01, epochs=1, layers="heads",
                          custom_callbacks=[Interrupt()], verbose=0)
    assert same_minute.log_dir != model.log_dir and not os.path.exists(same_minute.log_dir)
    assert sorted(os.listdir(model.log_dir)) == other_run
    assert (Path(model.log_dir) / "run_settings.json").read_bytes() == settings


def test_bad_layers_or_augmentation_are_refused_before_training(trained, synthetic_dataset):
    model, _ = trained
    with pytest.raises(ValueError, match="layers='head' names no layer with weights, so there "
                                         "would be nothing to train: use one of 'heads', "):
        model.train(synthetic_dataset, None, learning_rate=0.01, epochs=3, layers="head")
    with pytest.raises(TypeError, match="augmentation is a list: wrap the transforms in"):
        model.train(synthetic_dataset, None, learning_rate=0.01, epochs=3, layers="heads",
                    augmentation=[])
    assert model.epoch == 2


def test_train_to_an_epoch_already_done_says_so(trained, synthetic_dataset, capsys):
    model, _ = trained
    history = model.train(synthetic_dataset, None, learning_rate=0.01, epochs=2, layers="heads")
    assert history.history == {} and model.epoch == 2
    out = capsys.readouterr().out
    assert out.startswith("Nothing to train: the model is at epoch 2, and epochs=2 counts from "
                          "the first epoch ever")
    assert (f"It continues the run in {model.log_dir}; to start a new run from a checkpoint's "
            "weights (fine-tuning on other data), load it with load_pretrained(path)") in out


def test_a_model_that_starts_over_leaves_its_finished_run_alone(synthetic_dataset, tmp_path,
                                                                monkeypatch):
    """The original's way to start a new run with the same model, load_weights() of a file that
    is no run's checkpoint, in the same minute as the run before: a folder of its own."""
    from mrcnn import runs

    class OneStep(TrainConfig):
        STEPS_PER_EPOCH = 1

    model = modellib.MaskRCNN("training", OneStep(), str(tmp_path / "logs"))
    model.train_schedule(synthetic_dataset, None, [TrainingStage("heads", 1, 0.01)], verbose=0)
    first_run = model.log_dir
    checkpoint = (Path(first_run) / "mask_rcnn_tiny_0001.h5").read_bytes()
    model.save_weights(str(tmp_path / "start.h5"))
    monkeypatch.setattr(runs, "log_dir_name", lambda name, now=None: os.path.basename(first_run))
    model.load_weights(str(tmp_path / "start.h5"), by_name=True)
    assert model.log_dir == first_run and model.epoch == 0   # what set_log_dir names

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.train(synthetic_dataset, None, learning_rate=0.01, epochs=1, layers="heads",
                    custom_callbacks=[Interrupt()], verbose=0)
    assert model.log_dir != first_run
    assert (Path(first_run) / "mask_rcnn_tiny_0001.h5").read_bytes() == checkpoint
    # The first run's record: from random weights, and its schedule, which resume() takes.
    settings = runs.load_run_settings(str(Path(first_run) / "mask_rcnn_tiny_0001.h5"))
    assert settings.pretrained is False and settings.schedule == [["heads", 1, 0.01]]
    resumed = modellib.MaskRCNN("training", OneStep(), str(tmp_path / "logs"))
    resumed.resume(str(Path(first_run) / "mask_rcnn_tiny_0001.h5"))
    assert resumed.schedule == [TrainingStage("heads", 1, 0.01)] and not resumed.pretrained


def test_training_stopped_in_an_epoch_goes_on_from_the_last_epoch_done(synthetic_dataset,
                                                                          tmp_path):
    """Ctrl-C in the second epoch (a notebook's way to stop): the model is at epoch 1, the
    epoch its checkpoint holds, and train() again runs epoch 2 only, keeping checkpoint 1."""

    class OneStep(TrainConfig):
        STEPS_PER_EPOCH = 1

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    model = modellib.MaskRCNN("training", OneStep(), str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        model.train(synthetic_dataset, None, learning_rate=0.01, epochs=3, layers="heads",
                    custom_callbacks=[Interrupt()], verbose=0)
    first = Path(model.log_dir) / "mask_rcnn_tiny_0001.h5"
    assert model.epoch == 1 and model.run_folder == model.log_dir
    kept = first.read_bytes()
    history = model.train(synthetic_dataset, None, learning_rate=0.01, epochs=2, layers="heads",
                          verbose=0)
    assert history.epoch == [1] and model.epoch == 2
    assert first.read_bytes() == kept
    assert sorted(os.listdir(model.log_dir))[:2] == ["mask_rcnn_tiny_0001.h5",
                                                     "mask_rcnn_tiny_0002.h5"]


def test_train_schedule_skips_the_stages_already_done(inference_model, monkeypatch):
    from mrcnn.training import transfer_schedule

    calls = []
    monkeypatch.setattr(inference_model, "train", lambda *args, **kwargs: calls.append(args[2:5]))
    monkeypatch.setattr(inference_model, "epoch", 15)
    inference_model.train_schedule(None, None, transfer_schedule(30, 0.01))
    assert calls == [(0.001, 30, "all")]


def test_the_original_import_paths_keep_working():
    import mrcnn.model as original_modellib
    from mrcnn import anchors, data, layers, targets, transform, utils

    assert original_modellib.load_image_gt is data.load_image_gt
    assert original_modellib.mold_image is transform.mold_image
    assert original_modellib.build_rpn_targets is targets.build_rpn_targets
    assert original_modellib.compute_backbone_shapes is anchors.compute_backbone_shapes
    assert utils.resize_image is transform.resize_image and utils.resize_mask is transform.resize_mask
    assert utils.generate_pyramid_anchors is anchors.generate_pyramid_anchors
    assert utils.batch_slice is layers.batch_slice
    assert original_modellib.data_generator is data.data_generator
    assert original_modellib.log is utils.log
    assert original_modellib.DetectionLayer is layers.DetectionLayer
    assert set(original_modellib.__all__) <= set(dir(original_modellib))


def test_importing_mrcnn_keeps_the_matplotlib_backend():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); "
            "import mrcnn.model, mrcnn.visualize, mrcnn.splash, mrcnn.evaluate, mrcnn.datasets; "
            "print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg"


def test_mask_head_runs_on_the_detections_only_with_the_same_masks(tiny_config, synthetic_dataset,
                                                                    tmp_path, monkeypatch):
    image = synthetic_dataset.load_image(1)

    class Wide(type(tiny_config)):
        DETECTION_MAX_INSTANCES = 100  # more slots than the per-class NMS leaves detections

    keras.utils.set_random_seed(2)
    trimmed = modellib.MaskRCNN("inference", Wide(), str(tmp_path))
    layer = trimmed.keras_model.get_layer
    outputs = trimmed.run_graph([image], [("detections", layer("mrcnn_detection").output),
                                          ("masks", layer("mrcnn_mask").output)])
    count = int((outputs["detections"][0, :, 4] > 0).sum())
    rows = max(8, -(-count // 8) * 8)
    assert 0 < count and rows < Wide.DETECTION_MAX_INSTANCES and outputs["masks"].shape[1] == rows
    # A model whose mask head runs on every slot gives the same results.
    monkeypatch.setattr(modellib, "ActiveRows",
                        lambda **kwargs: layers.ActiveRows(multiple=10 ** 6, **kwargs))
    every_slot = modellib.MaskRCNN("inference", Wide(), str(tmp_path))
    every_slot.keras_model.set_weights(trimmed.keras_model.get_weights())
    assert every_slot.run_graph([image], [("m", every_slot.keras_model.get_layer(
        "mrcnn_mask").output)])["m"].shape[1] == Wide.DETECTION_MAX_INSTANCES
    (got,), (expected,) = trimmed.detect([image]), every_slot.detect([image])
    assert len(got["scores"]) == count
    for key in ("rois", "class_ids", "scores", "masks"):
        np.testing.assert_array_equal(got[key], expected[key])


def test_a_stage_with_the_same_layers_keeps_the_traced_step(synthetic_dataset, tmp_path):
    class Short(TinyConfig):
        STEPS_PER_EPOCH = 2

    model = modellib.MaskRCNN("training", Short(), str(tmp_path))
    traces = []  # compute_loss runs in Python only while TensorFlow traces the step
    compute_loss = model.keras_model.compute_loss
    model.keras_model.compute_loss = lambda *args, **kwargs: (traces.append(1),
                                                              compute_loss(*args, **kwargs))[1]
    model.train(synthetic_dataset, None, learning_rate=0.01, epochs=1, layers="heads", verbose=0)
    optimizer = model.keras_model.optimizer
    assert len(traces) == 1
    model.train(synthetic_dataset, None, learning_rate=0.002, epochs=2, layers="heads", verbose=0)
    assert len(traces) == 1 and model.keras_model.optimizer is optimizer
    assert float(optimizer.learning_rate) == pytest.approx(0.002)
    assert int(optimizer.iterations) == 2  # restarted with the stage
    model.train(synthetic_dataset, None, learning_rate=0.002, epochs=3, layers="all", verbose=0)
    assert len(traces) == 2 and model.epoch == 3
