"""Training: the model that owns its losses, what to train, checkpoints, schedules.

Keras 3 has no ``model.add_loss(symbolic_tensor)``; instead the training
graph outputs its five losses (see mrcnn.losses) and ``TrainingModel``
overrides ``compute_loss`` to weight and sum them with the L2 weight decay,
as the original did; ``DecaySGD`` adds the decay's gradient and clips the
gradients. Each loss also feeds a ``Mean`` metric so that the progress bar
and the logs show all five (``val_*`` during validation).

Also here: the ``layers=`` presets (``LAYER_REGEX``, ``set_trainable``), the
callback that writes a checkpoint after each epoch (``CheckpointSaver``),
and the transfer-learning schedule (``transfer_schedule``).
"""

import math
import re
import weakref
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from mrcnn import cpu, distribute, weights
from mrcnn.config import LOSS_NAMES

# Regular expressions selecting the layers to train for each ``layers`` preset.
LAYER_REGEX = {
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}


def decays(variable):
    """Whether the original's L2 weight decay applies: every weight but BatchNorm gamma and beta."""
    return variable.name not in ("gamma", "beta")


def decay_factor(variable, weight_decay):
    """``2 * weight_decay / size(w)``: the decay's gradient is this times the weight, and
    its value this times ``l2_loss(w)`` (the original's ``weight_decay * sum(w²) / size(w)``)."""
    return 2.0 * weight_decay / int(np.prod(variable.shape))


