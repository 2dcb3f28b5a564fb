"""Network heads: the region proposal network and the classifier and mask heads.

Layer names are the original's (rpn_model, rpn_conv_shared, rpn_class_raw,
rpn_bbox_pred, mrcnn_class_conv1, ..., mrcnn_mask): weight files are matched
by them.
"""

import keras
import tensorflow as tf
from keras import layers as KL

from mrcnn.layers import (Conv2D, Conv2DTranspose, PyramidROIAlign, TimeDistributed, conv_bn,
                          convolution_in_halves, convolution_windows, dimensions,
                          pixels_with_gradient, scoped_gradient, window_gradients,
                          with_gradient)
from mrcnn.winograd import in_bands, untiled, winograd_where_it_pays


def rpn_graph(feature_map, anchors_per_location, anchor_stride):
    """Region proposal network on one pyramid level.

    Args:
        feature_map: [batch, height, width, depth].
        anchors_per_location: anchors per feature-map cell (len(RPN_ANCHOR_RATIOS)).
        anchor_stride: 1 for anchors at every cell, 2 for every other cell.

    Returns:
        rpn_class_logits: [batch, anchors, 2] (background, foreground) logits.
        rpn_probs: [batch, anchors, 2] softmax of the logits.
        rpn_bbox: [batch, anchors, (dy, dx, log(dh), log(dw))] anchor refinements.
    """
    shared = Conv2D(512, (3, 3), padding="same", activation="relu", strides=anchor_stride,
                    name="rpn_conv_shared")(feature_map)
    x = KL.Conv2D(2 * anchors_per_location, (1, 1), padding="valid", activation="linear",
                  name="rpn_class_raw")(shared)
    rpn_class_logits = KL.Reshape((-1, 2))(x)
    rpn_probs = KL.Activation("softmax", name="rpn_class_xxx")(rpn_class_logits)
    x = KL.Conv2D(anchors_per_location * 4, (1, 1), padding="valid", activation="linear",
                  name="rpn_bbox_pred")(shared)
    rpn_bbox = KL.Reshape((-1, 4))(x)
    return [rpn_class_logits, rpn_probs, rpn_bbox]


def build_rpn_model(anchor_stride, anchors_per_location, depth):
    """The RPN as a Keras model named ``rpn_model``, shared by all pyramid levels.

    Input: [batch, height, width, depth] feature map. Outputs: rpn_graph's three tensors.
    """
    return RegionProposalNetwork(anchor_stride, anchors_per_location, depth)


class RegionProposalNetwork(keras.Model):
    """rpn_graph as a functional model, called through ``rpn_convolutions``.

    With an anchor stride of 1, a call computes rpn_graph's outputs with the same layers
    and weights through ``rpn_convolutions``, which never makes the shared map's copies
    (except when training without ``sparse_gradient``, where Keras's layers run as built).
    The training model sets ``sparse_gradient``: the call then goes through
    ``rpn_sparse_gradient_graph``, whose gradient is computed at the pixels the RPN's losses
    reach only.
    """

    sparse_gradient = False

    def __init__(self, anchor_stride, anchors_per_location, depth):
        input_feature_map = keras.Input(shape=[None, None, depth], name="input_rpn_feature_map")
        outputs = rpn_graph(input_feature_map, anchors_per_location, anchor_stride)
        super().__init__(input_feature_map, outputs, name="rpn_model")

    def call(self, inputs, training=None, mask=None):
        shared = self.get_layer("rpn_conv_shared")
        if tuple(shared.strides) != (1, 1) or (training and not self.sparse_gradient):
            return super().call(inputs, training=training, mask=mask)
        class_conv, bbox_conv = self.get_layer("rpn_class_raw"), self.get_layer("rpn_bbox_pred")
        graph = rpn_sparse_gradient_graph if self.sparse_gradient else rpn_convolutions
        class_outputs, bbox_outputs = graph(
            inputs, *[tf.convert_to_tensor(weight) for weight in
                      (shared.kernel, shared.bias, class_conv.kernel, class_conv.bias,
                       bbox_conv.kernel, bbox_conv.bias)],
            in_halves=shared.in_halves, winograd=shared.winograd)
        batch = tf.shape(inputs)[0]
        rpn_class_logits = tf.reshape(class_outputs, [batch, -1, 2])   # rpn_graph's Reshape
        return [rpn_class_logits, tf.nn.softmax(rpn_class_logits),
                tf.reshape(bbox_outputs, [batch, -1, 4])]


