"""Tests for mrcnn.visualize: what each function draws, checked on the returned figures (Agg)."""

import colorsys
import os
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Polygon, Rectangle  # noqa: E402

from mrcnn import visualize  # noqa: E402

from conftest import box_mask, mask_iou  # noqa: E402

CLASS_NAMES = ["BG", "pikachu", "ball", "hat"]
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def instances(shape, boxes):
    """Boxes as an int32 array and their [H, W, N] box-filling masks."""
    boxes = np.array(boxes, dtype=np.int32).reshape(-1, 4)
    masks = np.stack([box_mask(shape, b) for b in boxes], axis=-1) if len(boxes) else \
        np.zeros(shape + (0,), dtype=bool)
    return boxes, masks


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def polygons(ax):
    return [p for p in ax.patches if isinstance(p, Polygon)]


def random_image(shape=(64, 64), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape + (3,), dtype=np.uint8)


# ---------------------------------------------------------------- random_colors

def test_random_colors_are_a_seeded_shuffle_of_evenly_spaced_hues():
    colors = visualize.random_colors(6, rng=3)
    assert colors == visualize.random_colors(6, rng=np.random.default_rng(3))
    hues = sorted(colorsys.rgb_to_hsv(*c)[0] for c in colors)
    np.testing.assert_allclose(hues, np.arange(6) / 6, atol=1e-9)
    assert all(max(c) == pytest.approx(1.0) for c in colors)
    dim = visualize.random_colors(4, bright=False, rng=0)
    assert all(max(c) == pytest.approx(0.7) for c in dim)
    assert {visualize.random_colors(6, rng=s)[0] for s in range(20)} != {colors[0]}


# ---------------------------------------------------------------- arrays

def test_apply_mask_blends_exactly_inside_the_mask_and_in_place():
    image = random_image((16, 20))
    original = image.copy()
    mask = box_mask((16, 20), (2, 3, 9, 14))
    color, alpha = (0.2, 0.6, 1.0), 0.3

    result = visualize.apply_mask(image, mask, color, alpha=alpha)

    blended = original * (1 - alpha) + alpha * np.array(color) * 255
    expected = np.where(mask[..., None], np.floor(blended), original).astype(np.uint8)
    assert result is image
    np.testing.assert_array_equal(result, expected)
    assert np.any(result[mask] != original[mask])


def test_draw_box_draws_the_border_inside_the_box():
    image = np.zeros((20, 24, 3), dtype=np.uint8)
    y1, x1, y2, x2 = 3, 4, 12, 15

    result = visualize.draw_box(image, (y1, x1, y2, x2), (255, 0, 0), thickness=2)

    expected = np.zeros((20, 24), dtype=bool)
    for y in range(20):
        for x in range(24):
            in_box = y1 <= y < y2 and x1 <= x < x2
            near_edge = y < y1 + 2 or y >= y2 - 2 or x < x1 + 2 or x >= x2 - 2
            expected[y, x] = in_box and near_edge
    assert result is image
    np.testing.assert_array_equal(image[..., 0] == 255, expected)
    assert not image[..., 1:].any()


def test_draw_box_clips_a_box_that_crosses_the_image_border():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    visualize.draw_box(image, (-5, 6, 4, 14), (9, 9, 9), thickness=1)
    drawn = image[..., 0] == 9
    expected = np.zeros((10, 10), dtype=bool)
    expected[3, 6:10] = True
    expected[0:4, 6] = True
    np.testing.assert_array_equal(drawn, expected)


def test_color_splash_keeps_color_inside_masks_and_gray_elsewhere():
    image = random_image((30, 40), seed=1)
    _, masks = instances((30, 40), [(2, 2, 10, 12), (8, 8, 20, 30)])

    splash = visualize.color_splash(image, masks)

    inside = masks.any(axis=-1)
    assert splash.dtype == np.uint8 and splash.shape == image.shape
    np.testing.assert_array_equal(splash[inside], image[inside])
    luminance = image.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    outside = splash[~inside]
    assert np.all(outside == outside[:, :1])
    assert np.abs(outside[:, 0] - luminance[~inside]).max() <= 0.5 + 1e-9


def test_color_splash_without_instances_is_all_gray():
    image = random_image((8, 9), seed=2)
    splash = visualize.color_splash(image, np.zeros((8, 9, 0), dtype=bool))
    assert np.all(splash == splash[..., :1])
    assert not np.array_equal(splash, image)


