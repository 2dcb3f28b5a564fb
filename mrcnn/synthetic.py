"""A synthetic "pikachu" dataset: drawn scenes with exact instance masks.

Each scene has 1-3 yellow creatures (round body and head, long ears with
black tips, red cheeks, a zigzag tail) of varied size, proportions, pose,
rotation and mirroring, on a background of a colour gradient, noise and
clutter shapes, sometimes partly hidden by each other or by a shape drawn in
front. Every visible part of an instance stays in one piece without holes, so
one VIA polygon describes it.

Two ways to use it, both deterministic for a seed and offline:

* :class:`SyntheticDataset` (in memory, exact masks) for tests and quick runs::

      dataset = SyntheticDataset()
      dataset.load_synthetic(count=50, height=256, width=256, seed=0)
      dataset.prepare()

* :func:`write_via_dataset` writes ``train/``, ``val/`` and ``test/`` folders
  of JPEG/PNG images with a VIA 1.x ``via_region_data.json`` (polygons, region
  attribute ``{"name": "pikachu"}``) in the annotated subsets, exactly like a
  dataset annotated by hand, for the pikachu sample's workflow.

The offline demo (``pikachu.py train`` without ``--dataset``) trains on
``demo_dataset()``, a folder written once into the cache, with the
configuration overrides ``DEMO_SETTINGS`` for ``DEMO_EPOCHS`` epochs: a model a
laptop CPU trains from scratch in minutes (``bench/learning.py`` measures the
same settings). The notebooks and benchmarks use the same names.
"""

import functools
import json
import os

import numpy as np
import scipy.ndimage
import skimage.measure
from PIL import Image, ImageDraw

from mrcnn import files, utils
from mrcnn.config import Config
from mrcnn.via import ANNOTATION_FILE

CLASS_NAME = "pikachu"
YELLOW = np.array([250, 215, 40])
BLACK = np.array([25, 20, 20])
RED = np.array([225, 40, 35])
BROWN = np.array([150, 95, 35])
WHITE = np.array([250, 250, 250])
MIN_VISIBLE_FRACTION = 0.5
OCCLUDER_PROBABILITY = 0.3
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
MAX_PLACEMENT_TRIES = 30

# The demo's dataset folder: subset sizes, image side and seed.
DEMO_SPLIT = {"train": 200, "val": 20, "test": 6, "image_size": 256, "seed": 0}
DEMO_FOLDER = "pikachu-synthetic"
# The demo's configuration overrides: a ResNet50 on 128-pixel inputs with a
# narrow box head, fewer proposals and ROIs, trained from scratch at lr 0.01.
DEMO_SETTINGS = {
    "BACKBONE": "resnet50",
    "IMAGE_MIN_DIM": 128,
    "IMAGE_MAX_DIM": 128,
    "IMAGES_PER_GPU": 2,
    "STEPS_PER_EPOCH": 25,
    "VALIDATION_STEPS": 4,
    "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128),
    "RPN_TRAIN_ANCHORS_PER_IMAGE": 128,
    "POST_NMS_ROIS_TRAINING": 500,
    "POST_NMS_ROIS_INFERENCE": 200,
    "TRAIN_ROIS_PER_IMAGE": 32,
    "FPN_CLASSIF_FC_LAYERS_SIZE": 256,
    "MAX_GT_INSTANCES": 10,
    "DETECTION_MIN_CONFIDENCE": 0.7,
    "LEARNING_RATE": 0.01,
    "ROI_ALIGN_BY_STRIDE": True,
}
DEMO_EPOCHS = 8


def demo_config(inference=False, **overrides):
    """The configuration of ``pikachu.py train`` without ``--dataset``, as a Config.

    ``DEMO_SETTINGS`` on the base Config, named "pikachu", one object class;
    ``inference`` gives one image per batch; ``overrides`` (e.g.
    ``STEPS_PER_EPOCH=100``) apply last.
    """
    settings = dict(DEMO_SETTINGS, NAME="pikachu", NUM_CLASSES=2)
    if inference:
        settings.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    settings.update(overrides)
    return Config.from_dict(settings)