def rpn_convolutions(feature_map, shared_kernel, shared_bias, class_kernel, class_bias,
                     bbox_kernel, bbox_bias, in_halves=False, winograd=False):
    """rpn_graph's three convolutions (stride 1), without copies of the shared map.

    The two 1x1 convolutions are one matrix product of the shared map's pixels with both
    kernels side by side. As convolutions, oneDNN first copied the [B, H, W, 512] map into
    its own layout, once for each (2 x 128 MB for P2 of a 1024x1024 image, the peak of a
    detect() call). With ``in_halves`` they run on each half of the image
    (``layers.convolution_in_halves``) before the halves are put together, so the shared
    map of the whole image is never made either.

    Args:
        feature_map: [B, H, W, C].
        shared_kernel: [3, 3, C, S] and shared_bias [S] of rpn_conv_shared (ReLU).
        class_kernel: [1, 1, S, 2A] and class_bias [2A] of rpn_class_raw.
        bbox_kernel: [1, 1, S, 4A] and bbox_bias [4A] of rpn_bbox_pred.
        in_halves: run the 3x3 convolution as ``layers.convolution_in_halves``.
        winograd: run the 3x3 convolution by Winograd's algorithm where that pays
            (``winograd.winograd_where_it_pays``, ``rpn_winograd_convolutions``).

    Returns:
        rpn_class_raw's [B, H, W, 2A] and rpn_bbox_pred's [B, H, W, 4A] outputs.
    """
    shared_filters = shared_kernel.shape[3]
    heads_kernel = rpn_heads_matrix(class_kernel, bbox_kernel)
    heads_bias = tf.concat([class_bias, bbox_bias], axis=0)

    def heads(convolved):   # [N, h, w, S] -> [N, h, w, 6A]
        shared = tf.nn.relu(tf.nn.bias_add(convolved, shared_bias))
        batch, height, width = dimensions(shared)[:3]
        # One product per image, so that an image's numbers do not depend on the batch.
        pixels = tf.reshape(shared, [batch, -1, shared_filters])
        rows = tf.matmul(pixels, heads_kernel) + heads_bias
        return tf.reshape(rows, [batch, height, width, heads_kernel.shape[1]])

    def direct(images, kernel):
        if in_halves:
            return convolution_in_halves(images, kernel, then=heads)
        return heads(tf.nn.conv2d(images, kernel, strides=1, padding="SAME"))

    def by_winograd(images, kernel):
        return rpn_winograd_convolutions(images, kernel, shared_bias, heads_kernel, heads_bias)

    if winograd:
        outputs = winograd_where_it_pays(feature_map, shared_kernel, direct, by_winograd)
    else:
        outputs = direct(feature_map, shared_kernel)
    return tf.split(outputs, [class_kernel.shape[3], bbox_kernel.shape[3]], axis=-1)


def rpn_winograd_convolutions(feature_map, shared_kernel, shared_bias, heads_kernel, heads_bias,
                              groups=4):
    """The RPN's shared 3x3 convolution by Winograd's algorithm, and its two 1x1 heads.

    A large map's top and bottom halves are computed one after the other
    (``winograd.in_bands``), and in each the shared map's channels in ``groups`` groups, one
    after the other: each group's ReLU output is multiplied with its rows of the heads'
    kernels and the products summed. For P2 of a 1024x1024 image, Winograd's algorithm on
    the whole map raised a detect() call's peak memory by 300 MB (151 MB of tiles, 302 MB of
    products and the 134 MB shared map).

    Args:
        feature_map: [B, H, W, C]; shared_kernel [3, 3, C, S], shared_bias [S].
        heads_kernel: [S, 6A] (``rpn_heads_matrix``); heads_bias [6A].
        groups: how many groups of the S channels.

    Returns:
        [B, H, W, 6A]: the heads' outputs, class logits first.
    """
    filters, size = shared_kernel.shape[3], shared_kernel.shape[3] // groups

    def convolve_then_heads(transformed, kernel, tiling, first_row, end_row):
        outputs = heads_bias   # kernel: [36, C, S]
        for group in range(groups):
            channels = slice(group * size, filters if group == groups - 1 else (group + 1) * size)
            with tf.control_dependencies([] if group == 0 else [outputs]):
                products = tf.matmul(transformed, kernel[:, :, channels])
            shared = untiled(products, tiling, first_row, end_row)
            shared = tf.nn.relu(shared + shared_bias[channels])
            pixels = tf.reshape(shared, [tiling.batch, -1, shared.shape[3]])
            outputs = outputs + tf.matmul(pixels, heads_kernel[channels])   # [B, h * W, 6A]
        return tf.reshape(outputs, [tiling.batch, -1, tiling.width, heads_kernel.shape[1]])

    return in_bands(feature_map, shared_kernel, convolve_then_heads)


