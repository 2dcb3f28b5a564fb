"""Tests of mrcnn.config: the original's defaults, validation, JSON round trip."""

import json
import re

import numpy as np
import pytest

from mrcnn.config import Config, ConfigError


def test_config_errors_say_what_to_change():
    class BadSize(Config):
        NUM_CLASSES = 2
        IMAGE_MAX_DIM = 1000

    with pytest.raises(ConfigError, match="divisible by 64.*try 1024"):
        BadSize()

    class BadPad64(Config):  # the default IMAGE_MIN_DIM, 800
        NUM_CLASSES = 2
        IMAGE_RESIZE_MODE = "pad64"

    with pytest.raises(ConfigError, match='^IMAGE_MIN_DIM is 800: IMAGE_RESIZE_MODE "pad64" '
                                          r"scales .* divisible by 64; try 768\.$"):
        BadPad64()

    class Pad64(BadPad64):
        IMAGE_MIN_DIM = 832

    assert Pad64().IMAGE_MIN_DIM == 832

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


@pytest.mark.parametrize("name, value, message", [
    ("IMAGE_MAX_DIM", 1024 / 8, r"IMAGE_MAX_DIM is 128.0: it must be a whole number \(an int\), "
                                r"like the default 1024"),
    ("NUM_CLASSES", "2", r"NUM_CLASSES is '2': it must be a finite number, like the default 1"),
    ("IMAGE_MAX_DIM", "128", r"IMAGE_MAX_DIM is '128': it must be a finite number"),
    ("LEARNING_RATE", "0.001", r"LEARNING_RATE is '0.001': it must be a finite number"),
    ("TRAIN_BN", "no", r"TRAIN_BN is 'no': it must be true or false"),
])
def test_a_setting_of_the_wrong_kind_is_named_when_the_config_is_made(name, value, message):
    config_class = type("Wrong", (Config,), {"NUM_CLASSES": 2, name: value})
    with pytest.raises(ConfigError, match=message):
        config_class()


def test_settings_of_the_right_kind_pass(tmp_path):
    class Fine(Config):
        NUM_CLASSES = np.int64(3)            # counts from numpy
        IMAGE_MIN_SCALE = 2.0                # a scale may be a fraction
        TRAIN_BN = None                      # the original's "train BN normally"
        BACKBONE = staticmethod(lambda image, stage5, train_bn: None)   # a custom backbone
        COMPUTE_BACKBONE_SHAPE = staticmethod(lambda image_shape: [])
        MEAN_PIXEL = [1.0, 2.0, 3.0]

    assert Fine().BATCH_SIZE == 2


def test_a_batch_size_set_by_hand_is_refused_when_the_model_is_built(tmp_path):
    config = type("One", (Config,), {"NUM_CLASSES": 2, "IMAGES_PER_GPU": 1})()
    config.BATCH_SIZE = 2
    with pytest.raises(ConfigError, match="BATCH_SIZE is 2 but IMAGES_PER_GPU x GPU_COUNT is "
                                          "1: BATCH_SIZE is computed from them"):
        config.validate()



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



def test_the_base_config_constructs_and_a_model_refuses_its_class_count(tmp_path, capsys):
    config = Config()  # the original's code reads and displays the defaults
    config.display()
    assert "NUM_CLASSES                    1" in capsys.readouterr().out
    from mrcnn import model as modellib

    with pytest.raises(ConfigError, match="NUM_CLASSES is 1: it counts the background too"):
        modellib.MaskRCNN("inference", config, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_to_dict_and_from_dict_round_trip_through_json():
    class Custom(Config):
        NAME = "custom"
        NUM_CLASSES = 4
        IMAGE_MAX_DIM = 512
        MEAN_PIXEL = np.array([1.0, 2.0, 3.0])
        RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)

    saved = json.loads(json.dumps(Custom().to_dict()))
    restored = Config.from_dict(saved)
    assert restored.to_dict() == Custom().to_dict()
    assert isinstance(restored.MEAN_PIXEL, np.ndarray) and isinstance(restored.BBOX_STD_DEV, np.ndarray)
    assert restored.RPN_ANCHOR_SCALES == (8, 16, 32, 64, 128)
    assert restored.MINI_MASK_SHAPE == (56, 56)
    np.testing.assert_array_equal(restored.IMAGE_SHAPE, [512, 512, 3])
    assert isinstance(restored, Config) and not isinstance(restored, Custom)


def test_from_dict_overrides_a_subclass_and_checks_the_values():
    class Pikachu(Config):
        NAME = "pikachu"
        NUM_CLASSES = 2

    config = Pikachu.from_dict({"IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128, "BATCH_SIZE": 99})
    assert isinstance(config, Pikachu) and config.NAME == "pikachu"
    assert (config.IMAGE_MAX_DIM, config.BATCH_SIZE) == (128, 2)  # derived ones are recomputed
    with pytest.raises(ConfigError, match="Unknown configuration setting 'IMAGE_SIZE'"):
        Pikachu.from_dict({"IMAGE_SIZE": 128})
    with pytest.raises(ConfigError, match="IMAGE_MAX_DIM is 100"):
        Pikachu.from_dict({"IMAGE_MAX_DIM": 100})


@pytest.mark.parametrize("values, message", [
    ({"IMAGE_MAX_DIM": "512"}, "IMAGE_MAX_DIM is '512': it must be a finite number, like the "
                               "default 1024."),
    ({"LEARNING_RATE": float("nan")}, "LEARNING_RATE is nan: it must be a finite number"),
    ({"STEPS_PER_EPOCH": 10 ** 400}, "STEPS_PER_EPOCH is 1000"),
    ({"USE_MINI_MASK": "yes"}, "USE_MINI_MASK is 'yes': it must be true or false"),
    ({"BACKBONE": 50}, "BACKBONE is 50: it must be text, like the default 'resnet101'."),
    ({"MEAN_PIXEL": ["a", 1, 2]}, "MEAN_PIXEL is ['a', 1, 2]: it must be a list of numbers"),
    ({"RPN_ANCHOR_SCALES": [[8], 16]}, "RPN_ANCHOR_SCALES is [[8], 16]: it must be a list of numbers"),
    ({"LOSS_WEIGHTS": {"rpn_class_loss": None}}, "LOSS_WEIGHTS is {'rpn_class_loss': None}: it "
                                                 "must be a mapping of names to numbers"),
    ({"IMAGE_MAX_DIM": None}, "These settings cannot work together"),
])
def test_from_dict_refuses_values_of_the_wrong_type(values, message):
    # What an edited or damaged run_settings.json holds: a ConfigError naming the
    # setting, never a TypeError from deep inside.
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.from_dict(values)
