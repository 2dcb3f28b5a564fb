"""Tests for mrcnn.inspection through MaskRCNN.run_graph and MaskRCNN.ancestor.

The proposal layer's intermediate tensors are checked against an independent numpy
computation from the RPN's outputs: top-k anchors, box deltas, clipping, NMS.
"""

import numpy as np
import pytest

from mrcnn import inspection, utils
from mrcnn import model as modellib

from conftest import TinyConfig, iou_matrix  # noqa: E402

NOTEBOOK_NAMES = {  # what the original's inspect_model notebook looks up, and the stage it is
    "ROI/pre_nms_anchors:0": ("pre_nms_anchors", None),
    "ROI/refined_anchors:0": ("refined_anchors", None),
    "ROI/refined_anchors_clipped:0": ("refined_anchors_clipped", None),
    "ROI/rpn_non_max_suppression:0": ("nms_indices", 0),
    "ROI/rpn_non_max_suppression/NonMaxSuppressionV2:0": ("nms_indices", 0),
    "ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0": ("nms_indices", 0),
}


def iou_or_zero(boxes1, boxes2):
    """iou_matrix, with IoU 0 for boxes clipped to nothing (as TensorFlow's NMS takes it)."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(iou_matrix(boxes1, boxes2))


@pytest.fixture(scope="module")
def image(synthetic_dataset):
    return synthetic_dataset.load_image(1)


@pytest.fixture(scope="module")
def rpn(inference_model, image):
    """The original notebook's RPN cell, run on a tiny model."""
    model = inference_model
    pillar = model.keras_model.get_layer("ROI").output
    return model.run_graph([image], [
        ("rpn_class", model.keras_model.get_layer("rpn_class").output),
        ("rpn_bbox", model.keras_model.get_layer("rpn_bbox").output),
        ("pre_nms_anchors", model.ancestor(pillar, "ROI/pre_nms_anchors:0")),
        ("refined_anchors", model.ancestor(pillar, "ROI/refined_anchors:0")),
        ("refined_anchors_clipped", model.ancestor(pillar, "ROI/refined_anchors_clipped:0")),
        ("post_nms_anchor_ix", model.ancestor(pillar, "ROI/rpn_non_max_suppression:0")),
        ("proposals", model.keras_model.get_layer("ROI").output),
    ])


@pytest.mark.parametrize("name", sorted(NOTEBOOK_NAMES))
def test_ancestor_gives_a_handle_for_each_name_the_notebook_looks_up(inference_model, name):
    pillar = inference_model.keras_model.get_layer("ROI").output
    handle = inference_model.ancestor(pillar, name)
    assert (handle.layer, (handle.stage, handle.image)) == ("ROI", NOTEBOOK_NAMES[name])


def test_ancestor_is_none_when_the_layer_is_not_upstream(inference_model):
    keras_model = inference_model.keras_model
    assert inference_model.ancestor(keras_model.get_layer("rpn_class").output,
                                    "ROI/pre_nms_anchors:0") is None
    downstream = keras_model.get_layer("mrcnn_mask").output
    assert inference_model.ancestor(downstream, "ROI/pre_nms_anchors:0") is not None


@pytest.mark.parametrize("name, instead", [
    ("res2c_out/Relu:0", "model.keras_model.get_layer('res2c_out').output"),
    ("ROI/top_anchors:0", "model.keras_model.get_layer('ROI').output"),
    ("roi_align_classifier/gather_nd0", "model.keras_model.get_layer('roi_align_classifier').output"),
    ("no_such_layer/add:0", "model.keras_model.get_layer(NAME).output"),
])
def test_ancestor_of_an_unknown_node_says_what_to_call_instead(inference_model, name, instead):
    pillar = inference_model.keras_model.get_layer("ROI").output
    with pytest.raises(ValueError) as error:
        inference_model.ancestor(pillar, name)
    message = str(error.value)
    assert f"No graph node {name!r}" in message and instead in message
    assert "'ROI/pre_nms_anchors:0'" in message and "'ROI/rpn_non_max_suppression:0'" in message


