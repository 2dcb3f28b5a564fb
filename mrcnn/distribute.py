"""Training on several GPUs and several machines with ``tf.distribute``.

``MaskRCNN(mode, config, model_dir, strategy=...)`` builds its model under a
strategy made by ``make_strategy``; ``MaskRCNN.train`` then feeds it with
``distributed_batches`` and compiles it with ``training.DecaySGD``. This replaces
the original's ParallelModel: every replica runs the whole graph on its own
images, and the gradients are summed across replicas each step.

The quantities of a distributed run:

- ``IMAGES_PER_GPU`` is the batch of one replica (the layers slice their
  batch by it); the global batch is ``IMAGES_PER_GPU * replicas``, where
  replicas is ``GPU_COUNT`` for "mirrored" and the sum of every worker's
  local devices for "multiworker".
- The loss of a step is the mean of the replicas' losses, and the gradient
  is the gradient of that mean: each replica divides its loss by the number
  of replicas and the gradients are summed. ``GRADIENT_CLIP_NORM`` clips that
  summed gradient (see ``training.DecaySGD``), so one step on R replicas of one image
  each is exactly one single-device step on the mean gradient of those R
  images.
- ``STEPS_PER_EPOCH`` and ``VALIDATION_STEPS`` count global steps; an epoch
  sees ``STEPS_PER_EPOCH * global batch`` images. The learning rate is used
  as given, not scaled with the global batch.
- The replicas read disjoint parts of one stream of images
  (``data.DataGenerator``), in the order a single-device run with the global
  batch would read them.
- Only the chief writes checkpoints and TensorBoard logs (``is_chief``).
"""

import os

import numpy as np
import tensorflow as tf

from mrcnn import input_pipeline
from mrcnn.config import ConfigError

STRATEGIES = ("mirrored", "multiworker")


def make_strategy(config, strategy=None):
    """The ``tf.distribute.Strategy`` to build and train a model under.

    Args:
        config: its GPU_COUNT is the number of replicas for "mirrored".
        strategy: None (the default: "mirrored" when GPU_COUNT > 1, else
            TensorFlow's default strategy, one device), "mirrored",
            "multiworker", or a ``tf.distribute.Strategy`` to use as it is.

            - "mirrored": ``MirroredStrategy`` over the first GPU_COUNT GPUs
              of this machine, or over its first GPU_COUNT logical CPU devices
              when it has no GPU (``tf.config.set_logical_device_configuration``
              splits a CPU, as the tests do).
            - "multiworker": ``MultiWorkerMirroredStrategy``; the cluster and
              this process's task come from the ``TF_CONFIG`` environment
              variable, and each worker uses all the GPUs it sees (its CPU
              when it has none). It must be made before any other TensorFlow
              call of the process.

    Raises:
        ConfigError: an unknown choice, fewer devices than GPU_COUNT, or
            "multiworker" without TF_CONFIG.
    """
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy is None:
        strategy = "mirrored" if config.GPU_COUNT > 1 else "default"
    if strategy == "default":
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy(devices=_local_devices(config.GPU_COUNT))
    if strategy == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError(
                "strategy 'multiworker' needs the TF_CONFIG environment variable on every "
                'worker, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
                '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\' (index 1 on host2).')
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(
        f"strategy is {strategy!r}: use None, {', '.join(map(repr, STRATEGIES))} "
        "or a tf.distribute.Strategy.")


def _local_devices(count):
    """Names of the first ``count`` GPUs, or of the first ``count`` logical CPUs without GPUs."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    if len(devices) < count:
        raise ConfigError(
            f"GPU_COUNT is {count} but TensorFlow sees {len(gpus)} GPU(s) on this machine"
            + ("" if gpus else f" and {len(devices)} CPU device(s)")
            + f": set GPU_COUNT to at most {len(devices)}, or make the GPUs visible "
            "(CUDA_VISIBLE_DEVICES, drivers).")
    return [device.name for device in devices[:count]]


def is_chief(strategy):
    """Whether this process writes the run's files: the chief of a cluster, or the only process.

    In a ``TF_CONFIG`` cluster, the chief is the task of type "chief", or
    worker 0 when the cluster has no "chief" task.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def in_multi_worker_mode(strategy):
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy over a cluster of several tasks."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None
            and sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1)


def describe(strategy, config):
    """One line on the replicas, the global batch and what a step and an epoch are."""
    replicas = strategy.num_replicas_in_sync
    global_batch = config.IMAGES_PER_GPU * replicas
    return (f"{type(strategy).__name__}: {replicas} replica(s) of {config.IMAGES_PER_GPU} "
            f"image(s), global batch {global_batch}; an epoch is {config.STEPS_PER_EPOCH} steps "
            f"({config.STEPS_PER_EPOCH * global_batch} images)")


def shared_seed(strategy, seed=None):
    """A seed that every worker of ``strategy`` agrees on.

    ``seed`` when given; otherwise a random draw of the chief's, which
    ``MultiWorkerMirroredStrategy`` broadcasts as it does every variable's
    initial value. The workers' data streams must share it so that they read
    disjoint parts of one stream.
    """
    if seed is not None:
        return seed
    draw = np.random.SeedSequence().entropy % (1 << 62)
    with strategy.scope():
        variable = tf.Variable(draw, dtype=tf.int64, trainable=False)
    return int(variable.numpy())


def distributed_batches(strategy, generator, meter=None, first_step=0):
    """A ``tf.distribute`` dataset of a ``data.DataGenerator``'s stream, for ``strategy``.

    Args:
        strategy: the model's strategy.
        generator: a DataGenerator whose batch size is one replica's
            (IMAGES_PER_GPU), with the same seed on every worker.
        meter: an input_pipeline.PipelineMeter: its workers load batches in
            parallel on each worker, and it counts them.
        first_step: the global step to start at.

    Returns:
        A ``DistributedDatasetsFromFunction`` whose step s gives replica r
        (counted across all workers) the generator's batch
        ``(first_step + s) * replicas + r``: together the replicas read the
        stream's images of a single-device run with the global batch. Each
        worker loads only its own replicas' batches (input_pipeline.batches).
    """

    def dataset_fn(input_context):
        total = input_context.num_replicas_in_sync
        local = total // input_context.num_input_pipelines
        return input_pipeline.batches(generator, first_step, meter, replicas=local,
                                      first_replica=input_context.input_pipeline_id * local,
                                      replicas_in_sync=total)

    return strategy.distribute_datasets_from_function(dataset_fn)
