"""mrcnn.cpu: when one-image models run their convolutions in halves."""

import pytest

from mrcnn import cpu

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}


@pytest.mark.parametrize("flags, environ, expected", [
    (AVX2, {}, True),                                                  # the EPYC
    (AVX512, {}, False),
    (AVX512, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),                   # capped below AVX-512
    (AVX512, {"DNNL_MAX_CPU_ISA": "avx2"}, True),                     # oneDNN's older name
    (AVX512, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False),
    (AVX512, {"ONEDNN_MAX_CPU_ISA": "ALL"}, False),
    (AVX2, {"ONEDNN_MAX_CPU_ISA": "ALL"}, True),                      # a cap adds nothing
    (AVX2, {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),                    # Eigen, not oneDNN
    ({"fp", "asimd", "sve"}, {}, False),                              # not x86
    (set(), {}, False),                                               # no /proc/cpuinfo
])
def test_halves_on_x86_without_avx512_only(flags, environ, expected):
    assert cpu.prefers_convolutions_in_halves(flags, environ) is expected


def test_reads_this_machines_flags():
    flags = cpu._cpu_flags()
    assert isinstance(flags, set)
    assert cpu.prefers_convolutions_in_halves(environ={}) == cpu.prefers_convolutions_in_halves(
        flags, {})
