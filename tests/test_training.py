"""Tests of mrcnn.training: checkpoint saver, transfer schedule, trainable layers, the
optimizer (its weight decay gradient: the same update as differentiating the L2 term)."""

import collections
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
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


def test_epoch_counter_counts_the_epochs_with_a_finite_loss():
    """The model's epoch follows each epoch that ends with a finite loss (the epochs
    CheckpointSaver keeps), not a diverged one."""
    import types

    model = types.SimpleNamespace(epoch=3)
    counter = training.EpochCounter(model)
    counter.on_epoch_end(3, {"loss": 0.7})
    assert model.epoch == 4
    counter.on_epoch_end(4, {"loss": float("inf")})
    assert model.epoch == 4


def test_transfer_schedule_follows_the_original_recipe():
    stage = training.TrainingStage
    assert training.transfer_schedule(30, 0.001) == [stage("heads", 15, 0.001),
                                                     stage("all", 30, 0.0001)]
    assert training.transfer_schedule(1, 0.001) == [stage("heads", 1, 0.001)]
    assert training.transfer_schedule(3, 0.001, pretrained=False) == [stage("all", 3, 0.001)]
    assert training.transfer_schedule(5, 0.01, layers="4+") == [stage("4+", 5, 0.01)]


def test_a_continued_schedule_never_goes_back_to_a_stage_it_is_past():
    stage = training.TrainingStage
    run = [["heads", 1, 0.001], ["all", 2, 0.0001]]   # as the run settings hold it
    assert training.continued_schedule(run) == [stage("heads", 1, 0.001),
                                                stage("all", 2, 0.0001)]
    # Further than the run planned: its last stage goes on (the heads stage stays at 1).
    assert training.continued_schedule(run, 10) == [stage("heads", 1, 0.001),
                                                    stage("all", 10, 0.0001)]
    # Shorter: cut where asked.
    three = [["heads", 2, 0.01], ["4+", 6, 0.01], ["all", 8, 0.001]]
    assert training.continued_schedule(three, 4) == [stage("heads", 2, 0.01),
                                                     stage("4+", 4, 0.01)]
    assert training.continued_schedule(three, 2) == [stage("heads", 2, 0.01)]



def test_decay_sgd_steps_like_sgd_on_the_loss_plus_the_l2_term():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype(np.float32)

    def make_model():
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(4, name="dense")(inputs)
        outputs = keras.layers.BatchNormalization(name="bn")(hidden, training=False)
        model = keras.Model(inputs, outputs)
        model.set_weights([rng.uniform(0.5, 2.0, size=w.shape) for w in model.get_weights()])
        return model

    decayed, plain = make_model(), make_model()
    plain.set_weights(decayed.get_weights())
    wd = 0.05
    settings = dict(learning_rate=0.1, momentum=0.9)
    clip = 0.05
    ours = training.DecaySGD(wd, clip, **settings)
    reference = keras.optimizers.SGD(clipnorm=clip, **settings)

    def loss_of(model):
        return tf.reduce_sum(tf.sin(model(x)))

    clipped = False
    for _ in range(3):  # momentum carries the decay over from step to step
        with tf.GradientTape() as tape:
            loss = loss_of(decayed)
        ours.apply_gradients(zip(tape.gradient(loss, decayed.trainable_weights),
                                 decayed.trainable_weights))
        with tf.GradientTape() as tape:
            l2 = sum(wd * tf.reduce_sum(tf.square(w)) / int(np.prod(w.shape))
                     for w in plain.trainable_weights if w.name not in ("gamma", "beta"))
            loss = loss_of(plain) + l2
        gradients = tape.gradient(loss, plain.trainable_weights)
        clipped |= any(float(tf.norm(g)) > clip for g in gradients)
        reference.apply_gradients(zip(gradients, plain.trainable_weights))
    assert clipped
    for a, b in zip(decayed.weights, plain.weights):
        assert np.isfinite(a.numpy()).all()
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    assert not np.allclose(decayed.get_layer("dense").kernel.numpy(),
                           make_model().get_layer("dense").kernel.numpy())