def rpn_heads_matrix(class_kernel, bbox_kernel):
    """[S, 2A + 4A]: the kernels of rpn_class_raw and rpn_bbox_pred side by side."""
    shared_filters = class_kernel.shape[2]
    return tf.concat([tf.reshape(class_kernel, [shared_filters, -1]),
                      tf.reshape(bbox_kernel, [shared_filters, -1])], axis=1)


def rpn_sparse_gradient_graph(feature_map, shared_kernel, shared_bias, class_kernel, class_bias,
                              bbox_kernel, bbox_bias, in_halves=False, winograd=False):
    """rpn_graph's convolutions, back-propagated from the pixels that have a gradient only.

    The RPN's two losses reach it at the anchors they sample (RPN_TRAIN_ANCHORS_PER_IMAGE
    an image, out of tens of thousands of pixels; the proposals carry no gradient). For
    those K pixels the gradient recomputes the shared 3x3 convolution from their windows
    (``layers.convolution_windows``), so that a training step neither keeps the [B, H, W,
    512] shared feature map for the backward pass nor makes its gradient, and it
    multiplies K rows where the dense gradients would multiply every pixel's. The same
    gradients, summed in another order; the cost grows with K, whatever it is.

    Arguments and outputs are ``rpn_convolutions``', which computes the forward pass.
    """
    shared_filters = shared_kernel.shape[3]
    inputs = [tf.convert_to_tensor(x) for x in (feature_map, shared_kernel, shared_bias,
                                                class_kernel, class_bias, bbox_kernel, bbox_bias)]
    (feature_map, shared_kernel, shared_bias, class_kernel, class_bias, bbox_kernel,
     bbox_bias) = inputs

    def gradient(class_gradient, bbox_gradient):
        # Both 1x1 convolutions at once, as the forward pass runs them.
        head_gradient = tf.concat([class_gradient, bbox_gradient], axis=-1)   # [B, H, W, 6A]
        positions = pixels_with_gradient(head_gradient)                 # [K, (b, y, x)]
        windows, placement = convolution_windows(feature_map, shared_kernel.shape, positions)
        before_relu = tf.nn.bias_add(
            tf.matmul(windows, tf.reshape(shared_kernel, [-1, shared_filters])), shared_bias)
        shared_rows = tf.nn.relu(before_relu)                            # [K, S]
        head_rows = tf.gather_nd(head_gradient, positions)               # [K, 6A]
        shared_gradient = tf.matmul(head_rows, rpn_heads_matrix(class_kernel, bbox_kernel),
                                    transpose_b=True)
        shared_gradient *= tf.cast(before_relu > 0, shared_gradient.dtype)
        feature_gradient, shared_kernel_gradient = window_gradients(
            feature_map, shared_kernel, windows, placement, shared_gradient)
        widths = [class_kernel.shape[3], bbox_kernel.shape[3]]
        class_kernel_gradient, bbox_kernel_gradient = tf.split(
            tf.matmul(shared_rows, head_rows, transpose_a=True), widths, axis=1)
        class_bias_gradient, bbox_bias_gradient = tf.split(
            tf.reduce_sum(head_rows, axis=0), widths)
        return (feature_gradient, shared_kernel_gradient,
                tf.reduce_sum(shared_gradient, axis=0),
                tf.reshape(class_kernel_gradient, class_kernel.shape), class_bias_gradient,
                tf.reshape(bbox_kernel_gradient, bbox_kernel.shape), bbox_bias_gradient)

    def convolutions(*inputs):
        return rpn_convolutions(*inputs, in_halves, winograd)

    return with_gradient(inputs, convolutions, scoped_gradient(gradient))


