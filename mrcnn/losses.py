"""The five Mask R-CNN losses, computed as the original computes them.

Each ``*_loss_graph`` function returns a scalar float32 tensor and is 0 (not
NaN) when there is nothing to compute it on, e.g. a batch without positive
ROIs. ``LossLayer`` wraps one of them so that the training model outputs the
loss under the original's layer name (rpn_class_loss, rpn_bbox_loss,
mrcnn_class_loss, mrcnn_bbox_loss, mrcnn_mask_loss).
"""

import tensorflow as tf
from keras import layers as KL

from mrcnn.layers import batch_pack_graph


def smooth_l1_loss(y_true, y_pred):
    """Element-wise smooth-L1 (Huber with delta 1) of two same-shaped tensors."""
    diff = tf.abs(y_true - y_pred)
    less_than_one = tf.cast(tf.less(diff, 1.0), tf.float32)
    return (less_than_one * 0.5 * diff ** 2) + (1 - less_than_one) * (diff - 0.5)


def _mean_or_zero(x):
    return tf.cond(tf.size(x) > 0, lambda: tf.reduce_mean(x), lambda: tf.constant(0.0))


def rpn_class_loss_graph(rpn_match, rpn_class_logits):
    """RPN anchor classifier loss.

    Args:
        rpn_match: [batch, anchors, 1] int; 1 positive, -1 negative, 0 neutral.
        rpn_class_logits: [batch, anchors, 2] background/foreground logits.

    Returns:
        Mean cross-entropy over the non-neutral anchors.
    """
    rpn_match = tf.squeeze(rpn_match, -1)
    anchor_class = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    indices = tf.where(tf.not_equal(rpn_match, 0))
    rpn_class_logits = tf.gather_nd(rpn_class_logits, indices)
    anchor_class = tf.gather_nd(anchor_class, indices)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=anchor_class, logits=rpn_class_logits)
    return _mean_or_zero(loss)


def rpn_bbox_loss_graph(config, target_bbox, rpn_match, rpn_bbox):
    """RPN bounding-box loss.

    Args:
        config: the Config; its IMAGES_PER_GPU is the static per-replica batch size.
        target_bbox: [batch, max positive anchors, (dy, dx, log(dh), log(dw))],
            zero-padded; rows in the order of the positive anchors.
        rpn_match: [batch, anchors, 1] int; 1 positive, -1 negative, 0 neutral.
        rpn_bbox: [batch, anchors, (dy, dx, log(dh), log(dw))].

    Returns:
        Mean smooth-L1 over the coordinates of the positive anchors.
    """
    rpn_match = tf.squeeze(rpn_match, -1)
    indices = tf.where(tf.equal(rpn_match, 1))
    rpn_bbox = tf.gather_nd(rpn_bbox, indices)
    batch_counts = tf.reduce_sum(tf.cast(tf.equal(rpn_match, 1), tf.int32), axis=1)
    target_bbox = batch_pack_graph(target_bbox, batch_counts, config.IMAGES_PER_GPU)
    return _mean_or_zero(smooth_l1_loss(target_bbox, rpn_bbox))


