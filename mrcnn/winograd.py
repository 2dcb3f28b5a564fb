"""3x3 convolutions by Winograd's minimal filtering algorithm F(4x4, 3x3).

A "same", stride-1 3x3 convolution computes each 4x4 block of output pixels from the 6x6
block of input pixels around it. Winograd's algorithm (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016) transforms each 6x6 input tile and the 3x3 kernel into
36 numbers each, per channel, multiplies them position by position (36 matrix products
[tiles, C] x [C, F]), and transforms the 36 products back into the 4x4 outputs. That is 36
multiplications for 16 outputs where the direct convolution does 144: 4 times fewer. The
transforms are small matrix products too (36 x 36 on the input side, 16 x 36 on the output
side): a few percent of the multiplications for 256 channels or more, but, bound by
memory, about a third of the time.

On a 2-core CPU without AVX-512, where oneDNN's direct convolution runs at the chip's peak, a
detect() call's large 3x3 convolutions took 0.6-0.7 times as long this way
(``bench/winograd.py``), although TensorFlow's matrix products run there at about two
thirds of the direct convolution's rate; small maps and few channels were slower, hence
``winograd_where_it_pays``. The numbers differ from the direct convolution's by rounding:
about 2e-5 of the output's largest magnitude in float32.
"""

import collections

import numpy as np
import tensorflow as tf

# The F(4x4, 3x3) matrices of Lavin and Gray (interpolation points 0, 1, -1, 2, -2 and
# infinity). One dimension: output = OUTPUT_1D @ ((KERNEL_1D @ g) * (INPUT_1D @ d)) for a 6-pixel
# input d and a 3-tap kernel g, output[i] = sum_k d[i + k] g[k] (correlation, as conv2d).
INPUT_1D = np.array([[4, 0, -5, 0, 1, 0],
                     [0, -4, -4, 1, 1, 0],
                     [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0],
                     [0, 2, -1, -2, 1, 0],
                     [0, 4, 0, -5, 0, 1]], np.float64)
KERNEL_1D = np.array([[1 / 4, 0, 0],
                      [-1 / 6, -1 / 6, -1 / 6],
                      [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6],
                      [1 / 24, -1 / 12, 1 / 6],
                      [0, 0, 1]], np.float64)
OUTPUT_1D = np.array([[1, 1, 1, 1, 1, 0],
                      [0, 1, -1, 2, -2, 0],
                      [0, 1, 1, 4, 4, 0],
                      [0, 1, -1, 8, -8, 1]], np.float64)
# Two dimensions, on row-major flattened tiles: the Kronecker products of the above.
INPUT_TRANSFORM = np.kron(INPUT_1D, INPUT_1D).astype(np.float32)      # [36, 36]
KERNEL_TRANSFORM = np.kron(KERNEL_1D, KERNEL_1D).astype(np.float32)   # [36, 9]
OUTPUT_TRANSFORM = np.kron(OUTPUT_1D, OUTPUT_1D).astype(np.float32)   # [16, 36]
TILE, OUTPUT_TILE = 6, 4

# winograd_where_it_pays uses the algorithm for convolutions with at least this many input
# and output channels, and of at least this many pixels (batch x height x width): below
# either, oneDNN's direct convolution was as fast or faster (the 64 and 128 channels of the
# backbone's first stages, the maps of a few ROIs, the 16x16 pyramid level).
MIN_CHANNELS = 256
MIN_PIXELS = 64 * 64
# in_bands does images of at least this many pixels in two bands, smaller ones in one: the
# second band's operations cost more time than they save memory on small maps.
BANDS_MIN_PIXELS = 256 * 256


def winograd_convolution(images, kernel):
    """``tf.nn.conv2d(images, kernel, 1, "SAME")`` for a 3x3 kernel, by F(4x4, 3x3).

    Args:
        images: [B, H, W, C] float32.
        kernel: [3, 3, C, F].

    Returns:
        [B, H, W, F].
    """
    kernel = tf.convert_to_tensor(kernel)
    if tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"Winograd's F(4x4, 3x3) needs a 3x3 kernel, not {kernel.shape[:2]}.")

    def convolve(transformed, kernels, tiling, first_row, end_row):
        return untiled(tf.matmul(transformed, kernels), tiling, first_row, end_row)

    return in_bands(images, kernel, convolve)


def in_bands(images, kernel, compute):
    """``compute``'s outputs for the images' bands of tile rows, one band after the other,
    put together: [B, H, W, F].

    Images of at least BANDS_MIN_PIXELS pixels (B x H x W, known when traced) are done in
    two bands, whose tiles, products and outputs are made in turn, so that the whole map's
    are never held at once (151 MB a stage for the pyramid's P2 of a 1024x1024 image);
    smaller ones in one. The kernel is transformed once the first band's tiles are there
    (``transformed_kernel``).

    Args:
        images: [B, H, W, C].
        kernel: [3, 3, C, F].
        compute: a function of a band's ``transformed_tiles``, the ``transformed_kernel``,
            the ``Tiling`` and the band's first and end tile rows, to the band's [B, h, W, F']
            outputs (``untiled``).
    """
    padded, tiling = tiled(images)
    large = (tiling.static_shape.is_fully_defined()
             and np.prod(tiling.static_shape) >= BANDS_MIN_PIXELS)
    bounds = [0, tiling.rows // 2, tiling.rows] if large else [0, tiling.rows]
    outputs, kernels = [], None
    for first_row, end_row in zip(bounds[:-1], bounds[1:]):
        with tf.control_dependencies(outputs[-1:]):
            transformed = transformed_tiles(padded, first_row, end_row)
        if kernels is None:
            with tf.control_dependencies([transformed]):
                kernels = transformed_kernel(kernel)
        outputs.append(compute(transformed, kernels, tiling, first_row, end_row))
    outputs = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=1)
    outputs.set_shape(tiling.static_shape.concatenate(outputs.shape[3:]))
    return outputs


