"""The original's notebooks and samples, replayed on mrcnn.

Each test follows the call sequence of one of the original's notebooks (demo, inspect_data,
inspect_model, inspect_weights, train_shapes), written here from their public API, on tiny
models, and checks what a reader of the notebook relies on. The demo and inspect_weights use a
ResNet101 model at 1024 pixels loaded from a file in the layout of the released
mask_rcnn_coco.h5 (tests/data/coco_weights_layout.json), with random values; it is built once
and only runs inference.
"""

import os
import subprocess
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.io  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

import mrcnn.model as modellib  # noqa: E402
from mrcnn import utils, visualize, weights  # noqa: E402
from mrcnn.shapes import ShapesConfig, ShapesDataset  # noqa: E402

from conftest import coco_layout_rows, iou_matrix, load_module, write_keras2_file  # noqa: E402

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_SPECIFIC_LAYERS = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def get_ax(rows=1, cols=1, size=4):
    """The notebooks' helper: an Axes grid of its own figure."""
    _, ax = plt.subplots(rows, cols, figsize=(size * cols, size * rows))
    return ax


class TinyShapesConfig(ShapesConfig):
    """The original's ShapesConfig, CPU-sized for tests."""

    BACKBONE = "resnet50"
    IMAGES_PER_GPU = 1
    STEPS_PER_EPOCH = 1
    VALIDATION_STEPS = 1
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    FPN_CLASSIF_FC_LAYERS_SIZE = 128
    MAX_GT_INSTANCES = 10
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.0
    MINI_MASK_SHAPE = (28, 28)


@pytest.fixture(scope="module")
def dataset():
    """Shapes images of 96 x 160 pixels: resizing them changes their size."""
    dataset = ShapesDataset()
    dataset.load_shapes(6, 96, 160, rng=4)
    dataset.prepare()
    return dataset


# ----------------------------------------------------------------------------------------------
# demo.ipynb and inspect_weights.ipynb: a COCO-layout file, detect, display, weight statistics


coco = load_module("coco_sample", os.path.join(ROOT_DIR, "samples", "coco", "coco.py"))


class InferenceConfig(coco.CocoConfig):
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1


def sane_coco_value(weight_name, shape, rng):
    """Weights under which the ResNet101 keeps its activations in range, and which make every
    ROI a confident "person": the class logits are their bias, 10 for class 1. The box deltas
    are zero, so the detections are anchors (random deltas clip most boxes flat)."""
    kind = weight_name.split("/")[-1].split(":")[0]
    if weight_name.split("/")[0] in ("rpn_bbox_pred", "mrcnn_bbox_fc"):
        return np.zeros(shape)
    if kind in ("gamma", "moving_variance"):
        return np.ones(shape)
    if kind in ("beta", "moving_mean"):
        return np.zeros(shape)
    if weight_name.startswith("mrcnn_class_logits/"):
        value = np.zeros(shape)
        if kind == "bias":
            value[1] = 10.0
        return value
    if kind == "bias":
        return np.zeros(shape)
    return rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))


@pytest.fixture(scope="module")
def coco_demo(tmp_path_factory):
    """(model, weights path, {(layer, weight name): value}): the demo's model, loaded."""
    folder = tmp_path_factory.mktemp("coco")
    layout = {}
    for group, weight_name, shape in coco_layout_rows():
        layout.setdefault(group, []).append((weight_name, shape))
    path = folder / "mask_rcnn_coco.h5"
    values = write_keras2_file(path, list(layout.items()), np.random.default_rng(0),
                               weightless=("input_image",), value=sane_coco_value)
    model = modellib.MaskRCNN(mode="inference", model_dir=str(folder / "logs"),
                              config=InferenceConfig())
    report = model.load_weights(str(path), by_name=True)
    assert len(report.loaded) == len(layout) and not report.missing and not report.unused
    return model, path, values