def test_color_splash_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        visualize.color_splash(np.zeros((8, 8), dtype=np.uint8), np.zeros((8, 8, 1), bool))
    with pytest.raises(ValueError, match=r"masks must be \[H, W, N\]"):
        visualize.color_splash(np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((4, 8, 1), bool))


# ---------------------------------------------------------------- display_instances

def test_display_instances_draws_a_box_outline_and_caption_per_instance():
    image = random_image()
    boxes, masks = instances((64, 64), [(4, 5, 20, 30), (30, 10, 50, 25), (35, 40, 60, 62)])
    class_ids = np.array([1, 2, 1])
    scores = np.array([0.9, 0.75, 0.5])
    colors = visualize.random_colors(3, rng=0)

    fig = visualize.display_instances(image, boxes, masks, class_ids, CLASS_NAMES, scores,
                                      title="three", colors=colors)

    ax = fig.axes[0]
    assert isinstance(fig, Figure) and ax.get_title() == "three"
    assert [t.get_text() for t in ax.texts] == ["pikachu 0.900", "ball 0.750", "pikachu 0.500"]
    assert [t.get_position() for t in ax.texts] == [(x1, y1 + 8) for y1, x1, _, _ in boxes]
    rects = rectangles(ax)
    assert len(rects) == 3 and all(r.get_linestyle() == "dashed" for r in rects)
    assert [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects] == \
        [(x1, y1, x2 - x1, y2 - y1) for y1, x1, y2, x2 in boxes]
    np.testing.assert_allclose([r.get_edgecolor()[:3] for r in rects], colors)
    outlines = polygons(ax)
    assert len(outlines) == 3
    for outline, (y1, x1, y2, x2) in zip(outlines, boxes):
        xy = outline.get_xy()
        np.testing.assert_allclose([xy[:, 0].min(), xy[:, 0].max()], [x1 - 0.5, x2 - 0.5])
        np.testing.assert_allclose([xy[:, 1].min(), xy[:, 1].max()], [y1 - 0.5, y2 - 0.5])

    expected = image.astype(np.float64)
    for i, color in enumerate(colors):
        blended = np.floor(expected * 0.5 + 0.5 * np.array(color) * 255)
        expected = np.where(masks[..., i:i + 1], blended, expected)
    np.testing.assert_array_equal(ax.images[0].get_array(), expected.astype(np.uint8))


def test_display_instances_on_a_given_axes_with_captions_and_no_boxes():
    image = random_image((32, 32))
    boxes, masks = instances((32, 32), [(2, 2, 10, 10), (12, 12, 30, 30)])
    fig, ax = plt.subplots()

    returned = visualize.display_instances(image, boxes, masks, np.array([1, 3]), CLASS_NAMES,
                                           ax=ax, show_bbox=False, captions=["a", "b"])

    assert returned is fig and plt.get_fignums() == [fig.number]
    assert len(rectangles(ax)) == 0 and len(polygons(ax)) == 2
    assert [t.get_text() for t in ax.texts] == ["a", "b"]


def test_display_instances_skips_all_zero_boxes_and_handles_none(capsys):
    image = random_image((32, 32))
    boxes, masks = instances((32, 32), [(0, 0, 0, 0), (12, 12, 30, 30)])
    fig = visualize.display_instances(image, boxes, masks, np.array([1, 2]), CLASS_NAMES)
    assert [t.get_text() for t in fig.axes[0].texts] == ["ball"]
    assert len(rectangles(fig.axes[0])) == 1

    boxes, masks = instances((32, 32), [])
    fig = visualize.display_instances(image, boxes, masks, np.zeros(0, int), CLASS_NAMES)
    assert "No instances to display" in capsys.readouterr().out
    assert len(fig.axes[0].patches) == 0 and len(fig.axes[0].images) == 1


def test_display_instances_refuses_mismatched_counts():
    boxes, masks = instances((16, 16), [(1, 1, 5, 5), (6, 6, 9, 9)])
    with pytest.raises(ValueError, match="2 boxes, 1 masks and 2 class_ids"):
        visualize.display_instances(random_image((16, 16)), boxes, masks[..., :1],
                                    np.array([1, 1]), CLASS_NAMES)


