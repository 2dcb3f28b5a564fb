"""Display and visualization: images, masks, boxes, detections, ROIs and weight statistics.

Conventions (the rest of mrcnn's):
- images: [H, W, 3] RGB, uint8 (or values in 0..255).
- boxes: [N, (y1, x1, y2, x2)] in pixels, y2/x2 exclusive.
- masks: [H, W, N] bool, one channel per instance.
- class_ids: [N] int, indices into class_names (0 = background).

Every plotting function returns its matplotlib Figure, so a script can save it with
``fig.savefig(path)``. A function that creates its own figure also shows it when the matplotlib
backend is interactive (a GUI window, or inline in Jupyter); under a non-interactive backend
such as Agg (headless) it never calls ``plt.show()``. Functions with an ``ax`` argument draw on
that Axes instead and return its figure. Randomness (colors, sampled ROIs) comes from an optional
``rng`` (seed or numpy Generator), never from the global random state.

In Jupyter each figure is drawn once, also when the call is the last line of a cell (as in
the original's notebooks): the returned Figure does not display itself again in the cell that
showed it, or whose end will show it (an ``ax`` of a pyplot figure); in a later cell, ``fig``
alone displays it as usual.
"""

import colorsys
import functools
import io
import itertools

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import skimage.color
from matplotlib import lines, patches
from matplotlib.colors import to_rgb
from matplotlib.backends import BackendFilter, backend_registry
from matplotlib.patches import Polygon
from skimage.measure import find_contours

from mrcnn import transform, utils

_NON_INTERACTIVE_BACKENDS = frozenset(backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE))

GT_COLOR = (0, 1, 0, 0.8)
PRED_COLOR = (1, 0, 0, 1)


############################################################
#  Helpers
############################################################

def _show(fig):
    """Show a figure this module created, unless the backend cannot show (Agg, pdf, ...)."""
    if matplotlib.get_backend().lower() not in _NON_INTERACTIVE_BACKENDS:
        plt.show()
        fig._mrcnn_displayed_in_cell = _current_cell()
    return _displayed_once(fig)


def _axes(ax, figsize):
    """(ax, False) when an Axes is given, else (Axes of a new figure of `figsize`, True)."""
    if ax is not None:
        return ax, False
    _, ax = plt.subplots(1, figsize=figsize)
    return ax, True


def _finish(ax, created):
    """The Axes' figure; shown first (where the backend can) if this module created it."""
    return _show(ax.figure) if created else _displayed_once(ax.figure)


def _displayed_once(shown, render=None):
    """``shown`` (a Figure or Table), which in Jupyter displays itself at most once per cell.

    A figure left as a cell's last value is displayed by IPython, on top of
    ``plt.show()`` (done by ``_show``) or of the inline backend's display of
    the open pyplot figures at the end of the cell (when drawn on an ``ax``).
    IPython asks an object's ``_ipython_display_`` first, for both; this one
    displays the object with ``render`` (default: a figure as PNG) unless it
    was displayed in the same cell already.
    """
    if _in_jupyter():
        shown._ipython_display_ = functools.partial(_display_once_per_cell, shown,
                                                    render or _display_png)
    return shown


def _display_once_per_cell(shown, render):
    cell = _current_cell()
    if getattr(shown, "_mrcnn_displayed_in_cell", None) == cell:
        return
    shown._mrcnn_displayed_in_cell = cell
    render(shown)


def _display_png(fig):
    import IPython.display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    IPython.display.display(IPython.display.Image(buffer.getvalue()))


def _show_outside_image(ax, image_shape, margin):
    """Frame the Axes on the image plus `margin` pixels around it (boxes may cross the border)."""
    height, width = image_shape[:2]
    ax.set_ylim(height + margin, -margin)
    ax.set_xlim(-margin, width + margin)
    ax.axis("off")


def _mask_outlines(mask, color):
    """Polygon patches tracing a [H, W] mask's outlines, in (x, y) pixel coordinates.

    The mask is padded by one pixel so that regions touching the image border give closed contours.
    """
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    return [Polygon(np.fliplr(verts) - 1, facecolor="none", edgecolor=color)
            for verts in find_contours(padded, 0.5)]


