"""What TensorFlow's CPU convolutions need from the model on this machine.

TensorFlow runs CPU convolutions with oneDNN, on images in NHWC layout. For a batch of one
image it asks oneDNN for a kernel that reads the weights in their plain layout; on a CPU
without AVX-512, oneDNN has no direct kernel for that and falls back to im2col plus a matrix
product, which is 2-3 times slower for 3x3 convolutions and needs a scratch buffer nine
times the input (about 600 MB for the P2 level of a 1024x1024 image). For a batch of two or
more it runs its direct kernel. ``layers.Conv2D`` with ``in_halves`` set therefore runs
a stride-1 convolution of one image as a batch of its top and bottom halves (each with the
rows of its neighbour that the kernel reaches), and a 1x1 convolution as a batch of the
image's rows, for which a 1x1 kernel needs no neighbours: the same numbers, the fast kernel.
``bench/compare_torchvision.py --isa avx2`` measures it.

Before a step function's first run, Grappler optimizes its graph: two rounds of a dozen
passes over the 8,000-18,000 operations of a training step, 1-3.5 seconds of the first step.
On a CPU several of them change nothing or nothing that matters: the layout optimizer and
the memory optimizer work for GPUs, oneDNN fuses convolutions with their biases by itself,
the model has no loops, no shapes to infer and no functions with other implementations,
and the second round finds little the first missed. ``LightGraphOptimization`` runs a
model's step functions with the others only (``LIGHT_REWRITES``); the steady steps keep
their speed.
"""

import functools
import os

import tensorflow as tf
# TensorFlow sets Grappler's passes per process (tf.config.optimizer) or per function call
# through the calling thread's call options, which only this module exposes (Keras's
# TensorFlow trainer imports it too).
from tensorflow.python.eager import context

# Training on CPU computes the kernel gradients of the backbone's, FPN's and RPN's
# convolutions as matrix products (layers.kernel_gradient_graph) for images of at least this
# side: their P2 maps (a quarter of the side) are then 128 pixels or more, where the matrix
# products were 1.2-1.5 times faster than TensorFlow's kernel gradient with AVX-512 and 2-4
# times without it. On the 32-pixel maps of 128-pixel images they were slower.
MATMUL_KERNEL_GRADIENT_MIN_IMAGE_SIDE = 512

# Environment variables that cap the instruction set oneDNN uses (its own names, new and old).
ISA_LIMIT_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")

# Grappler's settings for a step function on CPU (RewriterConfig fields: enum value names, or
# bools): one round of the passes, without those that find nothing to do in this model on a
# CPU (layout, memory, loops, shapes, implementation selection, the MLIR "tfg" passes) or
# whose work oneDNN's own rewrites or the steady steps did not need (remapping, constant
# folding, arithmetic). Pruning, common-subexpression elimination and the dependency
# optimizer stay.
LIGHT_REWRITES = {
    "layout_optimizer": "OFF",
    "remapping": "OFF",
    "constant_folding": "OFF",
    "arithmetic_optimization": "OFF",
    "shape_optimization": "OFF",
    "loop_optimization": "OFF",
    "implementation_selector": "OFF",
    "disable_tfg_optimizer": True,
    "memory_optimization": "NO_MEM_OPT",
    "meta_optimizer_iterations": "ONE",
}


def onednn_without_avx512(cpu_flags=None, environ=None):
    """Whether oneDNN runs TensorFlow's convolutions here without AVX-512.

    True on an x86 CPU with AVX2 that oneDNN runs without AVX-512 (the CPU has no
    ``avx512f``, or ONEDNN_MAX_CPU_ISA caps it below), with oneDNN enabled. A one-image model
    then runs its stride-1 convolutions in halves (see above), and an inference model its
    large 3x3 convolutions by Winograd's algorithm (``mrcnn.winograd``): oneDNN's direct
    convolution runs at about the chip's peak there, and only fewer multiplications are
    faster.

    Args:
        cpu_flags: the CPU's feature flags; default those of /proc/cpuinfo (none
            elsewhere than Linux, and the answer is then False).
        environ: the environment; default ``os.environ``.
    """
    environ = os.environ if environ is None else environ
    cpu_flags = _cpu_flags() if cpu_flags is None else set(cpu_flags)
    if "avx2" not in cpu_flags or environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    uses_avx512 = "avx512f" in cpu_flags
    limits = [environ[name].upper() for name in ISA_LIMIT_VARIABLES if environ.get(name)]
    if limits and not limits[0].startswith(("AVX512", "AVX10", "ALL")):
        uses_avx512 = False
    return not uses_avx512


def _cpu_flags():
    """The feature flags of the first CPU in /proc/cpuinfo (an empty set where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def light_call_options():
    """This thread's function call options, with Grappler's passes set to ``LIGHT_REWRITES``."""
    current = context.context().function_call_options
    config = tf.compat.v1.ConfigProto.FromString(current.config_proto_serialized)
    rewrites = config.graph_options.rewrite_options
    for field, value in LIGHT_REWRITES.items():
        setattr(rewrites, field, value if isinstance(value, bool) else getattr(type(rewrites), value))
    return context.FunctionCallOptions(executor_type=current.executor_type, config_proto=config)


def lightly_optimized(function):
    """``function``, calling its tf.functions with ``light_call_options()`` (then restoring
    the thread's own); the options are its ``call_options``. TensorFlow optimizes a function's
    graph once, at its first call, with the options of that call; later calls must use the
    same options, or it optimizes again."""
    options = light_call_options()

    @functools.wraps(function)
    def call(*args, **kwargs):
        eager_context = context.context()
        previous = eager_context.function_call_options
        eager_context.function_call_options = options
        try:
            return function(*args, **kwargs)
        finally:
            eager_context.function_call_options = previous

    call.call_options = options
    return call


class LightGraphOptimization:
    """A mixin for ``keras.Model``: with ``light_graph_optimization`` set, the train, test and
    predict functions that Keras makes run with Grappler's light passes (``lightly_optimized``).

    ``MaskRCNN`` sets it where no GPU is visible; on a GPU the layout optimizer and the
    remapper's fused kernels pay for their time.
    """

    light_graph_optimization = False

    def make_train_function(self, force=False):
        return self._lightly_optimized_function("train_function", super().make_train_function, force)

    def make_test_function(self, force=False):
        return self._lightly_optimized_function("test_function", super().make_test_function, force)

    def make_predict_function(self, force=False):
        return self._lightly_optimized_function("predict_function", super().make_predict_function,
                                                force)

    def _lightly_optimized_function(self, attribute, make, force):
        if getattr(self, attribute) is None or force:
            make(force=True)
            if self.light_graph_optimization:
                setattr(self, attribute, lightly_optimized(getattr(self, attribute)))
        return getattr(self, attribute)