def mrcnn_class_loss_graph(target_class_ids, pred_class_logits, active_class_ids):
    """Classifier head loss.

    Args:
        target_class_ids: [batch, num_rois] int class ids, 0 for background and padding.
        pred_class_logits: [batch, num_rois, num_classes].
        active_class_ids: [batch, num_classes] 1 for the classes of the image's
            dataset; a prediction of a class outside it is not penalized.

    Returns:
        Cross-entropy averaged over the ROIs whose predicted class is active.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int64)
    pred_class_ids = tf.argmax(pred_class_logits, axis=2)
    pred_active = tf.gather(active_class_ids[0], pred_class_ids)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_class_ids,
                                                          logits=pred_class_logits)
    loss = loss * pred_active
    return tf.math.divide_no_nan(tf.reduce_sum(loss), tf.reduce_sum(pred_active))


def mrcnn_bbox_loss_graph(target_bbox, target_class_ids, pred_bbox):
    """Box-refinement head loss.

    Args:
        target_bbox: [batch, num_rois, (dy, dx, log(dh), log(dw))].
        target_class_ids: [batch, num_rois] int.
        pred_bbox: [batch, num_rois, num_classes, (dy, dx, log(dh), log(dw))].

    Returns:
        Mean smooth-L1 over the coordinates of the positive ROIs, using the
        prediction for each ROI's true class.
    """
    target_class_ids = tf.reshape(tf.cast(target_class_ids, tf.int64), (-1,))
    target_bbox = tf.reshape(target_bbox, (-1, 4))
    pred_bbox = tf.reshape(pred_bbox, (-1, tf.shape(pred_bbox)[2], 4))
    positive_roi_ix = tf.where(target_class_ids > 0)[:, 0]
    positive_roi_class_ids = tf.gather(target_class_ids, positive_roi_ix)
    indices = tf.stack([positive_roi_ix, positive_roi_class_ids], axis=1)
    target_bbox = tf.gather(target_bbox, positive_roi_ix)
    pred_bbox = tf.gather_nd(pred_bbox, indices)
    return _mean_or_zero(smooth_l1_loss(target_bbox, pred_bbox))


def mrcnn_mask_loss_graph(target_masks, target_class_ids, pred_masks):
    """Mask head loss.

    Args:
        target_masks: [batch, num_rois, height, width] in {0, 1}.
        target_class_ids: [batch, num_rois] int.
        pred_masks: [batch, num_masks, height, width, num_classes] sigmoid
            outputs for the first num_masks <= num_rois ROIs. The detection
            targets list the positive ROIs first, so the training model runs
            the mask head on the first int(TRAIN_ROIS_PER_IMAGE *
            ROI_POSITIVE_RATIO) ROIs only: the loss is the same.

    Returns:
        Mean binary cross-entropy over the pixels of the positive ROIs, using
        the mask of each ROI's true class.
    """
    num_masks = tf.shape(pred_masks)[1]
    target_masks = target_masks[:, :num_masks]
    target_class_ids = target_class_ids[:, :num_masks]
    target_class_ids = tf.reshape(tf.cast(target_class_ids, tf.int64), (-1,))
    mask_shape = tf.shape(target_masks)
    target_masks = tf.reshape(target_masks, (-1, mask_shape[2], mask_shape[3]))
    pred_shape = tf.shape(pred_masks)
    pred_masks = tf.reshape(pred_masks, (-1, pred_shape[2], pred_shape[3], pred_shape[4]))
    pred_masks = tf.transpose(pred_masks, [0, 3, 1, 2])

    positive_ix = tf.where(target_class_ids > 0)[:, 0]
    positive_class_ids = tf.gather(target_class_ids, positive_ix)
    indices = tf.stack([positive_ix, positive_class_ids], axis=1)
    y_true = tf.gather(target_masks, positive_ix)
    y_pred = tf.gather_nd(pred_masks, indices)
    epsilon = 1e-7
    y_pred = tf.clip_by_value(y_pred, epsilon, 1.0 - epsilon)
    bce = -(y_true * tf.math.log(y_pred) + (1.0 - y_true) * tf.math.log(1.0 - y_pred))
    return _mean_or_zero(bce)


class LossLayer(KL.Layer):
    """Compute one loss function inside the model, under its own layer name.

    ``LossLayer(fn, name="rpn_class_loss")([a, b])`` outputs the scalar
    ``fn(a, b)`` as a [1] tensor (a batch-independent value).
    """

    def __init__(self, loss_fn, **kwargs):
        super().__init__(**kwargs)
        self.loss_fn = loss_fn

    def call(self, inputs):
        return tf.reshape(self.loss_fn(*inputs), [1])

    def compute_output_shape(self, input_shape):
        return (1,)