def _current_cell():
    """An id of the Jupyter request being run, the same in its post-execute hooks (None outside)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    header = getattr(shell, "parent_header", None) or {}
    return header.get("header", {}).get("msg_id")


def _in_jupyter():
    """True inside a Jupyter kernel (where IPython.display renders HTML)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return hasattr(get_ipython(), "kernel")


############################################################
#  Colors and arrays
############################################################

def random_colors(N, bright=True, rng=None):
    """Visually distinct colors in random order.

    N hues evenly spaced in HSV space, converted to RGB, then shuffled.
    bright: full brightness (1.0) if True, else 0.7.
    rng: None, an int seed or a numpy Generator; a seed gives the same colors every call.
    Returns a list of N (r, g, b) tuples with values in [0, 1].
    """
    brightness = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / N, 1, brightness) for i in range(N)]
    order = np.random.default_rng(rng).permutation(N)
    return [colors[i] for i in order]


def apply_mask(image, mask, color, alpha=0.5):
    """Blend a color into the image where the mask is set, in place.

    image: [H, W, 3] array; modified in place and returned.
    mask: [H, W]; nonzero pixels are blended.
    color: (r, g, b[, a]) with values in [0, 1]; alpha channel ignored.
    Inside the mask each channel c becomes image * (1 - alpha) + alpha * color[c] * 255,
    cast to the image's dtype (truncated for integer images).
    Returns image.
    """
    inside = np.asarray(mask).astype(bool)
    blended = image * (1 - alpha) + alpha * np.asarray(color[:3], dtype=np.float64) * 255
    image[inside] = blended[inside].astype(image.dtype)
    return image


def draw_box(image, box, color, thickness=2):
    """Draw a box outline into an image array, in place.

    image: [H, W, C] array; modified in place and returned.
    box: (y1, x1, y2, x2) pixels, y2/x2 exclusive. The outline is `thickness` pixels wide and lies
        inside the box; parts outside the image are not drawn.
    color: C values, e.g. (255, 0, 0) for red in a uint8 RGB image.
    Returns image.
    """
    y1, x1, y2, x2 = (int(v) for v in box)
    rows = np.arange(image.shape[0])[:, np.newaxis]
    cols = np.arange(image.shape[1])[np.newaxis, :]
    in_box = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    t = thickness
    in_interior = (rows >= y1 + t) & (rows < y2 - t) & (cols >= x1 + t) & (cols < x2 - t)
    image[in_box & ~in_interior] = color
    return image


def color_splash(image, masks):
    """The splash effect: color inside the instances, grayscale everywhere else.

    image: [H, W, 3] uint8 RGB.
    masks: [H, W, N] bool instance masks; N may be 0 (then the whole image is gray).
    Returns [H, W, 3] uint8: the image's pixels inside the union of the masks; elsewhere its
    luminance (skimage.color.rgb2gray, rounded to 0..255) in all three channels.
    """
    image = np.asarray(image)
    masks = np.asarray(masks)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"color_splash: image must be [H, W, 3] uint8 RGB, got shape "
                         f"{image.shape} and dtype {image.dtype}; convert it first "
                         f"(e.g. with Dataset.load_image).")
    if masks.ndim != 3 or masks.shape[:2] != image.shape[:2]:
        raise ValueError(f"color_splash: masks must be [H, W, N] with H, W = {image.shape[:2]}, "
                         f"got shape {masks.shape}.")
    gray = np.rint(skimage.color.rgb2gray(image) * 255).astype(np.uint8)
    inside = np.any(masks, axis=-1, keepdims=True)
    return np.where(inside, image, gray[..., np.newaxis])


############################################################
#  Figures
############################################################