def test_demo_detects_and_displays_with_coco_weights(coco_demo, tmp_path, capsys):
    model, _, _ = coco_demo
    model.config.display()
    assert "NUM_CLASSES                    81" in capsys.readouterr().out
    class_names = ["BG", "person"] + [f"class {i}" for i in range(2, model.config.NUM_CLASSES)]
    # 1024 x 1024, molded without padding: with these weights the best proposals are the
    # first anchors, at the top left, which in the padding of a smaller photo clip flat.
    photo = np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "street.png")
    image = skimage.io.imread(tmp_path / "street.png")

    results = model.detect([image], verbose=1)
    r = results[0]
    fig = visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"],
                                      class_names, r["scores"])

    assert "Processing 1 images" in capsys.readouterr().out
    count = len(r["class_ids"])
    assert 0 < count <= model.config.DETECTION_MAX_INSTANCES
    assert (r["class_ids"] == 1).all()
    assert (r["scores"] > 0.99).all() and (np.diff(r["scores"]) <= 0).all()
    assert r["masks"].shape == (1024, 1024, count) and r["masks"].dtype == bool
    assert (r["rois"] >= 0).all() and (r["rois"] <= 1024).all()
    assert ((r["rois"][:, 2] > r["rois"][:, 0]) & (r["rois"][:, 3] > r["rois"][:, 1])).all()
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(boxes) == np.any(r["rois"], axis=1).sum()
    assert {t.get_text() for t in fig.axes[0].texts} <= {f"person {s:.3f}" for s in r["scores"]}


