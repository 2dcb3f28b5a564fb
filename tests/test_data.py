"""Tests of mrcnn.data: image meta, ground truth, RPN/detection targets, batches."""

import os
import pickle
import random

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

import albumentations as A
import numpy as np
import pytest

from mrcnn import data, transform, utils

from conftest import (CIRCLE, COLORS, EMPTY, ONE_CIRCLE, SQUARE, TWELVE_SQUARES, TWO_SHAPES,
                      ShapesConfig, ShapesTestDataset, boxes_of, make_shapes_config)


############################################################
#  Image meta, mold/unmold
############################################################


############################################################
#  load_image_gt
############################################################

def test_load_image_gt_resizes_image_masks_and_boxes(shapes_dataset, shapes_config):
    image, meta, class_ids, bbox, mask = data.load_image_gt(shapes_dataset, shapes_config, 0)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert mask.shape == (128, 128, 2) and mask.dtype == bool
    assert class_ids.dtype == np.int32 and bbox.dtype == np.int32
    np.testing.assert_array_equal(class_ids, [SQUARE, CIRCLE])
    np.testing.assert_array_equal(bbox, boxes_of(mask))

    parsed = transform.parse_image_meta(meta)
    assert parsed["image_id"] == 0
    np.testing.assert_array_equal(parsed["original_image_shape"], [100, 160, 3])
    np.testing.assert_array_equal(parsed["image_shape"], [128, 128, 3])
    assert parsed["scale"] == pytest.approx(128 / 160)
    np.testing.assert_array_equal(parsed["window"], [24, 0, 104, 128])  # 100*0.8 = 80 rows, centred
    np.testing.assert_array_equal(parsed["active_class_ids"], [1, 1, 1])

    # The boxes are the original shapes' boxes, scaled and shifted by the window.
    expected = np.array([box for _, box in TWO_SHAPES[2]]) * 0.8 + [24, 0, 24, 0]
    np.testing.assert_allclose(bbox, expected, atol=1)
    # The masks sit on the pixels painted with their class colour.
    for i, class_id in enumerate(class_ids):
        painted = np.all(image == COLORS[class_id], axis=-1)
        assert (mask[:, :, i] & painted).sum() >= 0.9 * mask[:, :, i].sum()


def test_load_image_gt_mini_mask(shapes_dataset, shapes_config):
    _, _, _, bbox, full_mask = data.load_image_gt(shapes_dataset, shapes_config, 1)
    _, _, class_ids, mini_bbox, mini_mask = data.load_image_gt(shapes_dataset, shapes_config, 1, use_mini_mask=True)
    assert mini_mask.shape == (28, 28, 3) and mini_mask.dtype == bool
    np.testing.assert_array_equal(mini_bbox, bbox)
    expanded = utils.expand_mask(bbox, mini_mask, (128, 128))
    for i in range(len(class_ids)):
        intersection = (expanded[:, :, i] & full_mask[:, :, i]).sum()
        union = (expanded[:, :, i] | full_mask[:, :, i]).sum()
        assert intersection / union > 0.9
    assert mini_mask[:, :, 0].all()  # a square fills its box


def test_load_image_gt_active_class_ids_follow_the_source():
    shapes_dataset = ShapesTestDataset([ONE_CIRCLE])
    shapes_dataset.add_class("other", 1, "triangle")
    shapes_dataset.prepare()
    _, meta, _, _, _ = data.load_image_gt(shapes_dataset, make_shapes_config(NUM_CLASSES=4), 0)
    np.testing.assert_array_equal(transform.parse_image_meta(meta)["active_class_ids"], [1, 1, 1, 0])


def test_load_image_gt_crop_mode_drops_instances_outside_the_crop():
    shapes_dataset = ShapesTestDataset([(64, 128, [(SQUARE, (10, 0, 40, 20)), (CIRCLE, (10, 100, 50, 128))])])
    shapes_config = make_shapes_config(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=64)
    counts = set()
    random.seed(3)
    for _ in range(30):
        image, _, class_ids, bbox, mask = data.load_image_gt(shapes_dataset, shapes_config, 0)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64, len(class_ids))
        assert mask.any(axis=(0, 1)).all()
        np.testing.assert_array_equal(bbox, boxes_of(mask))
        for i, class_id in enumerate(class_ids):
            assert np.all(image[mask[:, :, i]] == COLORS[class_id])
        counts.add(len(class_ids))
    assert counts == {0, 1}  # a 64-px crop never holds both shapes


