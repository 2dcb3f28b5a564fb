"""CPU threads: TensorFlow's two thread pools and the workers that prepare training batches.

On a CPU, TensorFlow's kernels and the Python threads that load images share a few cores.
More runnable threads than cores make them take turns: the operating system switches
between them thousands of times a second and spinning threads burn time in the kernel. The
defaults, chosen from the cores this process may use (``available_cores``):

* TensorFlow's intra-op pool (the threads of one convolution): every core;
* TensorFlow's inter-op pool (how many operations run at once): 1 on up to 4 cores, where
  one operation already keeps every core busy; half the cores above that;
* data workers (threads that build training batches ahead of the step): 1 on up to 4
  cores, a quarter of the cores above that, at most 4. A batch takes far less time to
  build than a training step takes to run (``MaskRCNN.train`` prints both rates), so one
  worker keeps the step fed.

Override them with ``Config.CPU_THREADS`` (intra-op), ``Config.CPU_INTER_OP_THREADS`` and
``Config.DATA_WORKERS``, or with TensorFlow's own environment variables
``TF_NUM_INTRAOP_THREADS`` and ``TF_NUM_INTEROP_THREADS``, which win over both. TensorFlow
sizes its pools once per process, when it first runs something: the first model built
decides, and later requests for other sizes are reported and ignored.
"""

import logging
import os

import tensorflow as tf

logger = logging.getLogger(__name__)

# Above this many cores, run several operations at once and add data workers.
FEW_CORES = 4
MAX_DATA_WORKERS = 4


def available_cores():
    """The number of CPU cores this process may run on (its affinity mask, else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(cores=None):
    """(intra-op threads, inter-op threads, data workers) for ``cores`` cores."""
    cores = cores or available_cores()
    inter_op = 1 if cores <= FEW_CORES else cores // 2
    workers = 1 if cores <= FEW_CORES else min(MAX_DATA_WORKERS, cores // 4)
    return cores, inter_op, workers


def configure_tensorflow(intra_op=None, inter_op=None):
    """Size TensorFlow's thread pools, once per process.

    Args:
        intra_op, inter_op: thread counts; None chooses them from the cores
            (``default_threads``). TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS,
            when set, win.

    Returns:
        (intra_op, inter_op): the sizes in effect (0 means TensorFlow's own default).
    """
    default_intra, default_inter, _ = default_threads()
    wanted = {
        "intra": _from_environment("TF_NUM_INTRAOP_THREADS") or intra_op or default_intra,
        "inter": _from_environment("TF_NUM_INTEROP_THREADS") or inter_op or default_inter,
    }
    setters = {"intra": tf.config.threading.set_intra_op_parallelism_threads,
               "inter": tf.config.threading.set_inter_op_parallelism_threads}
    getters = {"intra": tf.config.threading.get_intra_op_parallelism_threads,
               "inter": tf.config.threading.get_inter_op_parallelism_threads}
    for pool, count in wanted.items():
        if getters[pool]() == count:
            continue
        try:
            setters[pool](count)
        except RuntimeError:  # TensorFlow already started: its pools are fixed
            logger.warning("TensorFlow's %s-op pool already has %s threads; %d were asked "
                           "for. Build the first model before running anything else in "
                           "TensorFlow to choose the thread counts.", pool,
                           getters[pool]() or "its default number of", count)
    return getters["intra"](), getters["inter"]()


def data_workers(requested=None):
    """Threads that build training batches: ``requested``, else the default for the cores."""
    return requested or default_threads()[2]


def _from_environment(name):
    value = os.environ.get(name)
    return int(value) if value and value.strip().isdigit() and int(value) > 0 else None