def test_inspect_weights_tabulates_and_plots_every_weight(coco_demo):
    model, _, values = coco_demo
    table = visualize.display_weight_stats(model)

    assert table[0] == ["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]
    assert len(table) == 1 + len(values)
    rows = {row[0].split("<")[0]: row for row in table[1:]}  # names, without the alerts
    kernel = values[("res4w_branch2c", "res4w_branch2c/kernel:0")]
    row = rows["res4w_branch2c/kernel"]
    assert row[1] == str(kernel.shape)
    np.testing.assert_allclose([float(v) for v in row[2:]],
                               [kernel.min(), kernel.max(), kernel.std()], atol=1e-4)
    assert "dead?" in rows["bn_conv1/gamma"][0]  # all ones
    assert "dead?" not in rows["conv1/bias"][0]  # a convolution bias may be constant

    # The histogram cell: the trainable Conv2D, Dense and Conv2DTranspose layers.
    layer_types = ["Conv2D", "Dense", "Conv2DTranspose"]
    layers = [layer for layer in model.get_trainable_layers()
              if layer.__class__.__name__ in layer_types]
    kernels = {group for (group, name) in values if name.endswith("/kernel:0")} - {"rpn_model"}
    assert len(layers) == len(kernels)
    fig, ax = plt.subplots(3, 2, gridspec_kw={"hspace": 1})
    for l, layer in enumerate(layers[:3]):
        for w, weight in enumerate(layer.get_weights()):
            ax[l, w].set_title(layer.weights[w].name)
            ax[l, w].hist(weight.flatten(), 50)
    assert ax[0, 0].get_title() == "kernel" and ax[0, 1].get_title() == "bias"


# ----------------------------------------------------------------------------------------------
# inspect_data.ipynb


def painted_fraction(image, masks, colors):
    """For each instance, the fraction of its mask pixels that have about its shape's color
    (resizing blends the colors at the edges)."""
    return [(np.abs(image[masks[:, :, i]].astype(int) - color).max(axis=-1) < 60).mean()
            for i, color in enumerate(colors)]


@pytest.mark.parametrize("mode, shape", [("square", (128, 128)), ("pad64", (128, 256)),
                                         ("crop", (128, 128)), ("none", (96, 160))])
def test_inspect_data_resize_modes_keep_masks_on_their_shapes(dataset, mode, shape):
    config = TinyShapesConfig()
    image_id = 1
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    bbox = utils.extract_bboxes(mask)
    visualize.display_instances(image, bbox, mask, class_ids, dataset.class_names)
    visible = [i for i in range(mask.shape[-1]) if mask[:, :, i].sum() > 200]
    colors = [dataset.image_info[image_id]["shapes"][i][1] for i in visible]

    image, window, scale, padding, crop = utils.resize_image(
        image, min_dim=config.IMAGE_MIN_DIM, max_dim=config.IMAGE_MAX_DIM, mode=mode)
    mask = utils.resize_mask(mask, scale, padding, crop)
    bbox = utils.extract_bboxes(mask)
    visualize.display_instances(image, bbox, mask, class_ids, dataset.class_names)

    assert image.shape[:2] == mask.shape[:2] == shape
    if mode != "crop":  # a crop may cut an instance away
        assert min(painted_fraction(image, mask[:, :, visible], colors)) > 0.9


def test_inspect_data_mini_masks_and_the_deprecated_augment_flip(dataset):
    config = TinyShapesConfig()
    image_id = 2
    image, image_meta, class_ids, bbox, mask = modellib.load_image_gt(
        dataset, config, image_id, use_mini_mask=False)
    visualize.display_images([image] + [mask[:, :, i] for i in range(min(mask.shape[-1], 7))])

    with pytest.warns(FutureWarning, match="augment=True is deprecated"):
        flipped_image, _, flipped_ids, flipped_bbox, mini = modellib.load_image_gt(
            dataset, config, image_id, augment=True, use_mini_mask=True, rng=1)
    assert mini.shape == config.MINI_MASK_SHAPE + (len(flipped_ids),)
    expanded = utils.expand_mask(flipped_bbox, mini, flipped_image.shape)
    visualize.display_instances(flipped_image, flipped_bbox, expanded, flipped_ids,
                                dataset.class_names)
    flipped = np.array_equal(flipped_image, image[:, ::-1])
    assert flipped or np.array_equal(flipped_image, image)
    reference = mask[:, ::-1] if flipped else mask
    for i in range(len(flipped_ids)):
        assert np.logical_and(expanded[..., i], reference[..., i]).sum() \
            / np.logical_or(expanded[..., i], reference[..., i]).sum() > 0.85


def test_load_image_gt_keeps_the_original_argument_order(dataset):
    config = TinyShapesConfig()
    image, _, _, _, mask = modellib.load_image_gt(dataset, config, 0)
    outcomes = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for seed in range(16):
            # The original's positional call: (dataset, config, image_id, augment, augmentation,
            # use_mini_mask).
            augmented, _, _, _, augmented_mask = modellib.load_image_gt(
                dataset, config, 0, True, None, False, rng=seed)
            flipped = np.array_equal(augmented, image[:, ::-1])
            assert flipped or np.array_equal(augmented, image)
            np.testing.assert_array_equal(augmented_mask, mask[:, ::-1] if flipped else mask)
            outcomes.add(flipped)
    assert outcomes == {True, False}  # half the images, as the original's flip

    def flip_up_down(image, masks):
        return image[::-1], masks[::-1]

    with pytest.raises(TypeError, match="got function for augment.*augmentation=..."):
        modellib.load_image_gt(dataset, config, 0, flip_up_down)
    with pytest.raises(TypeError, match="data_generator.. got function for augment"):
        next(modellib.data_generator(dataset, config, True, flip_up_down))
    with pytest.raises(TypeError, match="DataGenerator.. got function for augment"):
        modellib.DataGenerator(dataset, config, True, flip_up_down)
    image_up_down, _, _, _, _ = modellib.load_image_gt(dataset, config, 0, False, flip_up_down)
    np.testing.assert_array_equal(image_up_down, image[::-1])


def notebook_anchors(config):
    """The notebook's anchors cell: (backbone_shapes, anchors [A, 4] pixels)."""
    backbone_shapes = modellib.compute_backbone_shapes(config, config.IMAGE_SHAPE)
    anchors = utils.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                             backbone_shapes, config.BACKBONE_STRIDES,
                                             config.RPN_ANCHOR_STRIDE)
    return backbone_shapes, anchors


