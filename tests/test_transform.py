"""Tests of mrcnn.transform: resizing, image metas, molding, unmolding."""

import random

import numpy as np
import pytest
import skimage.transform

from mrcnn import transform, utils

from conftest import ShapesConfig, box_mask, gradient_image


@pytest.fixture(scope="module")
def config():
    return ShapesConfig()


def pixel_iou(a, b):
    """IoU of two bool masks by counting pixels."""
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def test_compose_parse_image_meta_round_trip(config):
    meta = transform.compose_image_meta(7, (100, 160, 3), (128, 128, 3), (24, 0, 104, 128),
                                   0.8, [1, 1, 0])
    assert meta.shape == (config.IMAGE_META_SIZE,)
    np.testing.assert_allclose(meta, [7, 100, 160, 3, 128, 128, 3, 24, 0, 104, 128, 0.8, 1, 1, 0])
    parsed = transform.parse_image_meta(meta)
    assert parsed["image_id"] == 7
    np.testing.assert_array_equal(parsed["original_image_shape"], [100, 160, 3])
    np.testing.assert_array_equal(parsed["image_shape"], [128, 128, 3])
    np.testing.assert_array_equal(parsed["window"], [24, 0, 104, 128])
    assert parsed["scale"] == pytest.approx(0.8)
    np.testing.assert_array_equal(parsed["active_class_ids"], [1, 1, 0])

    batch = transform.parse_image_meta(np.stack([meta, meta * 0]).astype(np.float32))
    np.testing.assert_array_equal(batch["image_id"], [7, 0])
    assert batch["window"].shape == (2, 4) and batch["window"].dtype == np.int32
    assert batch["active_class_ids"].shape == (2, 3)


def test_mold_unmold_round_trip(config):
    image = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    molded = transform.mold_image(image, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded, image - config.MEAN_PIXEL, atol=1e-4)
    restored = transform.unmold_image(molded, config)
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, image)


def test_resize_image_none():
    image = gradient_image(50, 70)
    result, window, scale, padding, crop = transform.resize_image(image, 64, 128, mode="none")
    assert result is image
    assert window == (0, 0, 50, 70) and scale == 1 and crop is None
    assert padding == [(0, 0), (0, 0), (0, 0)]


@pytest.mark.parametrize("shape, min_dim, max_dim, scale, window", [
    ((50, 80), 64, 128, 1.28, (32, 13, 96, 115)),      # scaled up by min_dim
    ((100, 400), 64, 128, 0.32, (48, 0, 80, 128)),     # capped by max_dim
    ((128, 96), 64, 128, 1, (0, 16, 128, 112)),        # already fits
])
def test_resize_image_square(shape, min_dim, max_dim, scale, window):
    image = gradient_image(*shape)
    result, got_window, got_scale, padding, crop = transform.resize_image(image, min_dim, max_dim)
    assert result.shape == (max_dim, max_dim, 3) and result.dtype == np.uint8
    assert got_scale == pytest.approx(scale) and got_window == window and crop is None
    y1, x1, y2, x2 = window
    assert padding == [(y1, max_dim - y2), (x1, max_dim - x2), (0, 0)]
    scaled = image if scale == 1 else skimage.transform.resize(
        image, (y2 - y1, x2 - x1), order=1, mode="constant", preserve_range=True,
        anti_aliasing=False)
    np.testing.assert_array_equal(result[y1:y2, x1:x2], scaled.astype(np.uint8))
    outside = np.ones(result.shape[:2], dtype=bool)
    outside[y1:y2, x1:x2] = False
    assert not result[outside].any()


def test_resize_image_square_grayscale_2d():
    result, window, _, _, _ = transform.resize_image(np.full((30, 60), 7, np.uint8), 64, 64)
    assert result.shape == (64, 64) and window == (16, 0, 48, 64)
    assert (result[16:48] == 7).all() and not result[:16].any()


def test_resize_image_min_scale():
    _, window, scale, _, _ = transform.resize_image(gradient_image(64, 64), 64, 256, min_scale=2)
    assert scale == 2 and window == (64, 64, 192, 192)


@pytest.mark.parametrize("shape, min_dim, scale, result_shape", [
    ((50, 130), 64, 1.28, (64, 192)),
    ((128, 256), 128, 1, (128, 256)),
    ((200, 100), 64, 1, (256, 128)),
])
def test_resize_image_pad64(shape, min_dim, scale, result_shape):
    image = gradient_image(*shape)
    result, window, got_scale, padding, crop = transform.resize_image(image, min_dim, 1024,
                                                                  mode="pad64")
    assert result.shape[:2] == result_shape and got_scale == pytest.approx(scale)
    h, w = round(shape[0] * scale), round(shape[1] * scale)
    top, left = (result_shape[0] - h) // 2, (result_shape[1] - w) // 2
    assert window == (top, left, top + h, left + w) and crop is None
    assert padding == [(top, result_shape[0] - h - top), (left, result_shape[1] - w - left), (0, 0)]
    assert result[top:top + h, left:left + w].all()
    assert result.sum() == result[top:top + h, left:left + w].sum()


