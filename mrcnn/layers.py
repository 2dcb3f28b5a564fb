"""Custom Keras layers of Mask R-CNN and the TensorFlow graph helpers they use.

Coordinate conventions (the original's):
- Boxes inside the graph are normalized: [..., (y1, x1, y2, x2)] with
  (0, 0) the top-left pixel and (1, 1) the bottom-right one, as produced by
  ``norm_boxes_graph`` (pixel y2/x2 are exclusive and shifted by one).
- Box deltas are [..., (dy, dx, log(dh), log(dw))].

Every layer works on a batch whose size is ``config.IMAGES_PER_GPU`` (the
per-replica batch): like the original, the per-image graphs are applied with
``batch_slice``.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import layers as KL
# The tapes' recording (tf.custom_gradient's own mechanism), for ``with_gradient``.
from tensorflow.python.eager import record

from mrcnn.targets import CROWD_IOU, ROI_POSITIVE_IOU
from mrcnn.winograd import winograd_where_it_pays


# ---------------------------------------------------------------------------
# Graph helpers
#
# norm_boxes_graph, apply_box_deltas_graph, box_refinement_graph and
# overlaps_graph are the TensorFlow twins of the numpy functions of
# mrcnn.utils: the same arithmetic, kept apart on purpose, as in the
# original, because the graph needs TensorFlow ops and the data path numpy.
# The tests check each twin against the other.
# ---------------------------------------------------------------------------

def norm_boxes_graph(boxes, shape):
    """Pixel boxes to normalized coordinates.

    Args:
        boxes: [..., (y1, x1, y2, x2)] in pixels, y2/x2 exclusive.
        shape: [(height, width)] of the image, int or float tensor.

    Returns:
        [..., (y1, x1, y2, x2)] normalized float32 boxes.
    """
    h, w = tf.split(tf.cast(shape, tf.float32), 2)
    scale = tf.concat([h, w, h, w], axis=-1) - tf.constant(1.0)
    shift = tf.constant([0., 0., 1., 1.])
    return tf.divide(tf.cast(boxes, tf.float32) - shift, scale)


def denorm_boxes_graph(boxes, shape):
    """Normalized boxes back to int32 pixel boxes (y2/x2 exclusive)."""
    h, w = tf.split(tf.cast(shape, tf.float32), 2)
    scale = tf.concat([h, w, h, w], axis=-1) - tf.constant(1.0)
    shift = tf.constant([0., 0., 1., 1.])
    return tf.cast(tf.round(tf.multiply(boxes, scale) + shift), tf.int32)


# Largest log-scale a box delta may apply: a box grows at most 1000/16-fold.
# Without the bound, an early training step can predict exp(dh) = inf and the
# proposals become NaN (inf - inf), which ends the run.
MAX_LOG_SCALE = float(np.log(1000.0 / 16))


def apply_box_deltas_graph(boxes, deltas):
    """Apply [N, (dy, dx, log(dh), log(dw))] deltas to [N, (y1, x1, y2, x2)] boxes.

    The log-scales are clipped at MAX_LOG_SCALE.
    """
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height
    center_x = boxes[:, 1] + 0.5 * width
    center_y += deltas[:, 0] * height
    center_x += deltas[:, 1] * width
    height *= tf.exp(tf.minimum(deltas[:, 2], MAX_LOG_SCALE))
    width *= tf.exp(tf.minimum(deltas[:, 3], MAX_LOG_SCALE))
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return tf.stack([y1, x1, y1 + height, x1 + width], axis=1, name="apply_box_deltas_out")


def box_refinement_graph(box, gt_box):
    """Deltas [N, (dy, dx, log(dh), log(dw))] that turn ``box`` into ``gt_box`` ([N, 4] each)."""
    box = tf.cast(box, tf.float32)
    gt_box = tf.cast(gt_box, tf.float32)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    return tf.stack([(gt_center_y - center_y) / height,
                     (gt_center_x - center_x) / width,
                     tf.math.log(gt_height / height),
                     tf.math.log(gt_width / width)], axis=1)


def clip_boxes_graph(boxes, window):
    """Clip [N, (y1, x1, y2, x2)] boxes to ``window`` (y1, x1, y2, x2)."""
    wy1, wx1, wy2, wx2 = tf.split(window, 4)
    y1, x1, y2, x2 = tf.split(boxes, 4, axis=1)
    y1 = tf.maximum(tf.minimum(y1, wy2), wy1)
    x1 = tf.maximum(tf.minimum(x1, wx2), wx1)
    y2 = tf.maximum(tf.minimum(y2, wy2), wy1)
    x2 = tf.maximum(tf.minimum(x2, wx2), wx1)
    clipped = tf.concat([y1, x1, y2, x2], axis=1, name="clipped_boxes")
    clipped.set_shape((clipped.shape[0], 4))
    return clipped


def overlaps_graph(boxes1, boxes2):
    """IoU matrix [N1, N2] between [N1, 4] and [N2, 4] boxes."""
    b1 = tf.reshape(tf.tile(tf.expand_dims(boxes1, 1), [1, 1, tf.shape(boxes2)[0]]), [-1, 4])
    b2 = tf.tile(boxes2, [tf.shape(boxes1)[0], 1])
    b1_y1, b1_x1, b1_y2, b1_x2 = tf.split(b1, 4, axis=1)
    b2_y1, b2_x1, b2_y2, b2_x2 = tf.split(b2, 4, axis=1)
    y1 = tf.maximum(b1_y1, b2_y1)
    x1 = tf.maximum(b1_x1, b2_x1)
    y2 = tf.minimum(b1_y2, b2_y2)
    x2 = tf.minimum(b1_x2, b2_x2)
    intersection = tf.maximum(x2 - x1, 0) * tf.maximum(y2 - y1, 0)
    b1_area = (b1_y2 - b1_y1) * (b1_x2 - b1_x1)
    b2_area = (b2_y2 - b2_y1) * (b2_x2 - b2_x1)
    union = b1_area + b2_area - intersection
    iou = intersection / union
    return tf.reshape(iou, [tf.shape(boxes1)[0], tf.shape(boxes2)[0]])


def trim_zeros_graph(boxes, name="trim_zeros"):
    """Drop all-zero rows of [N, 4] boxes. Returns (boxes, non_zero bool [N])."""
    non_zeros = tf.cast(tf.reduce_sum(tf.abs(boxes), axis=1), tf.bool)
    boxes = tf.boolean_mask(boxes, non_zeros, name=name)
    return boxes, non_zeros


def batch_pack_graph(x, counts, num_rows):
    """Concatenate the first ``counts[i]`` rows of ``x[i]`` for each of ``num_rows`` items."""
    outputs = [x[i, :counts[i]] for i in range(num_rows)]
    return tf.concat(outputs, axis=0)


def parse_image_meta_graph(meta):
    """Split [batch, IMAGE_META_SIZE] image meta tensors into named parts.

    The layout is data.compose_image_meta's: image_id (1),
    original_image_shape (3), image_shape (3), window (4, pixels), scale (1),
    active_class_ids (NUM_CLASSES).
    """
    return {
        "image_id": meta[:, 0],
        "original_image_shape": meta[:, 1:4],
        "image_shape": meta[:, 4:7],
        "window": meta[:, 7:11],
        "scale": meta[:, 11],
        "active_class_ids": meta[:, 12:],
    }


def batch_slice(inputs, graph_fn, batch_size, names=None):
    """Run ``graph_fn`` on each item of a batch and stack the results.

    For graph code that only works on one item at a time.

    Args:
        inputs: a tensor or a list of tensors, batch dimension first.
        graph_fn: called with one slice of each input; returns a tensor or
            a tuple/list of tensors.
        batch_size: number of items to slice (batch dimension must be at
            least this long).
        names: optional names of the stacked outputs.

    Returns:
        One stacked tensor per output of ``graph_fn`` (a single tensor when
        it returns one).
    """
    if not isinstance(inputs, list):
        inputs = [inputs]

    outputs = []
    for i in range(batch_size):
        output_slice = graph_fn(*[x[i] for x in inputs])
        if not isinstance(output_slice, (tuple, list)):
            output_slice = [output_slice]
        outputs.append(output_slice)
    outputs = list(zip(*outputs))

    if names is None:
        names = [None] * len(outputs)
    result = [tf.stack(o, axis=0, name=n) for o, n in zip(outputs, names)]
    return result[0] if len(result) == 1 else result


def log2_graph(x):
    """Base-2 logarithm."""
    return tf.math.log(x) / tf.math.log(2.0)


# ---------------------------------------------------------------------------
# Building-block layers
# ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="mrcnn")
class BatchNorm(KL.BatchNormalization):
    """BatchNormalization that can be frozen in inference mode.

    With ``train_bn=False`` (the original's TRAIN_BN default) the layer always
    normalizes with its moving statistics, whatever the ``training`` flag:
    batches of one or two images give useless batch statistics. Gamma and
    beta stay trainable unless the layer itself is made non-trainable.
    """

    def __init__(self, train_bn=None, **kwargs):
        super().__init__(**kwargs)
        self.train_bn = train_bn

    def call(self, inputs, training=None):
        if self.folded:
            return inputs
        if self.train_bn is False:
            training = False
        return super().call(inputs, training=training)

    @property
    def folded(self):
        """True when a Conv2D (batch_norm=self) computes this layer, which then passes its input on."""
        return getattr(self, "_folded", False)

    def frozen_affine(self, bias=None):
        """The layer with its moving statistics, after a ``bias``, as ``y = x * scale + offset``.

        Args:
            bias: [channels] added to the layer's input first (a convolution's), or None.

        Returns:
            (scale, offset), each [channels]: scale = gamma / sqrt(moving_variance +
            epsilon), offset = beta + (bias - moving_mean) * scale (gamma 1, beta 0 and bias
            0 where there are none). Both are differentiable in gamma, beta and bias.
        """
        return self._affine_terms(*self._read(bias))[2:]

    def fold(self, kernel, bias=None, ready=()):
        """A convolution's ``kernel`` and ``bias`` with this layer, frozen, folded in:
        ``conv(x, kernel) + bias`` and then this layer is ``conv(x, kernel * scale) + offset``
        (scale and offset of ``frozen_affine``).

        Args:
            kernel: [..., channels]; bias: [channels] or None.
            ready: tensors that the scaled kernel waits for in a graph (``_input_ready``).

        Returns:
            (kernel * scale [..., channels], offset [channels]), differentiable in the kernel,
            the bias, gamma and beta by one gradient function (``with_gradient``): about half
            the operations that TensorFlow's gradients of its products trace.
        """
        kernel = tf.convert_to_tensor(kernel)
        bias, gamma, beta = self._read(bias)
        with record.stop_recording():
            inverse_deviation, centered, scale, offset = self._affine_terms(bias, gamma, beta)

        def forward(kernel, *_):
            with tf.control_dependencies(ready):
                return kernel * scale, offset

        def gradient(scaled_kernel_gradient, offset_gradient):
            gradients = [scaled_kernel_gradient * scale]
            if bias is not None:
                gradients.append(offset_gradient * scale)
            if gamma is not None:
                scale_gradient = (tf.reduce_sum(scaled_kernel_gradient * kernel,
                                                list(range(kernel.shape.rank - 1)))
                                  + offset_gradient * centered)
                gradients.append(scale_gradient * inverse_deviation)
            if beta is not None:
                gradients.append(offset_gradient)
            return gradients

        inputs = [kernel] + [w for w in (bias, gamma, beta) if w is not None]
        return with_gradient(inputs, forward, scoped_gradient(gradient))

    def _read(self, bias):
        """[bias, gamma, beta] as tensors, None where there is none."""
        return [None if w is None else tf.convert_to_tensor(w)
                for w in (bias, self.gamma if self.scale else None,
                          self.beta if self.center else None)]

    def _affine_terms(self, bias, gamma, beta):
        """(1 / sqrt(moving_variance + epsilon), bias - moving_mean, scale, offset), each
        [channels], from ``_read``'s tensors (see ``frozen_affine``)."""
        inverse_deviation = tf.math.rsqrt(tf.convert_to_tensor(self.moving_variance)
                                          + self.epsilon)
        mean = tf.convert_to_tensor(self.moving_mean)
        centered = -mean if bias is None else bias - mean
        scale = inverse_deviation if gamma is None else inverse_deviation * gamma
        offset = centered * scale
        return inverse_deviation, centered, scale, (offset if beta is None else offset + beta)

    def get_config(self):
        return {**super().get_config(), "train_bn": self.train_bn}