def test_inspect_data_anchors_of_each_level():
    config = TinyShapesConfig()
    backbone_shapes, anchors = notebook_anchors(config)
    num_levels = len(backbone_shapes)
    anchors_per_cell = len(config.RPN_ANCHOR_RATIOS)
    anchors_per_level = [anchors_per_cell * shape[0] * shape[1] // config.RPN_ANCHOR_STRIDE ** 2
                         for shape in backbone_shapes]
    assert sum(anchors_per_level) == anchors.shape[0]

    for level in range(num_levels):
        level_start = sum(anchors_per_level[:level])
        level_anchors = anchors[level_start:level_start + anchors_per_level[level]]
        center_cell = backbone_shapes[level] // 2
        center_anchor = anchors_per_cell * (
            (center_cell[0] * backbone_shapes[level][1] / config.RPN_ANCHOR_STRIDE ** 2)
            + center_cell[1] / config.RPN_ANCHOR_STRIDE)
        level_center = int(center_anchor)
        cell = level_anchors[level_center:level_center + anchors_per_cell]
        centers = (cell[:, :2] + cell[:, 2:]) / 2
        np.testing.assert_allclose(centers, np.tile(center_cell * config.BACKBONE_STRIDES[level],
                                                    (anchors_per_cell, 1)))
        sides = np.sqrt((cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1]))
        np.testing.assert_allclose(sides, config.RPN_ANCHOR_SCALES[level], rtol=1e-6)


def test_inspect_data_generator_targets(dataset):
    config = TinyShapesConfig()
    _, anchors = notebook_anchors(config)
    random_rois = 200
    # Seeded: an unseeded stream gave the first image no positive ROI now and then.
    g = modellib.data_generator(dataset, config, shuffle=True, random_rois=random_rois,
                                batch_size=4, detection_targets=True, seed=0)
    [normalized_images, image_meta, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks,
     rpn_rois, rois], [mrcnn_class_ids, mrcnn_bbox, mrcnn_mask] = next(g)
    image_id = modellib.parse_image_meta(image_meta)["image_id"][0]
    mrcnn_class_ids = mrcnn_class_ids[:, :, 0]

    b = 0
    sample_image = modellib.unmold_image(normalized_images[b], config)
    expected, _, _, expected_boxes, _ = modellib.load_image_gt(dataset, config, int(image_id))
    np.testing.assert_array_equal(sample_image, expected)

    indices = np.where(rpn_match[b] == 1)[0]
    refined_anchors = utils.apply_box_deltas(anchors[indices],
                                             rpn_bbox[b, :len(indices)] * config.RPN_BBOX_STD_DEV)
    assert len(indices) > 0
    assert iou_matrix(refined_anchors, expected_boxes).max(axis=1).min() > 0.98
    for c, n in zip(dataset.class_names, np.bincount(mrcnn_class_ids[b].flatten())):
        assert n >= 0 and c
    visualize.draw_boxes(sample_image, boxes=anchors[indices], refined_boxes=refined_anchors,
                         ax=get_ax())

    bbox_specific = mrcnn_bbox[b, np.arange(mrcnn_bbox.shape[1]), mrcnn_class_ids[b], :]
    refined_rois = utils.apply_box_deltas(rois[b].astype(np.float32),
                                          bbox_specific[:, :4] * config.BBOX_STD_DEV)
    mask_specific = mrcnn_mask[b, np.arange(mrcnn_mask.shape[1]), :, :, mrcnn_class_ids[b]]
    visualize.draw_rois(sample_image, rois[b], refined_rois, mask_specific, mrcnn_class_ids[b],
                        dataset.class_names)
    positive = np.where(mrcnn_class_ids[b] > 0)[0]
    assert len(positive) > 0
    assert iou_matrix(refined_rois[positive], expected_boxes).max(axis=1).min() > 0.98


def test_the_migration_guides_albumentations_example_runs(dataset):
    import albumentations as A

    augmentation = A.SomeOf([  # MIGRATING.md: the nucleus sample's augmentation
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.MultiplicativeNoise(multiplier=(0.8, 1.5), p=0.5),
        A.GaussianBlur(sigma_limit=(0.1, 5.0), p=0.5),
    ], n=2, p=1)
    config = TinyShapesConfig()
    for image_id in dataset.image_ids:
        image, _, class_ids, bbox, mask = modellib.load_image_gt(
            dataset, config, image_id, augmentation=augmentation)
        assert image.shape == (128, 128, 3) and mask.shape[:2] == (128, 128)
        np.testing.assert_array_equal(bbox, utils.extract_bboxes(mask))


