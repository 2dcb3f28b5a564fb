"""Tests of mrcnn.anchors against hand-made cases and independent numpy code."""

import numpy as np

from mrcnn import anchors as anchors_module


def test_generate_anchors_positions_sizes_and_order():
    ratios = [0.5, 1, 2]
    anchors = anchors_module.generate_anchors(32, ratios, (2, 3), 4, 1)
    assert anchors.shape == (2 * 3 * 3, 4)
    expected = []
    for row in range(2):
        for col in range(3):
            cy, cx = row * 4, col * 4
            for ratio in ratios:
                h, w = 32 / np.sqrt(ratio), 32 * np.sqrt(ratio)
                expected.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
    np.testing.assert_allclose(anchors, expected)


def test_generate_anchors_area_and_ratio():
    anchors = anchors_module.generate_anchors([16, 64], [0.5, 1, 2], (4, 4), 8, 1)
    heights = anchors[:, 2] - anchors[:, 0]
    widths = anchors[:, 3] - anchors[:, 1]
    assert sorted(set(np.round(heights * widths).astype(int))) == [256, 4096]
    assert sorted(set(np.round(widths / heights, 6))) == [0.5, 1, 2]


def test_generate_anchors_anchor_stride():
    anchors = anchors_module.generate_anchors(32, [1], (5, 4), 16, 2)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert anchors.shape == (3 * 2, 4)
    np.testing.assert_allclose(centers, [[y, x] for y in (0, 32, 64) for x in (0, 32)])


def test_generate_pyramid_anchors_counts_and_levels():
    scales = (32, 64, 128, 256, 512)
    strides = [4, 8, 16, 32, 64]
    shapes = np.array([[32, 32], [16, 16], [8, 8], [4, 4], [2, 2]])
    ratios = [0.5, 1, 2]
    anchors = anchors_module.generate_pyramid_anchors(scales, ratios, shapes, strides, 1)
    assert anchors.shape == (sum(h * w * 3 for h, w in shapes), 4)
    start = 0
    for scale, stride, (h, w) in zip(scales, strides, shapes):
        level = anchors[start:start + h * w * 3]
        np.testing.assert_allclose(level, anchors_module.generate_anchors(scale, ratios, (h, w), stride, 1))
        start += h * w * 3
