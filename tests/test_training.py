"""Tests of mrcnn.training: checkpoint saver, transfer schedule, trainable layers."""

import os

import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from mrcnn import runs, training


def test_checkpoint_saver_writes_one_numbered_file_per_epoch(tmp_path):
    inputs = KL.Input((4,), name="input_features")
    model = keras.Model(inputs, KL.Dense(2, name="mrcnn_class_logits")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    template = runs.checkpoint_path_template(tmp_path / "shapes20260101T0000", "shapes")
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 2), np.float32)

    model.fit(x, y, epochs=2, verbose=0, callbacks=[training.CheckpointSaver(template)])

    assert sorted(os.listdir(tmp_path / "shapes20260101T0000")) == [
        "mask_rcnn_shapes_0001.h5", "mask_rcnn_shapes_0002.h5"]
    last = runs.find_last_checkpoint(tmp_path, "shapes")
    assert runs.epoch_from_checkpoint(last) == 2
    with h5py.File(last, "r") as f:
        np.testing.assert_array_equal(f["mrcnn_class_logits/mrcnn_class_logits/kernel:0"][()],
                                      model.get_layer("mrcnn_class_logits").kernel.numpy())


def test_checkpoint_saver_can_save_another_model(tmp_path):
    inputs = KL.Input((4,), name="input_features")
    saved = keras.Model(inputs, KL.Dense(2, name="mrcnn_bbox_fc")(inputs))
    saver = training.CheckpointSaver(str(tmp_path / "mask_rcnn_shapes_{epoch:04d}.h5"),
                                    keras_model=saved)
    saver.on_epoch_end(0)
    with h5py.File(tmp_path / "mask_rcnn_shapes_0001.h5", "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == ["input_features", "mrcnn_bbox_fc"]


def test_checkpoint_saver_needs_an_epoch_template():
    with pytest.raises(ValueError, match=r"str with an \{epoch\} field"):
        training.CheckpointSaver(keras.Sequential(), "logs/mask_rcnn_shapes_{epoch:04d}.h5")
    with pytest.raises(ValueError, match="mask_rcnn_shapes.h5"):
        training.CheckpointSaver("logs/mask_rcnn_shapes.h5")


def test_checkpoint_saver_skips_a_diverged_epoch(tmp_path, capsys):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="dense")])
    template = str(tmp_path / "run20260101T0000" / "mask_rcnn_run_{epoch:04d}.h5")
    saver = training.CheckpointSaver(template, keras_model=model)
    saver.on_epoch_end(0, {"loss": 1.5})
    saver.on_epoch_end(1, {"loss": float("nan")})
    assert os.listdir(tmp_path / "run20260101T0000") == ["mask_rcnn_run_0001.h5"]
    assert "not finite" in capsys.readouterr().out


def test_transfer_schedule_follows_the_original_recipe():
    stage = training.TrainingStage
    assert training.transfer_schedule(30, 0.001) == [stage("heads", 15, 0.001),
                                                     stage("all", 30, 0.0001)]
    assert training.transfer_schedule(1, 0.001) == [stage("heads", 1, 0.001)]
    assert training.transfer_schedule(3, 0.001, pretrained=False) == [stage("all", 3, 0.001)]
    assert training.transfer_schedule(5, 0.01, layers="4+") == [stage("4+", 5, 0.01)]