def display_images(images, titles=None, cols=4, cmap=None, norm=None, interpolation=None):
    """Show images in a grid, one Axes per image, optionally titled.

    images: list of [H, W] or [H, W, 3] arrays; shown as uint8.
    titles: optional list of titles, one per image.
    cols: images per row.
    cmap, norm, interpolation: passed to imshow (e.g. cmap="Blues" for masks).
    Returns the Figure.
    """
    titles = titles if titles is not None else [""] * len(images)
    rows = -(-len(images) // cols)
    fig = plt.figure(figsize=(14, 14 * rows // cols))
    for i, (image, title) in enumerate(zip(images, titles), start=1):
        ax = fig.add_subplot(rows, cols, i)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        ax.imshow(np.asarray(image).astype(np.uint8), cmap=cmap, norm=norm,
                  interpolation=interpolation)
    return _show(fig)


def display_instances(image, boxes, masks, class_ids, class_names,
                      scores=None, title="",
                      figsize=(16, 16), ax=None,
                      show_mask=True, show_bbox=True,
                      colors=None, captions=None):
    """Draw instances on an image: dashed boxes, alpha-blended masks, mask outlines and captions.

    image: [H, W, 3] RGB.
    boxes: [N, (y1, x1, y2, x2)] pixels. Instances whose box is all zeros are skipped.
    masks: [H, W, N] bool.
    class_ids: [N] int, indices into class_names.
    scores: optional [N] confidences; captions read "class score" (3 decimals), else "class".
    title: Axes title. figsize: size of a new figure (when ax is None).
    ax: optional matplotlib Axes to draw on.
    show_mask, show_bbox: draw the blended masks / the boxes.
    colors: optional list of N colors; random_colors(N) otherwise.
    captions: optional list of N strings replacing the default captions.
    Returns the Figure.
    """
    N = boxes.shape[0]
    if not N:
        print("\n*** No instances to display *** \n")
    elif not boxes.shape[0] == masks.shape[-1] == class_ids.shape[0]:
        raise ValueError(f"display_instances: {boxes.shape[0]} boxes, {masks.shape[-1]} masks and "
                         f"{class_ids.shape[0]} class_ids; give one of each per instance.")
    ax, created = _axes(ax, figsize)
    colors = random_colors(N) if colors is None else colors

    _show_outside_image(ax, image.shape, margin=10)
    ax.set_title(title)

    masked_image = image.astype(np.uint32).copy()
    for i in range(N):
        if not np.any(boxes[i]):
            continue
        color = colors[i]
        y1, x1, y2, x2 = boxes[i]
        if show_bbox:
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=0.7,
                                           linestyle="dashed", edgecolor=color, facecolor="none"))
        if captions is None:
            label = class_names[class_ids[i]]
            caption = label if scores is None else f"{label} {scores[i]:.3f}"
        else:
            caption = captions[i]
        ax.text(x1, y1 + 8, caption, color="w", size=11, backgroundcolor="none")

        mask = masks[:, :, i]
        if show_mask:
            masked_image = apply_mask(masked_image, mask, color)
        for outline in _mask_outlines(mask, color):
            ax.add_patch(outline)
    ax.imshow(masked_image.astype(np.uint8))
    return _finish(ax, created)


def display_differences(image,
                        gt_box, gt_class_id, gt_mask,
                        pred_box, pred_class_id, pred_score, pred_mask,
                        class_names, title="", ax=None,
                        show_mask=True, show_box=True,
                        iou_threshold=0.5, score_threshold=0.5):
    """Ground truth (green, no caption) and predictions (red, caption "score / IoU") on one image.

    gt_box: [G, (y1, x1, y2, x2)], gt_class_id: [G], gt_mask: [H, W, G] — the ground truth.
    pred_box: [P, (y1, x1, y2, x2)], pred_class_id: [P], pred_score: [P], pred_mask: [H, W, P].
    Predictions are matched to ground truth with utils.compute_matches(iou_threshold,
    score_threshold) and drawn in its score order; a matched prediction's IoU is that of its match,
    an unmatched one's is its best IoU with any ground truth instance.
    Returns the Figure.
    """
    gt_match, pred_match, overlaps = utils.compute_matches(
        gt_box, gt_class_id, gt_mask,
        pred_box, pred_class_id, pred_score, pred_mask,
        iou_threshold=iou_threshold, score_threshold=score_threshold)
    score_order = np.argsort(pred_score)[::-1]
    pred_box, pred_class_id = pred_box[score_order], pred_class_id[score_order]
    pred_score, pred_mask = pred_score[score_order], pred_mask[..., score_order]
    colors = [GT_COLOR] * len(gt_match) + [PRED_COLOR] * len(pred_match)
    class_ids = np.concatenate([gt_class_id, pred_class_id])
    scores = np.concatenate([np.zeros([len(gt_match)]), pred_score])
    boxes = np.concatenate([gt_box, pred_box])
    masks = np.concatenate([gt_mask, pred_mask], axis=-1)
    pred_ious = [overlaps[i, int(match)] if match > -1 else overlaps[i].max(initial=0)
                 for i, match in enumerate(pred_match)]
    captions = [""] * len(gt_match) + [f"{score:.2f} / {iou:.2f}"
                                       for score, iou in zip(pred_score, pred_ious)]
    title = title or "Ground Truth and Detections\n GT=green, pred=red, captions: score/IoU"
    return display_instances(image, boxes, masks, class_ids, class_names, scores, ax=ax,
                             show_bbox=show_box, show_mask=show_mask,
                             colors=colors, captions=captions, title=title)


def draw_rois(image, rois, refined_rois, mask, class_ids, class_names, limit=10, rng=None):
    """Draw ROIs (dashed) and, for positive ones, their refined boxes (solid), labels and masks.

    image: [H, W, 3] RGB.
    rois: [N, (y1, x1, y2, x2)] pixels; refined_rois: [N, (y1, x1, y2, x2)] the same ROIs after
        box refinement.
    mask: [N, mask_height, mask_width] float mask per ROI (placed with transform.unmold_mask).
    class_ids: [N] int; 0 marks a negative ROI (gray, no refinement drawn).
    limit: at most this many ROIs, sampled at random when there are more.
    rng: None, an int seed or a numpy Generator for the sampling and colors.
    Prints the positive/negative counts. Returns the Figure.
    """
    rng = np.random.default_rng(rng)
    masked_image = image.copy()
    ids = np.arange(rois.shape[0])
    if ids.shape[0] > limit:
        ids = rng.choice(ids, limit, replace=False)

    fig, ax = plt.subplots(1, figsize=(12, 12))
    if rois.shape[0] > limit:
        ax.set_title(f"Showing {len(ids)} random ROIs out of {rois.shape[0]}")
    else:
        ax.set_title(f"{len(ids)} ROIs")
    ax.set_ylim(image.shape[0] + 20, -20)
    ax.set_xlim(-50, image.shape[1] + 20)
    ax.axis("off")

    for roi_id in ids:
        color = rng.random(3)
        class_id = class_ids[roi_id]
        y1, x1, y2, x2 = rois[roi_id]
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2,
                                       edgecolor=color if class_id else "gray",
                                       facecolor="none", linestyle="dashed"))
        if class_id:
            ry1, rx1, ry2, rx2 = refined_rois[roi_id]
            ax.add_patch(patches.Rectangle((rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2,
                                           edgecolor=color, facecolor="none"))
            ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
            ax.text(rx1, ry1 + 8, class_names[class_id], color="w", size=11,
                    backgroundcolor="none")
            full_mask = transform.unmold_mask(mask[roi_id], rois[roi_id][:4].astype(np.int32),
                                          image.shape)
            masked_image = apply_mask(masked_image, full_mask, color)
    ax.imshow(masked_image)

    positives = int(np.sum(class_ids > 0))
    print("Positive ROIs: ", positives)
    print("Negative ROIs: ", int(np.sum(class_ids == 0)))
    print(f"Positive Ratio: {positives / class_ids.shape[0]:.2f}")
    return _show(fig)


def display_top_masks(image, mask, class_ids, class_names, limit=4):
    """Show the image beside the masks of its `limit` largest classes (by total mask area).

    image: [H, W, 3]. mask: [H, W, N] bool. class_ids: [N] int.
    Each class panel numbers its instances 1, 2, ... (0 = background); missing classes show "-".
    Returns the Figure (limit + 1 Axes).
    """
    to_display = [image]
    titles = [f"H x W={image.shape[0]}x{image.shape[1]}"]
    unique_class_ids = np.unique(class_ids)
    mask_area = [np.sum(mask[:, :, np.where(class_ids == i)[0]]) for i in unique_class_ids]
    top_ids = [class_id for class_id, area in
               sorted(zip(unique_class_ids, mask_area), key=lambda r: r[1], reverse=True)
               if area > 0]
    for i in range(limit):
        class_id = top_ids[i] if i < len(top_ids) else -1
        class_masks = mask[:, :, np.where(class_ids == class_id)[0]]
        to_display.append(np.sum(class_masks * np.arange(1, class_masks.shape[-1] + 1), -1))
        titles.append(class_names[class_id] if class_id != -1 else "-")
    return display_images(to_display, titles=titles, cols=limit + 1, cmap="Blues_r")


def plot_precision_recall(AP, precisions, recalls, ax=None):
    """Draw a precision-recall curve titled with its AP.

    AP: average precision at IoU >= 0.5.
    precisions, recalls: matching sequences of values (e.g. from utils.compute_ap).
    ax: optional matplotlib Axes to draw on.
    Returns the Figure.
    """
    ax, created = _axes(ax, figsize=None)
    ax.set_title(f"Precision-Recall Curve. AP@50 = {AP:.3f}")
    ax.set_ylim(0, 1.1)
    ax.set_xlim(0, 1.1)
    ax.plot(recalls, precisions)
    return _finish(ax, created)


def plot_overlaps(gt_class_ids, pred_class_ids, pred_scores,
                  overlaps, class_names, threshold=0.5, ax=None):
    """Draw the IoU grid of predictions (rows) against ground truth (columns).

    gt_class_ids: [G] int ground truth class ids (zeros, i.e. padding, are dropped).
    pred_class_ids: [P] int predicted class ids (zeros dropped); pred_scores: [P] float.
    overlaps: [P, G] IoU of each prediction with each ground truth instance.
    class_names: list of all class names in the dataset.
    threshold: cells with IoU above it are labelled "match" (same class) or "wrong".
    ax: optional matplotlib Axes to draw on.
    Each cell shows its IoU with 3 decimals; without predictions or ground truth the Axes
    says so instead. Returns the Figure.
    """
    gt_class_ids = gt_class_ids[gt_class_ids != 0]
    pred_class_ids = pred_class_ids[pred_class_ids != 0]

    ax, created = _axes(ax, figsize=(12, 10))
    ax.set_xlabel("Ground Truth")
    ax.set_ylabel("Predictions")
    if not overlaps.size:  # an empty grid, which imshow cannot scale
        missing = "no prediction" if not len(pred_class_ids) else "no ground truth"
        ax.text(0.5, 0.5, f"IoU grid: {missing}", transform=ax.transAxes,
                horizontalalignment="center", verticalalignment="center")
        ax.set_xticks([])
        ax.set_yticks([])
        return _finish(ax, created)
    ax.imshow(overlaps, interpolation="nearest", cmap=plt.cm.Blues)
    ax.set_yticks(np.arange(len(pred_class_ids)),
                  [f"{class_names[int(class_id)]} ({pred_scores[i]:.2f})"
                   for i, class_id in enumerate(pred_class_ids)])
    ax.set_xticks(np.arange(len(gt_class_ids)),
                  [class_names[int(class_id)] for class_id in gt_class_ids], rotation=90)

    dark = overlaps.max(initial=0) / 2.
    for i, j in itertools.product(range(overlaps.shape[0]), range(overlaps.shape[1])):
        verdict = ""
        if overlaps[i, j] > threshold:
            verdict = "match" if gt_class_ids[j] == pred_class_ids[i] else "wrong"
        color = ("white" if overlaps[i, j] > dark
                 else "black" if overlaps[i, j] > 0
                 else "grey")
        ax.text(j, i, f"{overlaps[i, j]:.3f}\n{verdict}", horizontalalignment="center",
                verticalalignment="center", fontsize=9, color=color)

    if created:
        ax.figure.tight_layout()
    return _finish(ax, created)


def draw_boxes(image, boxes=None, refined_boxes=None,
               masks=None, captions=None, visibilities=None,
               title="", ax=None):
    """Draw boxes, refined boxes, masks and captions with per-box prominence.

    image: [H, W, 3] RGB.
    boxes: [N, (y1, x1, y2, x2)] pixels, dotted (all-zero boxes are skipped).
    refined_boxes: like boxes, drawn solid and joined to their box's top-left corner.
    masks: [H, W, N] bool. captions: list of N strings, on the refined box if any.
    visibilities: optional list of N values: 0 gray and faint, 1 dotted (default), 2 solid.
    title: Axes title. ax: optional matplotlib Axes to draw on.
    Returns the Figure.
    """
    if boxes is None and refined_boxes is None:
        raise ValueError("draw_boxes: give boxes, refined_boxes or both.")
    N = boxes.shape[0] if boxes is not None else refined_boxes.shape[0]
    ax, created = _axes(ax, figsize=(12, 12))
    colors = random_colors(N)

    _show_outside_image(ax, image.shape, margin=image.shape[0] // 10)
    ax.set_title(title)

    masked_image = image.astype(np.uint32).copy()
    for i in range(N):
        visibility = visibilities[i] if visibilities is not None else 1
        color, style, alpha = {0: ("gray", "dotted", 0.5),
                               1: (colors[i], "dotted", 1),
                               2: (colors[i], "solid", 1)}[visibility]
        if boxes is not None:
            if not np.any(boxes[i]):
                continue
            y1, x1, y2, x2 = boxes[i]
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=alpha,
                                           linestyle=style, edgecolor=color, facecolor="none"))
        if refined_boxes is not None and visibility > 0:
            ry1, rx1, ry2, rx2 = refined_boxes[i].astype(np.int32)
            ax.add_patch(patches.Rectangle((rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2,
                                           edgecolor=color, facecolor="none"))
            if boxes is not None:
                ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
        if captions is not None:
            if refined_boxes is not None:
                y1, x1 = refined_boxes[i][:2].astype(np.int32)
            ax.text(x1, y1, captions[i], size=11, verticalalignment="top", color="w",
                    backgroundcolor="none",
                    bbox={"facecolor": color, "alpha": 0.5, "pad": 2, "edgecolor": "none"})
        if masks is not None:
            mask = masks[:, :, i]
            masked_image = apply_mask(masked_image, mask, to_rgb(color))
            for outline in _mask_outlines(mask, color):
                ax.add_patch(outline)
    ax.imshow(masked_image.astype(np.uint8))
    return _finish(ax, created)


############################################################
#  Tables
############################################################

def display_table(table):
    """Render rows of values as an HTML table.

    table: an iterable of rows, each an iterable of values; values are inserted with str() as
        HTML (so a cell may carry markup, as display_weight_stats' alerts do).
    Inside Jupyter the table is displayed with IPython.display and None is returned; elsewhere the
    HTML string is returned (e.g. to write to a file).
    """
    html = _table_html(table)
    if not _in_jupyter():
        return html
    _display_html(html)
    return None


def _table_html(table):
    rows = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in table)
    return f"<table>{rows}</table>"


