"""Training batches as a tf.data pipeline that works ahead of the training step.

``MaskRCNN.train`` feeds Keras ``fit`` with ``batches(generator, ...)`` (under a
tf.distribute strategy, with ``distribute.distributed_batches``, which builds on it): worker
threads build the batches of a ``data.DataGenerator`` (load, resize and augment the images,
compute the RPN targets: numpy code) while TensorFlow runs the step, in the stream's order,
and keep a few ready.

Why not hand the DataGenerator (a ``keras.utils.PyDataset``) to ``fit`` directly: Keras then
wraps it in ``tf.data.Dataset.from_generator``, whose kernel lowers glibc's mmap threshold
to 128 KiB for the whole process (a TensorFlow workaround for a Python 3.11 generator leak).
From then on every tensor of a training step above that size is mapped, faulted in page by
page and unmapped again: on the CPU demo a fifth of the training time went to the kernel.
This pipeline calls the DataGenerator through ``tf.numpy_function`` and leaves the
allocator alone.

``ThroughputReport`` (a callback) prints at the end of each epoch the step rate beside the
pipeline's capacity in images per second, which must stay well above it.
"""

import threading
import time

import keras
import numpy as np
import tensorflow as tf

# Batches kept ready beyond those being built.
PREFETCH = 2


class PipelineMeter:
    """Images built and worker seconds spent, added up across worker threads."""

    def __init__(self, workers):
        self.workers = workers
        self.images = 0
        self.seconds = 0.0
        self.error = None
        self._lock = threading.Lock()

    def add(self, images, seconds):
        with self._lock:
            self.images += images
            self.seconds += seconds

    def snapshot(self):
        with self._lock:
            return self.images, self.seconds


def batches(generator, first_step=0, meter=None, replicas=1, first_replica=0,
            replicas_in_sync=1):
    """An endless tf.data.Dataset of a DataGenerator's batches, in the stream's order.

    On one device, element s is ``generator.batch(first_step + s)``. Under a
    tf.distribute strategy (``distribute.distributed_batches``) this process's pipeline
    serves ``replicas`` of the ``replicas_in_sync`` replicas, from ``first_replica`` on:
    its element ``s * replicas + r`` is the batch of local replica r at step
    ``first_step + s``, ``generator.batch((first_step + s) * replicas_in_sync +
    first_replica + r)``, so that the replicas of all processes together read the
    stream's consecutive batches.

    Args:
        generator: a data.DataGenerator.
        first_step: the first training step to produce batches for (a resumed run goes
            on with the images after those its earlier epochs used).
        meter: a PipelineMeter: its ``workers`` threads build batches at the same time
            (in order all the same); it counts the images and seconds, and keeps the
            first exception a worker raised, with its note naming the image
            (``reraise``). Default: one worker.
        replicas, first_replica, replicas_in_sync: see above.

    Returns:
        A dataset whose elements are the generator's batches: ``(inputs,)`` or
        ``(inputs, outputs)``, each a tuple of tensors with the shapes and dtypes of
        the numpy arrays of the batch.
    """
    meter = meter or PipelineMeter(workers=1)
    start = time.perf_counter()
    example = generator.batch(first_step * replicas_in_sync + first_replica)
    flat_example = tf.nest.flatten(example)
    # The example, which gives the elements' dtypes and shapes, is also the first element:
    # served once from here rather than built twice.
    ready = {first_step * replicas: (flat_example, time.perf_counter() - start)}

    def build(element):
        if int(element) in ready:
            arrays, seconds = ready.pop(int(element))
            meter.add(generator.batch_size, seconds)
            return arrays
        step, replica = divmod(int(element), replicas)
        start = time.perf_counter()
        try:
            arrays = tf.nest.flatten(generator.batch(step * replicas_in_sync + first_replica
                                                     + replica))
        except Exception as error:
            meter.error = meter.error or error
            raise
        meter.add(generator.batch_size, time.perf_counter() - start)
        return arrays

    def load(element):
        tensors = tf.numpy_function(build, [element],
                                    [tf.as_dtype(a.dtype) for a in flat_example])
        for tensor, array in zip(tensors, flat_example):
            tensor.set_shape(array.shape)
        return tf.nest.pack_sequence_as(example, tensors)

    options = tf.data.Options()
    options.threading.private_threadpool_size = meter.workers
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    return (tf.data.Dataset.counter(first_step * replicas, dtype=tf.int64)
            .map(load, num_parallel_calls=meter.workers, deterministic=True)
            .prefetch(PREFETCH)
            .with_options(options))


def reraise(error, *meters):
    """Raise a worker's own exception instead of the TensorFlow error that carried it.

    A worker's exception reaches ``fit`` as a tf.errors.OpError whose message buries the
    original one; this raises the original (with its note naming the image) when one of
    the meters kept it, else ``error`` itself.
    """
    for meter in meters:
        if meter is not None and meter.error is not None:
            raise meter.error from None
    raise error


class ThroughputReport(keras.callbacks.Callback):
    """Prints each epoch's training rate beside the data pipeline's capacity.

    ``Epoch 3: 25 steps in 14.2 s: 3.5 images/s trained; the data pipeline builds
    61.0 images/s (1 worker)``. The capacity is the images per worker-second the workers
    spent building batches, times the workers: when it is well above the training rate,
    the step never waits for data.
    """

    def __init__(self, meter, batch_size):
        super().__init__()
        self.meter = meter
        self.batch_size = batch_size
        self.history = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last_step = time.perf_counter()
        self._start_count = self.meter.snapshot()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._last_step = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._last_step - self._start  # validation excluded
        images, worker_seconds = np.subtract(self.meter.snapshot(), self._start_count)
        trained = self._steps * self.batch_size / seconds
        capacity = (images / worker_seconds * self.meter.workers if worker_seconds > 0
                    else float("inf"))
        self.history.append({"epoch": epoch + 1, "steps": self._steps, "seconds": seconds,
                             "trained_images_per_s": trained,
                             "pipeline_images_per_s": capacity})
        workers = f"{self.meter.workers} worker{'s' if self.meter.workers > 1 else ''}"
        print(f"\nEpoch {epoch + 1}: {self._steps} steps in {seconds:.1f} s: {trained:.1f} "
              f"images/s trained; the data pipeline builds {capacity:.1f} images/s "
              f"({workers})")