def test_proposal_stages_match_a_numpy_computation(inference_model, rpn):
    config = inference_model.config
    anchors = utils.norm_boxes(inference_model.anchors, config.IMAGE_SHAPE[:2])
    scores = rpn["rpn_class"][0, :, 1]
    order = np.argsort(-scores, kind="stable")[:min(config.PRE_NMS_LIMIT, len(anchors))]
    np.testing.assert_allclose(rpn["pre_nms_anchors"][0], anchors[order], atol=1e-6)

    deltas = rpn["rpn_bbox"][0, order] * config.RPN_BBOX_STD_DEV
    deltas[:, 2:] = np.minimum(deltas[:, 2:], np.log(1000 / 16))  # the graph's bound on growth
    refined = utils.apply_box_deltas(anchors[order].astype(np.float64), deltas)
    np.testing.assert_allclose(rpn["refined_anchors"][0], refined, atol=1e-5)
    clipped = np.clip(refined, 0, 1)
    np.testing.assert_allclose(rpn["refined_anchors_clipped"][0], clipped, atol=1e-5)

    kept = rpn["post_nms_anchor_ix"]
    assert kept.ndim == 1 and 0 < len(kept) <= config.POST_NMS_ROIS_INFERENCE
    np.testing.assert_array_equal(kept, np.sort(kept))  # scores are sorted best first
    overlaps = iou_or_zero(clipped[kept], clipped[kept])
    np.fill_diagonal(overlaps, 0)
    assert overlaps.max() <= config.RPN_NMS_THRESHOLD + 1e-6
    suppressed = np.setdiff1d(np.arange(kept.max()), kept)
    assert (iou_or_zero(clipped[suppressed], clipped[kept]).max(axis=1)
            > config.RPN_NMS_THRESHOLD - 1e-6).all()

    proposals = rpn["proposals"][0]
    np.testing.assert_allclose(proposals[:len(kept)], clipped[kept], atol=1e-5)
    assert not proposals[len(kept):].any()


def test_run_graph_takes_molded_images_as_given_with_image_metas(inference_model, synthetic_dataset):
    config = inference_model.config
    image, image_meta, _, _, _ = modellib.load_image_gt(synthetic_dataset, config, 2)
    outputs = [("rpn_class", inference_model.keras_model.get_layer("rpn_class").output),
               ("detections", "mrcnn_detection")]
    from_images = inference_model.run_graph([image], outputs)
    molded = modellib.mold_image(image, config)[np.newaxis]
    from_molded = inference_model.run_graph(molded, outputs, image_metas=image_meta[np.newaxis])
    for name in ("rpn_class", "detections"):
        np.testing.assert_allclose(from_molded[name], from_images[name], atol=1e-5)
    # Not molded again: the images themselves (no mean subtraction) give other activations.
    unmolded = inference_model.run_graph(image[np.newaxis], outputs,
                                         image_metas=image_meta[np.newaxis])
    assert np.abs(unmolded["rpn_class"] - from_images["rpn_class"]).max() > 1e-3


def test_run_graph_takes_names_and_keeps_their_order(inference_model, image, rpn):
    result = inference_model.run_graph([image], {
        "proposals": "ROI",
        "kept": "ROI/rpn_non_max_suppression:0",
        "clipped": "ROI/refined_anchors_clipped:0",
    })
    assert list(result) == ["proposals", "kept", "clipped"]
    np.testing.assert_array_equal(result["kept"], rpn["post_nms_anchor_ix"])
    np.testing.assert_allclose(result["clipped"], rpn["refined_anchors_clipped"], atol=1e-6)


def test_run_graph_refuses_a_missing_output_and_a_training_model(inference_model, image,
                                                                 tmp_path):
    with pytest.raises(ValueError, match="the output 'nms' is None"):
        inference_model.run_graph([image], [("nms", None)])
    training = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    with pytest.raises(RuntimeError, match="mode='inference' to call run_graph"):
        training.run_graph([image], [("rpn_class", "rpn_class")])


def test_layer_stage_names_its_tensor():
    assert inspection.LayerStage("ROI", "refined_anchors").name == "ROI/refined_anchors"
