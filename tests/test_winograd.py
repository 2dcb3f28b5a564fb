"""Winograd's F(4x4, 3x3) convolution against numpy's and TensorFlow's direct convolutions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn import layers, winograd


def numpy_same_convolution(images, kernel):
    """tf.nn.conv2d(images, kernel, 1, "SAME") for odd kernels, in float64 numpy."""
    kh, kw = kernel.shape[:2]
    batch, height, width, _ = images.shape
    padded = np.pad(images.astype(np.float64),
                    [(0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)])
    out = np.zeros((batch, height, width, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i:i + height, j:j + width] @ kernel[i, j].astype(np.float64)
    return out


def test_one_dimensional_transforms_compute_a_correlation_exactly():
    """F(4, 3) in float64: four outputs of a 3-tap correlation from six inputs."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, g = rng.normal(size=6), rng.normal(size=3)
        fast = winograd.OUTPUT_1D @ ((winograd.KERNEL_1D @ g) * (winograd.INPUT_1D @ d))
        direct = [d[i:i + 3] @ g for i in range(4)]
        np.testing.assert_allclose(fast, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 8, 8, 3, 5), (2, 13, 10, 4, 6), (3, 1, 2, 2, 2),
                                   (1, 6, 17, 7, 3)])
@pytest.mark.parametrize("bands", [1, 2])
def test_winograd_convolution_is_the_same_convolution(shape, bands, monkeypatch):
    """Sizes that are and are not multiples of the 4-pixel output tile, batches, a one-row
    image (an empty first band), in one band and in two: numpy's direct convolution to
    float32 rounding."""
    monkeypatch.setattr(winograd, "BANDS_MIN_PIXELS", 1 if bands == 2 else 10 ** 9)
    band_tiles = []
    real = winograd.transformed_tiles
    monkeypatch.setattr(winograd, "transformed_tiles",
                        lambda *args: band_tiles.append(args[1:]) or real(*args))
    batch, height, width, channels, filters = shape
    rng = np.random.default_rng(1)
    images = rng.normal(size=(batch, height, width, channels)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, channels, filters)).astype(np.float32)
    out = winograd.winograd_convolution(images, kernel).numpy()
    expected = numpy_same_convolution(images, kernel)
    assert len(band_tiles) == bands
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_winograd_convolution_of_unknown_size_and_its_gradients():
    """Traced for [None, None, None, C] images, it gives conv2d's outputs and gradients."""
    rng = np.random.default_rng(2)
    images = tf.constant(rng.normal(size=(2, 9, 7, 4)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))
    weights = tf.constant(rng.normal(size=(2, 9, 7, 5)).astype(np.float32))

    def outputs_and_gradients(convolve):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4]),
                                      tf.TensorSpec([3, 3, 4, 5])])
        def run(x, k):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                out = convolve(x, k)
                loss = tf.reduce_sum(out * weights)
            return [out, *tape.gradient(loss, [x, k])]
        return run(images, kernel)

    fast = outputs_and_gradients(winograd.winograd_convolution)
    direct = outputs_and_gradients(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    for a, b in zip(fast, direct):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())


def test_winograd_convolution_needs_a_3x3_kernel():
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd.winograd_convolution(np.zeros((1, 8, 8, 2), np.float32),
                                      np.zeros((5, 5, 2, 2), np.float32))


def winograd_calls(monkeypatch, min_channels, min_pixels):
    """The list to which each winograd_convolution call appends its images' shape, with the
    size rule's thresholds set to ``min_channels`` and ``min_pixels``."""
    monkeypatch.setattr(winograd, "MIN_CHANNELS", min_channels)
    monkeypatch.setattr(winograd, "MIN_PIXELS", min_pixels)
    calls = []
    real = winograd.winograd_convolution
    monkeypatch.setattr(winograd, "winograd_convolution",
                        lambda x, k: calls.append(x.shape) or real(x, k))
    return calls


def test_winograd_runs_where_it_pays(monkeypatch):
    """Enough channels and pixels: Winograd's algorithm; fewer of either, or another kernel
    size: the direct convolution. Counted at tracing for static shapes, at run time for
    unknown ones, with the same numbers either way."""
    calls = winograd_calls(monkeypatch, min_channels=4, min_pixels=64)

    def direct(x, k):
        calls.append("direct")
        return tf.nn.conv2d(x, k, 1, "SAME")

    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 4, 4)).astype(np.float32)
    large = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)     # 64 pixels
    small = rng.normal(size=(1, 7, 9, 4)).astype(np.float32)     # 63
    winograd.winograd_where_it_pays(large, kernel, direct)
    winograd.winograd_where_it_pays(small, kernel, direct)
    winograd.winograd_where_it_pays(large, kernel[..., :3], direct)   # 3 output channels
    winograd.winograd_where_it_pays(large, rng.normal(size=(1, 1, 4, 4)).astype(np.float32),
                                    direct)
    assert calls == [(1, 8, 8, 4), "direct", "direct", "direct"]

    calls.clear()
    run = tf.function(lambda x: winograd.winograd_where_it_pays(x, kernel, direct),
                      input_signature=[tf.TensorSpec([None, None, None, 4])])
    for images in (large, small):
        np.testing.assert_allclose(run(images), numpy_same_convolution(images, kernel),
                                   rtol=0, atol=1e-4)
    assert len(calls) == 2   # both ways traced once, in one graph

    # Another function in Winograd's place (the RPN's, with its heads).
    doubled = winograd.winograd_where_it_pays(large, kernel, direct,
                                              lambda x, k: 2 * winograd.winograd_convolution(x, k))
    np.testing.assert_allclose(doubled, 2 * numpy_same_convolution(large, kernel), rtol=0,
                               atol=2e-4)


def test_conv2d_with_winograd_gives_keras_outputs(monkeypatch):
    """The Conv2D switch, with a folded BatchNorm, alone and beside in_halves."""
    calls = winograd_calls(monkeypatch, min_channels=1, min_pixels=1)
    inputs = keras.Input((11, 9, 3))
    batch_norm = layers.BatchNorm(False)
    conv = layers.Conv2D(6, 3, padding="same", batch_norm=batch_norm)
    model = keras.Model(inputs, batch_norm(conv(inputs)))
    batch_norm.moving_variance.assign(np.linspace(0.5, 2, 6, dtype=np.float32))
    batch_norm.beta.assign(np.linspace(-1, 1, 6, dtype=np.float32))
    images = np.random.default_rng(4).normal(size=(1, 11, 9, 3)).astype(np.float32)
    expected = model(images).numpy()
    assert not calls
    for in_halves in (False, True):
        conv.winograd, conv.in_halves = True, in_halves
        np.testing.assert_allclose(model(images), expected, rtol=0, atol=1e-4)
    assert len(calls) == 2