def test_resize_image_crop():
    random.seed(7)
    image = gradient_image(50, 100)
    result, window, scale, padding, crop = transform.resize_image(image, 64, None, mode="crop")
    assert result.shape == (64, 64, 3) and window == (0, 0, 64, 64)
    assert scale == pytest.approx(1.28) and padding == [(0, 0), (0, 0), (0, 0)]
    y, x, h, w = crop
    assert (h, w) == (64, 64) and y == 0 and 0 <= x <= 128 - 64
    scaled = skimage.transform.resize(image, (64, 128), order=1, mode="constant",
                                      preserve_range=True, anti_aliasing=False)
    scaled = scaled.astype(np.uint8)
    np.testing.assert_array_equal(result, scaled[y:y + h, x:x + w])


def test_resize_image_bad_arguments():
    image = gradient_image(10, 10)
    with pytest.raises(ValueError, match="Unknown resize mode 'fit'"):
        transform.resize_image(image, 64, 64, mode="fit")
    with pytest.raises(ValueError, match="multiple of 64"):
        transform.resize_image(image, 100, 128, mode="pad64")
    with pytest.raises(ValueError, match="max_dim"):
        transform.resize_image(image, 64, None, mode="square")
    with pytest.raises(ValueError, match="crop.*min_dim"):
        transform.resize_image(image, None, 64, mode="crop")


@pytest.mark.parametrize("mode", ["square", "pad64", "crop"])
def test_resize_mask_keeps_bool_and_aligns_with_resize_image(mode):
    random.seed(3)
    mask = np.zeros((50, 90, 2), dtype=bool)
    mask[10:30, 20:60, 0] = True
    mask[35:50, 0:90, 1] = True
    image = np.repeat(mask[:, :, :1], 3, axis=2).astype(np.uint8) * 255
    result, window, scale, padding, crop = transform.resize_image(image, 64, 128, mode=mode)
    resized = transform.resize_mask(mask, scale, padding, crop)
    assert resized.dtype == bool
    assert resized.shape == result.shape[:2] + (2,)
    # The mask's box and the bright region of the image agree to a pixel.
    from_image = utils.extract_bboxes(result[:, :, :1] > 127)[0]
    from_mask = utils.extract_bboxes(resized)[0]
    assert np.abs(from_image - from_mask).max() <= 1
    assert pixel_iou(result[:, :, 0] > 127, resized[:, :, 0]) > 0.95


def test_resize_mask_nearest_neighbour_upscale():
    mask = np.array([[1, 0], [0, 1]], dtype=bool)[:, :, None]
    resized = transform.resize_mask(mask, 2, [(1, 0), (0, 1), (0, 0)])
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:3, 0:2] = True
    expected[3:5, 2:4] = True
    np.testing.assert_array_equal(resized[:, :, 0], expected)


def test_resize_mask_without_instances():
    resized = transform.resize_mask(np.zeros((10, 12, 0), bool), 1.5, [(1, 1), (2, 2), (0, 0)])
    assert resized.shape == (17, 22, 0) and resized.dtype == bool


def test_unmold_mask():
    mask = np.zeros((28, 28), dtype=np.float32)
    mask[:, :14] = 0.9
    full = transform.unmold_mask(mask, (10, 20, 30, 60), (50, 70, 3))
    assert full.shape == (50, 70) and full.dtype == bool
    np.testing.assert_array_equal(full, box_mask((50, 70), (10, 20, 30, 40)))


def test_unmold_detections_pastes_each_mask_into_its_box():
    """Overlapping instances, each pasted alone into its own full-image plane."""
    rng = np.random.default_rng(2)
    molded_shape, image_shape, window = (64, 64, 3), (32, 64, 3), np.array([16, 0, 48, 64])
    pixel_boxes = np.array([[20, 4, 40, 30], [18, 10, 46, 63], [30, 20, 34, 24]])  # molded pixels
    detections = np.zeros((5, 6), np.float32)
    detections[:3, :4] = utils.norm_boxes(pixel_boxes, molded_shape[:2])
    detections[:3, 4:] = [[1, 0.9], [2, 0.8], [1, 0.7]]
    mrcnn_mask = rng.random((5, 28, 28, 3)).astype(np.float32)

    boxes, class_ids, scores, masks = transform.unmold_detections(
        detections, mrcnn_mask, image_shape, molded_shape, window)
    np.testing.assert_array_equal(boxes, pixel_boxes - [16, 0, 16, 0])
    assert masks.shape == (32, 64, 3) and masks.dtype == bool
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        expected = np.zeros((32, 64), bool)
        expected[y1:y2, x1:x2] = utils.resize(mrcnn_mask[i, :, :, class_ids[i]], (y2 - y1, x2 - x1)) >= 0.5
        np.testing.assert_array_equal(masks[..., i], expected)
    assert masks[..., 1].sum() > 100 and not masks[:, :, 1][:, :10].any()
