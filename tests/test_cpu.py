"""mrcnn.cpu: when one-image models run their convolutions in halves, and Grappler's light
passes for their step functions."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context

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
    assert cpu.onednn_without_avx512(flags, environ) is expected


def test_reads_this_machines_flags():
    flags = cpu._cpu_flags()
    assert isinstance(flags, set)
    assert cpu.onednn_without_avx512(environ={}) == cpu.onednn_without_avx512(
        flags, {})


def graph_after_grappler(function, *args):
    """The operation types of ``function``'s graph as TensorFlow ran it (after Grappler).
    TensorFlow reports a graph at its first call only."""
    eager_context = context.context()
    eager_context.enable_run_metadata()
    try:
        function(*args)
        metadata = eager_context.export_run_metadata()
    finally:
        eager_context.disable_run_metadata()
    return sorted(node.op for node in metadata.function_graphs[-1].post_optimization_graph.node)


def scaled_by_constants(x):
    return x * (tf.constant(2.0) * tf.constant(3.0))


def test_light_options_set_the_light_passes_and_keep_the_rest():
    current = tf.compat.v1.ConfigProto.FromString(
        context.context().function_call_options.config_proto_serialized)
    light = tf.compat.v1.ConfigProto.FromString(cpu.light_call_options().config_proto_serialized)
    rewrites = light.graph_options.rewrite_options
    assert rewrites.constant_folding == rewrites.OFF and rewrites.remapping == rewrites.OFF
    assert rewrites.meta_optimizer_iterations == rewrites.ONE
    assert rewrites.memory_optimization == rewrites.NO_MEM_OPT
    assert rewrites.loop_optimization == rewrites.OFF and rewrites.disable_tfg_optimizer
    assert rewrites.dependency_optimization == current.graph_options.rewrite_options.dependency_optimization
    light.graph_options.ClearField("rewrite_options")
    current.graph_options.ClearField("rewrite_options")
    assert light == current  # threads, placement: this thread's own


def test_a_lightly_optimized_function_runs_grapplers_light_passes_only():
    default, light = tf.function(scaled_by_constants), tf.function(scaled_by_constants)
    x = tf.constant([1.0, -2.0])
    # TensorFlow's default passes fold the constant product; the light ones keep it, and
    # still prune the Identity that tracing added. The results are the same.
    assert graph_after_grappler(default, x).count("Mul") == 1
    operations = graph_after_grappler(cpu.lightly_optimized(light), x)
    assert operations.count("Mul") == 2 and "Identity" not in operations
    np.testing.assert_array_equal(cpu.lightly_optimized(light)(x), default(x))


def test_lightly_optimized_restores_the_threads_options_even_after_an_error():
    before = context.context().function_call_options.config_proto_serialized
    seen = []

    def fails():
        seen.append(context.context().function_call_options.config_proto_serialized)
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        cpu.lightly_optimized(fails)()
    assert seen == [cpu.light_call_options().config_proto_serialized]
    assert context.context().function_call_options.config_proto_serialized == before


class LightModel(cpu.LightGraphOptimization, keras.Model):
    pass


@pytest.mark.parametrize("light", [False, True])
def test_models_step_functions_are_lightly_optimized_when_set(light):
    inputs = keras.Input((3,))
    model = LightModel(inputs, keras.layers.Dense(2, name="dense")(inputs))
    model.light_graph_optimization = light
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    before = model.predict_on_batch(x)
    loss = model.train_on_batch(x, y)
    for name in ("predict_function", "train_function"):
        assert hasattr(getattr(model, name), "call_options") is light, name
    kernel, bias = model.get_layer("dense").get_weights()
    np.testing.assert_allclose(loss, np.mean(before ** 2), rtol=1e-6)
    np.testing.assert_allclose(model.predict_on_batch(x), x @ kernel + bias, rtol=1e-6)
    assert model.test_on_batch(x, y) == pytest.approx(np.mean((x @ kernel + bias) ** 2), rel=1e-6)
    assert hasattr(model.test_function, "call_options") is light
    # Keras makes the functions again after compile; they are lightly optimized again.
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    model.train_on_batch(x, y)
    assert hasattr(model.train_function, "call_options") is light
