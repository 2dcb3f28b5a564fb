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
"""

import os

# Training on CPU computes the kernel gradients of the backbone's, FPN's and RPN's
# convolutions as matrix products (layers.kernel_gradient_graph) for images of at least this
# side: their P2 maps (a quarter of the side) are then 128 pixels or more, where the matrix
# products were 1.2-1.5 times faster than TensorFlow's kernel gradient with AVX-512 and 2-4
# times without it. On the 32-pixel maps of 128-pixel images they were slower.
MATMUL_KERNEL_GRADIENT_MIN_IMAGE_SIDE = 512

# Environment variables that cap the instruction set oneDNN uses (its own names, new and old).
ISA_LIMIT_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def prefers_convolutions_in_halves(cpu_flags=None, environ=None):
    """Whether a one-image model should run its stride-1 convolutions in halves (see above).

    True on an x86 CPU that oneDNN runs without AVX-512 (the CPU has no ``avx512f``, or
    ONEDNN_MAX_CPU_ISA caps it below), with oneDNN enabled.

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