class TrainingModel(cpu.LightGraphOptimization, weights.Keras2WeightsModel):
    """Functional Mask R-CNN training graph whose last five outputs are its losses.

    Build it like a functional model: ``TrainingModel(inputs, outputs, config=config)``.
    Its ``save_weights("name.h5")`` writes the Keras-2 layout, as the original's did.
    The loss it reports is the weighted five plus the original's L2 weight decay; the
    decay's gradient is added by the optimizer (DecaySGD), once the backward pass is
    done, rather than by differentiating the loss: the same gradient, but TensorFlow
    no longer computes the decay's gradients of all weights at the start of the backward
    pass and keeps them until their turn (a weight-sized buffer at the memory peak).
    """

    def __init__(self, *args, config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mrcnn_config = config
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in LOSS_NAMES]

    def weight_decay(self):
        """The original's L2 term: WEIGHT_DECAY * sum(w²) / size(w) over every
        trainable weight except BatchNorm gammas and betas."""
        decaying = [w for w in self.trainable_weights if decays(w)]
        if not decaying:
            return tf.constant(0.0)
        # 2 * l2_loss(w) is sum(w²) in one operation, without a w-sized tensor of squares;
        # the weights' factors are one constant vector, not two multiplications per weight.
        factors = [decay_factor(w, self.mrcnn_config.WEIGHT_DECAY) for w in decaying]
        sums = tf.stack([tf.nn.l2_loss(w) for w in decaying])
        return tf.reduce_sum(sums * tf.constant(factors, sums.dtype))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The weighted sum of the five losses and the weight decay, divided by the replicas.

        Under a tf.distribute strategy each replica returns its share, so that
        the summed gradients are those of the replicas' mean loss; Keras
        multiplies the share back for the ``loss`` it reports.
        """
        losses = y_pred[-len(LOSS_NAMES):]
        weights = self.mrcnn_config.LOSS_WEIGHTS
        total = tf.constant(0.0)
        for name, tracker, loss in zip(LOSS_NAMES, self.loss_trackers, losses):
            loss = tf.reduce_mean(loss) * weights.get(name, 1.0)
            tracker.update_state(loss)
            total += loss
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return (total + tf.stop_gradient(self.weight_decay())) / replicas

    def train_step(self, data):
        """Keras's training step, with a tape that records only what the trainable weights reach.

        Keras's tape watches every variable the step reads, so the backward graph it traces
        (and Grappler then prunes) also covers the frozen layers: the whole backbone when
        the heads train. Watching the trainable weights alone halves the graph of a heads
        step (about 15,000 operations to 8,000 for ResNet101), and its tracing time.
        """
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_weights
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([weight.value for weight in weights])
            outputs = self(inputs, training=True)
            loss = self.compute_loss(inputs, None, outputs, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        # compute_loss returns this replica's share; Keras's "loss" metric gets the whole.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(inputs[0])[0])
        if weights:
            self.optimizer.apply_gradients(zip(tape.gradient(scaled_loss, weights), weights))
        return _reducible_logs(self.compute_metrics(inputs, None, outputs, None))

    def test_step(self, data):
        return _reducible_logs(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build what ``fit`` needs before its first step: the optimizer only.

        Keras's own version, under a tf.distribute strategy, reduces a first
        batch across the replicas to build the model symbolically, which fails
        for the bool gt_masks and, under MultiWorkerMirroredStrategy, for any
        batch of several inputs. This model needs no such build: its graph is
        built when it is made and ``compile`` gives it no loss or metric.
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


def _reducible_logs(logs):
    """A step's logs, each of shape [1] on the workers of a cluster (else scalars, unchanged).

    Keras 3 reduces a step's logs across workers with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars
    (TensorFlow issue 72388). The values are the same on every replica (the
    loss metrics are mirrored variables), so the mean is the value.
    """
    if not distribute.in_multi_worker_mode(tf.distribute.get_strategy()):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


class DecaySGD(keras.optimizers.SGD):
    """SGD with momentum, the original's L2 weight decay and per-tensor gradient clipping.

    One optimizer for one device and for a tf.distribute strategy. Its update is that of
    ``keras.optimizers.SGD(momentum)`` on the gradient of the mean loss over the replicas
    plus ``l2_weight_decay * sum(w²) / size(w)`` for the weights ``decays`` selects, each
    gradient tensor clipped to the L2 norm ``clip_norm`` as the original did on one GPU:

    * the decay's gradient, ``2 * l2_weight_decay / size(w) * w``, is added to each
      gradient once the whole backward pass is done (the loss carries the decay's value
      only: ``TrainingModel.compute_loss``). Computed by differentiating the loss, the
      decay's gradients of all weights would be ready at the start of the backward pass
      and held until their turn, a weight-sized buffer at the memory peak; added as soon
      as each gradient exists, the heads' would be made while the pyramid's activations
      are still held;
    * the clipping applies to the global batch's gradient. Under a strategy with R
      replicas Keras would clip each replica's share before summing them (up to R times
      ``clip_norm``); this optimizer sums the shares first (each replica's loss is
      already divided by R), clips, and gives Keras back one R-th of the result to sum.
      That costs one more all-reduce of the gradients per step with several replicas;
    * the norms of all tensors are computed in one vectorized step, the learning rate is
      read once, and the momentum and weight update is one fused kernel per tensor
      (``m = momentum * m - lr * g; w += m``): a few graph operations per weight tensor
      where keras.optimizers.SGD with ``clipnorm`` takes some 28, which shortens tracing
      and every step.

    Args:
        l2_weight_decay: the original's WEIGHT_DECAY.
        clip_norm: largest L2 norm of each gradient tensor; None or 0: no clipping.
        **kwargs: of ``keras.optimizers.SGD`` (learning_rate, momentum, ...).
    """

    def __init__(self, l2_weight_decay=0.0, clip_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.l2_weight_decay = l2_weight_decay
        self.clip_norm = clip_norm
        self._momentum_constants = weakref.WeakKeyDictionary()  # {graph: {dtype: tensor}}

    def apply(self, grads, trainable_variables=None):
        variables = self._trainable_variables if trainable_variables is None else trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        # In a graph, the decay waits for the whole backward pass (see _with_decay); eager,
        # tf.group makes nothing and there is nothing to wait for.
        backward_done = tf.group([g for g in grads if g is not None])
        after_backward = [] if backward_done is None else [backward_done]
        grads = self._with_decay(grads, variables, replicas, after_backward)
        if self.clip_norm:
            grads = self._clipped(grads, replicas)
        return super().apply(grads, trainable_variables)

    def _with_decay(self, grads, variables, replicas, after_backward):
        """``grads`` plus the decay's gradients of the ``variables`` that ``decays`` selects,
        one ``replicas``-th of them on each replica (a None gradient: the loss does not
        depend on the variable; the decay's gradient alone then).

        Each weight is read, scaled and added once the operations ``after_backward`` (the
        end of the backward pass; none when eager) have run: a weight-sized temporary made
        as soon as its gradient exists would add to the backward pass's own peak, when the
        heads' gradients are ready long before the pyramid's activations are freed. The
        weights' factors, ``2 * l2_weight_decay / (size(w) * replicas)``, are one constant
        vector, not one constant per weight in the step's graph. A decay of 0 adds nothing.
        """
        decaying = [i for i, variable in enumerate(variables) if decays(variable)]
        if not (decaying and self.l2_weight_decay):
            return grads
        factors = tf.unstack(tf.constant(
            [decay_factor(variables[i], self.l2_weight_decay) / replicas for i in decaying],
            variables[decaying[0]].dtype))
        grads = list(grads)
        for i, factor in zip(decaying, factors):
            with tf.control_dependencies(after_backward):
                decay = tf.convert_to_tensor(variables[i]) * tf.cast(factor, variables[i].dtype)
            grads[i] = decay if grads[i] is None else grads[i] + decay
        return grads

    def _clipped(self, grads, replicas):
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            return grads
        values = [grads[i] for i in present]
        context = tf.distribute.get_replica_context()
        summed = context is not None and replicas > 1
        if summed:
            values = context.all_reduce(tf.distribute.ReduceOp.SUM, values)
        norms = tf.sqrt(2.0 * tf.stack([tf.nn.l2_loss(value) for value in values]))
        factors = self.clip_norm / tf.maximum(norms, self.clip_norm)
        if summed:  # Keras sums the replicas' gradients once more: give it one R-th each.
            factors = factors / replicas
        grads = list(grads)
        for i, value, factor in zip(present, values, tf.unstack(factors)):
            grads[i] = value * factor
        return grads

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # Without a tf.distribute strategy the sum over the one replica is the gradient
        # itself; Keras's would put an Identity per weight into the step's graph.
        if not tf.distribute.has_strategy():
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # The learning rate read once for all the weights' updates, not once per weight.
        super()._backend_update_step(grads, trainable_variables,
                                     tf.convert_to_tensor(learning_rate))

    def update_step(self, gradient, variable, learning_rate):
        if not self.momentum or self.nesterov:
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.handle,
            lr=tf.cast(learning_rate, variable.dtype), grad=tf.cast(gradient, variable.dtype),
            momentum=self._momentum_constant(variable.dtype), use_nesterov=False)

    def _momentum_constant(self, dtype):
        """The momentum as a tensor of ``dtype``: one constant per graph (a step's), not one
        per weight."""
        constants = self._momentum_constants.setdefault(tf.compat.v1.get_default_graph(), {})
        if dtype not in constants:
            constants[dtype] = tf.constant(self.momentum, dtype)
        return constants[dtype]

    def get_config(self):
        return {**super().get_config(), "l2_weight_decay": self.l2_weight_decay,
                "clip_norm": self.clip_norm}


def trainable_layers(keras_model, layer_regex):
    """The layers with weights whose names fully match ``layer_regex``; a nested model
    (rpn_model) is one layer."""
    return [layer for layer in keras_model.layers
            if layer.weights and re.fullmatch(layer_regex, layer.name)]


def set_trainable(keras_model, layer_regex, verbose=1, indent=0):
    """Make trainable the ``trainable_layers`` of ``layer_regex``, and only those.

    Prints the trained layers when verbose > 0.

    Returns:
        The names of the layers made trainable.
    """
    trained = trainable_layers(keras_model, layer_regex)
    chosen = {id(layer) for layer in trained}
    for layer in keras_model.layers:
        if layer.weights:
            layer.trainable = id(layer) in chosen
    if verbose > 0:
        for layer in trained:
            print(f"{' ' * indent}{layer.name:20}   ({layer.__class__.__name__})")
    return [layer.name for layer in trained]


class CheckpointSaver(keras.callbacks.Callback):
    """Saves a model's weights in the Keras-2 layout after each epoch.

    Args:
        checkpoint_path_template: e.g. ``checkpoint_path_template(log_dir, name)``;
            formatted with ``epoch`` = the 1-based epoch number (Keras counts
            from 0): ``mask_rcnn_pikachu_0001.h5`` after the first epoch.
        keras_model: the model to save; default: the model being trained.
        verbose: print each saved path.
    """

    def __init__(self, checkpoint_path_template, keras_model=None, verbose=0):
        super().__init__()
        template = checkpoint_path_template
        if not isinstance(template, str) or "{epoch" not in template:
            raise ValueError(
                "checkpoint_path_template must be a str with an {epoch} field, e.g. "
                f"'logs/shapes20260125T1530/mask_rcnn_shapes_{{epoch:04d}}.h5', not "
                f"{template!r}.")
        self.checkpoint_path_template = template
        self.keras_model = keras_model
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        path = self.checkpoint_path_template.format(epoch=epoch + 1)
        if diverged(logs):
            print(f"\nEpoch {epoch + 1}: the loss is not finite (training diverged); "
                  f"{path} is not written, the previous checkpoint stays the last one.")
            return
        weights.save_weights(self.model if self.keras_model is None else self.keras_model, path)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: saved weights to {path}")


class EpochCounter(keras.callbacks.Callback):
    """Keeps ``mrcnn_model.epoch`` at the epochs done as each one ends, so that a training
    stopped in the middle (Ctrl-C in a notebook, an error) goes on from the last epoch done
    and never writes a checkpoint of an epoch number again. An epoch whose loss is not finite
    is not counted: CheckpointSaver keeps no checkpoint of it. Put it after CheckpointSaver,
    so that an epoch counts once its checkpoint is written."""

    def __init__(self, mrcnn_model):
        super().__init__()
        self.mrcnn_model = mrcnn_model

    def on_epoch_end(self, epoch, logs=None):
        if not diverged(logs):
            self.mrcnn_model.epoch = epoch + 1


def diverged(logs):
    """Whether an epoch's Keras ``logs`` hold a loss that is not finite."""
    return not np.isfinite((logs or {}).get("loss", 0.0))


class TrainingStage(NamedTuple):
    """One ``MaskRCNN.train`` call of a schedule: ``layers`` up to epoch ``epochs``."""

    layers: str
    epochs: int
    learning_rate: float


def continued_schedule(stages, epochs=None):
    """A run's schedule, to go on to epoch ``epochs`` (default: where it ends).

    The stages that end before ``epochs`` are kept, the first one that reaches it ends
    there, and the stages after it are dropped; a schedule that ends before ``epochs``
    goes on with its last stage. So a resumed run never goes back to a stage it is past,
    whatever end it is given.
    """
    stages = [TrainingStage(*stage) for stage in stages]
    if epochs is None:
        return stages
    continued = []
    for stage in stages:
        continued.append(stage._replace(epochs=min(stage.epochs, epochs)))
        if stage.epochs >= epochs:
            return continued
    continued[-1] = continued[-1]._replace(epochs=epochs)
    return continued


def transfer_schedule(epochs, learning_rate, layers=None, pretrained=True):
    """The stages of a training run, the original's transfer-learning recipe by default.

    Args:
        epochs: the epoch the run ends at.
        learning_rate: the learning rate of the first stage.
        layers: train these layers (a ``LAYER_REGEX`` key or a regular
            expression) for all epochs, in one stage.
        pretrained: whether the model starts from trained weights. Without
            them every layer must learn: one stage of "all".

    Returns:
        [TrainingStage]. With pretrained weights and no ``layers``: the heads
        for the first half of the epochs (rounded up), then all layers at a
        tenth of the learning rate.
    """
    if layers:
        return [TrainingStage(layers, epochs, learning_rate)]
    if not pretrained:
        return [TrainingStage("all", epochs, learning_rate)]
    heads_epochs = math.ceil(epochs / 2)
    stages = [TrainingStage("heads", heads_epochs, learning_rate)]
    if epochs > heads_epochs:
        stages.append(TrainingStage("all", epochs, learning_rate / 10))
    return stages
