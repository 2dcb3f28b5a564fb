"""ResNet backbone and feature pyramid network (FPN).

Layer names are exactly those of the original implementation (conv1,
bn_conv1, res2a_branch2a, bn2a_branch2a, ..., fpn_c5p5, fpn_p2, ...): weight
files are matched to the model by these names.
"""

import math

import keras
import numpy as np
from keras import layers as KL

RESNET_BLOCKS = {"resnet50": 5, "resnet101": 22}


def compute_backbone_shapes(config, image_shape):
    """Shape of each pyramid level for an input image.

    Returns:
        int array [N, (height, width)], one row per level P2..P6 (for the
        ResNet backbones, ``ceil(side / stride)`` for each BACKBONE_STRIDES).
    """
    if callable(config.BACKBONE):
        return np.array(config.COMPUTE_BACKBONE_SHAPE(image_shape))
    return np.array([[int(math.ceil(image_shape[0] / stride)),
                      int(math.ceil(image_shape[1] / stride))]
                     for stride in config.BACKBONE_STRIDES])