def fpn_classifier_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True,
                         fc_layers_size=1024, roi_align_by_stride=False):
    """Classifier and box-regression head.

    Args:
        rois: [batch, num_rois, (y1, x1, y2, x2)] normalized proposals.
        feature_maps: [P2, P3, P4, P5].
        image_meta: [batch, IMAGE_META_SIZE].
        pool_size: side of the ROIAlign output (POOL_SIZE).
        num_classes: NUM_CLASSES, background included.
        train_bn: see layers.BatchNorm.
        fc_layers_size: width of the two "fully connected" (convolution) layers.
        roi_align_by_stride: ROI_ALIGN_BY_STRIDE, see layers.PyramidROIAlign.

    Returns:
        mrcnn_class_logits: [batch, num_rois, num_classes].
        mrcnn_probs: [batch, num_rois, num_classes].
        mrcnn_bbox: [batch, num_rois, num_classes, (dy, dx, log(dh), log(dw))].
    """
    x = PyramidROIAlign([pool_size, pool_size], by_stride=roi_align_by_stride,
                        name="roi_align_classifier")([rois, image_meta] + feature_maps)
    x = conv_bn(x, fc_layers_size, (pool_size, pool_size), "mrcnn_class_conv1", "mrcnn_class_bn1",
                train_bn=train_bn, time_distributed=True)
    x = KL.Activation("relu")(x)
    x = conv_bn(x, fc_layers_size, (1, 1), "mrcnn_class_conv2", "mrcnn_class_bn2",
                train_bn=train_bn, time_distributed=True)
    x = KL.Activation("relu")(x)
    shared = KL.Reshape((-1, fc_layers_size), name="pool_squeeze")(x)

    mrcnn_class_logits = TimeDistributed(KL.Dense(num_classes), name="mrcnn_class_logits")(shared)
    mrcnn_probs = KL.Activation("softmax", name="mrcnn_class")(mrcnn_class_logits)
    x = TimeDistributed(KL.Dense(num_classes * 4, activation="linear"), name="mrcnn_bbox_fc")(shared)
    mrcnn_bbox = KL.Reshape((-1, num_classes, 4), name="mrcnn_bbox")(x)
    return mrcnn_class_logits, mrcnn_probs, mrcnn_bbox


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True,
                         roi_align_by_stride=False):
    """Mask head.

    Args:
        rois: [batch, num_rois, (y1, x1, y2, x2)] normalized boxes.
        feature_maps: [P2, P3, P4, P5].
        image_meta: [batch, IMAGE_META_SIZE].
        pool_size: side of the ROIAlign output (MASK_POOL_SIZE).
        num_classes: NUM_CLASSES.
        train_bn: see layers.BatchNorm.
        roi_align_by_stride: ROI_ALIGN_BY_STRIDE, see layers.PyramidROIAlign.

    Returns:
        [batch, num_rois, 2 * pool_size, 2 * pool_size, num_classes] sigmoid
        mask probabilities, one mask per class.
    """
    x = PyramidROIAlign([pool_size, pool_size], by_stride=roi_align_by_stride,
                        name="roi_align_mask")([rois, image_meta] + feature_maps)
    for i in range(1, 5):
        x = conv_bn(x, 256, (3, 3), f"mrcnn_mask_conv{i}", f"mrcnn_mask_bn{i}", padding="same",
                    train_bn=train_bn, time_distributed=True)
        x = KL.Activation("relu")(x)
    x = TimeDistributed(Conv2DTranspose(256, (2, 2), strides=2, activation="relu"),
                        name="mrcnn_mask_deconv")(x)
    return TimeDistributed(KL.Conv2D(num_classes, (1, 1), strides=1, activation="sigmoid"),
                           name="mrcnn_mask")(x)