def _ellipse(cx, cy, rx, ry, points=24):
    """Outline of an axis-aligned ellipse: float array [points, (x, y)]."""
    return np.array([cx, cy]) + np.array([rx, ry]) * _unit_circle(points)


@functools.lru_cache(maxsize=None)
def _unit_circle(points):
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _creature_parts(rng):
    """Parts of one creature in its own frame, drawing order, with colours.

    The frame has its origin at the centre of the figure, x right, y down,
    and the figure spans about [-1, 1] vertically.

    Returns:
        list of (polygon [K, (x, y)], rgb colour) from back to front.
    """
    body_width = rng.uniform(0.45, 0.62)
    ear_spread = rng.uniform(0.15, 0.55)
    ear_length = rng.uniform(0.55, 0.8)
    head_y = -0.32
    parts = []
    tail = np.array([[0.25, 0.55], [0.7, 0.3], [0.58, 0.18], [0.95, -0.22], [0.82, -0.28],
                     [1.08, -0.72], [0.66, -0.3], [0.78, -0.24], [0.44, 0.12], [0.54, 0.2],
                     [0.2, 0.35]])
    parts.append((tail, YELLOW))
    parts.append((tail[[0, 1, 9, 10]], BROWN))
    for side in (-1, 1):
        angle = side * ear_spread
        along = ear_length * np.array([np.sin(angle), -np.cos(angle)])
        across = np.array([np.cos(angle), np.sin(angle)])
        base = np.array([side * 0.22, head_y - 0.25])
        tip = base + along
        ear = np.array([base - 0.12 * across, base + 0.35 * along - 0.13 * across, tip,
                        base + 0.35 * along + 0.13 * across, base + 0.12 * across])
        parts.append((ear, YELLOW))
        parts.append((np.array([ear[1] + 0.5 * (tip - ear[1]), tip, ear[3] + 0.5 * (tip - ear[3])]),
                      BLACK))
    parts.append((_ellipse(0, 0.38, body_width, 0.55), YELLOW))
    for side in (-1, 1):
        parts.append((_ellipse(side * 0.28, 0.86, 0.18, 0.09, 12), YELLOW))
    parts.append((_ellipse(0, head_y, 0.5, 0.4), YELLOW))
    for side in (-1, 1):
        parts.append((_ellipse(side * 0.3, head_y + 0.12, 0.09, 0.08, 12), RED))
        parts.append((_ellipse(side * 0.17, head_y - 0.08, 0.06, 0.07, 12), BLACK))
        parts.append((_ellipse(side * 0.155, head_y - 0.1, 0.025, 0.025, 8), WHITE))
    nose = np.array([[-0.04, head_y + 0.03], [0.04, head_y + 0.03], [0, head_y + 0.06]])
    parts.append((nose, BLACK))
    return parts


def _place(parts, center, size, angle, mirror):
    """Parts moved into the image: mirrored, rotated by ``angle``, scaled, shifted."""
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    flip = np.array([-1.0 if mirror else 1.0, 1.0])
    return [((polygon * flip) @ rotation.T * size + center, colour) for polygon, colour in parts]


def _raster(polygons, shape):
    """Pixels inside any of the polygons [K, (x, y)]: bool [H, W] (shape = (H, W))."""
    canvas = Image.new("1", (shape[1], shape[0]))
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon(polygon.ravel().tolist(), fill=1)
    return np.asarray(canvas)


def _one_piece(mask):
    """Whether a non-empty mask is one 8-connected piece without holes."""
    crop = np.pad(mask[_bounding_slices(mask)], 1)
    return (scipy.ndimage.label(crop, structure=EIGHT_NEIGHBOURS)[1] == 1
            and not (scipy.ndimage.binary_fill_holes(crop) != crop).any())