def test_load_image_gt_rejects_masks_of_the_wrong_size():
    class BadMasks(ShapesTestDataset):
        def load_mask(self, image_id):
            masks, class_ids = super().load_mask(image_id)
            return masks[:-1], class_ids

    with pytest.raises(ValueError, match=r"BadMasks.load_mask\(0\) returned masks of \(89, 90\)"):
        data.load_image_gt(BadMasks([ONE_CIRCLE]), ShapesConfig(), 0)


def test_load_image_gt_image_without_instances(shapes_dataset, shapes_config):
    image, _, class_ids, bbox, mask = data.load_image_gt(shapes_dataset, shapes_config, 3, use_mini_mask=True)
    assert image.shape == (128, 128, 3)
    assert class_ids.shape == (0,) and bbox.shape == (0, 4) and mask.shape == (28, 28, 0)


############################################################
#  Augmentation
############################################################

def test_albumentations_flip_moves_masks_with_the_image(shapes_dataset, shapes_config):
    image, _, class_ids, bbox, mask = data.load_image_gt(shapes_dataset, shapes_config, 0)
    flipped, _, flipped_ids, flipped_bbox, flipped_mask = data.load_image_gt(
        shapes_dataset, shapes_config, 0, augmentation=A.HorizontalFlip(p=1))
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, mask[:, ::-1])
    np.testing.assert_array_equal(flipped_ids, class_ids)
    np.testing.assert_array_equal(flipped_bbox[:, [0, 2]], bbox[:, [0, 2]])
    np.testing.assert_array_equal(flipped_bbox[:, [1, 3]], 128 - bbox[:, [3, 1]])


def test_albumentations_pixel_transform_leaves_masks_alone(shapes_dataset, shapes_config):
    image, _, _, bbox, mask = data.load_image_gt(shapes_dataset, shapes_config, 1)
    augmentation = A.Compose([A.RandomBrightnessContrast(brightness_limit=(0.3, 0.3), p=1),
                              A.GaussNoise(p=1)])
    new_image, _, _, new_bbox, new_mask = data.load_image_gt(
        shapes_dataset, shapes_config, 1, augmentation=augmentation)
    assert new_image.dtype == np.uint8 and new_image.shape == image.shape
    assert np.abs(new_image.astype(int) - image).mean() > 5
    np.testing.assert_array_equal(new_mask, mask)
    np.testing.assert_array_equal(new_bbox, bbox)


def test_albumentations_rotation_keeps_masks_on_their_shapes(shapes_dataset, shapes_config):
    augmentation = A.Affine(rotate=(30, 30), interpolation=0, mask_interpolation=0, p=1)
    image, _, class_ids, bbox, mask = data.load_image_gt(shapes_dataset, shapes_config, 1, augmentation=augmentation)
    np.testing.assert_array_equal(bbox, boxes_of(mask))
    for i, class_id in enumerate(class_ids):
        painted = np.all(image == COLORS[class_id], axis=-1)
        assert (mask[:, :, i] & painted).sum() >= 0.9 * mask[:, :, i].sum()


def test_albumentations_size_change_is_refused(shapes_dataset, shapes_config):
    with pytest.raises(ValueError, match="must keep the image size"):
        data.load_image_gt(shapes_dataset, shapes_config, 0, augmentation=A.Resize(64, 64))


def test_callable_augmentation(shapes_dataset, shapes_config):
    def flip_up_down(image, masks):
        return image[::-1], masks[::-1]

    image, _, _, _, mask = data.load_image_gt(shapes_dataset, shapes_config, 0)
    flipped, _, _, _, flipped_mask = data.load_image_gt(shapes_dataset, shapes_config, 0, augmentation=flip_up_down)
    np.testing.assert_array_equal(flipped, image[::-1])
    np.testing.assert_array_equal(flipped_mask, mask[::-1])


