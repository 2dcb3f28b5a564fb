"""The original's toy dataset: squares, circles and triangles on a plain background.

The shapes tutorial (``samples/shapes/train_shapes.ipynb``) trains on it, and
the original's inspection notebooks can use it instead of COCO
(``config.NAME == "shapes"``). ``samples/shapes/shapes.py`` gives the two
classes under the names the original's notebooks import::

    from samples.shapes import shapes
    config = shapes.ShapesConfig()
    dataset = shapes.ShapesDataset()
    dataset.load_shapes(500, config.IMAGE_SHAPE[0], config.IMAGE_SHAPE[1], rng=0)
    dataset.prepare()

Images are drawn on the fly from a short description kept in ``image_info``:
``bg_color`` (r, g, b) and ``shapes``, a list of ``(name, (r, g, b), (x, y,
s))`` with the centre ``(x, y)`` and the half-size ``s`` in pixels. Shapes
later in the list are drawn on top of earlier ones, and the masks of
``load_mask`` leave out the hidden pixels.
"""

import math

import numpy as np
import skimage.draw

from mrcnn import utils
from mrcnn.config import Config

SOURCE = "shapes"
SHAPE_NAMES = ("square", "circle", "triangle")
MAX_SHAPES = 4
# Boxes of the shapes of one image overlap by at most this IoU (utils.non_max_suppression).
MAX_OVERLAP = 0.3


class ShapesConfig(Config):
    """The original's settings for the shapes dataset: 128-pixel images, 3 classes, small anchors."""

    NAME = "shapes"
    GPU_COUNT = 1
    IMAGES_PER_GPU = 8
    NUM_CLASSES = 1 + len(SHAPE_NAMES)
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TRAIN_ROIS_PER_IMAGE = 32
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 5


class ShapesDataset(utils.Dataset):
    """Random images of squares, circles and triangles, drawn when loaded (no files)."""

    def load_shapes(self, count, height, width, rng=None):
        """Register ``count`` random images of ``height`` x ``width`` pixels.

        Args:
            count: number of images.
            height, width: image size in pixels (at least 48).
            rng: seed or ``np.random.Generator`` (None: a random one); the
                same seed gives the same images.
        """
        if min(height, width) < 48:
            raise ValueError(f"Shapes images need at least 48 x 48 pixels, not {height} x {width}.")
        rng = np.random.default_rng(rng)
        for class_id, name in enumerate(SHAPE_NAMES, start=1):
            self.add_class(SOURCE, class_id, name)
        for i in range(count):
            bg_color, shapes = self.random_image(height, width, rng)
            self.add_image(SOURCE, image_id=i, path=None, width=width, height=height,
                           bg_color=bg_color, shapes=shapes)

    def load_image(self, image_id):
        """The image drawn from its description: uint8 [height, width, 3]."""
        info = self.image_info[image_id]
        image = np.empty([info["height"], info["width"], 3], dtype=np.uint8)
        image[:] = info["bg_color"]
        for shape, color, dims in info["shapes"]:
            self.draw_shape(image, shape, dims, color)
        return image

    def image_reference(self, image_id):
        """The image's list of shapes (name, color, (x, y, s))."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().image_reference(image_id)
        return info["shapes"]

    def load_mask(self, image_id):
        """Masks bool [height, width, N] of the visible pixels of each shape, class ids int32 [N]."""
        info = self.image_info[image_id]
        shapes = info["shapes"]
        masks = np.zeros([info["height"], info["width"], len(shapes)], dtype=bool)
        for i, (shape, _, dims) in enumerate(shapes):
            self.draw_shape(masks[:, :, i], shape, dims, True)
        covered = np.zeros(masks.shape[:2], dtype=bool)
        for i in reversed(range(len(shapes))):
            masks[:, :, i] &= ~covered
            covered |= masks[:, :, i]
        class_ids = np.array([self.class_names.index(shape) for shape, _, _ in shapes],
                             dtype=np.int32)
        return masks, class_ids

    def draw_shape(self, image, shape, dims, color):
        """Paint one shape into ``image`` ([H, W] or [H, W, C]) in place and return it.

        Args:
            shape: "square", "circle" or "triangle".
            dims: (x, y, s): centre and half-size in pixels; a square spans
                [x - s, x + s] x [y - s, y + s], a circle has radius s, a
                triangle points up, with its base on y + s.
            color: the value to paint (a color, or True for a mask).
        """
        x, y, s = dims
        if shape == "square":
            rows, cols = skimage.draw.rectangle((y - s, x - s), (y + s, x + s),
                                                shape=image.shape[:2])
        elif shape == "circle":
            rows, cols = skimage.draw.disk((y, x), s, shape=image.shape[:2])
        elif shape == "triangle":
            half_base = s / math.sin(math.radians(60))
            rows, cols = skimage.draw.polygon([y - s, y + s, y + s],
                                              [x, x - half_base, x + half_base],
                                              shape=image.shape[:2])
        else:
            raise ValueError(f"Unknown shape {shape!r}: use one of {', '.join(SHAPE_NAMES)}.")
        image[rows, cols] = color
        return image

    def random_shape(self, height, width, rng=None):
        """A random shape inside the image: (name, (r, g, b), (x, y, s))."""
        rng = np.random.default_rng(rng)
        shape = SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))]
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        margin = min(20, min(height, width) // 6)
        y = int(rng.integers(margin, height - margin))
        x = int(rng.integers(margin, width - margin))
        s = int(rng.integers(margin, max(margin, height // 4) + 1))
        return shape, color, (x, y, s)

    def random_image(self, height, width, rng=None):
        """A random background color and 1 to 4 shapes whose boxes overlap little.

        Returns:
            bg_color: (r, g, b); shapes: [(name, (r, g, b), (x, y, s))] in drawing order.
        """
        rng = np.random.default_rng(rng)
        bg_color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shapes = [self.random_shape(height, width, rng)
                  for _ in range(rng.integers(1, MAX_SHAPES + 1))]
        boxes = np.array([[y - s, x - s, y + s, x + s] for _, _, (x, y, s) in shapes])
        keep = utils.non_max_suppression(boxes, np.arange(len(shapes), dtype=np.float32),
                                         MAX_OVERLAP)
        return bg_color, [shape for i, shape in enumerate(shapes) if i in keep]