def _bounding_slices(mask):
    """(row slice, column slice) of the bounding box of a non-empty mask."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _silhouette(parts, shape):
    """Mask of a creature: the largest 8-connected piece of its parts, holes filled.

    Tips thinner than a pixel may leave specks, and concave joints tiny holes:
    the silhouette drops the former and fills the latter, and the creature is
    painted inside it, so that mask and picture agree and one polygon
    outlines the mask. Empty when the creature lies outside the image.
    """
    mask = _raster([polygon for polygon, _ in parts], shape).copy()
    if not mask.any():
        return mask
    box = _bounding_slices(mask)
    labels, count = scipy.ndimage.label(mask[box], structure=EIGHT_NEIGHBOURS)
    if count > 1:
        mask[box] = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    mask[box] = scipy.ndimage.binary_fill_holes(mask[box])
    return mask


def _paint(image, parts, silhouette, shade):
    """Paint a creature's parts on ``image`` [H, W, 3] uint8 inside its silhouette."""
    canvas = Image.new("RGB", (image.shape[1], image.shape[0]), _rgb(YELLOW * shade))
    draw = ImageDraw.Draw(canvas)
    for polygon, colour in parts:
        draw.polygon(polygon.ravel().tolist(), fill=_rgb(colour * shade))
    image[silhouette] = np.asarray(canvas)[silhouette]


def _rgb(colour):
    """An RGB colour as a tuple of ints in 0..255, as Pillow takes it."""
    return tuple(int(v) for v in np.clip(colour, 0, 255))