def test_callable_augmentation_float_result_is_rounded_and_clipped(shapes_dataset, shapes_config):
    def brighten(image, masks):
        return image * 1.5 - 20.2, masks

    image, _, _, _, _ = data.load_image_gt(shapes_dataset, shapes_config, 0)
    bright, _, _, _, _ = data.load_image_gt(shapes_dataset, shapes_config, 0, augmentation=brighten)
    assert bright.dtype == np.uint8
    np.testing.assert_array_equal(bright, np.clip(np.round(image * 1.5 - 20.2), 0, 255))
    assert bright.max() == 255 and bright.min() == 0


def test_callable_augmentation_that_erases_an_instance_drops_it(shapes_dataset, shapes_config):
    def erase_first(image, masks):
        masks = masks.copy()
        masks[:, :, 0] = False
        return image, masks

    _, _, class_ids, bbox, mask = data.load_image_gt(shapes_dataset, shapes_config, 1, augmentation=erase_first)
    np.testing.assert_array_equal(class_ids, [CIRCLE, SQUARE])
    assert mask.shape == (128, 128, 2)
    np.testing.assert_array_equal(bbox, boxes_of(mask))


@pytest.mark.parametrize("bad", [lambda image, masks: (image[:64], masks),
                                 lambda image, masks: (image, masks[:, :, :1])])
def test_callable_augmentation_with_wrong_shapes_is_refused(shapes_dataset, shapes_config, bad):
    with pytest.raises(ValueError, match=r"into \(.*augmentations must keep the image size"):
        data.load_image_gt(shapes_dataset, shapes_config, 0, augmentation=bad)


class Fliplr:
    """What an imgaug 0.4 augmenter looks like to the code that receives it."""

    __module__ = "imgaug.augmenters.flip"

    def __init__(self, p):
        self.p = p

    def augment_image(self, image):
        return image[:, ::-1]

    def __call__(self, *args, **kwargs):
        raise AssertionError("Expected boolean as argument for 'return_batch'")


@pytest.mark.parametrize("augmentation, message", [
    (Fliplr(0.5), r"augmentation is an imgaug augmenter \(Fliplr\), as the original took; "
                  r"imgaug does not run with numpy 2.*HorizontalFlip\(p=0.5\)"),
    ([lambda image, masks: (image, masks)], r"augmentation is a list: wrap the transforms in "
                                            r"albumentations.Compose"),
    ("flip", "augmentation is a str: pass an albumentations transform or a function"),
])
def test_augmentations_of_other_kinds_say_what_to_pass(shapes_dataset, shapes_config,
                                                       augmentation, message):
    with pytest.raises(TypeError, match=message):
        data.load_image_gt(shapes_dataset, shapes_config, 0, augmentation=augmentation)
    with pytest.raises(TypeError, match=message):
        data.check_augmentation(augmentation)


############################################################
#  RPN targets
############################################################


############################################################
#  Random ROIs and detection targets
############################################################


############################################################
#  DataGenerator and data_generator
############################################################

def anchor_count(shapes_config):
    side = shapes_config.IMAGE_SHAPE[0]
    cells = sum(int(np.ceil(side / stride)) ** 2 for stride in shapes_config.BACKBONE_STRIDES)
    return cells * len(shapes_config.RPN_ANCHOR_RATIOS)


def batch_image_ids(generator, index):
    return transform.parse_image_meta(generator[index][0][1])["image_id"].tolist()


def test_data_generator_batch(shapes_dataset, shapes_config):
    generator = data.DataGenerator(shapes_dataset, shapes_config, shuffle=False)
    assert len(generator) == 5 // 2
    assert len(generator.anchors) == anchor_count(shapes_config) == 4092
    batch = generator[0]
    assert len(batch) == 1 and len(batch[0]) == 7
    images, meta, rpn_match, rpn_bbox, class_ids, boxes, masks = batch[0]
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.float32
    assert meta.shape == (2, shapes_config.IMAGE_META_SIZE) and meta.dtype == np.float32
    assert rpn_match.shape == (2, 4092, 1) and rpn_match.dtype == np.int32
    assert rpn_bbox.shape == (2, 64, 4) and rpn_bbox.dtype == np.float32
    assert class_ids.shape == (2, 10) and class_ids.dtype == np.int32
    assert boxes.shape == (2, 10, 4) and boxes.dtype == np.int32
    assert masks.shape == (2, 28, 28, 10) and masks.dtype == bool

    for b, image_id in enumerate(transform.parse_image_meta(meta)["image_id"]):
        image, _, gt_class_ids, gt_boxes, gt_masks = data.load_image_gt(
            shapes_dataset, shapes_config, image_id, use_mini_mask=True)
        n = len(gt_class_ids)
        np.testing.assert_array_equal(transform.unmold_image(images[b], shapes_config), image)
        np.testing.assert_array_equal(class_ids[b, :n], gt_class_ids)
        assert not class_ids[b, n:].any() and not boxes[b, n:].any() and not masks[b, ..., n:].any()
        np.testing.assert_array_equal(boxes[b, :n], gt_boxes)
        np.testing.assert_array_equal(masks[b, ..., :n], gt_masks)
        assert 0 < (rpn_match[b] == 1).sum() <= 32 and (rpn_match[b] != 0).sum() == 64


