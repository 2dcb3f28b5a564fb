"""Graph helpers, custom layers and losses against independent numpy computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as KL

from mrcnn import layers, losses, utils
from mrcnn.config import Config

from conftest import TinyConfig, count_sparse_gradients


def random_boxes(rng, count, size=1.0, min_side=0.05):
    """[count, (y1, x1, y2, x2)] boxes inside [0, size]² with sides >= min_side * size."""
    y1 = rng.uniform(0, size * 0.8, count)
    x1 = rng.uniform(0, size * 0.8, count)
    h = rng.uniform(min_side * size, size - y1)
    w = rng.uniform(min_side * size, size - x1)
    return np.stack([y1, x1, y1 + h, x1 + w], axis=1).astype(np.float32)


def bilinear_crop(image, box, size):
    """tf.image.crop_and_resize for one [H, W] image and one normalized box, in numpy."""
    height, width = image.shape
    y1, x1, y2, x2 = box
    out = np.zeros(size)
    for i in range(size[0]):
        y = (y1 + i * (y2 - y1) / (size[0] - 1)) * (height - 1)
        for j in range(size[1]):
            x = (x1 + j * (x2 - x1) / (size[1] - 1)) * (width - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            dy, dx = y - y0, x - x0
            y1_, x1_ = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            out[i, j] = (image[y0, x0] * (1 - dy) * (1 - dx) + image[y0, x1_] * (1 - dy) * dx
                         + image[y1_, x0] * dy * (1 - dx) + image[y1_, x1_] * dy * dx)
    return out


def numpy_iou_matrix(a, b):
    """IoU computed pair by pair with plain Python arithmetic."""
    out = np.zeros((len(a), len(b)))
    for i, (ay1, ax1, ay2, ax2) in enumerate(a):
        for j, (by1, bx1, by2, bx2) in enumerate(b):
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            inter = ih * iw
            union = (ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def greedy_nms(boxes, scores, threshold, limit):
    """Reference NMS: keep the best box, drop those overlapping it more than threshold."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order and len(keep) < limit:
        best = order.pop(0)
        keep.append(best)
        ious = numpy_iou_matrix(boxes[best:best + 1], boxes[order])[0] if order else []
        order = [o for o, iou in zip(order, ious) if iou <= threshold]
    return np.array(keep, dtype=int)


class LayerConfig(Config):
    NAME = "layers"
    NUM_CLASSES = 4
    IMAGES_PER_GPU = 2
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    PRE_NMS_LIMIT = 50
    TRAIN_ROIS_PER_IMAGE = 30
    ROI_POSITIVE_RATIO = 0.33
    DETECTION_MAX_INSTANCES = 10
    DETECTION_MIN_CONFIDENCE = 0.5
    DETECTION_NMS_THRESHOLD = 0.3
    USE_MINI_MASK = False
    MASK_POOL_SIZE = 2
    MASK_SHAPE = [4, 4]


@pytest.fixture(scope="module")
def config():
    return LayerConfig()


# ---------------------------------------------------------------------------
# Graph helpers
# ---------------------------------------------------------------------------

def test_norm_and_denorm_boxes_match_utils():
    boxes = np.array([[0, 0, 128, 96], [10, 20, 30, 40], [5, 7, 6, 8]], dtype=np.int32)
    shape = np.array([128, 96])
    normalized = layers.norm_boxes_graph(boxes, shape).numpy()
    np.testing.assert_allclose(normalized, utils.norm_boxes(boxes, shape), rtol=1e-6)
    np.testing.assert_allclose(normalized[0], [0, 0, 1, 1], rtol=1e-6)
    np.testing.assert_array_equal(layers.denorm_boxes_graph(normalized, shape).numpy(), boxes)


def test_box_deltas_round_trip_and_match_utils():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 20)
    gt = random_boxes(rng, 20)
    deltas = layers.box_refinement_graph(boxes, gt).numpy()
    np.testing.assert_allclose(deltas, utils.box_refinement(boxes, gt), rtol=1e-4, atol=1e-5)
    refined = layers.apply_box_deltas_graph(boxes, deltas).numpy()
    np.testing.assert_allclose(refined, gt, atol=1e-5)
    np.testing.assert_allclose(refined, utils.apply_box_deltas(boxes, deltas), atol=1e-5)


def test_overlaps_graph_matches_pairwise_iou():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    np.testing.assert_allclose(layers.overlaps_graph(a, b).numpy(), numpy_iou_matrix(a, b), atol=1e-6)


def test_clip_boxes_graph_clips_to_window():
    boxes = np.array([[-0.2, 0.1, 0.5, 1.3], [0.3, 0.3, 0.4, 0.4]], dtype=np.float32)
    window = np.array([0.1, 0.0, 0.9, 1.0], dtype=np.float32)
    clipped = layers.clip_boxes_graph(boxes, window).numpy()
    np.testing.assert_allclose(clipped, [[0.1, 0.1, 0.5, 1.0], [0.3, 0.3, 0.4, 0.4]])


def test_parse_image_meta_graph_reads_compose_image_meta_layout():
    from mrcnn.data import compose_image_meta

    meta = compose_image_meta(7, (300, 400, 3), (128, 128, 3), (16, 0, 112, 128), 0.32,
                              np.array([1, 1, 0, 1]))
    parsed = layers.parse_image_meta_graph(tf.constant(meta[None], tf.float32))
    assert parsed["image_id"].numpy()[0] == 7
    np.testing.assert_array_equal(parsed["original_image_shape"].numpy()[0], [300, 400, 3])
    np.testing.assert_array_equal(parsed["image_shape"].numpy()[0], [128, 128, 3])
    np.testing.assert_array_equal(parsed["window"].numpy()[0], [16, 0, 112, 128])
    np.testing.assert_allclose(parsed["scale"].numpy()[0], 0.32)
    np.testing.assert_array_equal(parsed["active_class_ids"].numpy()[0], [1, 1, 0, 1])


# ---------------------------------------------------------------------------
# Wrappers
# ---------------------------------------------------------------------------

def test_time_distributed_equals_the_layer_applied_per_item():
    conv = KL.Conv2D(3, (3, 3), padding="same")
    wrapped = layers.TimeDistributed(conv, name="td")
    x = np.random.default_rng(2).normal(size=(2, 5, 6, 6, 4)).astype(np.float32)
    out = wrapped(x).numpy()
    assert out.shape == (2, 5, 6, 6, 3)
    for b in range(2):
        for t in range(5):
            np.testing.assert_allclose(out[b, t], conv(x[b, t][None]).numpy()[0], atol=1e-5)


@pytest.mark.parametrize("shape, kernel_size", [
    ((1, 9, 7, 3), (3, 3)), ((2, 8, 5, 4), (3, 3)), ((1, 1, 6, 2), (3, 3)),
    ((1, 2, 3, 2), (5, 5)), ((1, 13, 4, 3), (3, 1))])
@pytest.mark.parametrize("in_halves, matmul_kernel_gradient, flipped_input_gradient", [
    (False, True, False), (True, False, False), (True, True, False), (False, False, True),
    (True, False, True)])
def test_same_convolution_is_tf_conv2d_with_its_gradients(shape, kernel_size, in_halves,
                                                          matmul_kernel_gradient,
                                                          flipped_input_gradient):
    """Odd and even heights, a height of 1 and 2 under a 5x5 kernel, a batch of 2, 3x1."""
    rng = np.random.default_rng(sum(shape))
    images = tf.constant(rng.normal(size=shape).astype(np.float32))
    kernel = tf.constant(rng.normal(size=kernel_size + (shape[-1], 4)).astype(np.float32))
    outputs_weights = tf.constant(rng.normal(size=shape[:3] + (4,)).astype(np.float32))
    results = []
    for convolve in (lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"),
                     lambda x, k: layers.same_convolution(
                         x, k, in_halves, matmul_kernel_gradient,
                         flipped_input_gradient=flipped_input_gradient)):
        with tf.GradientTape() as tape:
            tape.watch([images, kernel])
            outputs = convolve(images, kernel)
            loss = tf.reduce_sum(outputs * outputs_weights)
        results.append([outputs, *tape.gradient(loss, [images, kernel])])

    @tf.function
    def image_gradient(x, k):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layers.same_convolution(x, k, in_halves, matmul_kernel_gradient,
                                              flipped_input_gradient=flipped_input_gradient)
        return tape.gradient(outputs, x)

    graph = image_gradient.get_concrete_function(images, kernel).graph
    custom_gradient = matmul_kernel_gradient or flipped_input_gradient
    assert ("Conv2DBackpropInput" in {op.type for op in graph.get_operations()}) != custom_gradient
    for expected, actual in zip(*results):
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape, kernel_size", [
    ((2, 9, 7, 3), (3, 3)), ((3, 1, 2, 2), (5, 5)), ((1, 4, 6, 3), (3, 1)), ((2, 5, 5, 2), (1, 3))])