def _background(rng, height, width):
    """Colour gradient with noise and clutter shapes: uint8 [H, W, 3]."""
    start, end = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.arange(height, dtype=np.float32)[:, None] * np.sin(angle)
            + np.arange(width, dtype=np.float32)[None, :] * np.cos(angle))
    level = ((ramp - ramp.min()) * (255 / max(ramp.max() - ramp.min(), 1e-6))).astype(np.uint8)
    palette = _not_yellow(start + np.linspace(0, 1, 256)[:, None] * (end - start)).astype(np.int16)
    amplitude = int(rng.integers(2, 20))
    noise = rng.integers(-amplitude, amplitude + 1, (height, width, 1), dtype=np.int16)
    canvas = Image.fromarray(np.clip(palette[level] + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(2, 8)):
        polygon, colour = _clutter_shape(rng, height, width)
        draw.polygon(polygon.ravel().tolist(), fill=_rgb(colour))
    return np.array(canvas)


def _clutter_shape(rng, height, width):
    """A random shape (blob, box or star) [K, (x, y)] and a colour that is not yellow."""
    side = min(height, width)
    center = rng.uniform([0, 0], [width, height])
    kind = rng.integers(3)
    if kind == 0:
        polygon = _ellipse(*center, *rng.uniform(0.03, 0.15, 2) * side)
    elif kind == 1:
        w, h = rng.uniform(0.05, 0.3, 2) * side
        polygon = center + np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    else:
        count = rng.integers(3, 9)
        t = np.sort(rng.uniform(0, 2 * np.pi, count))
        radius = rng.uniform(0.03, 0.15, count) * side
        polygon = center + np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    return polygon, _not_yellow(rng.uniform(0, 255, 3))


def _not_yellow(colours):
    """Colours [..., 3] with the yellow ones turned pale: yellow is kept for the creatures."""
    colours = np.array(colours, dtype=np.float64)
    yellow = (colours[..., 0] > 150) & (colours[..., 1] > 130) & (colours[..., 2] < 110)
    colours[..., 2] += np.where(yellow, 120, 0)
    return colours


def _visible_masks(silhouettes, cover):
    """Visible part of each creature: bool [H, W, N].

    Args:
        silhouettes: list of bool [H, W] in drawing order (back to front).
        cover: bool [H, W], pixels hidden by an occluder in front of all.
    """
    hidden = cover.copy()
    visible = []
    for silhouette in silhouettes[::-1]:
        visible.append(silhouette & ~hidden)
        hidden |= silhouette
    return np.stack(visible[::-1], axis=-1)


def _visible_ok(silhouettes, cover):
    """Whether each creature shows at least MIN_VISIBLE_FRACTION, in one piece, no holes."""
    visible = _visible_masks(silhouettes, cover)
    return all(visible[..., i].sum() >= MIN_VISIBLE_FRACTION * silhouette.sum() > 0
               and _one_piece(visible[..., i])
               for i, silhouette in enumerate(silhouettes))


def _random_creature(rng, height, width):
    """A creature's parts placed at a random position, size, rotation and side."""
    size = rng.uniform(0.12, 0.28) * min(height, width)
    center = rng.uniform([size, size], [width - size, height - size])
    return _place(_creature_parts(rng), center, size, rng.uniform(-0.6, 0.6), rng.random() < 0.5)


def draw_scene(rng, height, width, max_instances=3):
    """Draw one scene.

    Args:
        rng: numpy Generator; the scene depends only on its state.
        height, width: image size in pixels.
        max_instances: at most this many creatures (at least one).

    Returns:
        image: uint8 [height, width, 3] RGB.
        masks: bool [height, width, N] visible part of each creature, N >= 1,
            in drawing order (later ones in front).
    """
    shape = (height, width)
    image = _background(rng, height, width)
    no_cover = np.zeros(shape, dtype=bool)
    creatures, silhouettes = [], []
    for _ in range(int(rng.integers(1, max_instances + 1))):
        for _ in range(MAX_PLACEMENT_TRIES):
            parts = _random_creature(rng, height, width)
            silhouette = _silhouette(parts, shape)
            if _visible_ok(silhouettes + [silhouette], no_cover):
                creatures.append(parts)
                silhouettes.append(silhouette)
                break
    for parts, silhouette in zip(creatures, silhouettes):
        _paint(image, parts, silhouette, 1 + rng.uniform(-0.15, 0.1))
    cover = no_cover
    if rng.random() < OCCLUDER_PROBABILITY:
        polygon, colour = _clutter_shape(rng, height, width)
        if _visible_ok(silhouettes, _raster([polygon], shape)):
            cover = _raster([polygon], shape)
            image[cover] = _rgb(colour)
    return image, _visible_masks(silhouettes, cover)


def scene_rng(*key):
    """The random generator of the scene identified by ``key`` (ints, e.g. seed, index)."""
    return np.random.default_rng(list(key))


@functools.lru_cache(maxsize=16)
def _cached_scene(seed, index, height, width):
    """draw_scene of one scene, kept for the load_mask that follows its load_image."""
    return draw_scene(scene_rng(seed, index), height, width)


class SyntheticDataset(utils.Dataset):
    """Synthetic scenes drawn on demand from their seed (no files).

    Masks are exact: ``load_mask`` returns the visible pixels of each
    creature, class "pikachu" (source "pikachu", id 1).
    """

    def load_synthetic(self, count, height, width, seed=0):
        """Register ``count`` scenes of ``height`` x ``width`` pixels."""
        self.add_class(CLASS_NAME, 1, CLASS_NAME)
        for index in range(count):
            self.add_image(CLASS_NAME, image_id=index, path=None,
                           height=height, width=width, seed=seed, index=index)

    def _scene(self, image_id):
        info = self.image_info[image_id]
        image, masks = _cached_scene(info["seed"], info["index"], info["height"], info["width"])
        return image.copy(), masks.copy()  # callers may change their arrays in place

    def load_image(self, image_id):
        """Scene image: uint8 [H, W, 3]."""
        return self._scene(image_id)[0]

    def load_mask(self, image_id):
        """Masks bool [H, W, N] and class ids int32 [N] (all "pikachu")."""
        masks = self._scene(image_id)[1]
        class_id = self.class_names.index(CLASS_NAME)
        return masks, np.full(masks.shape[-1], class_id, dtype=np.int32)

    def image_reference(self, image_id):
        info = self.image_info[image_id]
        return f"synthetic pikachu scene (seed {info['seed']}, index {info['index']})"


def mask_polygon(mask):
    """Outline of a one-piece mask as integer vertices, like a hand-drawn VIA polygon.

    The outline runs through the centres of the mask's border pixels, which
    skimage.draw.polygon counts as inside, simplified to within half a pixel:
    the polygon rasterizes back to the mask up to a few border pixels.

    Args:
        mask: bool [H, W], one 8-connected piece without holes.

    Returns:
        (xs, ys): int lists, the vertices in pixels (VIA's all_points_x,
        all_points_y).
    """
    rows, cols = _bounding_slices(mask)
    crop = np.pad(mask[rows, cols], 1).astype(np.float32)
    contour = max(skimage.measure.find_contours(crop, 0.99, fully_connected="high"), key=len)
    contour = skimage.measure.approximate_polygon(np.round(contour), tolerance=0.5)[:-1]
    ys = contour[:, 0].astype(int) - 1 + rows.start
    xs = contour[:, 1].astype(int) - 1 + cols.start
    return xs.tolist(), ys.tolist()


def _write_image(path, image):
    """Save as JPEG (quality 95) or PNG by the file's extension."""
    if path.endswith(".png"):
        Image.fromarray(image).save(path)
    else:
        Image.fromarray(image).save(path, quality=95)


def _write_subset(folder, prefix, count, image_size, seed, subset_key, annotate):
    """Draw ``count`` scenes into ``folder`` and their VIA 1.x export if ``annotate``."""
    os.makedirs(folder)
    export = {}
    for index in range(count):
        image, masks = draw_scene(scene_rng(seed, subset_key, index), image_size, image_size)
        filename = f"{prefix}_{index:04d}.{'png' if index % 4 == 3 else 'jpg'}"
        path = os.path.join(folder, filename)
        _write_image(path, image)
        size = os.path.getsize(path)
        regions = {}
        for i in range(masks.shape[-1]):
            xs, ys = mask_polygon(masks[:, :, i])
            regions[str(i)] = {
                "shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
                "region_attributes": {"name": CLASS_NAME}}
        export[f"{filename}{size}"] = {"fileref": "", "size": size, "filename": filename,
                                       "base64_img_data": "", "file_attributes": {},
                                       "regions": regions}
    if annotate:
        with open(os.path.join(folder, ANNOTATION_FILE), "w", encoding="utf-8") as f:
            json.dump(export, f)


def write_via_dataset(root, train=60, val=12, test=6, image_size=256, seed=0):
    """Write a synthetic dataset in the layout of a VIA-annotated one.

    Creates ``root/train`` and ``root/val`` (images and a VIA 1.x
    ``via_region_data.json``) and ``root/test`` (images only). The folder is
    written under a temporary name and renamed when complete, so ``root``
    either does not exist or is whole. Same arguments, same files.

    Args:
        root: folder to create; it must not exist.
        train, val, test: number of images per subset.
        image_size: side of the square images, pixels.
        seed: random seed.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists.
    """
    root = os.path.abspath(str(root))
    with files.atomic_directory(root) as partial:
        subsets = (("train", train), ("val", val), ("test", test))
        for subset_key, (subset, count) in enumerate(subsets, start=1):
            _write_subset(os.path.join(partial, subset), subset, count, image_size, seed,
                          subset_key, annotate=subset != "test")
    return root


def demo_dataset(cache_dir=None):
    """The demo's dataset folder, ``<cache>/pikachu-synthetic``, written on first use.

    Args:
        cache_dir: default ``files.default_cache_dir()`` ($MRCNN_CACHE or
            ~/.cache/mrcnn).

    Returns:
        The folder's path (``train/``, ``val/``, ``test/``, see ``DEMO_SPLIT``).

    Raises:
        files.FileError: the dataset must be written and the cache folder
            cannot take it (a file, or a folder without write access).
    """
    cache_dir = cache_dir or files.default_cache_dir()
    root = os.path.join(cache_dir, DEMO_FOLDER)
    if not os.path.isdir(root):
        files.check_output_folder(cache_dir, "the cache folder ($MRCNN_CACHE)")
        print(f"Generating the synthetic pikachu dataset into {root}")
        try:
            write_via_dataset(root, **DEMO_SPLIT)
        except OSError:
            if not os.path.isdir(root):  # not another process finishing first
                raise
    return root