class BalloonStyleDataset(utils.Dataset):
    """A dataset written for the original, like its balloon sample: masks sized from
    skimage.io.imread, polygons in the frame VIA shows (the EXIF orientation applied)."""

    def load_balloons(self, paths, polygons):
        self.add_class("balloon", 1, "balloon")
        for path, polygon in zip(paths, polygons):
            height, width = self.image_size(path)
            self.add_image("balloon", image_id=os.path.basename(path), path=path,
                           width=width, height=height, polygons=[polygon])

    def image_size(self, path):
        return skimage.io.imread(path).shape[:2]

    def load_mask(self, image_id):
        import skimage.draw

        info = self.image_info[image_id]
        mask = np.zeros([info["height"], info["width"], len(info["polygons"])], dtype=np.uint8)
        for i, p in enumerate(info["polygons"]):
            rr, cc = skimage.draw.polygon(p["all_points_y"], p["all_points_x"],
                                          shape=mask.shape[:2])
            mask[rr, cc, i] = 1
        return mask.astype(bool), np.ones([mask.shape[-1]], dtype=np.int32)


def test_a_balloon_style_dataset_on_an_exif_rotated_photo_is_told_what_to_change(tmp_path):
    from mrcnn import images

    photo = Image.fromarray(np.full((60, 100, 3), 90, np.uint8))  # stored 60 x 100
    exif = photo.getexif()
    exif[0x0112] = 6  # shown turned by 90 degrees: 100 x 60
    path = str(tmp_path / "balloon.jpg")
    photo.save(path, exif=exif.tobytes())
    polygon = {"all_points_x": [10, 50, 50, 10], "all_points_y": [20, 20, 90, 90]}  # as shown
    config = TinyShapesConfig()

    dataset = BalloonStyleDataset()
    dataset.load_balloons([path], [polygon])
    dataset.prepare()
    with pytest.raises(ValueError) as error:
        modellib.load_image_gt(dataset, config, 0)
    message = str(error.value)
    assert f"{path} has EXIF orientation 6" in message
    assert "mrcnn.images.displayed_size(path)" in message and "skimage.io.imread" in message

    class Fixed(BalloonStyleDataset):  # the change the message asks for
        def image_size(self, path):
            height, width, _ = images.displayed_size(path)
            return height, width

    dataset = Fixed()
    dataset.load_balloons([path], [polygon])
    dataset.prepare()
    image, _, _, bbox, mask = modellib.load_image_gt(dataset, TinyShapesConfig(), 0)
    scale = 128 / 100  # "square": the long side, 100 shown pixels, becomes 128
    offset = (128 - round(60 * scale)) // 2
    np.testing.assert_allclose(bbox[0], [20 * scale, 10 * scale + offset,
                                         91 * scale, 51 * scale + offset], atol=2)


# ----------------------------------------------------------------------------------------------
# inspect_model.ipynb


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory):
    """Random weights, seeded: with some seeds every ROI's best class is the background, and
    the notebook's detection cells then have nothing to show (seed 0 gives 18 detections)."""
    keras.utils.set_random_seed(0)
    return modellib.MaskRCNN(mode="inference", model_dir=str(tmp_path_factory.mktemp("logs")),
                             config=TinyShapesConfig())


def test_inspect_model_detection_and_rpn_targets(shapes_model, dataset):
    model, config = shapes_model, shapes_model.config
    image_id = 3
    image, image_meta, gt_class_id, gt_bbox, gt_mask = modellib.load_image_gt(
        dataset, config, image_id, use_mini_mask=False)
    results = model.detect([image], verbose=1)
    ax = get_ax(1)
    r = results[0]
    visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"],
                                dataset.class_names, r["scores"], ax=ax, title="Predictions")
    AP, precisions, recalls, overlaps = utils.compute_ap(
        gt_bbox, gt_class_id, gt_mask, r["rois"], r["class_ids"], r["scores"], r["masks"])
    visualize.plot_precision_recall(AP, precisions, recalls)
    visualize.plot_overlaps(gt_class_id, r["class_ids"], r["scores"], overlaps,
                            dataset.class_names)
    assert 0 <= AP <= 1 and overlaps.shape == (len(r["rois"]), len(gt_bbox))

    # Stage 1: the RPN targets of the model's own anchors (pixels, set by detect).
    target_rpn_match, target_rpn_bbox = modellib.build_rpn_targets(
        image.shape, model.anchors, gt_class_id, gt_bbox, model.config)
    assert target_rpn_match.shape == (len(model.anchors),)
    positive_anchor_ix = np.where(target_rpn_match[:] == 1)[0]
    positive_anchors = model.anchors[positive_anchor_ix]
    refined_anchors = utils.apply_box_deltas(
        positive_anchors, target_rpn_bbox[:positive_anchors.shape[0]] * model.config.RPN_BBOX_STD_DEV)
    visualize.draw_boxes(image, boxes=positive_anchors, refined_boxes=refined_anchors, ax=get_ax())
    assert iou_matrix(refined_anchors, gt_bbox).max(axis=1).min() > 0.98
    assert (iou_matrix(positive_anchors, gt_bbox).max(axis=1) > 0.3).all()