@pytest.mark.parametrize("static", [True, False])
def test_kernel_gradient_graph_is_conv2d_backprop_filter(shape, kernel_size, static):
    """Every kernel position's window is a run of the padded rows: checked against
    TensorFlow's own kernel gradient over several images (whose windows run across the
    images' edges), maps smaller than the kernel, and sizes known only when it runs."""
    rng = np.random.default_rng(sum(shape))
    images = rng.normal(size=shape).astype(np.float32)
    output_gradient = rng.normal(size=shape[:3] + (4,)).astype(np.float32)
    kernel_shape = kernel_size + (shape[-1], 4)
    expected = tf.compat.v1.nn.conv2d_backprop_filter(images, kernel_shape, output_gradient,
                                                      [1, 1, 1, 1], "SAME")
    gradient = tf.function(lambda x, g: layers.kernel_gradient_graph(x, g, kernel_shape))
    if not static:
        gradient = gradient.get_concrete_function(tf.TensorSpec((None, None, None, shape[-1])),
                                                  tf.TensorSpec((None, None, None, 4)))
    actual = gradient(tf.constant(images), tf.constant(output_gradient))
    assert actual.shape == kernel_shape
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape, kernel_size", [
    ((2, 9, 7, 3), (3, 3)), ((1, 6, 5, 2), (5, 5)), ((1, 13, 4, 3), (3, 1))])
@pytest.mark.parametrize("in_halves, matmul_kernel_gradient", [
    (False, False), (True, True)])
def test_sparse_gradient_is_the_dense_one(shape, kernel_size, in_halves, matmul_kernel_gradient,
                                          monkeypatch):
    """An output gradient at a few pixels (corners and edges included) takes the sparse path;
    a dense one the dense path. Both give tf.nn.conv2d's gradients."""
    rng = np.random.default_rng(sum(shape))
    batch, height, width, _ = shape
    images = tf.constant(rng.normal(size=shape).astype(np.float32))
    kernel = tf.constant(rng.normal(size=kernel_size + (shape[-1], 4)).astype(np.float32))
    sparse_weights = np.zeros(shape[:3] + (4,), np.float32)
    for b, y, x in [(0, 0, 0), (batch - 1, height - 1, width - 1), (0, height // 2, width - 1)]:
        sparse_weights[b, y, x] = rng.normal(size=4)
    sparse_weights[0, 0, 0, 1:] = 0  # a pixel with one non-zero channel counts
    dense_weights = rng.normal(size=sparse_weights.shape).astype(np.float32)
    calls = count_sparse_gradients(monkeypatch)
    for outputs_weights in (sparse_weights, dense_weights):
        results = []
        for convolve in (lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"),
                         lambda x, k: layers.same_convolution(x, k, in_halves, matmul_kernel_gradient,
                                                              sparse_gradient=True)):
            with tf.GradientTape() as tape:
                tape.watch([images, kernel])
                loss = tf.reduce_sum(convolve(images, kernel) * outputs_weights)
            results.append(tape.gradient(loss, [images, kernel]))
        for expected, actual in zip(*results):
            assert actual.shape == expected.shape
            np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)
    assert calls["convolutions"] == [(4, 3)]  # three pixels; the dense one took the dense path


@pytest.mark.parametrize("in_halves", [False, True])
def test_rpn_sparse_gradient_is_the_dense_one(in_halves, monkeypatch):
    """The RPN model's outputs and its seven gradients (the feature map's, its six weights')
    with sparse_gradient are those of its Keras layers, for a loss on a few anchors and on
    all of them."""
    from mrcnn.heads import build_rpn_model

    keras.utils.set_random_seed(6)
    rpn = build_rpn_model(1, 3, 8)
    shared = rpn.get_layer("rpn_conv_shared")
    shared.in_halves = in_halves
    rng = np.random.default_rng(6)
    feature_map = tf.constant(rng.normal(size=(2, 9, 7, 8)).astype(np.float32))
    anchors = 9 * 7 * 3
    few = np.zeros((2, anchors), np.float32)
    few[0, [0, 5, 100]] = 1.0
    few[1, [anchors - 1, 60]] = -2.0
    calls = count_sparse_gradients(monkeypatch)
    for anchor_weights in (few, rng.normal(size=few.shape).astype(np.float32)):
        results = []
        for sparse in (False, True):
            rpn.sparse_gradient = sparse
            with tf.GradientTape() as tape:
                tape.watch(feature_map)
                # training=True: without sparse_gradient, Keras's own layers run as built.
                logits, probs, deltas = rpn(feature_map, training=True)
                loss = (tf.reduce_sum(tf.sin(logits[..., 1]) * anchor_weights)
                        + tf.reduce_sum(tf.square(deltas) * anchor_weights[..., None]))
            results.append([logits, probs, deltas,
                            *tape.gradient(loss, [feature_map] + rpn.trainable_weights)])
        for expected, actual in zip(*results):
            assert actual.shape == expected.shape
            np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5,
                                       atol=1e-5 * float(tf.reduce_max(tf.abs(expected))))
    assert len(results[0]) == 3 + 1 + 6
    assert calls["rpn"] == [5, 2 * 9 * 7]  # five anchors at five pixels; then every pixel


