"""MaskRCNN: building, detect() outputs, training, checkpoints and resuming."""

import os

import numpy as np
import pytest

from mrcnn import model as modellib
from mrcnn import utils
from mrcnn.config import Config

from conftest import TinyConfig

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


def test_config_errors_say_what_to_change():
    from mrcnn.config import ConfigError

    class BadSize(Config):
        NUM_CLASSES = 2
        IMAGE_MAX_DIM = 1000

    with pytest.raises(ConfigError, match="divisible by 64.*try 1024"):
        BadSize()

    class NoClasses(Config):
        NUM_CLASSES = 1

    with pytest.raises(ConfigError, match="NUM_CLASSES.*>= 2"):
        NoClasses()

    class BadBackbone(Config):
        NUM_CLASSES = 2
        BACKBONE = "resnet18"

    with pytest.raises(ConfigError, match="resnet50, resnet101"):
        BadBackbone()

    class BadMode(Config):
        NUM_CLASSES = 2
        IMAGE_RESIZE_MODE = "stretch"

    with pytest.raises(ConfigError, match="none, square, pad64, crop"):
        BadMode()


def test_config_derived_attributes_and_display(capsys):
    class Two(Config):
        NAME = "two"
        NUM_CLASSES = 3
        GPU_COUNT = 2
        IMAGES_PER_GPU = 3

    config = Two()
    assert config.BATCH_SIZE == 6
    np.testing.assert_array_equal(config.IMAGE_SHAPE, [1024, 1024, 3])
    assert config.IMAGE_META_SIZE == 12 + 3
    config.display()
    out = capsys.readouterr().out
    assert "BATCH_SIZE                     6" in out and "NUM_CLASSES                    3" in out


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


def test_config_has_every_original_attribute_with_its_default():
    defaults = {
        "BACKBONE": "resnet101", "BACKBONE_STRIDES": [4, 8, 16, 32, 64], "COMPUTE_BACKBONE_SHAPE": None,
        "FPN_CLASSIF_FC_LAYERS_SIZE": 1024, "TOP_DOWN_PYRAMID_SIZE": 256,
        "RPN_ANCHOR_SCALES": (32, 64, 128, 256, 512), "RPN_ANCHOR_RATIOS": [0.5, 1, 2],
        "RPN_ANCHOR_STRIDE": 1, "RPN_NMS_THRESHOLD": 0.7, "RPN_TRAIN_ANCHORS_PER_IMAGE": 256,
        "PRE_NMS_LIMIT": 6000, "POST_NMS_ROIS_TRAINING": 2000, "POST_NMS_ROIS_INFERENCE": 1000,
        "USE_MINI_MASK": True, "MINI_MASK_SHAPE": (56, 56), "IMAGE_RESIZE_MODE": "square",
        "IMAGE_MIN_DIM": 800, "IMAGE_MAX_DIM": 1024, "IMAGE_MIN_SCALE": 0, "IMAGE_CHANNEL_COUNT": 3,
        "TRAIN_ROIS_PER_IMAGE": 200, "ROI_POSITIVE_RATIO": 0.33, "POOL_SIZE": 7, "MASK_POOL_SIZE": 14,
        "MASK_SHAPE": [28, 28], "MAX_GT_INSTANCES": 100, "DETECTION_MAX_INSTANCES": 100,
        "DETECTION_MIN_CONFIDENCE": 0.7, "DETECTION_NMS_THRESHOLD": 0.3, "LEARNING_RATE": 0.001,
        "LEARNING_MOMENTUM": 0.9, "WEIGHT_DECAY": 0.0001, "USE_RPN_ROIS": True, "TRAIN_BN": False,
        "GRADIENT_CLIP_NORM": 5.0, "GPU_COUNT": 1, "IMAGES_PER_GPU": 2, "STEPS_PER_EPOCH": 1000,
        "VALIDATION_STEPS": 50, "NAME": None, "NUM_CLASSES": 1,
    }
    for name, value in defaults.items():
        assert getattr(Config, name) == value, name
    np.testing.assert_allclose(Config.MEAN_PIXEL, [123.7, 116.8, 103.9])
    np.testing.assert_allclose(Config.RPN_BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(Config.BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])
    assert Config.LOSS_WEIGHTS == dict.fromkeys(
        ["rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"], 1.0)


def test_trainable_layers_resolve_time_distributed_wrappers(inference_model):
    from keras import layers as KL

    wrapper = inference_model.keras_model.get_layer("mrcnn_class_conv1")
    inner = inference_model.find_trainable_layer(wrapper)
    assert isinstance(inner, KL.Conv2D) and inner.kernel.shape[:2] == (7, 7)
    layers = inference_model.get_trainable_layers()
    assert inner in layers and inference_model.keras_model.get_layer("conv1") in layers
    assert all(layer.weights for layer in layers)


def test_detect_molded_matches_detect(inference_model):
    image = np.random.default_rng(1).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    (direct,) = inference_model.detect([image])
    molded, metas, _ = inference_model.mold_inputs([image])
    (molded_result,) = inference_model.detect_molded(molded, metas)
    for key in ("rois", "class_ids", "scores", "masks"):
        np.testing.assert_array_equal(molded_result[key], direct[key])
    assert molded_result["masks"].shape[:2] == (96, 160)


def test_the_original_import_paths_keep_working():
    import mrcnn.model as original_modellib
    from mrcnn import data, layers, utils, visualize  # noqa: F401

    assert original_modellib.load_image_gt is data.load_image_gt
    assert original_modellib.mold_image is data.mold_image
    assert original_modellib.data_generator is data.data_generator
    assert original_modellib.log is utils.log
    assert original_modellib.DetectionLayer is layers.DetectionLayer
    assert set(original_modellib.__all__) <= set(dir(original_modellib))