def test_inspect_model_rpn_cell_runs_unchanged(shapes_model, dataset):
    model, config = shapes_model, shapes_model.config
    image, _, _, gt_bbox, _ = modellib.load_image_gt(dataset, config, 3, use_mini_mask=False)

    pillar = model.keras_model.get_layer("ROI").output  # node to start searching from
    nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression:0")
    if nms_node is None:
        nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression/NonMaxSuppressionV2:0")
    if nms_node is None:
        nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0")
    rpn = model.run_graph([image], [
        ("rpn_class", model.keras_model.get_layer("rpn_class").output),
        ("pre_nms_anchors", model.ancestor(pillar, "ROI/pre_nms_anchors:0")),
        ("refined_anchors", model.ancestor(pillar, "ROI/refined_anchors:0")),
        ("refined_anchors_clipped", model.ancestor(pillar, "ROI/refined_anchors_clipped:0")),
        ("post_nms_anchor_ix", nms_node),
        ("proposals", model.keras_model.get_layer("ROI").output),
    ])

    limit = 20
    sorted_anchor_ids = np.argsort(rpn["rpn_class"][:, :, 1].flatten())[::-1]
    visualize.draw_boxes(image, boxes=model.anchors[sorted_anchor_ids[:limit]], ax=get_ax())
    ax = get_ax(1, 2)
    pre_nms_anchors = utils.denorm_boxes(rpn["pre_nms_anchors"][0], image.shape[:2])
    refined_anchors = utils.denorm_boxes(rpn["refined_anchors"][0], image.shape[:2])
    refined_anchors_clipped = utils.denorm_boxes(rpn["refined_anchors_clipped"][0],
                                                 image.shape[:2])
    visualize.draw_boxes(image, boxes=pre_nms_anchors[:limit],
                         refined_boxes=refined_anchors[:limit], ax=ax[0])
    visualize.draw_boxes(image, refined_boxes=refined_anchors_clipped[:limit], ax=ax[1])
    ixs = rpn["post_nms_anchor_ix"][:limit]
    visualize.draw_boxes(image, refined_boxes=refined_anchors_clipped[ixs], ax=get_ax())
    h, w = config.IMAGE_SHAPE[:2]
    proposals = rpn["proposals"][0, :limit] * np.array([h, w, h, w])
    visualize.draw_boxes(image, refined_boxes=proposals, ax=get_ax())
    recall, positive_anchor_ids = utils.compute_recall(model.anchors, gt_bbox, 0.7)

    # (tests/test_inspection.py checks each stage against numpy)
    assert pre_nms_anchors.shape == (min(config.PRE_NMS_LIMIT, len(model.anchors)), 4)
    assert len(rpn["post_nms_anchor_ix"]) >= limit
    np.testing.assert_allclose(proposals, rpn["refined_anchors_clipped"][0][ixs] * [h, w, h, w],
                               atol=1e-3)
    assert 0 < recall <= 1


