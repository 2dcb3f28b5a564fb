"""Distributed training runs for test_distribute.py, each in a fresh process.

Logical devices and MultiWorkerMirroredStrategy must be set up before
TensorFlow initializes, so the tests run this script in a subprocess:

    python tests/distributed_run.py mirrored OUTPUT_DIR
        Splits the CPU into two logical devices and trains STEPS steps on
        two replicas (MirroredStrategy, GPU_COUNT = 2, one image each); then
        replays the same steps on one device by hand: each step, the mean of
        the two images' gradients, clipped per tensor, applied with plain
        SGD. Writes result.json: the losses of both runs per step and the
        largest weight differences, including those of the run's last
        checkpoint loaded into a one-device model.

    python tests/distributed_run.py multiworker OUTPUT_DIR  (with TF_CONFIG set)
        One worker of a MultiWorkerMirroredStrategy cluster: trains STEPS
        steps (one epoch) with model_dir OUTPUT_DIR/logs and writes
        OUTPUT_DIR/worker_<index>.json: its losses and a digest of its final
        weights.

The configuration makes the ROI sampling of the detection targets
deterministic (ROIs come from the data, every positive ROI is kept and no
negative is drawn), so the two runs see the same targets and their losses can
be compared closely.
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS = 3
SEED = 5
LEARNING_RATE = 0.02


def make_config(replicas, steps_per_epoch=1):
    from conftest import TinyConfig

    class DistributedConfig(TinyConfig):
        GPU_COUNT = replicas
        IMAGES_PER_GPU = 1
        STEPS_PER_EPOCH = steps_per_epoch
        USE_RPN_ROIS = False          # ROIs from the (seeded) data, not from the RPN
        POST_NMS_ROIS_TRAINING = 48
        TRAIN_ROIS_PER_IMAGE = 48     # keep every positive ROI ...
        ROI_POSITIVE_RATIO = 1.0      # ... and draw no negative one
        GRADIENT_CLIP_NORM = 1.0      # small enough to clip some tensors

    return DistributedConfig()


def make_dataset():
    from mrcnn.synthetic import SyntheticDataset

    dataset = SyntheticDataset()
    dataset.load_synthetic(8, 128, 128, seed=3)
    dataset.prepare()
    return dataset


class LossRecorder(keras.callbacks.Callback):
    """Keeps the losses of every epoch."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append({name: float(value) for name, value in logs.items()})


def weights_digest(keras_model):
    """SHA-256 of every weight's file name and values, in name order.

    The names are those of the weight files (``mrcnn_class_bn1/gamma:0``), not the
    variables' paths, which hold auto-generated layer names that differ between
    processes that built other models first.
    """
    from mrcnn import weights

    entries = [entry for layer in weights.model_layers(keras_model)
               for entry in weights.layer_weight_names(layer)]
    digest = hashlib.sha256()
    for name, variable in sorted(entries, key=lambda entry: entry[0]):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


def largest_difference(weights_a, weights_b):
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(weights_a, weights_b))


def run_mirrored(output_dir):
    # Both runs sum the same numbers: in the same order only with deterministic kernels
    # (TensorFlow's parallel reductions otherwise split their work by the free cores).
    tf.config.experimental.enable_op_determinism()
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from mrcnn import data, weights
    from mrcnn.config import LOSS_NAMES
    from mrcnn.model import MaskRCNN
    from mrcnn.training import LAYER_REGEX

    dataset = make_dataset()
    keras.utils.set_random_seed(SEED)
    reference = MaskRCNN("training", make_config(1), os.path.join(output_dir, "reference"))
    initial = os.path.join(output_dir, "initial.h5")
    weights.save_weights(reference.keras_model, initial)
    initial_weights = [weight.numpy() for weight in reference.keras_model.weights]

    mirrored = MaskRCNN("training", make_config(2), os.path.join(output_dir, "logs"))
    weights.load_weights(mirrored.keras_model, initial, by_name=True)
    recorder = LossRecorder()
    mirrored.train(dataset, None, LEARNING_RATE, epochs=STEPS, layers="heads",
                   custom_callbacks=[recorder], verbose=0, seed=SEED)

    # The same steps by hand on one device.
    model = reference.keras_model
    reference.set_trainable(LAYER_REGEX["heads"], verbose=0)
    variables = model.trainable_weights
    optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE,
                                     momentum=reference.config.LEARNING_MOMENTUM)
    generator = data.DataGenerator(dataset, reference.config, batch_size=1, seed=SEED,
                                   random_rois=reference.config.POST_NMS_ROIS_TRAINING)

    @tf.function
    def image_gradients(inputs):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = model.compute_loss(y_pred=outputs)
            # The loss carries the weight decay's value only; the optimizer adds its
            # gradient (training.DecaySGD): differentiate it here.
            differentiated = loss + model.weight_decay()
        parts = [tf.reduce_mean(part) for part in outputs[-len(LOSS_NAMES):]]
        return loss, parts, tape.gradient(differentiated, variables)

    reference_losses = []
    clipped = 0
    for step in range(STEPS):
        results = [image_gradients(generator.batch(2 * step + replica)[0]) for replica in (0, 1)]
        mean_gradients = [(a + b) / 2 for a, b in zip(results[0][2], results[1][2])]
        clip = reference.config.GRADIENT_CLIP_NORM
        clipped += sum(int(tf.norm(g) > clip) for g in mean_gradients)
        optimizer.apply([tf.clip_by_norm(g, clip) for g in mean_gradients], variables)
        losses = {"loss": float(np.mean([r[0] for r in results]))}
        for i, name in enumerate(LOSS_NAMES):
            losses[name] = float(np.mean([r[1][i] for r in results]))
        reference_losses.append(losses)

    restored = MaskRCNN("training", make_config(1), os.path.join(output_dir, "restored"))
    checkpoints = sorted(name for name in os.listdir(mirrored.log_dir) if name.endswith(".h5"))
    restored.load_weights(os.path.join(mirrored.log_dir, checkpoints[-1]), by_name=True)
    result = {
        "replicas": mirrored.strategy.num_replicas_in_sync,
        "devices": list(mirrored.strategy.extended.worker_devices),
        "mirrored_losses": recorder.losses,
        "reference_losses": reference_losses,
        "checkpoints": checkpoints,
        "clipped_tensors": clipped,
        "weights_vs_reference": largest_difference(mirrored.keras_model.weights,
                                                   reference.keras_model.weights),
        "checkpoint_vs_mirrored": largest_difference(restored.keras_model.weights,
                                                     mirrored.keras_model.weights),
        "weights_moved": largest_difference(restored.keras_model.weights, initial_weights),
    }
    with open(os.path.join(output_dir, "result.json"), "w") as f:
        json.dump(result, f)


def run_worker(output_dir):
    from mrcnn.model import MaskRCNN

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    model = MaskRCNN("training", make_config(1, steps_per_epoch=2), os.path.join(output_dir, "logs"), strategy="multiworker")
    recorder = LossRecorder()
    model.train(make_dataset(), None, LEARNING_RATE, epochs=1, layers="heads",
                custom_callbacks=[recorder], verbose=0)
    result = {"replicas": model.strategy.num_replicas_in_sync, "losses": recorder.losses,
              "weights": weights_digest(model.keras_model), "log_dir": model.log_dir}
    with open(os.path.join(output_dir, f"worker_{task['index']}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    {"mirrored": run_mirrored, "multiworker": run_worker}[sys.argv[1]](sys.argv[2])