@pytest.mark.parametrize("in_halves, winograd", [(False, False), (True, False), (True, True)])
def test_rpn_call_gives_the_outputs_of_its_convolutions(in_halves, winograd, monkeypatch):
    """Outside training the RPN model runs heads.rpn_convolutions (the 1x1 convolutions as
    one matrix product, in halves on each half, after Winograd's 3x3 convolution): the
    outputs of the three convolutions as tf.nn.conv2d computes them, for an odd height and
    two images."""
    from mrcnn import heads, winograd as winograd_module
    from mrcnn.heads import build_rpn_model

    monkeypatch.setattr(winograd_module, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd_module, "MIN_PIXELS", 1)
    calls = []
    real = heads.rpn_winograd_convolutions   # the shared map's 512 channels in 4 groups
    monkeypatch.setattr(heads, "rpn_winograd_convolutions",
                        lambda x, *args: calls.append(x.shape) or real(x, *args))
    keras.utils.set_random_seed(8)
    rpn = build_rpn_model(1, 3, 8)
    rpn.get_layer("rpn_conv_shared").in_halves = in_halves
    rpn.get_layer("rpn_conv_shared").winograd = winograd
    for layer in rpn.layers:   # non-zero biases, to check that each is added once
        if layer.weights:
            layer.bias.assign(np.linspace(-0.5, 0.5, layer.bias.shape[0], dtype=np.float32))
    feature_map = np.random.default_rng(8).normal(size=(2, 9, 6, 8)).astype(np.float32)
    logits, probs, deltas = rpn(feature_map)

    def convolution(x, name, padding):
        layer = rpn.get_layer(name)
        return tf.nn.conv2d(x, layer.kernel, 1, padding) + layer.bias

    shared = tf.nn.relu(convolution(feature_map, "rpn_conv_shared", "SAME"))
    expected_logits = tf.reshape(convolution(shared, "rpn_class_raw", "VALID"), [2, -1, 2])
    expected_deltas = tf.reshape(convolution(shared, "rpn_bbox_pred", "VALID"), [2, -1, 4])
    assert logits.shape == (2, 9 * 6 * 3, 2) and deltas.shape == (2, 9 * 6 * 3, 4)
    assert len(calls) == int(winograd)
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs.numpy(), tf.nn.softmax(expected_logits).numpy(), atol=1e-6)
    np.testing.assert_allclose(deltas.numpy(), expected_deltas.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("pointwise", ["pointwise_convolution_by_rows",
                                       "pointwise_convolution_as_matmul"])
def test_pointwise_convolutions_are_the_convolution(strides, pointwise):
    """A 1x1 convolution as a batch of one-row images, or as one matrix product:
    tf.nn.conv2d's outputs and gradients, odd sizes and strides included."""
    rng = np.random.default_rng(5)
    images = tf.constant(rng.normal(size=(2, 7, 5, 3)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(1, 1, 3, 4)).astype(np.float32))
    weights = None
    results = []
    for convolve in (lambda x, k: tf.nn.conv2d(x, k, strides, "VALID"),
                     lambda x, k: getattr(layers, pointwise)(x, k, strides)):
        with tf.GradientTape() as tape:
            tape.watch([images, kernel])
            outputs = convolve(images, kernel)
            if weights is None:
                weights = rng.normal(size=outputs.shape).astype(np.float32)
            loss = tf.reduce_sum(outputs * weights)
        results.append([outputs, *tape.gradient(loss, [images, kernel])])
    assert results[1][0].shape == (2, -(-7 // strides[0]), -(-5 // strides[1]), 4)
    for expected, actual in zip(*results):
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_pointwise_convolutions_run_by_rows_with_in_halves(monkeypatch):
    """Conv2D with a 1x1 kernel and in_halves goes through pointwise_convolution_by_rows,
    with a folded BatchNorm too, and gives the plain layer's outputs."""
    calls = []
    by_rows = layers.pointwise_convolution_by_rows
    monkeypatch.setattr(layers, "pointwise_convolution_by_rows",
                        lambda *args: calls.append(args[2]) or by_rows(*args))
    inputs = keras.Input((6, 6, 3))
    batch_norm = layers.BatchNorm(False)
    conv = layers.Conv2D(4, 1, strides=2, batch_norm=batch_norm)
    model = keras.Model(inputs, batch_norm(conv(inputs)))
    batch_norm.moving_variance.assign(np.linspace(0.5, 2, 4, dtype=np.float32))
    images = np.random.default_rng(7).normal(size=(1, 6, 6, 3)).astype(np.float32)
    expected = model(images).numpy()
    conv.in_halves = True
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert calls == [(2, 2)]
    conv.pointwise_matmul = True  # for training: a matrix product, before in_halves
    graph = tf.function(model).get_concrete_function(tf.TensorSpec((1, 6, 6, 3))).graph
    assert "MatMul" in {op.type for op in graph.get_operations()} and calls == [(2, 2)]
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_image_as_batch_convolutions_with_unknown_and_known_shapes():
    """convolution_in_halves and pointwise_convolution_by_rows traced for images of unknown
    size give tf.nn.conv2d's numbers for odd and even heights; traced for a known size, they
    compute no shapes (their paddings and slices are constants)."""
    rng = np.random.default_rng(9)
    kernel3 = tf.constant(rng.normal(size=(3, 3, 2, 3)).astype(np.float32))
    kernel1 = tf.constant(rng.normal(size=(1, 1, 2, 3)).astype(np.float32))

    def both(images):
        return (layers.convolution_in_halves(images, kernel3),
                layers.pointwise_convolution_by_rows(images, kernel1, (2, 2)))

    unknown = tf.function(both, input_signature=[tf.TensorSpec([None, None, None, 2])])
    for height in (5, 6):
        images = rng.normal(size=(2, height, 4, 2)).astype(np.float32)
        halves, rows = unknown(images)
        np.testing.assert_allclose(halves.numpy(), tf.nn.conv2d(images, kernel3, 1, "SAME"),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows.numpy(), tf.nn.conv2d(images, kernel1, 2, "VALID"),
                                   rtol=1e-5, atol=1e-5)
    unknown_types = {op.type for op in unknown.get_concrete_function().graph.get_operations()}
    assert {"Shape", "FloorDiv"} <= unknown_types
    known = tf.function(both).get_concrete_function(tf.TensorSpec([1, 6, 4, 2]))
    types = {op.type for op in known.graph.get_operations()}
    assert "Shape" not in types and "FloorDiv" not in types, types


def test_convolution_in_halves_has_the_gradients_of_a_convolution():
    """TensorFlow's own gradients through the gathered halves (no hand-written gradient)
    are tf.nn.conv2d's, for an odd height and two images."""
    rng = np.random.default_rng(12)
    images = tf.Variable(rng.normal(size=(2, 7, 5, 3)).astype(np.float32))
    kernel = tf.Variable(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
    weights = tf.constant(rng.normal(size=(2, 7, 5, 4)).astype(np.float32))
    gradients = []
    for convolve in (layers.convolution_in_halves,
                     lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(convolve(images, kernel) * weights)
        gradients.append(tape.gradient(loss, [images, kernel]))
    for got, want in zip(*gradients):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4)


def test_convolution_in_halves_applies_a_pixel_function_to_each_half():
    rng = np.random.default_rng(4)
    images = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    seen = []

    def then(convolved):
        seen.append(convolved.shape)
        return tf.reduce_sum(convolved, axis=-1, keepdims=True) ** 2

    outputs = layers.convolution_in_halves(tf.constant(images), tf.constant(kernel), then=then)
    expected = tf.reduce_sum(tf.nn.conv2d(images, kernel, 1, "SAME"), -1, keepdims=True) ** 2
    assert seen == [(4, 3, 4, 4)] and outputs.shape == (2, 5, 4, 1)
    np.testing.assert_allclose(outputs.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)


def test_custom_gradients_are_named_after_their_layer():
    """The matrix products of the kernel gradient sit in gradient_tape/<layer scope>/, where
    TensorFlow puts the gradients of its own operations (profiles attribute them by name)."""
    inputs = keras.Input((8, 8, 2), batch_size=1)
    conv = layers.Conv2D(3, 3, padding="same", name="conv")
    model = keras.Model(inputs, conv(inputs))
    conv.matmul_kernel_gradient = True

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x))
        return tape.gradient(loss, conv.kernel)

    graph = gradients.get_concrete_function(tf.TensorSpec((1, 8, 8, 2))).graph
    products = [op.name for op in graph.get_operations() if op.type == "MatMul"]
    assert len(products) == 9
    assert all(name.startswith("gradient_tape/") and "/conv" in name for name in products), products


@pytest.mark.parametrize("traced", [False, True])
def test_with_gradient_is_differentiated_by_its_gradient_function(traced):
    """The tape uses the given gradient, not the forward pass's (x * 2 differentiated as 3x,
    y as None); a tape that does not watch the input gets none; and in a traced graph
    nothing is added for it: no IdentityN, no zero-filled gradient (Fill) of the input."""
    def run(x, y):
        with tf.GradientTape(persistent=True) as tape, tf.GradientTape() as unwatched:
            tape.watch([x, y])
            outputs = layers.with_gradient([x, y], lambda x, y: (x * 2, x + y),
                                           lambda first, second: (3 * first + second, None))
            loss = tf.reduce_sum(outputs[0]) + tf.reduce_sum(outputs[1])
        return [*tape.gradient(loss, [x, y]), unwatched.gradient(loss, x)]

    x, y = tf.constant([1.0, -2.0]), tf.constant([0.5, 4.0])
    if traced:
        concrete = tf.function(run).get_concrete_function(x, y)
        types = {op.type for op in concrete.graph.get_operations()}
        assert not types & {"IdentityN", "Fill"}, types
        x_gradient, y_gradient, unwatched = concrete(x, y)
        assert unwatched is None   # a None in the traced function's outputs
    else:
        x_gradient, y_gradient, unwatched = run(x, y)
        assert unwatched is None
    np.testing.assert_allclose(x_gradient.numpy(), [4.0, 4.0])   # 3 * 1 + 1
    assert y_gradient is None


def test_sparse_convolution_gradients_against_numpy():
    """Each listed pixel's gradient row, times the kernel, added into its window (numpy)."""
    rng = np.random.default_rng(5)
    images = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    gradient = np.zeros((1, 5, 6, 3), np.float32)
    positions = [(0, 0, 5), (0, 2, 2), (0, 4, 0)]
    for b, y, x in positions:
        gradient[b, y, x] = rng.normal(size=3)
    image_gradient, kernel_gradient = layers.sparse_convolution_gradients(
        tf.constant(images), tf.constant(kernel), tf.constant(gradient),
        tf.constant(positions, tf.int64))
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)])
    expected_images = np.zeros_like(padded)
    expected_kernel = np.zeros_like(kernel)
    for b, y, x in positions:
        expected_kernel += np.einsum("ijc,f->ijcf", padded[b, y:y + 3, x:x + 3], gradient[b, y, x])
        expected_images[b, y:y + 3, x:x + 3] += np.einsum("ijcf,f->ijc", kernel, gradient[b, y, x])
    np.testing.assert_allclose(kernel_gradient.numpy(), expected_kernel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(image_gradient.numpy(), expected_images[:, 1:-1, 1:-1], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("kernel_size, shape", [(2, (3, 5, 4, 6)), (3, (2, 3, 7, 5))])
def test_conv2d_transpose_with_tiles_places_each_pixels_tile(kernel_size, shape):
    """Strides equal to the kernel: each pixel's tile is x[b, i, j] . kernel[u, v], put at
    (i * k + u, j * k + v) (numpy); the gradients are Keras's layer's."""
    rng = np.random.default_rng(kernel_size)
    images = tf.constant(rng.normal(size=shape).astype(np.float32))
    tiled = layers.Conv2DTranspose(4, kernel_size, strides=kernel_size, activation="relu")
    reference = KL.Conv2DTranspose(4, kernel_size, strides=kernel_size, activation="relu")
    tiled.build(shape)
    reference.build(shape)
    tiled.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in tiled.get_weights()])
    reference.set_weights(tiled.get_weights())
    kernel, bias = tiled.get_weights()           # kernel [k, k, filters, channels]
    batch, height, width, _ = shape
    expected = np.zeros((batch, height * kernel_size, width * kernel_size, 4), np.float32)
    for u in range(kernel_size):
        for v in range(kernel_size):
            expected[:, u::kernel_size, v::kernel_size] = np.einsum(
                "bijc,fc->bijf", images.numpy(), kernel[u, v])
    expected = np.maximum(expected + bias, 0)
    results = []
    for layer in (tiled, reference):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images)
            loss = tf.reduce_sum(tf.sin(outputs))
        results.append([outputs, *tape.gradient(loss, [images, *layer.trainable_weights])])
    np.testing.assert_allclose(results[0][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    for actual, wanted in zip(*results):
        np.testing.assert_allclose(actual.numpy(), wanted.numpy(), rtol=1e-4, atol=1e-5)
    graph = tf.function(tiled).get_concrete_function(images).graph
    assert "Conv2DBackpropInput" not in {op.type for op in graph.get_operations()}


def test_conv2d_transpose_with_overlapping_tiles_is_keras_s():
    images = np.random.default_rng(4).normal(size=(1, 4, 5, 3)).astype(np.float32)
    for padding, strides in (("valid", 1), ("same", 2)):
        layer = layers.Conv2DTranspose(2, 3, strides=strides, padding=padding)
        reference = KL.Conv2DTranspose(2, 3, strides=strides, padding=padding)
        outputs = layer(images)
        reference(images)
        reference.set_weights(layer.get_weights())
        assert not layer._tiles
        np.testing.assert_allclose(outputs.numpy(), reference(images).numpy(), atol=1e-5)


def test_convolution_in_halves_with_an_even_kernel():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(3, 7, 6, 2)).astype(np.float32)
    kernel = rng.normal(size=(2, 4, 2, 3)).astype(np.float32)
    halves = layers.convolution_in_halves(tf.constant(images), tf.constant(kernel))
    np.testing.assert_allclose(halves.numpy(), tf.nn.conv2d(images, kernel, 1, "SAME").numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("in_halves", [False, True])
@pytest.mark.parametrize("kernel_size", [(3, 3), (1, 1)])
def test_cpu_switches_keep_the_gradients_of_a_folded_conv_bn(in_halves, kernel_size):
    """Kernel, bias, gamma and beta gradients through the matmul kernel gradient, and of a
    1x1 convolution as a matrix product (pointwise_matmul)."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((9, 8, 3))
    model = keras.Model(inputs, layers.conv_bn(inputs, 4, kernel_size, "conv", "bn",
                                               padding="same", train_bn=False))
    bn = model.get_layer("bn")
    bn.set_weights([w + np.random.default_rng(2).uniform(0.5, 1.5, w.shape) for w in bn.get_weights()])
    images = tf.constant(np.random.default_rng(3).normal(size=(1, 9, 8, 3)).astype(np.float32))
    gradients = []
    for switched in (False, True):
        layers.use_cpu_convolutions(model, in_halves and switched, matmul_kernel_gradient=switched,
                                    pointwise_matmul=switched)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(model(images)))
        gradients.append(tape.gradient(loss, model.trainable_weights))
    graph = tf.function(model).get_concrete_function(tf.TensorSpec((1, 9, 8, 3))).graph
    operations = {op.type for op in graph.get_operations()}
    assert ("MatMul" in operations) == (kernel_size == (1, 1))
    assert len(gradients[0]) == 4  # kernel, bias, gamma, beta
    for expected, actual in zip(*gradients):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("in_halves", [False, True])
def test_cpu_convolutions_switch_the_image_convolutions_and_the_heads_gradients(tmp_path,
                                                                             in_halves):
    """The backbone's, FPN's and RPN's convolutions (1x1 ones by rows with in_halves); the
    heads' convolutions their input gradient only; the same detections."""
    from mrcnn.model import MaskRCNN

    keras.utils.set_random_seed(1)
    model = MaskRCNN("inference", TinyConfig(), str(tmp_path))
    layers.use_cpu_convolutions(model.keras_model, in_halves=False, matmul_kernel_gradient=False)
    image = np.random.default_rng(1).integers(0, 256, (100, 128, 3), dtype=np.uint8)
    (expected,) = model.detect([image])
    layers.use_cpu_convolutions(model.keras_model, in_halves, matmul_kernel_gradient=True,
                                pointwise_matmul=True, flipped_input_gradient=True)
    model.keras_model.make_predict_function(force=True)  # traced anew, with the switches
    switched = {layer.name for layer in model.keras_model.layers
                if getattr(layer, "matmul_kernel_gradient", False)
                and layer.in_halves == in_halves}
    assert {"fpn_p2", "fpn_p5", "res2a_branch2b", "res4f_branch2b", "conv1",   # 3x3 and 7x7
            "fpn_c2p2", "res2a_branch2a", "res3a_branch1"} <= switched         # 1x1
    rpn_conv = model.keras_model.get_layer("rpn_model").get_layer("rpn_conv_shared")
    assert rpn_conv.matmul_kernel_gradient and rpn_conv.in_halves == in_halves
    head_conv = model.keras_model.get_layer("mrcnn_mask_conv1").layer
    assert not head_conv.matmul_kernel_gradient and not head_conv.in_halves
    assert not head_conv.pointwise_matmul and head_conv.flipped_input_gradient
    assert not model.keras_model.get_layer("fpn_p2").flipped_input_gradient
    assert model.keras_model.get_layer("res2a_branch2a").pointwise_matmul
    (actual,) = model.detect([image])
    assert len(expected["scores"]) >= 3
    np.testing.assert_array_equal(actual["class_ids"], expected["class_ids"])
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=1e-4)
    assert np.abs(actual["rois"] - expected["rois"]).max() <= 1


def test_frozen_batch_norm_uses_moving_statistics_when_training():
    bn = layers.BatchNorm(train_bn=False)
    x = np.random.default_rng(3).normal(5.0, 2.0, size=(4, 3)).astype(np.float32)
    bn.build(x.shape)
    bn.moving_mean.assign([1.0, 2.0, 3.0])
    bn.moving_variance.assign([4.0, 4.0, 4.0])
    out = bn(x, training=True).numpy()
    np.testing.assert_allclose(out, (x - [1.0, 2.0, 3.0]) / np.sqrt(4.0 + bn.epsilon), rtol=1e-5)
    trainable = layers.BatchNorm(train_bn=None)
    trainable.build(x.shape)
    batch_stats = trainable(x, training=True).numpy()
    np.testing.assert_allclose(batch_stats.mean(axis=0), 0.0, atol=1e-5)


def frozen_batch_norm(channels, rng):
    """A built BatchNorm(train_bn=False) with random gamma, beta and moving statistics."""
    bn = layers.BatchNorm(train_bn=False)
    bn.build((None, channels))
    bn.set_weights([rng.uniform(0.5, 2.0, channels), rng.normal(size=channels),
                    rng.normal(size=channels), rng.uniform(0.5, 2.0, channels)])
    return bn


@pytest.mark.parametrize("kernel, input_side, padding, time_distributed", [
    ((3, 3), 9, "same", False),        # a backbone convolution
    ((1, 1), 6, "valid", False),
    ((5, 5), 5, "valid", True),        # the classifier head: the kernel covers the input
])
def test_conv_bn_equals_conv_then_batch_norm_with_equal_gradients(kernel, input_side, padding,
                                                                   time_distributed):
    rng = np.random.default_rng(4)
    shape = (2, 3, input_side, input_side, 4) if time_distributed else (2, input_side, input_side, 4)
    x = rng.normal(size=shape).astype(np.float32)
    inputs = KL.Input(shape[1:])
    output = layers.conv_bn(inputs, 6, kernel, "c", "b", padding=padding, train_bn=False,
                            time_distributed=time_distributed)
    folded = keras.Model(inputs, output)
    conv, bn = folded.get_layer("c"), folded.get_layer("b")
    inner_bn = bn.layer if time_distributed else bn
    assert inner_bn.folded
    inner_conv = conv.layer if time_distributed else conv
    assert inner_conv._whole_input == (kernel == (input_side, input_side))  # the matmul path
    reference_bn = frozen_batch_norm(6, rng)
    conv.set_weights([rng.normal(size=w.shape) for w in conv.get_weights()])
    bn.set_weights(reference_bn.get_weights())
    kernel_value, bias_value = conv.get_weights()

    def reference(x, kernel, bias, gamma, beta):
        flat = tf.reshape(x, (-1,) + shape[-3:])
        z = tf.nn.conv2d(flat, kernel, 1, padding.upper()) + bias
        y = (z - reference_bn.moving_mean) / tf.sqrt(reference_bn.moving_variance
                                                       + reference_bn.epsilon) * gamma + beta
        return tf.reshape(y, tf.concat([shape[:-3], tf.shape(y)[1:]], 0))

    expected = reference(x, kernel_value, bias_value, reference_bn.gamma, reference_bn.beta)
    np.testing.assert_allclose(folded(x, training=True), expected, rtol=1e-4, atol=1e-4)

    weights = [conv.weights[0], conv.weights[1], inner_bn.gamma, inner_bn.beta]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(folded(x, training=True)))
    gradients = tape.gradient(loss, weights)
    variables = [tf.Variable(w.numpy()) for w in weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(reference(x, *variables)))
    for got, want in zip(gradients, tape.gradient(loss, variables)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    # Weights keep their layers: the BatchNorm's are not the convolution's too.
    assert [w.name for w in conv.weights] == ["kernel", "bias"]
    assert [w.name for w in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("scale, center", [(True, True), (False, True), (True, False)])
def test_fold_has_the_gradients_of_the_scaled_kernel_and_offset(with_bias, scale, center):
    """BatchNorm.fold's one gradient function gives TensorFlow's gradients of
    ``kernel * scale`` and ``offset`` (frozen_affine) in the kernel, bias, gamma and beta,
    with or without each; its traced gradient has no Neg (TensorFlow's of ``bias - mean``)
    and one Sum (TensorFlow's gradients of the two products broadcast and reshape)."""
    rng = np.random.default_rng(13)
    bn = layers.BatchNorm(train_bn=False, scale=scale, center=center)
    bn.build((None, 4))
    bn.set_weights([rng.uniform(0.5, 2.0, 4) if i == len(bn.weights) - 1 else rng.normal(size=4)
                    for i in range(len(bn.weights))])
    kernel = tf.Variable(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    bias = tf.Variable(rng.normal(size=4).astype(np.float32)) if with_bias else None
    kernel_weights = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    variables = [kernel] + [w for w in (bias, bn.gamma if scale else None,
                                        bn.beta if center else None) if w is not None]
    watched = [v.value if isinstance(v, keras.Variable) else v for v in variables]

    def loss_of(scaled_kernel, offset):
        return (tf.reduce_sum(tf.sin(scaled_kernel) * kernel_weights)
                + tf.reduce_sum(tf.square(offset)))

    def folded():
        with tf.GradientTape() as tape:
            loss = loss_of(*bn.fold(kernel, bias))
        return tape.gradient(loss, watched)

    with tf.GradientTape() as tape:
        scale_value, offset = bn.frozen_affine(bias)
        loss = loss_of(kernel * scale_value, offset)
    expected = tape.gradient(loss, watched)
    assert all(g is not None for g in expected)
    for got, want in zip(folded(), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    graph = tf.function(folded).get_concrete_function().graph
    operations = [op.type for op in graph.get_operations()]
    assert "Neg" not in operations or not with_bias
    assert operations.count("Sum") == (3 if scale else 2)  # the loss's two, the gamma gradient's


@pytest.mark.parametrize("padded", [False, True])
def test_folded_kernel_is_scaled_once_the_input_is_there(padded):
    """In a graph the scaled kernel waits for the convolution's input, or for a Pad's input
    where a Pad makes it (oneDNN fuses the Pad into the convolution: a control edge from the
    Pad would close a cycle, and the function would not run). The numbers stay those of a
    convolution and then the BatchNorm."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 7, 7, 3)).astype(np.float32)
    inputs = KL.Input((7, 7, 3), batch_size=1)
    hidden = KL.Activation("relu", name="hidden")(inputs)
    if padded:
        hidden = KL.ZeroPadding2D(1, name="pad")(hidden)
    output = layers.conv_bn(hidden, 4, (3, 3), "c", "b", train_bn=False)
    folded = keras.Model(inputs, output)
    conv, bn = folded.get_layer("c"), folded.get_layer("b")
    reference_bn = frozen_batch_norm(4, rng)
    bn.set_weights(reference_bn.get_weights())
    kernel, bias = conv.get_weights()

    run = tf.function(lambda x: folded(x))
    graph = run.get_concrete_function(tf.TensorSpec((1, 7, 7, 3))).graph
    (convolution,) = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert convolution.inputs[0].op.type == ("Pad" if padded else "Relu")
    scaled_kernel = convolution.inputs[1].op
    assert scaled_kernel.type == "Mul"
    assert [op.type for op in scaled_kernel.control_inputs] == ["Relu"]

    padded_x = np.pad(np.maximum(x, 0), [(0, 0), (1, 1), (1, 1), (0, 0)]) if padded else np.maximum(x, 0)
    z = tf.nn.conv2d(padded_x, kernel, 1, "VALID") + bias
    expected = ((z - reference_bn.moving_mean) / np.sqrt(reference_bn.moving_variance + reference_bn.epsilon)
                * reference_bn.gamma + reference_bn.beta)
    np.testing.assert_allclose(run(x), expected, rtol=1e-4, atol=1e-4)


def test_conv_bn_with_trainable_batch_norm_is_not_folded():
    inputs = KL.Input((8, 8, 3))
    model = keras.Model(inputs, layers.conv_bn(inputs, 4, (3, 3), "c", "b", train_bn=None))
    assert not model.get_layer("b").folded
    with pytest.raises(ValueError, match="frozen BatchNorm"):
        layers.Conv2D(4, 3, batch_norm=layers.BatchNorm(train_bn=None))


# ---------------------------------------------------------------------------
# ProposalLayer
# ---------------------------------------------------------------------------

def numpy_proposals(scores, deltas, anchors, config, count, threshold):
    """One image's proposals: top-k, refine, clip, NMS, pad."""
    order = np.argsort(-scores, kind="stable")[:min(config.PRE_NMS_LIMIT, len(scores))]
    boxes = utils.apply_box_deltas(anchors[order], deltas[order] * config.RPN_BBOX_STD_DEV)
    boxes = np.clip(boxes, 0.0, 1.0)
    keep = greedy_nms(boxes, scores[order], threshold, count)
    out = np.zeros((count, 4), np.float32)
    out[:len(keep)] = boxes[keep]
    return out


def test_proposal_layer_matches_numpy(config):
    rng = np.random.default_rng(4)
    num_anchors, count, threshold = 80, 12, 0.5
    anchors = random_boxes(rng, num_anchors)
    fg = rng.uniform(size=(2, num_anchors)).astype(np.float32)
    probs = np.stack([1 - fg, fg], axis=-1)
    deltas = rng.normal(0, 0.5, size=(2, num_anchors, 4)).astype(np.float32)
    batch_anchors = np.broadcast_to(anchors, (2, num_anchors, 4))

    layer = layers.ProposalLayer(count, threshold, config=config)
    proposals = layer([probs, deltas, batch_anchors]).numpy()
    assert proposals.shape == (2, count, 4)
    for i in range(2):
        expected = numpy_proposals(fg[i], deltas[i], anchors, config, count, threshold)
        np.testing.assert_allclose(proposals[i], expected, atol=1e-5)


def test_proposal_layer_pads_with_zeros_when_few_boxes_survive(config):
    anchors = np.tile([[0.1, 0.1, 0.5, 0.5]], (60, 1)).astype(np.float32)  # all identical
    probs = np.tile([0.2, 0.8], (2, 60, 1)).astype(np.float32)
    deltas = np.zeros((2, 60, 4), np.float32)
    proposals = layers.ProposalLayer(10, 0.7, config=config)(
        [probs, deltas, np.broadcast_to(anchors, (2, 60, 4))]).numpy()
    np.testing.assert_allclose(proposals[:, 0], [[0.1, 0.1, 0.5, 0.5]] * 2, atol=1e-6)
    assert not proposals[:, 1:].any()


# ---------------------------------------------------------------------------
# PyramidROIAlign
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("builtin_ops_only", [False, True])
def test_pyramid_roi_align_picks_the_level_of_the_original_formula(builtin_ops_only):
    image_size = 256
    from mrcnn.data import compose_image_meta

    meta = compose_image_meta(0, (256, 256, 3), (256, 256, 3), (0, 0, 256, 256), 1.0, np.ones(2))
    metas = np.stack([meta, meta]).astype(np.float32)
    # Feature map of level k is filled with the value k, so the pooled value names the level.
    feature_maps = [np.full((2, image_size // s, image_size // s, 2), level, np.float32)
                    for level, s in zip(range(2, 6), (4, 8, 16, 32))]
    sides = np.array([16, 40, 60, 112, 224, 250]) / (image_size - 1)
    boxes = np.zeros((2, len(sides), 4), np.float32)
    boxes[:, :, 2] = sides
    boxes[:, :, 3] = sides
    roi_align = layers.PyramidROIAlign((3, 3))
    roi_align.builtin_ops_only = builtin_ops_only
    pooled = roi_align([boxes, metas] + feature_maps).numpy()
    assert pooled.shape == (2, len(sides), 3, 3, 2)

    area = float(image_size * image_size)
    expected = [min(5, max(2, 4 + int(np.round(np.log2(np.sqrt(h * h) / (224.0 / np.sqrt(area)))))))
                for h in sides]
    np.testing.assert_allclose(pooled[0, :, 1, 1, 0], expected)
    np.testing.assert_allclose(pooled[1, :, 1, 1, 0], expected)


@pytest.mark.parametrize("builtin_ops_only", [False, True])
def test_pyramid_roi_align_keeps_box_order_and_samples_bilinearly(builtin_ops_only):
    from mrcnn.data import compose_image_meta

    size = 64
    meta = compose_image_meta(0, (size, size, 3), (size, size, 3), (0, 0, size, size), 1.0, np.ones(2))
    # A horizontal ramp on P2 (16x16): value = column index; crop_and_resize samples it exactly.
    ramp = np.tile(np.arange(16, dtype=np.float32), (16, 1))[None, :, :, None]
    feature_maps = [ramp] + [np.zeros((1, size // s, size // s, 1), np.float32) for s in (8, 16, 32)]
    x_starts = np.array([0.6, 0.1, 0.3])
    boxes = np.stack([np.full(3, 0.1), x_starts, np.full(3, 0.3), x_starts + 0.2], axis=1)[None]
    roi_align = layers.PyramidROIAlign((2, 2))
    roi_align.builtin_ops_only = builtin_ops_only
    pooled = roi_align([boxes.astype(np.float32), meta[None].astype(np.float32)]
                       + feature_maps).numpy()
    # crop_and_resize: sample j of 2 at x = (x1 + j * (x2 - x1)) * (width - 1).
    for i, x1 in enumerate(x_starts):
        np.testing.assert_allclose(pooled[0, i, 0, :, 0], [x1 * 15, (x1 + 0.2) * 15], atol=1e-4)


@pytest.mark.parametrize("builtin_ops_only", [False, True])
def test_pyramid_roi_align_by_stride_reads_each_pixel_at_pixel_over_stride(builtin_ops_only):
    """ROI_ALIGN_BY_STRIDE: on every level, a box's first and last pixels are read at
    feature coordinate pixel / stride; the original's sampling reads them at
    normalized coordinate * (level size - 1)."""
    from mrcnn import utils
    from mrcnn.data import compose_image_meta

    size = 512
    meta = compose_image_meta(0, (size, size, 3), (size, size, 3), (0, 0, size, size), 1.0,
                              np.ones(2))[None].astype(np.float32)
    # Each level's channels hold the feature row and column index: the pooled values are
    # the coordinates read.
    feature_maps = []
    for stride in (4, 8, 16, 32):
        n = size // stride
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        feature_maps.append(np.stack([rows, cols], -1)[None].astype(np.float32))
    # (y1, x1, side) in pixels; the sides pick P2, P3, P4 and P5.
    pixel_boxes = np.array([(10, 30, 16), (41, 20, 112), (20, 50, 224), (0, 3, 448)])
    y1, x1, side = pixel_boxes.T
    boxes = utils.norm_boxes(np.stack([y1, x1, y1 + side, x1 + side], 1), (size, size))[None]
    strides = np.array([4, 8, 16, 32])

    roi_align = layers.PyramidROIAlign((2, 2), by_stride=True)
    roi_align.builtin_ops_only = builtin_ops_only
    pooled = roi_align([boxes, meta] + feature_maps).numpy()[0]
    first, last = pooled[:, 0, 0], pooled[:, 1, 1]
    np.testing.assert_allclose(first, np.stack([y1, x1], 1) / strides[:, None], atol=1e-4)
    np.testing.assert_allclose(last, np.stack([y1, x1], 1) / strides[:, None]
                               + (side - 1)[:, None] / strides[:, None], atol=1e-4)

    original = layers.PyramidROIAlign((2, 2))([boxes, meta] + feature_maps).numpy()[0]
    level_sizes = size // strides
    np.testing.assert_allclose(original[:, 1, 1], boxes[0, :, 2:] * (level_sizes - 1)[:, None],
                               atol=1e-4)
    assert not np.allclose(original[:, 1, 1], last, atol=0.1)
    assert layers.PyramidROIAlign.from_config(roi_align.get_config()).by_stride


def test_crop_and_resize_graph_is_tf_crop_and_resize():
    """Boxes inside, across and outside the image, flipped, on the edges, of two images."""
    rng = np.random.default_rng(7)
    images = rng.normal(size=(2, 17, 23, 3)).astype(np.float32)
    corners = rng.uniform(-0.3, 1.3, size=(40, 4)).astype(np.float32)
    boxes = np.concatenate([random_boxes(rng, 20), corners], axis=0)
    boxes[:4] = boxes[:4, [2, 3, 0, 1]]                       # flipped
    boxes[4:10, 2:] = 1.0                                    # on the bottom-right edges
    box_indices = rng.integers(0, 2, len(boxes)).astype(np.int32)
    assert (boxes < 0).any() and (boxes > 1).any()

    graph = tf.function(layers.crop_and_resize_graph, reduce_retracing=True)
    for crop_size in ((7, 7), (14, 14), (2, 5)):
        expected = tf.image.crop_and_resize(images, boxes, box_indices, crop_size).numpy()
        assert (expected == 0).any(), "the case should sample outside the images"
        eager = layers.crop_and_resize_graph(images, boxes, box_indices, crop_size).numpy()
        np.testing.assert_array_equal(eager, expected)
        # Graph optimizations reorder the float arithmetic: equal to rounding, with the
        # edge samples still inside.
        traced = graph(tf.constant(images), tf.constant(boxes), tf.constant(box_indices),
                       crop_size).numpy()
        np.testing.assert_allclose(traced, expected, atol=1e-4)


# ---------------------------------------------------------------------------
# DetectionTargetLayer
# ---------------------------------------------------------------------------

def test_detection_targets_sample_positives_and_build_exact_targets(config):
    gt_boxes = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.8]], np.float32)
    gt_class_ids = np.array([2, 3], np.int32)
    masks = np.zeros((40, 40, 2), bool)
    masks[4:16, 4:16, 0] = True
    masks[20:36, 20:32, 1] = True
    # Proposals: exact copies of both GT boxes, slightly shifted copies, and background boxes.
    proposals = np.concatenate([
        gt_boxes, gt_boxes + 0.01,
        np.array([[0.0, 0.6, 0.1, 0.7], [0.85, 0.0, 0.95, 0.2], [0.45, 0.0, 0.5, 0.05]] * 4, np.float32),
    ])
    proposals = np.pad(proposals, [(0, 30 - len(proposals)), (0, 0)])

    def batch(x):
        return np.stack([x, x])

    padded_ids = np.pad(gt_class_ids, (0, 3))
    padded_boxes = np.pad(gt_boxes, [(0, 3), (0, 0)])
    padded_masks = np.pad(masks, [(0, 0), (0, 0), (0, 3)])
    rois, class_ids, deltas, target_masks = [
        t.numpy() for t in layers.DetectionTargetLayer(config=config)(
            [batch(proposals), batch(padded_ids), batch(padded_boxes), batch(padded_masks)])]

    assert rois.shape == (2, 30, 4) and class_ids.shape == (2, 30)
    assert deltas.shape == (2, 30, 4) and target_masks.shape == (2, 30, 4, 4)
    for b in range(2):
        positives = np.where(class_ids[b] > 0)[0]
        # int(30 * 0.33) = 9 positives at most; there are 4 candidates, all taken, first.
        assert list(positives) == [0, 1, 2, 3]
        ious = numpy_iou_matrix(rois[b, positives], gt_boxes)
        np.testing.assert_array_equal(class_ids[b, positives], gt_class_ids[ious.argmax(axis=1)])
        expected = utils.box_refinement(rois[b, positives], gt_boxes[ious.argmax(axis=1)])
        np.testing.assert_allclose(deltas[b, positives], expected / config.BBOX_STD_DEV, atol=1e-4)
        # Negatives: 1 / 0.33 * 4 - 4 = 8 of them, with zero targets; then zero padding.
        negatives = np.arange(4, 12)
        assert rois[b, negatives].any(axis=1).all()
        assert not class_ids[b, 4:].any() and not deltas[b, 4:].any()
        assert not rois[b, 12:].any()
        for i in positives:
            gt = ious[list(positives).index(i)].argmax()
            expected_mask = np.round(bilinear_crop(masks[:, :, gt].astype(np.float32), rois[b, i], (4, 4)))
            np.testing.assert_array_equal(target_masks[b, i], expected_mask)


# ---------------------------------------------------------------------------
# DetectionLayer
# ---------------------------------------------------------------------------

def numpy_detections(rois, probs, deltas, window, config):
    """One image's final detections, computed with numpy and reference NMS."""
    class_ids = probs.argmax(axis=1)
    scores = probs[np.arange(len(probs)), class_ids]
    refined = utils.apply_box_deltas(rois, deltas[np.arange(len(rois)), class_ids] * config.BBOX_STD_DEV)
    refined = np.stack([np.clip(refined[:, 0], window[0], window[2]), np.clip(refined[:, 1], window[1], window[3]),
                        np.clip(refined[:, 2], window[0], window[2]), np.clip(refined[:, 3], window[1], window[3])],
                       axis=1)
    has_area = (refined[:, 2] > refined[:, 0]) & (refined[:, 3] > refined[:, 1])
    candidates = np.where((class_ids > 0) & (scores >= config.DETECTION_MIN_CONFIDENCE)
                          & has_area)[0]
    keep = []
    for class_id in np.unique(class_ids[candidates]):
        ix = candidates[class_ids[candidates] == class_id]
        kept = greedy_nms(refined[ix], scores[ix], config.DETECTION_NMS_THRESHOLD,
                          config.DETECTION_MAX_INSTANCES)
        keep.extend(ix[kept])
    keep = np.array(sorted(keep, key=lambda i: -scores[i])[:config.DETECTION_MAX_INSTANCES], int)
    out = np.zeros((config.DETECTION_MAX_INSTANCES, 6), np.float32)
    out[:len(keep)] = np.concatenate([refined[keep], class_ids[keep, None], scores[keep, None]], axis=1)
    return out


def test_nms_graph_keeps_what_reference_nms_keeps_best_first():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 60, min_side=0.1)
    scores = rng.permutation(60).astype(np.float32) / 60
    for limit in (5, 60):
        kept = layers.nms_graph(boxes, scores, limit, 0.5).numpy()
        np.testing.assert_array_equal(kept, greedy_nms(boxes, scores, 0.5, limit))
    assert 5 < len(greedy_nms(boxes, scores, 0.5, 60)) < 60, "the case should suppress some boxes"


def test_nms_graph_keeps_every_flat_box_once_and_breaks_ties_by_index():
    rng = np.random.default_rng(4)
    boxes = random_boxes(rng, 40, min_side=0.1)
    boxes[::4, 2] = boxes[::4, 0]                     # no height
    boxes[1::8] = 0.0                                 # no area, all the same
    scores = rng.choice([0.2, 0.5, 0.9], size=40).astype(np.float32)
    for limit in (6, 40):
        expected = greedy_nms(boxes, scores, 0.5, limit)
        np.testing.assert_array_equal(layers.nms_graph(boxes, scores, limit, 0.5).numpy(), expected)
        np.testing.assert_array_equal(
            tf.image.non_max_suppression(boxes, scores, limit, 0.5).numpy(), expected)
    kept = layers.nms_graph(boxes, scores, 40, 0.5).numpy()
    assert len(set(kept)) == len(kept) and set(range(0, 40, 4)) <= set(kept)


def numpy_flat_candidates(rois, probs, deltas, window, config):
    """How many confident non-background proposals are clipped to a zero-area box."""
    class_ids = probs.argmax(axis=1)
    scores = probs[np.arange(len(probs)), class_ids]
    refined = utils.apply_box_deltas(rois, deltas[np.arange(len(rois)), class_ids] * config.BBOX_STD_DEV)
    y1, y2 = np.clip(refined[:, [0, 2]], window[0], window[2]).T
    x1, x2 = np.clip(refined[:, [1, 3]], window[1], window[3]).T
    flat = (y2 <= y1) | (x2 <= x1)
    return int((flat & (class_ids > 0) & (scores >= config.DETECTION_MIN_CONFIDENCE)).sum())


@pytest.mark.parametrize("builtin_ops_only", [False, True])
def test_detection_layer_matches_numpy(config, builtin_ops_only):
    from mrcnn.data import compose_image_meta

    rng = np.random.default_rng(5)
    num_rois = 40
    rois = np.stack([random_boxes(rng, num_rois, min_side=0.2), random_boxes(rng, num_rois, min_side=0.2)])
    # Proposals below the window (y1 = 0.95 > its bottom, 118 / 128): clipped
    # flat against it, they hold no pixel and are no detection.
    rois[:, :6, 0], rois[:, :6, 2] = 0.95, 0.99
    logits = rng.normal(0, 2, size=(2, num_rois, config.NUM_CLASSES))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    deltas = rng.normal(0, 0.3, size=(2, num_rois, config.NUM_CLASSES, 4)).astype(np.float32)
    window = (10, 0, 118, 128)
    meta = compose_image_meta(0, (200, 240, 3), (128, 128, 3), window, 0.5, np.ones(config.NUM_CLASSES))
    metas = np.stack([meta, meta]).astype(np.float32)

    detection_layer = layers.DetectionLayer(config=config)
    detection_layer.builtin_ops_only = builtin_ops_only
    detections = tf.function(detection_layer)([rois, probs, deltas, metas]).numpy()
    assert detections.shape == (2, config.DETECTION_MAX_INSTANCES, 6)
    normalized_window = utils.norm_boxes(np.array(window), (128, 128))
    for i in range(2):
        expected = numpy_detections(rois[i], probs[i], deltas[i], normalized_window, config)
        assert (expected[:, 4] > 0).sum() > 2, "the case should keep several detections"
        flat = numpy_flat_candidates(rois[i], probs[i], deltas[i], normalized_window, config)
        assert flat > 0, "the case should have flat boxes to drop"
        np.testing.assert_allclose(detections[i], expected, atol=1e-5)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

def test_rpn_class_loss_is_cross_entropy_over_non_neutral_anchors():
    rpn_match = np.array([[[1], [-1], [0], [1]]], np.int32)
    logits = np.array([[[0.0, 2.0], [1.0, -1.0], [5.0, 5.0], [0.5, 0.0]]], np.float32)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([log_softmax[0, 0, 1], log_softmax[0, 1, 0], log_softmax[0, 3, 1]])
    np.testing.assert_allclose(losses.rpn_class_loss_graph(rpn_match, logits).numpy(), expected, rtol=1e-5)


def test_rpn_bbox_loss_pairs_targets_with_positive_anchors_in_order():
    rpn_match = np.array([[[0], [1], [-1], [1]], [[1], [0], [0], [0]]], np.int32)
    rpn_bbox = np.arange(32, dtype=np.float32).reshape(2, 4, 4) / 10
    target = np.zeros((2, 3, 4), np.float32)
    target[0, 0] = rpn_bbox[0, 1] + 0.5  # |diff| 0.5 -> 0.5 * 0.25
    target[0, 1] = rpn_bbox[0, 3] + 2.0  # |diff| 2 -> 1.5
    target[1, 0] = rpn_bbox[1, 0]        # 0
    expected = np.mean([0.125] * 4 + [1.5] * 4 + [0.0] * 4)
    config = type("TwoImages", (Config,), {"IMAGES_PER_GPU": 2})()
    loss = losses.rpn_bbox_loss_graph(config, target, rpn_match, rpn_bbox).numpy()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_mrcnn_class_loss_ignores_predictions_of_inactive_classes():
    target = np.array([[1, 0, 2]], np.int32)
    logits = np.array([[[0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], np.float32)
    logits[0, 2] = [0.0, 0.0, 4.0]
    active = np.array([[1.0, 1.0, 0.0]], np.float32)  # class 2 is not in this image's dataset
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -log_softmax[0, np.arange(3), target[0]]
    expected = (ce[0] + ce[1]) / 2.0  # ROI 2 predicts the inactive class 2
    np.testing.assert_allclose(losses.mrcnn_class_loss_graph(target, logits, active).numpy(), expected,
                               rtol=1e-5)


def test_mrcnn_bbox_and_mask_losses_use_the_true_class_and_positive_rois_only():
    target_ids = np.array([[2, 0, 1]], np.int32)
    target_bbox = np.zeros((1, 3, 4), np.float32)
    pred_bbox = np.zeros((1, 3, 3, 4), np.float32)
    pred_bbox[0, 0, 2] = 0.5       # used: 0.125 per coordinate
    pred_bbox[0, 0, 1] = 9.0       # wrong class: ignored
    pred_bbox[0, 1, 0] = 9.0       # negative ROI: ignored
    pred_bbox[0, 2, 1] = 3.0       # used: 2.5 per coordinate
    np.testing.assert_allclose(losses.mrcnn_bbox_loss_graph(target_bbox, target_ids, pred_bbox).numpy(),
                               (0.125 + 2.5) / 2, rtol=1e-6)

    target_masks = np.zeros((1, 3, 2, 2), np.float32)
    target_masks[0, 0] = [[1, 0], [0, 1]]
    pred = np.full((1, 2, 2, 2, 3), 0.5, np.float32)  # mask head ran on the first 2 ROIs only
    pred[0, 0, :, :, 2] = [[0.9, 0.2], [0.3, 0.6]]
    expected = -np.mean(np.log([0.9, 0.8, 0.7, 0.6]))
    np.testing.assert_allclose(losses.mrcnn_mask_loss_graph(target_masks, target_ids, pred).numpy(),
                               expected, rtol=1e-5)


def test_losses_are_zero_not_nan_without_positives():
    no_positive = np.zeros((1, 3), np.int32)
    zeros = np.zeros
    assert losses.mrcnn_bbox_loss_graph(zeros((1, 3, 4), np.float32), no_positive,
                                        zeros((1, 3, 2, 4), np.float32)).numpy() == 0
    assert losses.mrcnn_mask_loss_graph(zeros((1, 3, 2, 2), np.float32), no_positive,
                                        zeros((1, 3, 2, 2, 2), np.float32)).numpy() == 0
    assert losses.rpn_class_loss_graph(zeros((1, 4, 1), np.int32), zeros((1, 4, 2), np.float32)).numpy() == 0


def test_box_deltas_cannot_blow_a_box_up_to_infinity():
    boxes = np.array([[0.4, 0.4, 0.6, 0.6]], np.float32)
    deltas = np.array([[0.0, 0.0, 500.0, 2.0]], np.float32)  # exp(500) overflows float32
    refined = layers.apply_box_deltas_graph(boxes, deltas).numpy()
    assert np.isfinite(refined).all()
    np.testing.assert_allclose(refined[0, 2] - refined[0, 0], 0.2 * 1000 / 16, rtol=1e-4)
    np.testing.assert_allclose(refined[0, 3] - refined[0, 1], 0.2 * np.exp(2.0), rtol=1e-4)


def test_batch_slice():
    a = tf.constant(np.arange(24, dtype=np.float32).reshape(3, 2, 4))
    b = tf.constant([1.0, 2.0, 3.0])

    def scale_and_sum(x, factor):
        return x * factor, tf.reduce_sum(x)

    scaled, sums = layers.batch_slice([a, b], scale_and_sum, 3, names=["scaled", "sums"])
    expected = a.numpy() * np.array([1, 2, 3])[:, None, None]
    np.testing.assert_allclose(scaled.numpy(), expected)
    np.testing.assert_allclose(sums.numpy(), a.numpy().sum(axis=(1, 2)))
    single = layers.batch_slice(a, lambda x: x[0], 2)
    np.testing.assert_allclose(single.numpy(), a.numpy()[:2, 0])


@pytest.mark.parametrize("counts, multiple, limit, rows", [
    ([3, 5], 4, None, 8), ([0, 0], 4, None, 4), ([9, 2], 4, None, 10), ([9, 2], 4, 6, 6),
    ([4, 1], 1, None, 4),
])
def test_active_rows_keeps_the_rows_in_use_in_some_image(counts, multiple, limit, rows):
    values = np.arange(2 * 10 * 3, dtype=np.float32).reshape(2, 10, 3)
    active = np.arange(10)[None, :] < np.array(counts)[:, None]
    out = layers.ActiveRows(multiple=multiple, limit=limit)([values, active]).numpy()
    np.testing.assert_array_equal(out, values[:, :rows])
