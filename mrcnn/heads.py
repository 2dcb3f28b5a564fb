"""Network heads: the region proposal network and the classifier and mask heads.

Layer names are the original's (rpn_model, rpn_conv_shared, rpn_class_raw,
rpn_bbox_pred, mrcnn_class_conv1, ..., mrcnn_mask): weight files are matched
by them.
"""

import keras
from keras import layers as KL

from mrcnn.layers import Conv2D, PyramidROIAlign, TimeDistributed, conv_bn


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
    input_feature_map = keras.Input(shape=[None, None, depth], name="input_rpn_feature_map")
    outputs = rpn_graph(input_feature_map, anchors_per_location, anchor_stride)
    return keras.Model(input_feature_map, outputs, name="rpn_model")


def fpn_classifier_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True,
                         fc_layers_size=1024):
    """Classifier and box-regression head.

    Args:
        rois: [batch, num_rois, (y1, x1, y2, x2)] normalized proposals.
        feature_maps: [P2, P3, P4, P5].
        image_meta: [batch, IMAGE_META_SIZE].
        pool_size: side of the ROIAlign output (POOL_SIZE).
        num_classes: NUM_CLASSES, background included.
        train_bn: see layers.BatchNorm.
        fc_layers_size: width of the two "fully connected" (convolution) layers.

    Returns:
        mrcnn_class_logits: [batch, num_rois, num_classes].
        mrcnn_probs: [batch, num_rois, num_classes].
        mrcnn_bbox: [batch, num_rois, num_classes, (dy, dx, log(dh), log(dw))].
    """
    x = PyramidROIAlign([pool_size, pool_size], name="roi_align_classifier")(
        [rois, image_meta] + feature_maps)
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


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True):
    """Mask head.

    Args:
        rois: [batch, num_rois, (y1, x1, y2, x2)] normalized boxes.
        feature_maps: [P2, P3, P4, P5].
        image_meta: [batch, IMAGE_META_SIZE].
        pool_size: side of the ROIAlign output (MASK_POOL_SIZE).
        num_classes: NUM_CLASSES.
        train_bn: see layers.BatchNorm.

    Returns:
        [batch, num_rois, 2 * pool_size, 2 * pool_size, num_classes] sigmoid
        mask probabilities, one mask per class.
    """
    x = PyramidROIAlign([pool_size, pool_size], name="roi_align_mask")([rois, image_meta] + feature_maps)
    for i in range(1, 5):
        x = conv_bn(x, 256, (3, 3), f"mrcnn_mask_conv{i}", f"mrcnn_mask_bn{i}", padding="same",
                    train_bn=train_bn, time_distributed=True)
        x = KL.Activation("relu")(x)
    x = TimeDistributed(KL.Conv2DTranspose(256, (2, 2), strides=2, activation="relu"),
                        name="mrcnn_mask_deconv")(x)
    return TimeDistributed(KL.Conv2D(num_classes, (1, 1), strides=1, activation="sigmoid"),
                           name="mrcnn_mask")(x)