def test_inspect_model_stages_and_activations(shapes_model, dataset):
    model, config = shapes_model, shapes_model.config
    image, _, _, _, _ = modellib.load_image_gt(dataset, config, 3, use_mini_mask=False)

    # Stage 2: proposal classification.
    mrcnn = model.run_graph([image], [
        ("proposals", model.keras_model.get_layer("ROI").output),
        ("probs", model.keras_model.get_layer("mrcnn_class").output),
        ("deltas", model.keras_model.get_layer("mrcnn_bbox").output),
        ("masks", model.keras_model.get_layer("mrcnn_mask").output),
        ("detections", model.keras_model.get_layer("mrcnn_detection").output),
    ])
    det_class_ids = mrcnn["detections"][0, :, 4].astype(np.int32)
    det_count = np.where(det_class_ids == 0)[0][0]
    assert det_count > 0, "the seeded model should detect something for stage 3 to look at"
    det_class_ids = det_class_ids[:det_count]
    detections = mrcnn["detections"][0, :det_count]
    captions = ["{} {:.3f}".format(dataset.class_names[int(c)], s) if c > 0 else ""
                for c, s in zip(detections[:, 4], detections[:, 5])]
    visualize.draw_boxes(image, refined_boxes=utils.denorm_boxes(detections[:, :4], image.shape[:2]),
                         visibilities=[2] * len(detections), captions=captions,
                         title="Detections", ax=get_ax())
    proposals = np.around(mrcnn["proposals"][0] * np.array([128, 128, 128, 128])).astype(np.int32)
    roi_class_ids = np.argmax(mrcnn["probs"][0], axis=1)
    roi_bbox_specific = mrcnn["deltas"][0, np.arange(proposals.shape[0]), roi_class_ids]
    refined_proposals = utils.apply_box_deltas(
        proposals, roi_bbox_specific * config.BBOX_STD_DEV).astype(np.int32)
    assert refined_proposals.shape == proposals.shape

    # Stage 3: masks.
    det_boxes = utils.denorm_boxes(mrcnn["detections"][0, :, :4], image.shape[:2])
    det_mask_specific = np.array([mrcnn["masks"][0, i, :, :, c]
                                  for i, c in enumerate(det_class_ids)])
    det_masks = np.array([utils.unmold_mask(m, det_boxes[i], image.shape)
                          for i, m in enumerate(det_mask_specific)])
    visualize.display_images(det_mask_specific[:4] * 255, cmap="Blues", interpolation="none")
    assert det_masks.shape == (det_count,) + image.shape[:2]

    # Activations (the original wrapped input_image in tf.identity, which Keras 3 refuses).
    activations = model.run_graph([image], [
        ("input_image", model.keras_model.get_layer("input_image").output),
        ("res2c_out", model.keras_model.get_layer("res2c_out").output),
        ("res3c_out", model.keras_model.get_layer("res3c_out").output),
        ("res4f_out", model.keras_model.get_layer("res4f_out").output),
        ("rpn_bbox", model.keras_model.get_layer("rpn_bbox").output),
        ("roi", model.keras_model.get_layer("ROI").output),
    ])
    np.testing.assert_array_equal(modellib.unmold_image(activations["input_image"][0], config),
                                  image)
    visualize.display_images(np.transpose(activations["res2c_out"][0, :, :, :4], [2, 0, 1]))
    assert activations["res2c_out"].shape == (1, 32, 32, 256)
    assert activations["res4f_out"].shape == (1, 8, 8, 1024)


# ----------------------------------------------------------------------------------------------
# train_shapes.ipynb


class TrainingShapesConfig(TinyShapesConfig):
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64


