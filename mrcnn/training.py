"""The training model: a functional Keras model that owns its losses.

Keras 3 has no ``model.add_loss(symbolic_tensor)``; instead the training
graph outputs its five losses (see mrcnn.losses) and ``TrainingModel``
overrides ``compute_loss`` to weight and sum them with the L2 weight decay,
as the original did. Each loss also feeds a ``Mean`` metric so that the
progress bar and the logs show all five (``val_*`` during validation).
"""

import re

import keras
import tensorflow as tf

from mrcnn.losses import LOSS_NAMES

# Regular expressions selecting the layers to train for each ``layers`` preset.
LAYER_REGEX = {
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}


class TrainingModel(keras.Model):
    """Functional Mask R-CNN training graph whose last five outputs are its losses.

    Build it like a functional model: ``TrainingModel(inputs, outputs, config=config)``.
    """

    def __init__(self, *args, config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mrcnn_config = config
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in LOSS_NAMES]

    def weight_decay(self):
        """The original's L2 term: WEIGHT_DECAY * sum(w²) / size(w) over every
        trainable weight except BatchNorm gammas and betas."""
        terms = [keras.regularizers.L2(self.mrcnn_config.WEIGHT_DECAY)(w) / tf.cast(tf.size(w), tf.float32)
                 for w in self.trainable_weights if w.name not in ("gamma", "beta")]
        return tf.add_n(terms) if terms else tf.constant(0.0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = y_pred[-len(LOSS_NAMES):]
        weights = self.mrcnn_config.LOSS_WEIGHTS
        total = tf.constant(0.0)
        for name, tracker, loss in zip(LOSS_NAMES, self.loss_trackers, losses):
            loss = tf.reduce_mean(loss) * weights.get(name, 1.0)
            tracker.update_state(loss)
            total += loss
        return total + self.weight_decay()


def set_trainable(keras_model, layer_regex, verbose=1, indent=0):
    """Make trainable the layers whose names fully match ``layer_regex``.

    Nested models (rpn_model) are matched as one layer. Layers without
    weights are skipped. Prints the trained layers when verbose > 0.

    Returns:
        The names of the layers made trainable.
    """
    trained = []
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        trainable = bool(re.fullmatch(layer_regex, layer.name))
        layer.trainable = trainable
        if trainable:
            trained.append(layer.name)
            if verbose > 0:
                print(f"{' ' * indent}{layer.name:20}   ({layer.__class__.__name__})")
    return trained