def test_data_generator_without_mini_masks(shapes_dataset):
    generator = data.DataGenerator(shapes_dataset, make_shapes_config(USE_MINI_MASK=False), batch_size=1)
    assert len(generator) == 5
    assert generator[0][0][6].shape == (1, 128, 128, 10)


def test_data_generator_skips_images_without_instances(shapes_dataset, shapes_config):
    generator = data.DataGenerator(shapes_dataset, shapes_config, shuffle=False, batch_size=2, steps=10, seed=0)
    ids = [batch_image_ids(generator, i) for i in range(10)]
    assert ids[0] == [0, 1] and ids[1][0] == 2 and ids[2] == [4, 0]
    assert 3 not in sum(ids, [])  # image 3 is empty: a random image replaces it

    empty = ShapesTestDataset([EMPTY, EMPTY])
    with pytest.raises(ValueError, match="No image of the dataset has an instance"):
        data.DataGenerator(empty, shapes_config, batch_size=1)[0]


def test_data_generator_subsamples_instances(shapes_dataset, shapes_config):
    generator = data.DataGenerator(ShapesTestDataset([TWELVE_SQUARES]), shapes_config, batch_size=1)
    _, _, _, _, class_ids, boxes, _ = generator[0][0]
    _, _, _, all_boxes, _ = data.load_image_gt(shapes_dataset, shapes_config, 4)
    assert np.all(class_ids[0] == SQUARE)
    assert len({tuple(box) for box in boxes[0]}) == 10
    assert all((all_boxes == box).all(axis=1).any() for box in boxes[0])


def test_data_generator_epochs_continue_the_image_stream(shapes_config):
    shapes_dataset = ShapesTestDataset([ONE_CIRCLE] * 8)
    generator = data.DataGenerator(shapes_dataset, shapes_config, shuffle=False, steps=3)
    assert len(generator) == 3
    assert [batch_image_ids(generator, i) for i in range(3)] == [[0, 1], [2, 3], [4, 5]]
    generator.on_epoch_end()
    assert generator.epoch == 1
    assert [batch_image_ids(generator, i) for i in range(3)] == [[6, 7], [0, 1], [2, 3]]


def test_data_generator_seeded_shuffling(shapes_config):
    shapes_dataset = ShapesTestDataset([ONE_CIRCLE] * 8)
    first = data.DataGenerator(shapes_dataset, shapes_config, seed=7, steps=8)
    second = data.DataGenerator(shapes_dataset, shapes_config, seed=7, steps=8)
    for a, b in zip(first[1][0], second[1][0]):
        np.testing.assert_array_equal(a, b)
    stream = [first.image_id_at(p) for p in range(32)]
    assert stream == [second.image_id_at(p) for p in range(32)]
    passes = [stream[i:i + 8] for i in range(0, 32, 8)]
    assert all(sorted(images) == list(range(8)) for images in passes)
    assert len({tuple(images) for images in passes}) == 4  # each pass has its own order
    assert [batch_image_ids(first, i) for i in range(8)] == [stream[i:i + 2] for i in range(0, 16, 2)]
    first.on_epoch_end()
    assert batch_image_ids(first, 0) == stream[16:18]
    other_seed = data.DataGenerator(shapes_dataset, shapes_config, seed=8)
    assert [other_seed.image_id_at(p) for p in range(32)] != stream


