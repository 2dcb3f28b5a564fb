"""Anchors: the reference boxes the RPN scores and refines.

One anchor per (position, ratio, scale) of every pyramid level P2..P6. The
same anchors serve the graph (``MaskRCNN.get_anchors``, normalized) and the
numpy data path (``DataGenerator``, RPN targets, pixels), so they are computed
here only.

Conventions: anchors are ``[N, (y1, x1, y2, x2)]`` float boxes in pixels of
the molded image (or normalized with ``utils.norm_boxes``), ordered level by
level, then by position (row-major), ratio and scale.
"""

import functools
import math

import numpy as np


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


def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
    """Anchors of one feature map.

    Args:
        scales: 1-D array of anchor sides in pixels, e.g. [32, 64, 128].
        ratios: 1-D array of width/height ratios, e.g. [0.5, 1, 2].
        shape: (height, width) of the feature map.
        feature_stride: image pixels per feature-map cell.
        anchor_stride: place anchors at every ``anchor_stride``-th cell.

    Anchor centres are at ``(row * feature_stride, col * feature_stride)``
    (the cell's top-left corner, as in the original). Each anchor has area
    ``scale**2`` and ``width / height == ratio``.

    Returns:
        float [rows * cols * len(scales) * len(ratios), (y1, x1, y2, x2)],
        ordered by position (row-major), then by ratio, then by scale.
    """
    scales, ratios = np.meshgrid(np.array(scales), np.array(ratios))
    scales = scales.flatten()
    ratios = ratios.flatten()
    heights = scales / np.sqrt(ratios)
    widths = scales * np.sqrt(ratios)

    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)

    box_widths, box_centers_x = np.meshgrid(widths, shifts_x)
    box_heights, box_centers_y = np.meshgrid(heights, shifts_y)
    box_centers = np.stack([box_centers_y, box_centers_x], axis=2).reshape([-1, 2])
    box_sizes = np.stack([box_heights, box_widths], axis=2).reshape([-1, 2])
    return np.concatenate([box_centers - 0.5 * box_sizes,
                           box_centers + 0.5 * box_sizes], axis=1)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides,
                             anchor_stride):
    """Anchors of every level of a feature pyramid.

    Args:
        scales: one anchor side per level, e.g. (32, 64, 128, 256, 512).
        ratios: width/height ratios used at every level, e.g. [0.5, 1, 2].
        feature_shapes: [levels, (height, width)] feature-map shapes.
        feature_strides: one stride per level, e.g. [4, 8, 16, 32, 64].
        anchor_stride: see ``generate_anchors``.

    Returns:
        float [N, (y1, x1, y2, x2)] pixel anchors, level by level (the first
        level's anchors first), each level ordered as ``generate_anchors``.
    """
    return np.concatenate([
        generate_anchors(scales[i], ratios, feature_shapes[i],
                         feature_strides[i], anchor_stride)
        for i in range(len(scales))], axis=0)


def pyramid_anchors(config, image_shape):
    """Pixel anchors of every pyramid level for a molded image shape.

    Args:
        config: RPN_ANCHOR_SCALES, RPN_ANCHOR_RATIOS, BACKBONE_STRIDES,
            RPN_ANCHOR_STRIDE (and BACKBONE / COMPUTE_BACKBONE_SHAPE).
        image_shape: [height, width, ...] of the molded image.

    Returns:
        float64 [N, (y1, x1, y2, x2)] pixel anchors (a cached, read-only array).
    """
    return _cached_pyramid_anchors(
        tuple(config.RPN_ANCHOR_SCALES), tuple(config.RPN_ANCHOR_RATIOS),
        tuple(map(tuple, compute_backbone_shapes(config, image_shape).tolist())),
        tuple(config.BACKBONE_STRIDES), config.RPN_ANCHOR_STRIDE)


@functools.lru_cache(maxsize=16)
def _cached_pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride):
    anchors = generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides,
                                       anchor_stride)
    anchors.flags.writeable = False
    return anchors