def test_shapes_tutorial_trains_saves_reloads_detects_and_measures(tmp_path):
    config = TrainingShapesConfig()
    dataset_train = ShapesDataset()
    dataset_train.load_shapes(8, config.IMAGE_SHAPE[0], config.IMAGE_SHAPE[1], rng=0)
    dataset_train.prepare()
    dataset_val = ShapesDataset()
    dataset_val.load_shapes(3, config.IMAGE_SHAPE[0], config.IMAGE_SHAPE[1], rng=1)
    dataset_val.prepare()
    model_dir = str(tmp_path / "logs")

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=model_dir)
    model.train(dataset_train, dataset_val, learning_rate=config.LEARNING_RATE, epochs=1,
                layers="heads")
    model.train(dataset_train, dataset_val, learning_rate=config.LEARNING_RATE / 10, epochs=2,
                layers="all")
    model_path = os.path.join(model_dir, "mask_rcnn_shapes.h5")
    model.keras_model.save_weights(model_path)
    trained = named_weights(model.keras_model)

    class ShapesInferenceConfig(TrainingShapesConfig):
        GPU_COUNT = 1
        IMAGES_PER_GPU = 1

    inference_config = ShapesInferenceConfig()
    model = modellib.MaskRCNN(mode="inference", config=inference_config, model_dir=model_dir)
    assert os.path.basename(model.find_last()) == "mask_rcnn_shapes_0002.h5"
    model.load_weights(model_path, by_name=True)
    loaded = named_weights(model.keras_model)
    assert loaded.keys() <= trained.keys() and len(loaded) > 300
    for key, value in loaded.items():
        np.testing.assert_array_equal(value, trained[key])

    APs = []
    for image_id in dataset_val.image_ids:
        image, image_meta, gt_class_id, gt_bbox, gt_mask = modellib.load_image_gt(
            dataset_val, inference_config, image_id, use_mini_mask=False)
        molded_images = np.expand_dims(modellib.mold_image(image, inference_config), 0)
        assert molded_images.shape == (1, 64, 64, 3)
        r = model.detect([image], verbose=0)[0]
        AP, precisions, recalls, overlaps = utils.compute_ap(
            gt_bbox, gt_class_id, gt_mask, r["rois"], r["class_ids"], r["scores"], r["masks"])
        APs.append(AP)
    assert 0 <= np.mean(APs) <= 1

    # MaskRCNN.save_weights: the same file in one call.
    model.save_weights(tmp_path / "again.h5")
    again = modellib.MaskRCNN(mode="inference", config=inference_config, model_dir=model_dir)
    again.load_weights(str(tmp_path / "again.h5"), by_name=True)
    for key, value in named_weights(again.keras_model).items():
        np.testing.assert_array_equal(value, loaded[key])


def named_weights(keras_model):
    """{(layer name, Keras-2 weight name): value} of every weight of a model."""
    return {(layer.name, name): variable.numpy() for layer in weights.model_layers(keras_model)
            for name, variable in weights.layer_weight_names(layer)}


# ----------------------------------------------------------------------------------------------
# Imports of the original's samples and notebooks


def test_graph_helpers_import_from_mrcnn_model():
    names = ["identity_block", "conv_block", "resnet_graph", "rpn_graph", "build_rpn_model",
             "fpn_classifier_graph", "build_fpn_mask_graph", "rpn_class_loss_graph",
             "rpn_bbox_loss_graph", "mrcnn_class_loss_graph", "mrcnn_bbox_loss_graph",
             "mrcnn_mask_loss_graph", "smooth_l1_loss", "apply_box_deltas_graph",
             "clip_boxes_graph", "overlaps_graph", "detection_targets_graph",
             "refine_detections_graph", "trim_zeros_graph", "batch_pack_graph", "log2_graph",
             "norm_boxes_graph", "denorm_boxes_graph", "parse_image_meta_graph"]
    namespace = {}
    exec(f"from mrcnn.model import {', '.join(names)}", namespace)
    assert all(callable(namespace[name]) for name in names)
    assert set(names) <= set(modellib.__all__)

    image = keras.Input(shape=(64, 64, 3))
    _, C2, _, _, C5 = namespace["resnet_graph"](image, "resnet50", stage5=True, train_bn=False)
    assert tuple(C2.shape[1:]) == (16, 16, 256) and tuple(C5.shape[1:]) == (2, 2, 2048)
    rpn = namespace["build_rpn_model"](1, 3, 256)
    assert [layer.name for layer in rpn.layers if layer.weights] == [
        "rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"]


@pytest.mark.parametrize("statement, folder", [
    ("from samples.shapes import shapes", ROOT_DIR),
    ("import shapes", os.path.join(ROOT_DIR, "samples", "shapes")),
])
def test_the_shapes_sample_imports_as_the_original_notebooks_import_it(statement, folder):
    code = (f"import sys; sys.path.append({ROOT_DIR!r}); {statement}; "
            "print(shapes.ShapesConfig().NAME, shapes.ShapesDataset.__name__)")
    # mrcnn itself is installed (here: found through PYTHONPATH); the samples are not.
    environment = dict(os.environ, PYTHONPATH=ROOT_DIR)
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["shapes", "ShapesDataset"]