def _display_html(html):
    import IPython.display
    IPython.display.display(IPython.display.HTML(html))


class Table(list):
    """Rows of a table (lists of cells), as display_weight_stats returns them.

    A list; in Jupyter it displays as the HTML table (once per cell: the call that returns it has
    shown it already).
    """


def _weighted_layers(layers):
    """Yield (name, layer) for every layer holding weights, in model order.

    Nested models (rpn_model) are entered; wrappers (TimeDistributed) give their inner layer under
    the wrapper's name, which is the name the original's weight files use.
    """
    for layer in layers:
        if hasattr(layer, "layers"):
            yield from _weighted_layers(layer.layers)
        elif layer.weights:
            yield layer.name, getattr(layer, "layer", layer)


def display_weight_stats(model):
    """Tabulate every weight of a model: name, shape, min, max and standard deviation.

    model: a MaskRCNN (anything with a .keras_model keras.Model).
    Names read "layer/weight" (e.g. "conv1/kernel"). Like the original, a weight whose values are
    all equal is flagged "*** dead?" (except Conv2D biases, which legitimately stay constant) and
    one with |min| or |max| over 1000 "*** Overflow?", in red.
    The table is shown with display_table. Returns the table: a header row
    ["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"] and one row of strings per weight, as a Table
    (a list).
    """
    import keras

    table = [["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]]
    for name, layer in _weighted_layers(model.keras_model.layers):
        for variable, value in zip(layer.weights, layer.get_weights()):
            conv_bias = isinstance(layer, keras.layers.Conv2D) and variable is layer.bias
            alert = ""
            if value.min() == value.max() and not conv_bias:
                alert += "<span style='color:red'>*** dead?</span>"
            if np.abs(value.min()) > 1000 or np.abs(value.max()) > 1000:
                alert += "<span style='color:red'>*** Overflow?</span>"
            table.append([f"{name}/{variable.name}{alert}", str(value.shape),
                          f"{value.min():+9.4f}", f"{value.max():+10.4f}",
                          f"{value.std():+9.4f}"])
    display_table(table)
    table = Table(table)
    table._mrcnn_displayed_in_cell = _current_cell()
    return _displayed_once(table, lambda rows: _display_html(_table_html(rows)))