def test_figures_are_shown_only_where_the_backend_can_show(monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    image = random_image((16, 16))
    boxes, masks = instances((16, 16), [(1, 1, 5, 5)])
    args = (image, boxes, masks, np.array([1]), CLASS_NAMES)

    visualize.display_instances(*args)
    assert shown == []

    monkeypatch.setattr(matplotlib, "get_backend", lambda: "TkAgg")
    visualize.display_instances(*args)
    assert shown == [True]
    _, ax = plt.subplots()
    visualize.display_instances(*args, ax=ax)
    assert shown == [True]


# ---------------------------------------------------------------- display_differences

def test_display_differences_draws_gt_green_and_predictions_red_with_score_and_iou():
    shape = (40, 40)
    gt_boxes, gt_masks = instances(shape, [(5, 5, 15, 15), (20, 20, 35, 35)])
    gt_class_ids = np.array([1, 2])
    # Unsorted scores: a wrong-class hit on gt 1, a match of gt 0, a miss.
    pred_boxes, pred_masks = instances(shape, [(21, 21, 35, 35), (5, 5, 15, 14), (0, 30, 4, 38)])
    pred_class_ids = np.array([1, 1, 2])
    pred_scores = np.array([0.6, 0.95, 0.3])

    fig = visualize.display_differences(random_image(shape), gt_boxes, gt_class_ids, gt_masks,
                                        pred_boxes, pred_class_ids, pred_scores, pred_masks,
                                        CLASS_NAMES)

    ax = fig.axes[0]
    iou_match = mask_iou(pred_masks[..., 1], gt_masks[..., 0])
    iou_wrong = mask_iou(pred_masks[..., 0], gt_masks[..., 1])
    assert [t.get_text() for t in ax.texts] == [
        "", "", f"0.95 / {iou_match:.2f}", f"0.60 / {iou_wrong:.2f}", "0.30 / 0.00"]
    drawn_order = [0, 1], [1, 0, 2]
    expected_boxes = np.concatenate([gt_boxes[drawn_order[0]], pred_boxes[drawn_order[1]]])
    assert [t.get_position() for t in ax.texts] == \
        [(x1, y1 + 8) for y1, x1, _, _ in expected_boxes]
    rects = rectangles(ax)
    assert len(rects) == 5 and len(polygons(ax)) == 5
    np.testing.assert_allclose([r.get_edgecolor()[:3] for r in rects],
                               [(0, 1, 0)] * 2 + [(1, 0, 0)] * 3)
    assert "GT=green, pred=red" in ax.get_title()


# ---------------------------------------------------------------- draw_rois, draw_boxes

def test_draw_rois_draws_rois_refinements_labels_and_masks(capsys):
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    rois = np.array([[4, 4, 20, 20], [30, 30, 50, 50], [10, 40, 20, 60], [40, 5, 60, 20]])
    refined = rois + 2
    masks = np.ones((4, 28, 28), dtype=np.float32)
    class_ids = np.array([1, 0, 3, 0])

    fig = visualize.draw_rois(image, rois, refined, masks, class_ids, CLASS_NAMES, rng=0)

    ax = fig.axes[0]
    assert ax.get_title() == "4 ROIs"
    rects = rectangles(ax)
    assert sorted(r.get_linestyle() for r in rects) == ["dashed"] * 4 + ["solid"] * 2
    assert sorted((r.get_x(), r.get_y()) for r in rects if r.get_linestyle() == "solid") == \
        [(6, 6), (42, 12)]
    assert sorted(t.get_text() for t in ax.texts) == ["hat", "pikachu"]
    assert len(ax.lines) == 2
    shown = ax.images[0].get_array()
    positive = box_mask((64, 64), rois[0]) | box_mask((64, 64), rois[2])
    assert np.all(shown[positive].any(axis=-1)) and not shown[~positive].any()
    assert capsys.readouterr().out.split() == [
        "Positive", "ROIs:", "2", "Negative", "ROIs:", "2", "Positive", "Ratio:", "0.50"]


def test_draw_rois_samples_at_most_limit_rois():
    rois = np.array([[i, i, i + 5, i + 5] for i in range(0, 40, 4)])
    fig = visualize.draw_rois(np.zeros((48, 48, 3), np.uint8), rois, rois,
                              np.ones((10, 28, 28)), np.zeros(10, int), CLASS_NAMES,
                              limit=3, rng=1)
    assert fig.axes[0].get_title() == "Showing 3 random ROIs out of 10"
    assert len(rectangles(fig.axes[0])) == 3


def test_draw_boxes_styles_by_visibility_and_captions_refined_boxes():
    image = random_image((40, 40))
    boxes, masks = instances((40, 40), [(2, 2, 12, 12), (15, 15, 30, 30), (20, 2, 38, 10)])
    refined = boxes + 1

    fig = visualize.draw_boxes(image, boxes=boxes, refined_boxes=refined, masks=masks,
                               captions=["a", "b", "c"], visibilities=[0, 1, 2], title="boxes")

    ax = fig.axes[0]
    styles = [r.get_linestyle() for r in rectangles(ax)]
    assert styles == ["dotted", "dotted", "solid", "solid", "solid"]
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c"]
    assert [t.get_position() for t in ax.texts] == [(x1, y1) for y1, x1, _, _ in refined]
    assert len(ax.lines) == 2 and len(polygons(ax)) == 3 and ax.get_title() == "boxes"
    with pytest.raises(ValueError, match="give boxes, refined_boxes or both"):
        visualize.draw_boxes(image)


# ---------------------------------------------------------------- grids and plots

def test_display_images_makes_one_titled_axes_per_image():
    images = [random_image((8, 8), seed=s) for s in range(5)]
    fig = visualize.display_images(images, titles=list("abcde"), cols=2)
    assert [ax.get_title() for ax in fig.axes] == list("abcde")
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (3, 2)


def test_display_top_masks_shows_the_image_and_largest_classes():
    image = random_image((20, 20))
    _, masks = instances((20, 20), [(0, 0, 4, 4), (5, 5, 20, 20), (0, 10, 3, 20), (10, 0, 12, 2)])
    class_ids = np.array([1, 2, 1, 3])

    fig = visualize.display_top_masks(image, masks, class_ids, CLASS_NAMES, limit=4)

    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == [
        "H x W=20x20", "ball", "pikachu", "hat", "-"]
    pikachu_panel = fig.axes[2].images[0].get_array()
    np.testing.assert_array_equal(pikachu_panel, masks[..., 0] * 1 + masks[..., 2] * 2)


def test_plot_precision_recall_titles_the_ap_and_plots_the_curve():
    precisions, recalls = [1.0, 1.0, 0.5, 0.5], [0.0, 0.5, 0.5, 1.0]
    fig = visualize.plot_precision_recall(0.75, precisions, recalls)
    ax = fig.axes[0]
    assert "AP@50 = 0.750" in ax.get_title()
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), recalls)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), precisions)


