"""ResNet backbone and feature pyramid network (FPN).

Layer names are exactly those of the original implementation (conv1,
bn_conv1, res2a_branch2a, bn2a_branch2a, ..., fpn_c5p5, fpn_p2, ...): weight
files are matched to the model by these names.
"""

from keras import layers as KL

from mrcnn.layers import Conv2D, conv_bn

RESNET_BLOCKS = {"resnet50": 5, "resnet101": 22}


def _bottleneck(input_tensor, kernel_size, filters, stage, block, strides, use_bias, train_bn):
    """The 1x1 -> kxk -> 1x1 main branch of a ResNet block (res<stage><block>_branch2a..c)."""
    nb_filter1, nb_filter2, nb_filter3 = filters
    conv_name_base = f"res{stage}{block}_branch"
    bn_name_base = f"bn{stage}{block}_branch"

    x = conv_bn(input_tensor, nb_filter1, (1, 1), conv_name_base + "2a", bn_name_base + "2a",
                strides=strides, use_bias=use_bias, train_bn=train_bn)
    x = KL.Activation("relu")(x)
    x = conv_bn(x, nb_filter2, (kernel_size, kernel_size), conv_name_base + "2b",
                bn_name_base + "2b", padding="same", use_bias=use_bias, train_bn=train_bn)
    x = KL.Activation("relu")(x)
    return conv_bn(x, nb_filter3, (1, 1), conv_name_base + "2c", bn_name_base + "2c",
                   use_bias=use_bias, train_bn=train_bn)


def identity_block(input_tensor, kernel_size, filters, stage, block, use_bias=True, train_bn=True):
    """ResNet block without a convolution on the shortcut.

    Args:
        input_tensor: [batch, height, width, channels].
        kernel_size: kernel size of the middle convolution.
        filters: (nb_filter1, nb_filter2, nb_filter3) of the three convolutions.
        stage, block: name parts, e.g. stage 2 block "b" -> res2b_branch2a.
        train_bn: see layers.BatchNorm.
    """
    x = _bottleneck(input_tensor, kernel_size, filters, stage, block, (1, 1), use_bias, train_bn)
    x = KL.Add()([x, input_tensor])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(x)


def conv_block(input_tensor, kernel_size, filters, stage, block, strides=(2, 2), use_bias=True,
               train_bn=True):
    """ResNet block with a strided 1x1 convolution on the shortcut.

    Same arguments as identity_block, plus ``strides`` of the first
    convolution and of the shortcut (the spatial size is divided by them).
    """
    x = _bottleneck(input_tensor, kernel_size, filters, stage, block, strides, use_bias, train_bn)
    shortcut = conv_bn(input_tensor, filters[2], (1, 1), f"res{stage}{block}_branch1",
                       f"bn{stage}{block}_branch1", strides=strides, use_bias=use_bias,
                       train_bn=train_bn)
    x = KL.Add()([x, shortcut])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(x)


def resnet_graph(input_image, architecture, stage5=False, train_bn=True):
    """ResNet50 or ResNet101 with the original's layer names.

    Args:
        input_image: [batch, height, width, 3] molded image tensor.
        architecture: "resnet50" or "resnet101".
        stage5: build stage 5 (C5); the FPN needs it.
        train_bn: see layers.BatchNorm.

    Returns:
        [C1, C2, C3, C4, C5]: feature maps of strides 4 (C1, the stem after
        its max-pool), 4, 8, 16 and 32; C5 is None without stage5.
    """
    if architecture not in RESNET_BLOCKS:
        raise ValueError(f"Unknown ResNet architecture {architecture!r}: use one of {sorted(RESNET_BLOCKS)}.")
    # Stage 1
    x = KL.ZeroPadding2D((3, 3))(input_image)
    x = conv_bn(x, 64, (7, 7), "conv1", "bn_conv1", strides=(2, 2), train_bn=train_bn)
    x = KL.Activation("relu")(x)
    C1 = x = KL.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x)
    # Stage 2
    x = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=(1, 1), train_bn=train_bn)
    x = identity_block(x, 3, [64, 64, 256], stage=2, block="b", train_bn=train_bn)
    C2 = x = identity_block(x, 3, [64, 64, 256], stage=2, block="c", train_bn=train_bn)
    # Stage 3
    x = conv_block(x, 3, [128, 128, 512], stage=3, block="a", train_bn=train_bn)
    for block in "bcd":
        x = identity_block(x, 3, [128, 128, 512], stage=3, block=block, train_bn=train_bn)
    C3 = x
    # Stage 4
    x = conv_block(x, 3, [256, 256, 1024], stage=4, block="a", train_bn=train_bn)
    for i in range(RESNET_BLOCKS[architecture]):
        x = identity_block(x, 3, [256, 256, 1024], stage=4, block=chr(98 + i), train_bn=train_bn)
    C4 = x
    # Stage 5
    if stage5:
        x = conv_block(x, 3, [512, 512, 2048], stage=5, block="a", train_bn=train_bn)
        x = identity_block(x, 3, [512, 512, 2048], stage=5, block="b", train_bn=train_bn)
        C5 = identity_block(x, 3, [512, 512, 2048], stage=5, block="c", train_bn=train_bn)
    else:
        C5 = None
    return [C1, C2, C3, C4, C5]


def fpn_graph(C2, C3, C4, C5, pyramid_size):
    """Top-down feature pyramid.

    Args:
        C2..C5: backbone feature maps of strides 4, 8, 16 and 32.
        pyramid_size: channels of every pyramid level (TOP_DOWN_PYRAMID_SIZE).

    Returns:
        [P2, P3, P4, P5, P6], each [batch, h, w, pyramid_size]; P6 is P5
        subsampled by 2 and only feeds the RPN.
    """
    P5 = Conv2D(pyramid_size, (1, 1), name="fpn_c5p5")(C5)
    P4 = KL.Add(name="fpn_p4add")([
        KL.UpSampling2D(size=(2, 2), name="fpn_p5upsampled")(P5),
        Conv2D(pyramid_size, (1, 1), name="fpn_c4p4")(C4)])
    P3 = KL.Add(name="fpn_p3add")([
        KL.UpSampling2D(size=(2, 2), name="fpn_p4upsampled")(P4),
        Conv2D(pyramid_size, (1, 1), name="fpn_c3p3")(C3)])
    P2 = KL.Add(name="fpn_p2add")([
        KL.UpSampling2D(size=(2, 2), name="fpn_p3upsampled")(P3),
        Conv2D(pyramid_size, (1, 1), name="fpn_c2p2")(C2)])
    # 3x3 convolutions on every level to get the final feature maps.
    P2 = Conv2D(pyramid_size, (3, 3), padding="SAME", name="fpn_p2")(P2)
    P3 = Conv2D(pyramid_size, (3, 3), padding="SAME", name="fpn_p3")(P3)
    P4 = Conv2D(pyramid_size, (3, 3), padding="SAME", name="fpn_p4")(P4)
    P5 = Conv2D(pyramid_size, (3, 3), padding="SAME", name="fpn_p5")(P5)
    P6 = KL.MaxPooling2D(pool_size=(1, 1), strides=2, name="fpn_p6")(P5)
    return [P2, P3, P4, P5, P6]