def test_data_generator_augmentation_and_no_augmentation_sources(shapes_config):
    calls = []

    def record(image, masks):
        calls.append(image.shape)
        return image, masks

    shapes_dataset = ShapesTestDataset([ONE_CIRCLE, TWO_SHAPES])
    data.DataGenerator(shapes_dataset, shapes_config, augmentation=record)[0]
    assert len(calls) == 2
    data.DataGenerator(shapes_dataset, shapes_config, augmentation=record, no_augmentation_sources=["test"])[0]
    assert len(calls) == 2


def test_data_generator_detection_targets(shapes_dataset, shapes_config):
    generator = data.DataGenerator(shapes_dataset, shapes_config, random_rois=100, detection_targets=True,
                                   shuffle=False, seed=0)
    inputs, outputs = generator[0]
    assert len(inputs) == 9
    assert inputs[7].shape == (2, 100, 4) and inputs[7].dtype == np.int32
    assert inputs[8].shape == (2, 32, 4) and inputs[8].dtype == np.int32
    class_ids, bbox, mask = outputs
    assert class_ids.shape == (2, 32, 1) and class_ids.dtype == np.int32
    assert bbox.shape == (2, 32, 3, 4) and mask.shape == (2, 32, 28, 28, 3)
    assert (class_ids > 0).any()

    rois_only = data.DataGenerator(shapes_dataset, shapes_config, random_rois=50)[0]
    assert len(rois_only) == 1 and len(rois_only[0]) == 8


def test_data_generator_checks_its_arguments(shapes_dataset, shapes_config):
    with pytest.raises(ValueError, match="needs random_rois > 0"):
        data.DataGenerator(shapes_dataset, shapes_config, detection_targets=True)
    with pytest.raises(ValueError, match="NUM_CLASSES is 4"):
        data.DataGenerator(shapes_dataset, make_shapes_config(NUM_CLASSES=4))
    with pytest.raises(IndexError):
        data.DataGenerator(shapes_dataset, shapes_config)[2]
    with pytest.raises(ValueError, match=r"needs config.IMAGE_SHAPE \(128, 128, 3\): train"):
        data.DataGenerator(shapes_dataset, make_shapes_config(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64),
                           batch_size=1, shuffle=False)[0]


def test_data_generator_names_the_image_on_error(shapes_config):
    class Broken(ShapesTestDataset):
        def load_mask(self, image_id):
            return np.zeros((5, 5, 1), bool), np.array([1], np.int32)

        def image_reference(self, image_id):
            return f"broken-{image_id}.png"

    with pytest.raises(ValueError, match="must have the size of the image") as error:
        data.DataGenerator(Broken([ONE_CIRCLE]), shapes_config, batch_size=1)[0]
    assert "broken-0.png" in " ".join(error.value.__notes__)


def test_data_generator_is_a_picklable_py_dataset(shapes_dataset, shapes_config):
    import keras

    generator = data.DataGenerator(shapes_dataset, shapes_config, workers=2, use_multiprocessing=True,
                                   max_queue_size=4, augmentation=A.HorizontalFlip(p=0.5))
    assert isinstance(generator, keras.utils.PyDataset)
    assert generator.workers == 2 and generator.use_multiprocessing and generator.max_queue_size == 4
    copy = pickle.loads(pickle.dumps(generator))
    assert batch_image_ids(copy, 1) == batch_image_ids(generator, 1)


def test_data_generator_function_yields_the_original_structure(shapes_dataset, shapes_config):
    generator = data.data_generator(shapes_dataset, shapes_config, shuffle=False, batch_size=2)
    inputs, outputs = next(generator)
    assert isinstance(inputs, list) and outputs == []
    expected = data.DataGenerator(shapes_dataset, shapes_config, shuffle=False, batch_size=2)[0][0]
    assert [a.shape for a in inputs] == [a.shape for a in expected]
    assert [a.dtype for a in inputs] == [a.dtype for a in expected]
    np.testing.assert_array_equal(inputs[1], expected[1])
    for _ in range(3):  # runs on past the end of the epoch
        inputs, _ = next(generator)
        assert inputs[0].shape == (2, 128, 128, 3)

    inputs, outputs = next(data.data_generator(shapes_dataset, shapes_config, random_rois=64, batch_size=1,
                                               detection_targets=True))
    assert len(inputs) == 9 and len(outputs) == 3
    assert outputs[0].shape == (1, 32, 1) and outputs[2].shape == (1, 32, 28, 28, 3)