def test_the_reported_weight_decay_is_the_originals_l2_term():
    """WEIGHT_DECAY * sum(w²) / size(w) over the trainable weights but BatchNorm's gamma and
    beta, checked against numpy."""
    from mrcnn.config import Config

    class Decay(Config):
        NAME = "decay"
        WEIGHT_DECAY = 0.01

    rng = np.random.default_rng(3)
    inputs = keras.Input((5,))
    outputs = KL.BatchNormalization(name="bn")(KL.Dense(4, name="dense")(inputs))
    model = training.TrainingModel(inputs, outputs, config=Decay())
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    kernel, bias = (w.numpy() for w in model.get_layer("dense").weights)
    expected = 0.01 * ((kernel ** 2).sum() / kernel.size + (bias ** 2).sum() / bias.size)
    np.testing.assert_allclose(float(model.weight_decay()), expected, rtol=1e-6)


def test_only_batch_norm_gamma_and_beta_escape_the_decay():
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert [training.decays(w) for w in bn.weights] == [False, False, True, True]
    assert all(training.decays(w) for w in dense.weights)


def test_decay_sgd_adds_the_decay_once_every_gradient_exists():
    """In a graph, each weight is read for its decay only after the whole backward pass:
    its read waits for one operation that waits for every gradient. The step is still the
    eager one."""
    weights = [keras.Variable(np.full((2, 2), value, np.float32), name="kernel")
               for value in (1.0, -2.0)]
    x = tf.constant([[0.5, -1.0]])

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(tf.matmul(tf.matmul(x, weights[0]), weights[1])))
        gradients = tape.gradient(loss, weights)
        seen[:] = gradients
        optimizer.apply(gradients, weights)

    seen = []

    optimizer = training.DecaySGD(0.1, learning_rate=0.5, momentum=0.9)
    eager_start = [w.numpy() for w in weights]
    step()
    eager_end = [w.numpy() for w in weights]
    for weight, value in zip(weights, eager_start):
        weight.assign(value)

    optimizer = training.DecaySGD(0.1, learning_rate=0.5, momentum=0.9)
    graph_step = tf.function(step)
    graph = graph_step.get_concrete_function().graph
    gradient_ops = {g.op.name for g in seen}
    waits = [op for op in graph.get_operations() if op.type == "ReadVariableOp"
             and any(gradient_ops <= {c.name for c in done.control_inputs}
                     for done in op.control_inputs)]
    assert len(waits) == 2
    graph_step()
    for weight, expected in zip(weights, eager_end):
        np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)


def test_decay_sgd_adds_no_operation_per_weight_to_apply_the_update():
    """The step's graph holds, besides each weight's update, one momentum constant and no
    Identity per gradient (Keras's sum over the one replica): fewer operations to trace."""
    weights = [keras.Variable(np.full((2, 2), i, np.float32), name="kernel") for i in range(5)]
    gradients = [tf.constant(np.full((2, 2), 0.1 * i, np.float32)) for i in range(5)]
    optimizer = training.DecaySGD(0.0, learning_rate=0.5, momentum=0.9)
    optimizer.build(weights)
    graph = tf.function(lambda: optimizer.apply(gradients, weights)).get_concrete_function().graph
    types = collections.Counter(op.type for op in graph.get_operations()
                                if op.name.startswith(f"{optimizer.name}/"))
    assert types["ResourceApplyKerasMomentum"] == 5
    assert types["Const"] == 1 and types["Identity"] == 0, types
    momentum = [op for op in graph.get_operations() if op.type == "ResourceApplyKerasMomentum"]
    assert len({op.inputs[4].name for op in momentum}) == 1  # the same momentum tensor


def test_decay_sgd_decays_a_weight_the_loss_does_not_use():
    weight = keras.Variable(np.array([[1.0, -2.0], [3.0, 0.5]], np.float32), name="kernel")
    optimizer = training.DecaySGD(0.1, learning_rate=0.5, momentum=0.9)
    optimizer.apply([None], [weight])
    # The gradient of 0.1 * sum(w²) / 4 is 0.05 * w: one step of 0.5 scales w by 0.975.
    np.testing.assert_allclose(weight.numpy(), [[0.975, -1.95], [2.925, 0.4875]], rtol=1e-6)