@keras.saving.register_keras_serializable(package="mrcnn")
class Conv2D(KL.Conv2D):
    """keras.layers.Conv2D with two speed-ups that keep its weights and its results.

    * ``batch_norm=bn`` folds the frozen BatchNorm (``train_bn=False``) that the graph calls
      on this layer's output: this layer computes ``bn(conv(x))`` from bn's moving
      statistics as ``conv(x, kernel * scale) + offset`` (see BatchNorm.fold and
      BatchNorm.frozen_affine) and bn, called next as usual, passes its input on. Both
      layers keep their names and weights, so weight files and ``set_trainable`` see them as
      before, and gamma and beta still train; but the BatchNorm's input is never
      materialised, so a training step neither computes it nor keeps it for the gamma
      gradient (about a quarter of a ResNet's activation memory). This layer's own output
      is then the normalised one.
    * A kernel that covers the whole input (``padding="valid"``, stride 1, input
      height and width equal to the kernel's, as in the classifier head) is computed as one
      matrix product of the flattened input and the reshaped kernel, which CPU libraries
      run several times faster than a convolution of that shape. With a folded BatchNorm
      its output is scaled, ``conv(x, kernel) * scale``, rather than its larger kernel.

    And five switches for CPUs (set by ``use_cpu_convolutions``). ``in_halves`` runs the
    convolution of one image as a batch (see ``mrcnn.cpu``): a "same", stride-1 convolution
    with an odd kernel as a batch of the image's two halves (``convolution_in_halves``), a
    1x1 convolution as a batch of the image's rows (``pointwise_convolution_by_rows``).
    ``winograd``, for inference on a CPU without AVX-512, runs a "same", stride-1 3x3
    convolution of enough channels and pixels by Winograd's algorithm
    (``winograd.winograd_where_it_pays``), before ``in_halves``.
    ``matmul_kernel_gradient`` computes the kernel gradient of the former as matrix products
    (``same_convolution``). ``flipped_input_gradient``, for training on a CPU, computes the
    input gradient of a "same", stride-1 convolution with an odd kernel as the convolution of
    the output gradient with the flipped kernel (``same_convolution``), which oneDNN runs
    with its forward kernel: 1.6 times faster than TensorFlow's Conv2DBackpropInput for the
    mask head's 14x14 maps without AVX-512. ``pointwise_matmul``, for training on a CPU,
    computes a 1x1 convolution as one matrix product of the pixels and the kernel
    (``pointwise_convolution_as_matmul``; before ``in_halves``), whose gradients are matrix
    products too. All off is Keras's convolution. A sixth switch, for any device, is set by
    the training model on the pyramid's 3x3 convolutions: ``sparse_gradient``
    back-propagates only from the output positions that have a gradient when they are few
    (``sparse_convolution_gradients``).
    """

    in_halves = False
    winograd = False
    matmul_kernel_gradient = False
    flipped_input_gradient = False
    pointwise_matmul = False
    sparse_gradient = False

    def __init__(self, *args, batch_norm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._batch_norm = None
        if batch_norm is not None:
            if batch_norm.train_bn is not False:
                raise ValueError("Only a frozen BatchNorm (train_bn=False) can be folded.")
            # The model owns the BatchNorm; a weak reference keeps Keras from tracking its
            # weights as this layer's too (they would be saved and trained twice).
            self._batch_norm = weakref.ref(batch_norm)
            batch_norm._folded = True

    def build(self, input_shape):
        super().build(input_shape)
        self._whole_input = (self.padding == "valid" and tuple(self.strides) == (1, 1)
                             and tuple(self.dilation_rate) == (1, 1) and self.groups == 1
                             and tuple(input_shape[1:3]) == tuple(self.kernel_size))
        self._same_odd = (self.padding == "same" and tuple(self.strides) == (1, 1)
                          and tuple(self.dilation_rate) == (1, 1) and self.groups == 1
                          and self.kernel_size[0] % 2 == 1 and self.kernel_size[1] % 2 == 1
                          and self.kernel_size != (1, 1))
        self._pointwise = (tuple(self.kernel_size) == (1, 1) and self.groups == 1
                           and tuple(self.dilation_rate) == (1, 1))
        if self._batch_norm is not None and not self._batch_norm().built:
            self._batch_norm().build(self.compute_output_shape(input_shape))

    def convolution_op(self, inputs, kernel):
        if self._same_odd and (self.in_halves or self.winograd or self.matmul_kernel_gradient
                               or self.flipped_input_gradient or self.sparse_gradient):
            return same_convolution(inputs, kernel, self.in_halves, self.matmul_kernel_gradient,
                                    self.sparse_gradient, self.flipped_input_gradient,
                                    self.winograd)
        if self._pointwise and self.pointwise_matmul:
            return pointwise_convolution_as_matmul(inputs, kernel, self.strides)
        if self._pointwise and self.in_halves:
            return pointwise_convolution_by_rows(inputs, kernel, self.strides)
        if not self._whole_input:
            return super().convolution_op(inputs, kernel)
        flat = tf.reshape(inputs, [-1, int(np.prod(kernel.shape[:3]))])
        outputs = tf.matmul(flat, tf.reshape(kernel, [-1, self.filters]))
        return tf.reshape(outputs, [-1, 1, 1, self.filters])

    def call(self, inputs):
        if self._batch_norm is None:
            return super().call(inputs)
        batch_norm, bias = self._batch_norm(), self.bias if self.use_bias else None
        if self._whole_input:
            # Such a kernel has more weights than a batch of ROIs has outputs (7 * 7 * 256
            # to each of 1024 channels in the box head): the outputs are scaled instead,
            # and no scaled copy of the kernel is made.
            scale, offset = batch_norm.frozen_affine(bias)
            outputs = self.convolution_op(inputs, tf.convert_to_tensor(self.kernel)) * scale
        else:
            kernel, offset = batch_norm.fold(self.kernel, bias, _input_ready(inputs))
            outputs = self.convolution_op(inputs, kernel)
        outputs = tf.nn.bias_add(outputs, offset)
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package="mrcnn")
class Conv2DTranspose(KL.Conv2DTranspose):
    """keras.layers.Conv2DTranspose, with tiles that do not overlap computed as a matrix product.

    With "valid" padding and strides equal to a square kernel (the mask head's 2x2, stride-2
    upsampling), each input pixel's output is its own kh x kw tile: one matrix product of the
    pixels [B * H * W, C] and the kernel [C, kh * kw * filters], put in place by
    ``tf.nn.depth_to_space``. The same weights and results as Keras's layer, whose transposed
    convolution TensorFlow runs as Conv2DBackpropInput: 1.5 times slower on a CPU for the
    mask head's 14x14 maps. Other shapes run as Keras's layer.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self._tiles = (self.padding == "valid" and self.data_format == "channels_last"
                       and self.kernel_size[0] == self.kernel_size[1]
                       and tuple(self.strides) == tuple(self.kernel_size)
                       and tuple(self.dilation_rate) == (1, 1) and self.output_padding is None)

    def call(self, inputs):
        if not self._tiles:
            return super().call(inputs)
        batch, height, width, channels = dimensions(inputs)
        # kernel [kh, kw, filters, C] -> [C, (kh, kw, filters)], the order depth_to_space reads.
        kernel = tf.reshape(tf.transpose(self.kernel, [3, 0, 1, 2]), [channels, -1])
        tiles = tf.matmul(tf.reshape(inputs, [-1, channels]), kernel)
        tiles = tf.reshape(tiles, [batch, height, width, kernel.shape[1]])
        outputs = tf.nn.depth_to_space(tiles, self.kernel_size[0])
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


def _input_ready(inputs):
    """Control inputs that make an operation wait for a layer's ``inputs`` in a graph (none
    when eager).

    A folded kernel is scaled once its convolution's input is there: otherwise the graph
    scales every layer's kernel as soon as a step starts, and a copy of all the weights is
    held at the memory peak. oneDNN's graph rewrite fuses a Pad with the convolution that
    reads it, and a control edge from that Pad would then close a cycle; the wait is for
    the Pad's own input instead.
    """
    if not tf.inside_function():
        return []
    if inputs.op.type in ("Pad", "PadV2", "MirrorPad"):
        inputs = inputs.op.inputs[0]
    return [inputs]


def convolution_in_halves(images, kernel, then=None):
    """A "same", stride-1 convolution of [B, H, W, C] images as one of 2B half images.

    The top and bottom halves of each image (with the kernel's reach of rows beyond the
    seam, and zero padding outside the image, as "same" pads) are stacked into one batch,
    each image's top half before its bottom half, and convolved with "valid" padding: the
    numbers of ``tf.nn.conv2d(images, kernel, 1, "SAME")``, run by oneDNN's direct kernel for
    batches where a batch of one image would fall back to im2col (see ``mrcnn.cpu``). The
    convolved halves of an image lie one after the other in memory, so they are put back
    together without a copy. An odd height gets one more zero row at the bottom, whose
    output row is dropped.

    Args:
        images: [B, H, W, C], H >= 1.
        kernel: [kh, kw, C, F].
        then: a pixel-wise function applied to the convolved halves, [2B, h, W, F] to
            [2B, h, W, F'], before they are put together (the RPN's 1x1 convolutions), so
            that the F-channel map of the whole image is never made.

    Returns:
        [B, H, W, F], or [B, H, W, F'] with ``then``.
    """
    images = tf.convert_to_tensor(images)
    kernel_height, kernel_width = kernel.shape[:2]
    top, left = (kernel_height - 1) // 2, (kernel_width - 1) // 2
    _, height, width, channels = dimensions(images)  # ints where static: fewer operations
    half = (height + 1) // 2
    rows = half + kernel_height - 1   # of each padded half
    padded = tf.pad(images, [[0, 0], [top, kernel_height - 1 - top + 2 * half - height],
                             [left, kernel_width - 1 - left], [0, 0]])
    # The halves' rows gathered, [B, 2 * rows, ...], are the [2B, rows, ...] batch: one
    # operation (five to trace with its constants), not two slices and a stack (eleven).
    if isinstance(half, int):
        taken = np.r_[:rows, half:half + rows].astype(np.int32)
    else:
        taken = tf.concat([tf.range(rows), tf.range(half, half + rows)], 0)
    halves = tf.reshape(tf.gather(padded, taken, axis=1),
                        [-1, rows, width + kernel_width - 1, channels])
    convolved = tf.nn.conv2d(halves, kernel, strides=1, padding="VALID")   # [2B, half, W, F]
    if then is not None:
        convolved = then(convolved)
    outputs = tf.reshape(convolved, [-1, 2 * half, width, convolved.shape[-1]])
    if not (isinstance(height, int) and height % 2 == 0):
        outputs = outputs[:, :height]
    outputs.set_shape(images.shape[:3].concatenate(convolved.shape[3:]))
    return outputs


def strided_pixels(images, strides):
    """The pixels of [B, H, W, C] ``images`` that a 1x1 kernel with ``strides`` reads, every
    stride-th row and column: [B, ceil(H / row stride), ceil(W / column stride), C]."""
    images = tf.convert_to_tensor(images)
    if tuple(strides) != (1, 1):
        images = images[:, ::strides[0], ::strides[1]]
    return images


def pointwise_convolution_as_matmul(images, kernel, strides=(1, 1)):
    """A 1x1 convolution of [B, H, W, C] images as one matrix product [B * H * W, C] x [C, F].

    The numbers of ``tf.nn.conv2d(images, kernel, strides, "VALID")``, with the gradients of a
    matrix product: for training on a CPU. Without AVX-512, TensorFlow's Conv2DBackpropInput
    took 3-10 times as long as the forward convolution for the backbone's 1x1 convolutions,
    whether of whole images or of a batch of rows (``pointwise_convolution_by_rows``); the
    matrix products about as long. Arguments and result as ``pointwise_convolution_by_rows``.
    """
    images = strided_pixels(images, strides)
    batch, height, width, channels = dimensions(images)
    filters = kernel.shape[3]
    outputs = tf.matmul(tf.reshape(images, [-1, channels]), tf.reshape(kernel, [channels, filters]))
    outputs = tf.reshape(outputs, [batch, height, width, filters])
    outputs.set_shape(images.shape[:3].concatenate(kernel.shape[3:]))
    return outputs


def pointwise_convolution_by_rows(images, kernel, strides=(1, 1)):
    """A 1x1 convolution of [B, H, W, C] images as one of B * H one-row images.

    A 1x1 kernel sees one pixel at a time, so an image's rows can be convolved as a batch
    of images one row high, with nothing shared between them: the numbers of
    ``tf.nn.conv2d(images, kernel, strides, "VALID")``, run by oneDNN's direct kernel where
    a batch of one image falls back to a matrix product that is 1.4-3.5 times slower
    without AVX-512 (the backbone's 1x1 convolutions; see ``mrcnn.cpu``). A stride first
    takes every stride-th row and column, the pixels such a kernel reads.

    Args:
        images: [B, H, W, C].
        kernel: [1, 1, C, F].
        strides: (row stride, column stride).

    Returns:
        [B, ceil(H / row stride), ceil(W / column stride), F].
    """
    images = strided_pixels(images, strides)
    batch, height, width, channels = dimensions(images)
    rows = tf.reshape(images, [-1, 1, width, channels])
    outputs = tf.nn.conv2d(rows, kernel, strides=1, padding="VALID")     # [B * H, 1, W, F]
    outputs = tf.reshape(outputs, [batch, height, width, kernel.shape[3]])
    outputs.set_shape(images.shape[:3].concatenate(kernel.shape[3:]))
    return outputs


def same_convolution(images, kernel, in_halves=False, matmul_kernel_gradient=False,
                     sparse_gradient=False, flipped_input_gradient=False, winograd=False):
    """``tf.nn.conv2d(images, kernel, 1, "SAME")`` for an odd kernel, run the CPU's way.

    With ``in_halves`` the convolution runs as ``convolution_in_halves``; with ``winograd``
    a 3x3 convolution runs by Winograd's algorithm where that pays
    (``winograd.winograd_where_it_pays``), before ``in_halves``. With
    ``matmul_kernel_gradient`` the kernel gradient is kh * kw matrix products, one per
    kernel position, of the shifted images and the output gradient
    (``kernel_gradient_graph``): on CPU several times faster than TensorFlow's
    Conv2DBackpropFilter for large feature maps (about 4x without AVX-512, 1.5x with it,
    for the RPN's convolution on P2). With any of ``matmul_kernel_gradient``,
    ``sparse_gradient`` and ``flipped_input_gradient`` the image gradient is the convolution
    of the output gradient with the flipped kernel (in halves too with ``in_halves``), not
    TensorFlow's Conv2DBackpropInput. With ``sparse_gradient``, an output gradient that is
    zero at all but a few positions is back-propagated from those positions only
    (``sparse_convolution_gradients``).

    Args:
        images: [B, H, W, C]; kernel: [kh, kw, C, F], kh and kw odd.

    Returns:
        [B, H, W, F].
    """
    direct = convolution_in_halves if in_halves else (
        lambda x, k: tf.nn.conv2d(x, k, strides=1, padding="SAME"))
    convolve = (lambda x, k: winograd_where_it_pays(x, k, direct)) if winograd else direct
    if not (matmul_kernel_gradient or sparse_gradient or flipped_input_gradient):
        return convolve(images, kernel)

    def dense_gradients(images, kernel, output_gradient):
        flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
        if matmul_kernel_gradient:
            kernel_gradient = kernel_gradient_graph(images, output_gradient, kernel.shape)
        else:
            kernel_gradient = tf.compat.v1.nn.conv2d_backprop_filter(
                images, tf.shape(kernel), output_gradient, [1, 1, 1, 1], "SAME")
        return convolve(output_gradient, flipped), kernel_gradient

    images, kernel = tf.convert_to_tensor(images), tf.convert_to_tensor(kernel)

    def gradient(output_gradient):
        if not sparse_gradient:
            return dense_gradients(images, kernel, output_gradient)
        positions = pixels_with_gradient(output_gradient)
        pixels = tf.size(output_gradient, tf.int64) // kernel.shape[3]
        return tf.cond(
            tf.shape(positions, tf.int64)[0] * SPARSE_GRADIENT_MAX_SHARE_INVERSE <= pixels,
            lambda: sparse_convolution_gradients(images, kernel, output_gradient, positions),
            lambda: dense_gradients(images, kernel, output_gradient))

    return with_gradient([images, kernel], convolve, scoped_gradient(gradient))


def with_gradient(inputs, forward, gradient):
    """``forward(*inputs)``, differentiated by ``gradient`` on the active gradient tapes.

    What ``tf.custom_gradient`` does for a function of tensors, without what it adds to a
    traced graph: an IdentityN of the function's outputs and inputs, and a zero-filled
    gradient for each input it passes through (two shape constants and a Fill per input),
    which TensorFlow drops again when it prunes the graph: some 380 operations to trace in
    a training step of ResNet101. The forward pass is not recorded on the tapes; only the
    tapes see ``gradient`` (``tf.gradients`` in a graph differentiates the forward
    operations themselves, by TensorFlow's own gradients: the same gradients).

    Args:
        inputs: list of tensors.
        forward: function of the inputs, returning a tensor or a tuple of tensors (none of
            them an input).
        gradient: function of the outputs' gradients (zeros for an output that the loss
            does not reach), returning one gradient or None per input.

    Returns:
        ``forward``'s outputs.
    """
    with record.stop_recording():
        outputs = forward(*inputs)
    record.record_operation("with_gradient", tf.nest.flatten(outputs), inputs,
                            lambda *output_gradients: list(gradient(*output_gradients)))
    return outputs


def scoped_gradient(gradient):
    """A gradient function for ``with_gradient``, run in the name scope of the gradients of
    the scope it is made in ("gradient_tape/<layer scope>/"), as TensorFlow names its own.

    TensorFlow calls such a function outside any name scope: its operations would be
    named after no layer, in graphs and in profiles. Call in the forward function.
    """
    scope = tf.get_current_name_scope()

    def scoped(*output_gradients):
        with tf.name_scope(f"gradient_tape/{scope}/" if scope else "gradient_tape/"):
            return gradient(*output_gradients)

    return scoped


# same_convolution's sparse gradient runs when at most 1 / SPARSE_GRADIENT_MAX_SHARE_INVERSE of
# the output positions have a gradient; above that the dense kernels are the faster.
SPARSE_GRADIENT_MAX_SHARE_INVERSE = 8


def sparse_convolution_gradients(images, kernel, output_gradient, positions):
    """The image and kernel gradients of a "same", stride-1 convolution, from the
    output positions where the output gradient is not zero.

    Output pixel (b, y, x) is the product of its window (``convolution_windows``) and the
    kernel, flattened to [kh * kw * C, F]. Only the K given positions contribute to the
    gradients (at the others the output gradient is zero): the kernel gradient is the
    product of their K windows and K output-gradient rows, and the image gradient adds
    each row times the kernel back into its window. The numbers of the dense gradients,
    in another order of summation: in training, the pyramid's 3x3 convolutions get a
    gradient from ROIAlign at the four pixels around each of its sample points and from the
    RPN at the anchors its losses sample, a few percent of P2's pixels.

    Args:
        images: [B, H, W, C]; kernel: [kh, kw, C, F], kh and kw odd.
        output_gradient: [B, H, W, F].
        positions: [K, (b, y, x)] int64, every pixel where ``output_gradient`` is not zero
            (others may be listed too).

    Returns:
        image gradient [B, H, W, C], kernel gradient [kh, kw, C, F].
    """
    windows, placement = convolution_windows(images, kernel.shape, positions)
    return window_gradients(images, kernel, windows, placement,
                            tf.gather_nd(output_gradient, positions))


def pixels_with_gradient(output_gradient):
    """[K, (b, y, x)] int64: the pixels where the [B, H, W, F] gradient is not zero."""
    return tf.where(tf.reduce_any(tf.not_equal(output_gradient, 0), axis=-1))


def window_gradients(images, kernel, windows, placement, rows):
    """The image and kernel gradients of a "same", stride-1 convolution from K pixels.

    Args:
        images: [B, H, W, C]; kernel: [kh, kw, C, F].
        windows, placement: ``convolution_windows`` of the K pixels.
        rows: [K, F], the output gradient at those pixels (zero at all others).

    Returns:
        image gradient [B, H, W, C], kernel gradient [kh, kw, C, F].
    """
    kernel_gradient = tf.reshape(tf.matmul(windows, rows, transpose_a=True), kernel.shape)
    image_rows = tf.matmul(rows, tf.reshape(kernel, [-1, kernel.shape[3]]), transpose_b=True)
    return add_windows(image_rows, placement, images), kernel_gradient


def convolution_windows(images, kernel_shape, positions):
    """What a "same", stride-1 convolution's kernel sees at K output pixels.

    Args:
        images: [B, H, W, C].
        kernel_shape: (kh, kw, C, F), kh and kw odd.
        positions: [K, (b, y, x)] int64 output pixels.

    Returns:
        windows [K, kh * kw * C]: ``images[b, y - kh // 2 : y + kh // 2 + 1, x - kw // 2 :
        x + kw // 2 + 1]`` flattened in the kernel's order, zero outside the images (as
        "same" pads); and their placement, for ``add_windows``: (pixels [K, kh * kw, 3],
        each window pixel's (b, y, x), or (0, 0, 0) outside the images; inside [K, kh * kw]
        bool). No padded copy of the images is made.
    """
    kernel_height, kernel_width = kernel_shape[0], kernel_shape[1]
    offsets = tf.constant([[0, i - kernel_height // 2, j - kernel_width // 2]
                           for i in range(kernel_height) for j in range(kernel_width)], tf.int64)
    pixels = positions[:, tf.newaxis] + offsets
    shape = tf.shape(images, tf.int64)
    inside = tf.reduce_all(tf.logical_and(pixels[..., 1:] >= 0, pixels[..., 1:] < shape[1:3]),
                           axis=-1)
    pixels = tf.where(inside[..., tf.newaxis], pixels, tf.zeros_like(pixels))
    values = tf.where(inside[..., tf.newaxis], tf.gather_nd(images, pixels),
                      tf.zeros((), images.dtype))
    return (tf.reshape(values, [-1, kernel_height * kernel_width * images.shape[3]]),
            (pixels, inside))


def add_windows(window_values, placement, images):
    """The [B, H, W, C] sum of K windows' values put back where ``convolution_windows``
    took them (``placement``), overlaps added and what falls outside the images dropped;
    ``window_values`` is [K, kh * kw * C]."""
    pixels, inside = placement
    values = tf.reshape(window_values, [-1, pixels.shape[1], images.shape[3]])
    values = tf.where(inside[..., tf.newaxis], values, tf.zeros((), values.dtype))
    return tf.scatter_nd(pixels, values, tf.shape(images, tf.int64))


def kernel_gradient_graph(images, output_gradient, kernel_shape):
    """The gradient of a "same", stride-1 convolution's kernel, as matrix products.

    Kernel position (i, j) sees the images shifted by (i - kh // 2, j - kw // 2): its
    gradient is the product of that shifted window, as [pixels, C], transposed, and the
    output gradient, as [pixels, F]. With the images zero-padded to [B, H + 2t, W + 2l, C]
    (t = kh // 2, l = kw // 2) and flattened to rows of C, and the output gradient padded
    with zeros to the same [H + 2t, W + 2l] grid and flattened likewise, output pixel k of
    the grid reads padded row k + i * (W + 2l) + j: every window is a contiguous run of
    the padded rows, taken without a copy. The padding pixels of the output gradient are
    zero, so what the windows read across a row's or an image's edge adds nothing.

    Args:
        images: [B, H, W, C]; output_gradient: [B, H, W, F].
        kernel_shape: (kh, kw, C, F), kh and kw odd.

    Returns:
        [kh, kw, C, F].
    """
    kernel_height, kernel_width, channels, filters = kernel_shape
    top, left = kernel_height // 2, kernel_width // 2
    batch, height, width, _ = dimensions(images)
    padded_width = width + 2 * left
    # The padded images are made once the output gradient is there, not as soon as the
    # images are.
    with tf.control_dependencies([output_gradient]):
        padded = tf.pad(images, [[0, 0], [top, top], [left, left], [0, 0]])
    rows = tf.reshape(padded, [-1, channels])
    # Grid pixels up to the last one with a gradient; the windows of later ones would run
    # past the padded rows.
    pixels = batch * (height + 2 * top) * padded_width - (2 * top * padded_width + 2 * left)
    gradient = tf.pad(output_gradient, [[0, 0], [0, 2 * top], [0, 2 * left], [0, 0]])
    gradient = tf.reshape(gradient, [-1, filters])[:pixels]
    window_size = tf.stack([pixels, channels])
    # The windows' starts: one constant where the sizes are static, not one per position.
    starts = tf.unstack(tf.convert_to_tensor(
        [[i * padded_width + j, 0] for i in range(kernel_height) for j in range(kernel_width)],
        tf.int32))
    positions = [tf.matmul(tf.slice(rows, start, window_size), gradient, transpose_a=True)
                 for start in starts]
    return tf.reshape(tf.stack(positions), kernel_shape)


def use_cpu_convolutions(model, in_halves, matmul_kernel_gradient, pointwise_matmul=False,
                         flipped_input_gradient=False, winograd=False):
    """Set the CPU switches of every mrcnn ``Conv2D`` of ``model`` and of the models in it.

    The convolutions of the heads, wrapped in TimeDistributed, run on batches of ROIs: they
    take ``flipped_input_gradient`` and ``winograd`` only. The flipped input gradient pays
    there, where the batch of ROIs makes the kernel's flipped copy small beside the
    convolution, and not on the few pixels of the backbone's last stages in small images
    (the image convolutions flip their kernels with ``matmul_kernel_gradient``, for large
    images). Call before the model's functions are traced.
    """
    for layer, in_heads in mrcnn_convolutions(model):
        if in_heads:
            layer.flipped_input_gradient = flipped_input_gradient
        else:
            layer.in_halves = in_halves
            layer.matmul_kernel_gradient = matmul_kernel_gradient
            layer.pointwise_matmul = pointwise_matmul
        layer.winograd = winograd


def mrcnn_convolutions(model):
    """Yield (layer, in_heads) for every mrcnn ``Conv2D`` of ``model`` and of the models in
    it; ``in_heads``: wrapped in TimeDistributed (the heads' convolutions of ROIs)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from mrcnn_convolutions(layer)
        elif isinstance(layer, Conv2D):
            yield layer, False
        elif isinstance(layer, TimeDistributed) and isinstance(layer.layer, Conv2D):
            yield layer.layer, True


def conv_bn(x, filters, kernel_size, conv_name, bn_name, strides=(1, 1), padding="valid",
            use_bias=True, train_bn=True, time_distributed=False):
    """A Conv2D named ``conv_name`` and a BatchNorm named ``bn_name`` applied to ``x``.

    A frozen BatchNorm (``train_bn=False``, the default TRAIN_BN) is folded into the
    convolution (see Conv2D): the same two layers and weights, one convolution. With
    ``time_distributed`` both layers are wrapped in TimeDistributed (the heads, on
    [batch, rois, height, width, channels]), the wrappers carrying the names.
    """
    batch_norm = BatchNorm(train_bn, name=None if time_distributed else bn_name)
    conv = Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                  name=None if time_distributed else conv_name,
                  batch_norm=batch_norm if train_bn is False else None)
    if time_distributed:
        conv = TimeDistributed(conv, name=conv_name)
        batch_norm = TimeDistributed(batch_norm, name=bn_name)
    return batch_norm(conv(x))


@keras.saving.register_keras_serializable(package="mrcnn")
class TimeDistributed(KL.Wrapper):
    """Apply a layer to every item of the second axis by folding it into the batch.

    Input [batch, items, ...] is reshaped to [batch * items, ...], the wrapped
    layer runs once, and the result is reshaped to [batch, items, ...]. Same
    weights and semantics as ``keras.layers.TimeDistributed``, which in
    Keras 3 unrolls a Python loop over a static item axis (200 ROIs -> 200
    copies of the layer in the graph).
    """

    def build(self, input_shape):
        if not self.layer.built:  # a folding Conv2D builds its BatchNorm
            self.layer.build((None, *input_shape[2:]))
        self.built = True

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None, *input_shape[2:]))
        return (input_shape[0], input_shape[1], *inner[1:])

    def call(self, inputs, training=None):
        batch, items = dimensions(inputs)[:2]
        # Static item dimensions stay static: TFLite's builtin convolution needs
        # to know its input channels.
        folded = tf.reshape(inputs, [-1, *dimensions(inputs)[2:]])
        if self.layer._call_has_training_arg:
            outputs = self.layer(folded, training=training)
        else:
            outputs = self.layer(folded)
        return tf.reshape(outputs, [batch, items, *dimensions(outputs)[1:]])


def dimensions(tensor):
    """The dimensions of ``tensor``: ints where static, scalar int32 tensors where not."""
    if tensor.shape.is_fully_defined():
        return tensor.shape.as_list()   # no Shape operation to trace
    dynamic = tf.unstack(tf.shape(tensor), tensor.shape.rank)  # two operations, not 4 a size
    return [dynamic[i] if size is None else size for i, size in enumerate(tensor.shape)]


@keras.saving.register_keras_serializable(package="mrcnn")
class AnchorsLayer(KL.Layer):
    """Broadcast a fixed [A, 4] array of normalized anchors to the batch.

    Used by the training model, whose image size is fixed by the
    configuration. Input: any [batch, ...] tensor. Output: [batch, A, 4].
    """

    def __init__(self, anchors, **kwargs):
        super().__init__(**kwargs)
        self.anchors = np.asarray(anchors, dtype=np.float32)

    def call(self, inputs):
        batch = tf.shape(inputs)[0]
        anchors = tf.constant(self.anchors)
        return tf.broadcast_to(anchors[None], [batch, *self.anchors.shape])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.anchors.shape)

    def get_config(self):
        return {**super().get_config(), "anchors": self.anchors.tolist()}


@keras.saving.register_keras_serializable(package="mrcnn")
class ActiveRows(KL.Layer):
    """The leading rows of a zero-padded batch that hold entries in some image.

    The mask head runs on this many ROIs instead of every slot: the detections (at
    inference) and the positive training ROIs come first in their tensors and the rest is
    padding, on which the head's work would be thrown away.

    Inputs:
        values: [batch, N, ...].
        active: [batch, N] bool, True for the rows in use, which come first in each image.

    Returns:
        values[:, :n]: n is the largest number of active rows of an image, rounded up to a
        multiple of ``multiple`` (so that a few shapes recur and their kernels are reused),
        at least ``multiple`` and at most ``limit`` (default N).
    """

    def __init__(self, multiple=8, limit=None, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple
        self.limit = limit

    def call(self, inputs):
        values, active = inputs
        count = tf.reduce_max(tf.reduce_sum(tf.cast(active, tf.int32), axis=1))
        rows = tf.maximum(1, (count + self.multiple - 1) // self.multiple) * self.multiple
        limit = tf.shape(values)[1] if self.limit is None else self.limit
        return values[:, :tf.minimum(rows, limit)]

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], None, *input_shape[0][2:])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple, "limit": self.limit}


class _ConfigLayer(KL.Layer):
    """Base for the layers that read their settings from a Config object.

    They are rebuilt from the Config by MaskRCNN, never deserialized: weight
    files carry no layer configuration.
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config


# ---------------------------------------------------------------------------
# Proposal layer
# ---------------------------------------------------------------------------

class ProposalLayer(_ConfigLayer):
    """Select the RPN's best anchors, refine them and apply non-max suppression.

    Inputs:
        rpn_probs: [batch, num_anchors, (bg prob, fg prob)]
        rpn_bbox: [batch, num_anchors, (dy, dx, log(dh), log(dw))], divided by
            RPN_BBOX_STD_DEV.
        anchors: [batch, num_anchors, (y1, x1, y2, x2)] normalized.

    Returns:
        Proposals [batch, proposal_count, (y1, x1, y2, x2)] normalized and
        clipped to the image, zero-padded when fewer survive NMS.

    ``stages(inputs)`` gives the intermediate tensors too (the nodes the
    original's inspection notebook looked up in the TF1 graph).
    """

    # The intermediate tensors of ``stages``, in order; the last is the layer's output.
    STAGES = ("pre_nms_anchors", "refined_anchors", "refined_anchors_clipped", "nms_indices",
              "proposals")

    def __init__(self, proposal_count, nms_threshold, config=None, **kwargs):
        super().__init__(config=config, **kwargs)
        self.proposal_count = proposal_count
        self.nms_threshold = nms_threshold

    def call(self, inputs):
        return self.stages(inputs)["proposals"]

    def stages(self, inputs):
        """The layer's computation, stage by stage.

        Args:
            inputs: [rpn_probs, rpn_bbox, anchors] as for ``call``.

        Returns:
            A dict of tensors (K = min(PRE_NMS_LIMIT, num_anchors), boxes
            normalized (y1, x1, y2, x2)):
            pre_nms_anchors [batch, K, 4]: the anchors of the K best scores,
                best first; refined_anchors [batch, K, 4]: those anchors moved
                by the RPN's deltas; refined_anchors_clipped [batch, K, 4]:
                clipped to the image; nms_indices [batch, proposal_count]
                int32: the rows of refined_anchors_clipped that NMS keeps,
                best first, padded with -1; proposals [batch,
                proposal_count, 4]: those boxes, zero-padded.
        """
        scores = inputs[0][:, :, 1]
        deltas = inputs[1] * np.reshape(self.config.RPN_BBOX_STD_DEV, [1, 1, 4]).astype(np.float32)
        anchors = inputs[2]
        images = self.config.IMAGES_PER_GPU

        pre_nms_limit = tf.minimum(self.config.PRE_NMS_LIMIT, tf.shape(anchors)[1])
        ix = tf.nn.top_k(scores, pre_nms_limit, sorted=True, name="top_anchors").indices
        scores = batch_slice([scores, ix], lambda x, y: tf.gather(x, y), images)
        deltas = batch_slice([deltas, ix], lambda x, y: tf.gather(x, y), images)
        pre_nms_anchors = batch_slice([anchors, ix], lambda a, x: tf.gather(a, x), images,
                                      names=["pre_nms_anchors"])
        refined = batch_slice([pre_nms_anchors, deltas], apply_box_deltas_graph, images,
                              names=["refined_anchors"])
        window = np.array([0, 0, 1, 1], dtype=np.float32)
        clipped = batch_slice(refined, lambda x: clip_boxes_graph(x, window), images,
                              names=["refined_anchors_clipped"])

        def nms(boxes, scores):
            indices = nms_graph(boxes, scores, self.proposal_count, self.nms_threshold,
                                name="rpn_non_max_suppression")
            proposals = tf.gather(boxes, indices)
            padding = tf.maximum(self.proposal_count - tf.shape(indices)[0], 0)
            return (tf.pad(indices, [(0, padding)], constant_values=-1),
                    tf.pad(proposals, [(0, padding), (0, 0)]))

        nms_indices, proposals = batch_slice([clipped, scores], nms, images)
        return {"pre_nms_anchors": pre_nms_anchors, "refined_anchors": refined,
                "refined_anchors_clipped": clipped,
                "nms_indices": tf.reshape(nms_indices, [-1, self.proposal_count]),
                "proposals": tf.reshape(proposals, [-1, self.proposal_count, 4])}

    def compute_output_shape(self, input_shape):
        return (None, self.proposal_count, 4)

    def get_config(self):
        return {**super().get_config(), "proposal_count": self.proposal_count,
                "nms_threshold": self.nms_threshold}


# ---------------------------------------------------------------------------
# ROIAlign
# ---------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="mrcnn")
class PyramidROIAlign(KL.Layer):
    """ROIAlign on the level of the feature pyramid that suits each box's size.

    Inputs:
        boxes: [batch, num_boxes, (y1, x1, y2, x2)] normalized; zero padding allowed.
        image_meta: [batch, IMAGE_META_SIZE].
        feature_maps: P2..P5, each [batch, height, width, channels].

    Returns:
        [batch, num_boxes, pool_height, pool_width, channels]. A box of area
        224² pixels (of the resized image) maps to P4, each halving of its side
        one level down, clamped to P2..P5.

    Where a level is sampled: the pool's first and last rows and columns lie
    on the box's first and last pixels (normalized coordinate ``y`` is pixel
    ``y * (H - 1)`` of an image H pixels high).

    With ``by_stride`` False (the original's ROIAlign, which the released COCO
    weights were trained with) ``tf.image.crop_and_resize`` gets the
    normalized box as it is and reads pixel ``p = y * (H - 1)`` at feature
    row ``y * (Hf - 1)`` of a level Hf rows high, where pixel ``p * k`` lies,
    ``k = H * (Hf - 1) / ((H - 1) * Hf)``: the features read are those of the
    box scaled by k towards the image's top-left corner (k = 0.97 on P5 of a
    1024-pixel image, 0.94 on P3 of a 128-pixel one), pixels away from the
    box when it lies far from that corner.

    With ``by_stride`` True pixel ``p`` is read at feature row ``p / stride``
    for every box. The samples of a box that ends in the image's last
    ``stride - 1`` pixels that fall beyond the last feature row read zeros
    (crop_and_resize's extrapolation).
    """

    # True while mrcnn.export traces the model for TFLite's builtin ops:
    # crop_and_resize_graph instead of tf.image.crop_and_resize.
    builtin_ops_only = False

    def __init__(self, pool_shape, by_stride=False, **kwargs):
        super().__init__(**kwargs)
        self.pool_shape = tuple(pool_shape)
        self.by_stride = bool(by_stride)

    def call(self, inputs):
        crop_and_resize = (crop_and_resize_graph if self.builtin_ops_only
                           else tf.image.crop_and_resize)
        boxes = inputs[0]
        image_meta = inputs[1]
        feature_maps = inputs[2:]

        y1, x1, y2, x2 = tf.split(boxes, 4, axis=2)
        h = y2 - y1
        w = x2 - x1
        image_shape = parse_image_meta_graph(image_meta)["image_shape"][0]
        image_area = tf.cast(image_shape[0] * image_shape[1], tf.float32)
        roi_level = log2_graph(tf.sqrt(h * w) / (224.0 / tf.sqrt(image_area)))
        roi_level = tf.minimum(5, tf.maximum(2, 4 + tf.cast(tf.round(roi_level), tf.int32)))
        roi_level = tf.squeeze(roi_level, 2)

        pooled = []
        box_to_level = []
        for i, level in enumerate(range(2, 6)):
            ix = tf.where(tf.equal(roi_level, level))
            level_boxes = tf.gather_nd(boxes, ix)
            if self.by_stride:
                level_boxes *= level_box_scale(image_shape, tf.shape(feature_maps[i])[1:3])
            box_indices = tf.cast(ix[:, 0], tf.int32)
            box_to_level.append(ix)
            # The boxes are inputs, not something to back-propagate through.
            level_boxes = tf.stop_gradient(level_boxes)
            box_indices = tf.stop_gradient(box_indices)
            pooled.append(crop_and_resize(feature_maps[i], level_boxes, box_indices,
                                          self.pool_shape))

        pooled = tf.concat(pooled, axis=0)
        box_to_level = tf.concat(box_to_level, axis=0)
        box_range = tf.expand_dims(tf.range(tf.shape(box_to_level)[0]), 1)
        box_to_level = tf.concat([tf.cast(box_to_level, tf.int32), box_range], axis=1)

        # Restore the original box order: sort by batch index, then box index.
        sorting_tensor = box_to_level[:, 0] * 100000 + box_to_level[:, 1]
        ix = tf.nn.top_k(sorting_tensor, k=tf.shape(box_to_level)[0]).indices[::-1]
        ix = tf.gather(box_to_level[:, 2], ix)
        pooled = tf.gather(pooled, ix)

        shape = tf.concat([tf.shape(boxes)[:2], tf.shape(pooled)[1:]], axis=0)
        return tf.reshape(pooled, shape)

    def compute_output_shape(self, input_shape):
        return input_shape[0][:2] + self.pool_shape + (input_shape[2][-1],)

    def get_config(self):
        return {**super().get_config(), "pool_shape": self.pool_shape,
                "by_stride": self.by_stride}


def level_box_scale(image_shape, feature_shape):
    """The factors that turn normalized image boxes into the normalized boxes of
    ``tf.image.crop_and_resize`` on one pyramid level, pixel ``p`` on feature row
    ``p / stride`` (see ``PyramidROIAlign``).

    Args:
        image_shape: [2+] int, (height, width, ...) of the molded image, H x W.
        feature_shape: [2] int, (Hf, Wf) of the level; stride = H / Hf.

    Returns:
        float32 [4]: multiply (y1, x1, y2, x2) by it. Per axis
        ``(H - 1) * Hf / (H * (Hf - 1))``: normalized ``y`` is pixel
        ``y * (H - 1)``, feature row ``y * (H - 1) * Hf / H``, and
        crop_and_resize reads normalized ``y'`` at row ``y' * (Hf - 1)``.
    """
    image_size = tf.cast(image_shape[:2], tf.float32)
    feature_size = tf.cast(feature_shape, tf.float32)
    scale = (image_size - 1.0) * feature_size / (image_size * tf.maximum(feature_size - 1.0, 1.0))
    return tf.tile(scale, [2])


def crop_and_resize_graph(images, boxes, box_indices, crop_size):
    """``tf.image.crop_and_resize`` (bilinear, extrapolation value 0) in gathers and arithmetic.

    TFLite has no builtin op for crop_and_resize; this computes the same
    samples as TensorFlow's kernel, in its order of operations: crop pixel
    (i, j) of box (y1, x1, y2, x2) samples the image at
    ``y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (crop_height - 1)`` (x
    likewise) and is 0 where that falls outside [0, H - 1]. Graph optimizers
    may fold ``(H - 1) / (crop_height - 1)`` into one constant, which moves
    the last sample of a box on the image's edge just past it: samples within
    1e-3 pixel of the image count as inside. It holds four
    [K, crop_height, crop_width, C] corner tensors at once, where
    crop_and_resize holds none: TFLite export only.

    Args:
        images: [batch, H, W, C].
        boxes: [K, (y1, x1, y2, x2)] normalized, 0 and 1 on the first and last pixel centres.
        box_indices: int32 [K], the image of each box.
        crop_size: (crop_height, crop_width), each at least 2.

    Returns:
        float32 [K, crop_height, crop_width, C].
    """
    shape = tf.shape(images)
    height, width, channels = shape[1], shape[2], images.shape[-1]
    # Slices, not tf.unstack: TFLite's unpack fails on the empty box lists of a pyramid level.
    y1, x1, y2, x2 = [boxes[:, i] for i in range(4)]

    def samples(start, end, size, count):
        """Where ``count`` samples fall along an axis of ``size`` pixels, per box:
        the pixels below and above each ([K, count] int32), its weight of the
        one above and whether it is inside the image ([K, count])."""
        last = tf.cast(size - 1, tf.float32)
        step = (end - start) * last / (count - 1)
        coordinates = start[:, tf.newaxis] * last + tf.range(count, dtype=tf.float32) * step[:, tf.newaxis]
        inside = tf.logical_and(coordinates >= -1e-3, coordinates <= last + 1e-3)
        below = tf.floor(coordinates)
        fraction = coordinates - below
        index = lambda c: tf.clip_by_value(tf.cast(c, tf.int32), 0, size - 1)
        return index(below), index(tf.math.ceil(coordinates)), fraction, inside

    top, bottom, y_fraction, y_inside = samples(y1, y2, height, crop_size[0])
    left, right, x_fraction, x_inside = samples(x1, x2, width, crop_size[1])
    pixels = tf.reshape(images, [-1, channels])
    first_pixel = (box_indices * height * width)[:, tf.newaxis, tf.newaxis]

    def corner(rows, columns):
        return tf.gather(pixels, first_pixel + rows[:, :, tf.newaxis] * width + columns[:, tf.newaxis])

    x_fraction = x_fraction[:, tf.newaxis, :, tf.newaxis]
    top_left = corner(top, left)
    upper = top_left + (corner(top, right) - top_left) * x_fraction
    bottom_left = corner(bottom, left)
    lower = bottom_left + (corner(bottom, right) - bottom_left) * x_fraction
    crops = upper + (lower - upper) * y_fraction[:, :, tf.newaxis, tf.newaxis]
    inside = tf.logical_and(y_inside[:, :, tf.newaxis], x_inside[:, tf.newaxis])
    return tf.where(inside[..., tf.newaxis], crops, tf.zeros([], crops.dtype))


# ---------------------------------------------------------------------------
# Detection targets (training)
# ---------------------------------------------------------------------------

def detection_targets_graph(proposals, gt_class_ids, gt_boxes, gt_masks, config):
    """Sample ROIs of one image and build their class, box and mask targets.

    Args:
        proposals: [POST_NMS_ROIS_TRAINING, (y1, x1, y2, x2)] normalized, zero-padded.
        gt_class_ids: [MAX_GT_INSTANCES] int class ids; negative ids mark crowds.
        gt_boxes: [MAX_GT_INSTANCES, (y1, x1, y2, x2)] normalized.
        gt_masks: [height, width, MAX_GT_INSTANCES] bool (mini-masks or full size).

    Returns (each zero-padded to TRAIN_ROIS_PER_IMAGE rows):
        rois: [TRAIN_ROIS_PER_IMAGE, (y1, x1, y2, x2)] normalized.
        class_ids: [TRAIN_ROIS_PER_IMAGE] int32, 0 for negatives.
        deltas: [TRAIN_ROIS_PER_IMAGE, (dy, dx, log(dh), log(dw))] / BBOX_STD_DEV.
        masks: [TRAIN_ROIS_PER_IMAGE, MASK_SHAPE[0], MASK_SHAPE[1]] float32 in {0, 1}.
    """
    asserts = [tf.debugging.assert_greater(tf.shape(proposals)[0], 0, name="roi_assertion")]
    with tf.control_dependencies(asserts):
        proposals = tf.identity(proposals)

    proposals, _ = trim_zeros_graph(proposals, name="trim_proposals")
    gt_boxes, non_zeros = trim_zeros_graph(gt_boxes, name="trim_gt_boxes")
    gt_class_ids = tf.boolean_mask(gt_class_ids, non_zeros, name="trim_gt_class_ids")
    gt_masks = tf.gather(gt_masks, tf.where(non_zeros)[:, 0], axis=2, name="trim_gt_masks")

    # Crowd boxes (negative class ids) are excluded from training; ROIs that
    # overlap them are not used as negatives either.
    crowd_ix = tf.where(gt_class_ids < 0)[:, 0]
    non_crowd_ix = tf.where(gt_class_ids > 0)[:, 0]
    crowd_boxes = tf.gather(gt_boxes, crowd_ix)
    gt_class_ids = tf.gather(gt_class_ids, non_crowd_ix)
    gt_boxes = tf.gather(gt_boxes, non_crowd_ix)
    gt_masks = tf.gather(gt_masks, non_crowd_ix, axis=2)

    overlaps = overlaps_graph(proposals, gt_boxes)
    crowd_overlaps = overlaps_graph(proposals, crowd_boxes)
    no_crowd_bool = tf.reduce_max(crowd_overlaps, axis=1) < CROWD_IOU

    roi_iou_max = tf.reduce_max(overlaps, axis=1)
    positive_indices = tf.where(roi_iou_max >= ROI_POSITIVE_IOU)[:, 0]
    negative_indices = tf.where(tf.logical_and(roi_iou_max < ROI_POSITIVE_IOU, no_crowd_bool))[:, 0]

    positive_count = int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)
    positive_indices = tf.random.shuffle(positive_indices)[:positive_count]
    positive_count = tf.shape(positive_indices)[0]
    r = 1.0 / config.ROI_POSITIVE_RATIO
    negative_count = tf.cast(r * tf.cast(positive_count, tf.float32), tf.int32) - positive_count
    negative_indices = tf.random.shuffle(negative_indices)[:negative_count]

    positive_rois = tf.gather(proposals, positive_indices)
    negative_rois = tf.gather(proposals, negative_indices)

    positive_overlaps = tf.gather(overlaps, positive_indices)
    roi_gt_box_assignment = tf.cond(
        tf.greater(tf.shape(positive_overlaps)[1], 0),
        true_fn=lambda: tf.argmax(positive_overlaps, axis=1),
        false_fn=lambda: tf.cast(tf.constant([]), tf.int64))
    roi_gt_boxes = tf.gather(gt_boxes, roi_gt_box_assignment)
    roi_gt_class_ids = tf.cast(tf.gather(gt_class_ids, roi_gt_box_assignment), tf.int32)

    deltas = box_refinement_graph(positive_rois, roi_gt_boxes)
    deltas /= config.BBOX_STD_DEV.astype(np.float32)

    # Crop each positive ROI's mask out of its ground-truth mask.
    transposed_masks = tf.expand_dims(tf.transpose(tf.cast(gt_masks, tf.float32), [2, 0, 1]), -1)
    roi_masks = tf.gather(transposed_masks, roi_gt_box_assignment)
    boxes = positive_rois
    if config.USE_MINI_MASK:
        # Mini-masks cover their GT box only: express the ROI in that frame.
        y1, x1, y2, x2 = tf.split(positive_rois, 4, axis=1)
        gt_y1, gt_x1, gt_y2, gt_x2 = tf.split(roi_gt_boxes, 4, axis=1)
        gt_h = gt_y2 - gt_y1
        gt_w = gt_x2 - gt_x1
        boxes = tf.concat([(y1 - gt_y1) / gt_h, (x1 - gt_x1) / gt_w,
                           (y2 - gt_y1) / gt_h, (x2 - gt_x1) / gt_w], axis=1)
    box_ids = tf.range(0, tf.shape(roi_masks)[0])
    masks = tf.image.crop_and_resize(roi_masks, boxes, box_ids, config.MASK_SHAPE)
    masks = tf.round(tf.squeeze(masks, axis=3))

    rois = tf.concat([positive_rois, negative_rois], axis=0)
    n_neg = tf.shape(negative_rois)[0]
    padding = tf.maximum(config.TRAIN_ROIS_PER_IMAGE - tf.shape(rois)[0], 0)
    rois = tf.pad(rois, [(0, padding), (0, 0)])
    roi_gt_class_ids = tf.pad(roi_gt_class_ids, [(0, n_neg + padding)])
    deltas = tf.pad(deltas, [(0, n_neg + padding), (0, 0)])
    masks = tf.pad(masks, [[0, n_neg + padding], (0, 0), (0, 0)])
    return rois, roi_gt_class_ids, deltas, masks


class DetectionTargetLayer(_ConfigLayer):
    """Sample training ROIs from the proposals and build the heads' targets.

    Inputs:
        proposals: [batch, N, (y1, x1, y2, x2)] normalized, zero-padded.
        gt_class_ids: [batch, MAX_GT_INSTANCES] int32.
        gt_boxes: [batch, MAX_GT_INSTANCES, (y1, x1, y2, x2)] normalized.
        gt_masks: [batch, height, width, MAX_GT_INSTANCES] bool.

    Returns, each with TRAIN_ROIS_PER_IMAGE rows per image (zero-padded):
        rois [batch, R, 4] normalized, target_class_ids [batch, R] int32,
        target_deltas [batch, R, 4], target_mask [batch, R, MASK_SHAPE[0], MASK_SHAPE[1]].

    The targets are constants of the training step: no gradient goes back through them to
    the proposals, and so to the RPN, whose own losses train it. The original stopped the
    boxes' gradient in ROIAlign only, and its box-refinement targets, computed from the
    proposals, still passed one back from the heads' box loss; torchvision detaches its
    proposals too.
    """

    def call(self, inputs):
        names = ["rois", "target_class_ids", "target_bbox", "target_mask"]
        outputs = batch_slice(
            [tf.stop_gradient(x) for x in inputs],
            lambda p, c, b, m: detection_targets_graph(p, c, b, m, self.config),
            self.config.IMAGES_PER_GPU, names=names)
        rois_per_image = self.config.TRAIN_ROIS_PER_IMAGE
        mask_h, mask_w = self.config.MASK_SHAPE
        shapes = [[-1, rois_per_image, 4], [-1, rois_per_image], [-1, rois_per_image, 4],
                  [-1, rois_per_image, mask_h, mask_w]]
        return [tf.reshape(o, s) for o, s in zip(outputs, shapes)]


# ---------------------------------------------------------------------------
# Detection layer (inference)
# ---------------------------------------------------------------------------

def nms_graph(boxes, scores, max_output_size, iou_threshold, name=None):
    """Greedy non-maximum suppression: [K] int32 indices of the boxes kept, best first.

    Args:
        boxes: [N, (y1, x1, y2, x2)]; scores: [N].
        max_output_size: K <= max_output_size.

    The result of ``tf.image.non_max_suppression``: boxes in decreasing score
    order (equal scores by index), each kept unless it overlaps a kept one by
    more than ``iou_threshold``. A box without area overlaps nothing, so it is
    always kept; those boxes are set aside and merged back by score, because
    TFLite's kernel returns such a box over and over. The kernel runs in its
    padded form, cut to its valid count, which TFLite's converter maps to its
    builtin as it is.
    """
    flat = tf.logical_or(boxes[:, 2] == boxes[:, 0], boxes[:, 3] == boxes[:, 1])
    solid = tf.cast(tf.where(tf.logical_not(flat))[:, 0], tf.int32)
    kept, count = tf.raw_ops.NonMaxSuppressionV4(
        boxes=tf.gather(boxes, solid), scores=tf.gather(scores, solid),
        max_output_size=max_output_size, iou_threshold=iou_threshold,
        score_threshold=float("-inf"), pad_to_max_output_size=True, name=name)
    kept = tf.gather(solid, kept[:count])
    # In index order, so that top_k, which keeps equal values in input order, breaks
    # ties by index.
    candidates = tf.sort(tf.concat([kept, tf.cast(tf.where(flat)[:, 0], tf.int32)], axis=0))
    best = tf.nn.top_k(tf.gather(scores, candidates),
                       k=tf.minimum(max_output_size, tf.shape(candidates)[0])).indices
    return tf.gather(candidates, best)


def refine_detections_graph(rois, probs, deltas, window, config, builtin_ops_only=False):
    """Final detections of one image: refine, filter and run per-class NMS.

    A proposal is a candidate when its class is not the background, its score
    reaches DETECTION_MIN_CONFIDENCE and its refined box, clipped to the
    window, has a positive height and width.

    Args:
        rois: [N, (y1, x1, y2, x2)] normalized proposals.
        probs: [N, num_classes] class probabilities.
        deltas: [N, num_classes, (dy, dx, log(dh), log(dw))] / BBOX_STD_DEV.
        window: (y1, x1, y2, x2) normalized part of the image that is not padding.
        builtin_ops_only: run the NMS of every class id in turn (a graph
            TFLite's builtin ops can run) instead of mapping over the classes
            present (a loop that needs TensorFlow's TensorList ops); the same
            detections.

    Returns:
        [DETECTION_MAX_INSTANCES, (y1, x1, y2, x2, class_id, score)], zero-padded,
        sorted by decreasing score.
    """
    class_ids = tf.argmax(probs, axis=1, output_type=tf.int32)
    indices = tf.stack([tf.range(tf.shape(probs)[0]), class_ids], axis=1)
    class_scores = tf.gather_nd(probs, indices)
    deltas_specific = tf.gather_nd(deltas, indices)
    refined_rois = apply_box_deltas_graph(rois, deltas_specific * config.BBOX_STD_DEV.astype(np.float32))
    refined_rois = clip_boxes_graph(refined_rois, window)

    # Boxes clipped flat against the window hold no pixel: they are dropped
    # before NMS, as torchvision drops small boxes.
    has_area = tf.logical_and(refined_rois[:, 2] > refined_rois[:, 0],
                              refined_rois[:, 3] > refined_rois[:, 1])
    candidate = tf.logical_and(class_ids > 0, has_area)
    if config.DETECTION_MIN_CONFIDENCE:
        candidate = tf.logical_and(candidate, class_scores >= config.DETECTION_MIN_CONFIDENCE)
    keep = tf.where(candidate)[:, 0]

    pre_nms_class_ids = tf.gather(class_ids, keep)
    pre_nms_scores = tf.gather(class_scores, keep)
    pre_nms_rois = tf.gather(refined_rois, keep)
    max_instances = config.DETECTION_MAX_INSTANCES

    def nms_keep_map(class_id):
        """Indices into ``keep`` of the boxes of one class that survive NMS, padded with -1."""
        ixs = tf.where(tf.equal(pre_nms_class_ids, class_id))[:, 0]
        class_keep = nms_graph(tf.gather(pre_nms_rois, ixs), tf.gather(pre_nms_scores, ixs),
                               max_instances, config.DETECTION_NMS_THRESHOLD)
        class_keep = tf.gather(keep, tf.gather(ixs, class_keep))
        gap = max_instances - tf.shape(class_keep)[0]
        class_keep = tf.pad(class_keep, [(0, gap)], mode="CONSTANT", constant_values=-1)
        class_keep.set_shape([max_instances])
        return class_keep

    if builtin_ops_only:
        nms_keep = tf.stack([nms_keep_map(class_id) for class_id in range(1, config.NUM_CLASSES)])
    else:
        nms_keep = tf.map_fn(nms_keep_map, tf.unique(pre_nms_class_ids)[0],
                             fn_output_signature=tf.TensorSpec([max_instances], tf.int64))
    nms_keep = tf.reshape(nms_keep, [-1])
    keep = tf.sort(tf.gather(nms_keep, tf.where(nms_keep > -1)[:, 0]))  # a subset of keep

    class_scores_keep = tf.gather(class_scores, keep)
    num_keep = tf.minimum(tf.shape(class_scores_keep)[0], max_instances)
    top_ids = tf.nn.top_k(class_scores_keep, k=num_keep, sorted=True).indices
    keep = tf.gather(keep, top_ids)

    detections = tf.concat([
        tf.gather(refined_rois, keep),
        tf.cast(tf.gather(class_ids, keep), tf.float32)[..., tf.newaxis],
        tf.gather(class_scores, keep)[..., tf.newaxis],
    ], axis=1)
    gap = max_instances - tf.shape(detections)[0]
    return tf.pad(detections, [(0, gap), (0, 0)], "CONSTANT")


class DetectionLayer(_ConfigLayer):
    """Turn classifier output into final detections.

    Inputs:
        rois: [batch, N, (y1, x1, y2, x2)] normalized proposals.
        mrcnn_class: [batch, N, num_classes] probabilities.
        mrcnn_bbox: [batch, N, num_classes, (dy, dx, log(dh), log(dw))].
        image_meta: [batch, IMAGE_META_SIZE].

    Returns:
        [batch, DETECTION_MAX_INSTANCES, (y1, x1, y2, x2, class_id, score)]
        with normalized coordinates of the molded image, zero-padded.
    """

    # True while mrcnn.export traces the model for TFLite's builtin ops (see
    # refine_detections_graph).
    builtin_ops_only = False

    def call(self, inputs):
        rois, mrcnn_class, mrcnn_bbox, image_meta = inputs
        meta = parse_image_meta_graph(image_meta)
        image_shape = meta["image_shape"][0]
        window = norm_boxes_graph(meta["window"], image_shape[:2])
        detections = batch_slice(
            [rois, mrcnn_class, mrcnn_bbox, window],
            lambda x, y, w, z: refine_detections_graph(x, y, w, z, self.config,
                                                       self.builtin_ops_only),
            self.config.IMAGES_PER_GPU)
        return tf.reshape(detections, [-1, self.config.DETECTION_MAX_INSTANCES, 6])

    def compute_output_shape(self, input_shape):
        return (None, self.config.DETECTION_MAX_INSTANCES, 6)