def test_plot_overlaps_writes_every_iou_with_its_verdict():
    overlaps = np.array([[0.8, 0.1, 0.0],
                         [0.05, 0.62, 0.3]])
    gt_class_ids = np.array([1, 2, 3, 0])
    pred_class_ids = np.array([1, 3])
    pred_scores = np.array([0.9, 0.7])

    fig = visualize.plot_overlaps(gt_class_ids, pred_class_ids, pred_scores, overlaps,
                                  CLASS_NAMES)

    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [
        "0.800\nmatch", "0.100\n", "0.000\n", "0.050\n", "0.620\nwrong", "0.300\n"]
    assert [t.get_position() for t in ax.texts] == [(j, i) for i in range(2) for j in range(3)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pikachu (0.90)", "hat (0.70)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pikachu", "ball", "hat"]
    np.testing.assert_array_equal(ax.images[0].get_array(), overlaps)


@pytest.mark.parametrize("predictions, ground_truth, says", [
    (0, 2, "IoU grid: no prediction"), (3, 0, "IoU grid: no ground truth"),
    (0, 0, "IoU grid: no prediction")])
def test_plot_overlaps_of_nothing_says_what_is_missing(predictions, ground_truth, says):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of singular limits
        fig = visualize.plot_overlaps(np.ones(ground_truth, int), np.ones(predictions, int),
                                      np.full(predictions, 0.9),
                                      np.zeros((predictions, ground_truth)), CLASS_NAMES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [says] and not ax.images
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Ground Truth", "Predictions")


# ---------------------------------------------------------------- tables

def test_display_table_returns_html_with_every_cell():
    table = [["NAME", "VALUE"], ["a", 1], ["b", 2.5]]
    html = visualize.display_table(table)
    assert html == ("<table><tr><td>NAME</td><td>VALUE</td></tr>"
                    "<tr><td>a</td><td>1</td></tr><tr><td>b</td><td>2.5</td></tr></table>")


class _Model:
    """The part of MaskRCNN that display_weight_stats uses."""

    def __init__(self, keras_model):
        self.keras_model = keras_model


def test_display_weight_stats_lists_every_weight_and_flags_dead_and_overflow():
    import keras

    inputs = keras.Input((6, 6, 2))
    rpn_in = keras.Input((6, 6, 3))
    rpn = keras.Model(rpn_in, keras.layers.Conv2D(2, 1, name="rpn_conv_shared")(rpn_in),
                      name="rpn_model")
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv1")(inputs)
    x = rpn(x)
    x = keras.layers.Reshape((36, 2))(x)
    x = keras.layers.TimeDistributed(keras.layers.Dense(4), name="mrcnn_class_fc")(x)
    x = keras.layers.Dense(2, name="dead_dense")(x)
    outputs = keras.layers.Dense(1, use_bias=False, name="huge")(x)
    keras_model = keras.Model(inputs, outputs)
    keras_model.get_layer("dead_dense").set_weights([np.full((4, 2), 0.5, np.float32),
                                                     np.array([1.0, -1.0], np.float32)])
    keras_model.get_layer("huge").set_weights([np.array([[2000.0], [-3.0]], np.float32)])

    table = visualize.display_weight_stats(_Model(keras_model))

    assert table[0] == ["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]
    names = [row[0].split("<span")[0] for row in table[1:]]
    assert names == ["conv1/kernel", "conv1/bias", "rpn_conv_shared/kernel",
                     "rpn_conv_shared/bias", "mrcnn_class_fc/kernel", "mrcnn_class_fc/bias",
                     "dead_dense/kernel", "dead_dense/bias", "huge/kernel"]
    rows = dict(zip(names, table[1:]))
    kernel = keras_model.get_layer("conv1").get_weights()[0]
    assert rows["conv1/kernel"][1:] == [str((3, 3, 2, 3)), f"{kernel.min():+9.4f}",
                                        f"{kernel.max():+10.4f}", f"{kernel.std():+9.4f}"]
    alerts = {name: row[0][len(name):] for name, row in rows.items()}
    assert alerts["dead_dense/kernel"] == "<span style='color:red'>*** dead?</span>"
    assert alerts["mrcnn_class_fc/bias"] == "<span style='color:red'>*** dead?</span>"
    assert alerts["huge/kernel"] == "<span style='color:red'>*** Overflow?</span>"
    flagged = {name for name, alert in alerts.items() if alert}
    assert flagged == {"dead_dense/kernel", "mrcnn_class_fc/bias", "huge/kernel"}


@pytest.mark.notebooks
def test_a_display_call_ending_a_notebook_cell_draws_its_figure_once(tmp_path):
    """In Jupyter, as in the original's notebooks: one image per figure, whether the call creates
    its figure (shown by plt.show) or draws on an ``ax`` (shown at the end of the cell), while
    the returned Figure still displays on request in a later cell."""
    import nbformat
    from nbclient import NotebookClient

    setup = "\n".join([
        "%matplotlib inline",
        "import numpy as np, matplotlib.pyplot as plt",
        "from mrcnn import visualize",
        "image = np.full((64, 64, 3), 128, np.uint8)",
        "masks = np.zeros((64, 64, 1), bool)",
        "masks[10:30, 10:30] = True",
        "args = (image, np.array([[10, 10, 30, 30]]), masks, np.array([1]), ['BG', 'a'])",
    ])
    cells = {  # source: images expected
        setup: 0,
        "visualize.display_instances(*args)": 1,
        "_, ax = plt.subplots(1)\nvisualize.display_instances(*args, ax=ax)": 1,
        "fig = visualize.display_images([image, image])\nfig": 1,
        "fig": 1,
        "for _ in range(2):\n    visualize.display_instances(*args)": 2,
        "visualize.plot_precision_recall(0.5, np.array([1, 0.5]), np.array([0.2, 0.6]))": 1,
        "visualize.display_top_masks(image, masks, np.array([1]), ['BG', 'a'])": 1,
    }
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    environment = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", ROOT_DIR)
        for name, value in environment.items():
            patch.setenv(name, value)
        client.execute()

    for cell, expected in zip(nb.cells, cells.values()):
        images = [output for output in cell.outputs if "image/png" in output.get("data", {})]
        assert len(images) == expected, cell.source
        assert not [output for output in cell.outputs if output.output_type == "execute_result"]


@pytest.mark.notebooks
def test_weight_stats_ending_a_notebook_cell_show_one_table(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    cells = ["\n".join([
        "import keras",
        "from mrcnn import visualize",
        "class Model:",
        "    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name='fc')])",
        "visualize.display_weight_stats(Model())",
    ]), "table = visualize.display_weight_stats(Model())", "table"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", ROOT_DIR)
        client.execute()

    for cell in nb.cells:
        tables = [output for output in cell.outputs if "text/html" in output.get("data", {})]
        assert len(tables) == 1, cell.source
        assert "fc/kernel" in tables[0]["data"]["text/html"]
        assert not [output for output in cell.outputs if output.output_type == "execute_result"]