class Tiling(collections.namedtuple("Tiling", "batch height width rows columns static_shape")):
    """How ``tiled`` cut [B, H, W, C] images: B, H, W and the rows and columns of 4x4 output
    tiles (scalar int32 tensors), and the images' static [B, H, W] shape."""


def tiled(images):
    """The images padded for their 6x6 tiles, and the ``Tiling``.

    [B, H, W, C] images are zero-padded by one pixel on each side (as "same" pads) and to a
    multiple of 4 pixels beyond: [B, 4 x ceil(H / 4) + 2, 4 x ceil(W / 4) + 2, C]. Their
    tiles overlap by 2 pixels, at a stride of 4.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    tiling = Tiling(shape[0], shape[1], shape[2], (shape[1] + 3) // 4, (shape[2] + 3) // 4,
                    images.shape[:3])
    padded = tf.pad(images, [[0, 0], [1, 4 * tiling.rows - tiling.height + 1],
                             [1, 4 * tiling.columns - tiling.width + 1], [0, 0]])
    return padded, tiling


def transformed_tiles(padded, first_row, end_row):
    """[36, N, C]: the transformed 6x6 tiles of tile rows [first_row, end_row) of ``tiled``'s
    padded images, N = B x (end_row - first_row) x tile columns, in row-major order over
    (image, tile row, tile column)."""
    channels = padded.shape[3]
    band = padded[:, OUTPUT_TILE * first_row:OUTPUT_TILE * end_row + TILE - OUTPUT_TILE]
    tiles = tf.image.extract_patches(band, [1, TILE, TILE, 1], [1, OUTPUT_TILE, OUTPUT_TILE, 1],
                                     [1, 1, 1, 1], "VALID")   # [B, rows, columns, 36 * C]
    tiles = tf.transpose(tf.reshape(tiles, [-1, TILE * TILE, channels]), [1, 0, 2])
    transformed = tf.matmul(INPUT_TRANSFORM, tf.reshape(tiles, [TILE * TILE, -1]))
    return tf.reshape(transformed, [TILE * TILE, -1, channels])


def untiled(products, tiling, first_row, end_row):
    """[B, h, W, F]: the output pixels of [36, N, F] products of ``transformed_tiles`` of tile
    rows [first_row, end_row) and transformed kernels, the image rows 4 x first_row to
    4 x end_row or H."""
    filters = products.shape[2]
    outputs = tf.matmul(OUTPUT_TRANSFORM, tf.reshape(products, [TILE * TILE, -1]))  # [16, N * F]
    outputs = tf.reshape(outputs, [OUTPUT_TILE, OUTPUT_TILE, tiling.batch, end_row - first_row,
                                   tiling.columns, filters])
    outputs = tf.reshape(tf.transpose(outputs, [2, 3, 0, 4, 1, 5]),
                         [tiling.batch, OUTPUT_TILE * (end_row - first_row),
                          OUTPUT_TILE * tiling.columns, filters])
    return outputs[:, :tiling.height - OUTPUT_TILE * first_row, :tiling.width]


def transformed_kernel(kernel):
    """[36, C, F]: each input-output channel pair's 3x3 kernel, [3, 3, C, F], transformed.

    Four times the kernel's size: ``in_bands`` makes it once the tiles it multiplies are
    there (a control dependency). Otherwise a graph transforms every layer's kernel as soon
    as it starts, and holds them all (290 MB for ResNet101's) through the backbone.
    """
    channels, filters = kernel.shape[2], kernel.shape[3]
    flat = tf.reshape(kernel, [9, channels * filters])
    return tf.reshape(tf.matmul(KERNEL_TRANSFORM, flat), [TILE * TILE, channels, filters])


def winograd_where_it_pays(images, kernel, direct, winograd=None):
    """``winograd(images, kernel)`` for a convolution of at least MIN_CHANNELS input and
    output channels and MIN_PIXELS pixels, else ``direct(images, kernel)``.

    The pixels are counted when the function is traced where the shape is static, and when
    it runs otherwise (the mask head's batch of detections): both ways are then in the graph.

    Args:
        images: [B, H, W, C]; kernel: [3, 3, C, F].
        direct: the convolution to use otherwise, a function of ``images`` and ``kernel``.
        winograd: ``winograd_convolution`` (the default), or a function of ``images`` and
            ``kernel`` that computes it and more (the RPN's heads), as ``direct`` does then.
    """
    images = tf.convert_to_tensor(images)
    winograd = winograd or winograd_convolution
    if (tuple(kernel.shape[:2]) != (3, 3)
            or min(kernel.shape[2], kernel.shape[3]) < MIN_CHANNELS):
        return direct(images, kernel)
    if images.shape[:3].is_fully_defined():
        pixels = int(np.prod(images.shape[:3]))
        return (winograd if pixels >= MIN_PIXELS else direct)(images, kernel)
    pixels = tf.reduce_prod(tf.shape(images)[:3])
    return tf.cond(pixels >= MIN_PIXELS, lambda: winograd(images, kernel),
                   lambda: direct(images, kernel))
