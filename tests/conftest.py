"""Shared test settings and fixtures.

Models are expensive to build on a 2-core machine, so the tiny inference
model is built once per session (per worker process: pytest.ini runs the test
files in parallel); tests that change weights must restore them.
"""

import importlib.util
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no online version check

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mrcnn import utils  # noqa: E402
from mrcnn.config import Config  # noqa: E402

MAX_TEST_WORKERS = 4  # each worker holds TensorFlow and its models: 1-5 GB resident


def pytest_xdist_auto_num_workers(config):
    """The number of worker processes of ``-n auto`` (pytest.ini's default): one per core this
    process may run on, at most MAX_TEST_WORKERS; none (the tests run in this process) on one
    core.

    Most of the suite's time is single-threaded (tracing TensorFlow graphs, starting the
    command lines' processes), so two workers on two cores take about two thirds of one
    process's time. ``--dist loadfile`` keeps each test file in one worker, so a module's
    fixtures (a trained model, a command line's run) are made once.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cores, MAX_TEST_WORKERS) if cores > 1 else 0


def square_region(name="pikachu"):
    """A VIA 1.x/2.x polygon region: the square (2, 2)-(20, 20), class attribute ``name``."""
    return {"shape_attributes": {"name": "polygon", "all_points_x": [2, 20, 20, 2],
                                 "all_points_y": [2, 2, 20, 20]},
            "region_attributes": {"name": name}}


def jpeg_bytes(height=48, width=64, seed=0):
    """The bytes of a JPEG of random pixels (noise compresses poorly: a long pixel stream)."""
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def png_header(width, height):
    """The bytes of a PNG that declares width x height pixels and holds no pixel data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def box_mask(shape, box):
    """[H, W] bool mask filling a pixel box (y1, x1, y2, x2), y2/x2 exclusive."""
    mask = np.zeros(shape, dtype=bool)
    y1, x1, y2, x2 = box
    mask[y1:y2, x1:x2] = True
    return mask


def gradient_image(h, w):
    """uint8 RGB image whose pixels are all distinct-ish and non-zero."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([1 + y * 3 % 250, 1 + x * 5 % 250, 1 + (x + y) % 250], axis=2).astype(np.uint8)


SQUARE, CIRCLE = 1, 2
COLORS = {SQUARE: (220, 30, 30), CIRCLE: (30, 200, 60)}

# (height, width, [(class id, (y1, x1, y2, x2)), ...]) of each test image.
TWO_SHAPES = (100, 160, [(SQUARE, (10, 20, 40, 60)), (CIRCLE, (50, 100, 90, 150))])
THREE_SHAPES = (128, 128, [(SQUARE, (0, 0, 30, 30)), (CIRCLE, (60, 60, 120, 120)),
                           (SQUARE, (70, 10, 100, 40))])
ONE_CIRCLE = (90, 90, [(CIRCLE, (20, 20, 70, 70))])
EMPTY = (64, 64, [])
TWELVE_SQUARES = (128, 128, [(SQUARE, (10 + 30 * (i // 4), 5 + 30 * (i % 4),
                                       30 + 30 * (i // 4), 25 + 30 * (i % 4)))
                             for i in range(12)])


class ShapesTestDataset(utils.Dataset):
    """Images with drawn squares and circles (ellipses inscribed in a box)."""

    def __init__(self, specs, source="test"):
        super().__init__()
        self.add_class(source, SQUARE, "square")
        self.add_class(source, CIRCLE, "circle")
        for i, (height, width, shapes) in enumerate(specs):
            self.add_image(source, image_id=i, path=None, height=height,
                           width=width, shapes=shapes)
        self.prepare()

    def load_image(self, image_id):
        info = self.image_info[image_id]
        image = np.full((info["height"], info["width"], 3), 40, dtype=np.uint8)
        masks, class_ids = self.drawn_masks(image_id)
        for i, class_id in enumerate(class_ids):
            image[masks[:, :, i]] = COLORS[class_id]
        return image

    def load_mask(self, image_id):
        return self.drawn_masks(image_id)

    def drawn_masks(self, image_id):
        info = self.image_info[image_id]
        rows, cols = np.mgrid[:info["height"], :info["width"]] + 0.5
        masks = np.zeros((info["height"], info["width"], len(info["shapes"])), dtype=bool)
        for i, (class_id, (y1, x1, y2, x2)) in enumerate(info["shapes"]):
            if class_id == SQUARE:
                masks[y1:y2, x1:x2, i] = True
            else:
                cy, cx, ry, rx = (y1 + y2) / 2, (x1 + x2) / 2, (y2 - y1) / 2, (x2 - x1) / 2
                masks[:, :, i] = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
        return masks, np.array([c for c, _ in info["shapes"]], dtype=np.int32)


class TinyConfig(Config):
    """A CPU-sized configuration: ResNet50, 128-pixel images, few ROIs."""

    NAME = "tiny"
    NUM_CLASSES = 1 + 1
    BACKBONE = "resnet50"
    IMAGES_PER_GPU = 1
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 10
    FPN_CLASSIF_FC_LAYERS_SIZE = 128
    DETECTION_MAX_INSTANCES = 20
    DETECTION_MIN_CONFIDENCE = 0.0
    STEPS_PER_EPOCH = 10
    VALIDATION_STEPS = 2


class ShapesConfig(TinyConfig):
    """TinyConfig for ShapesTestDataset: two classes, two images a batch, 28x28 mini-masks."""

    NAME = "data_test"
    NUM_CLASSES = 1 + 2
    IMAGES_PER_GPU = 2
    MINI_MASK_SHAPE = (28, 28)


def make_shapes_config(**overrides):
    """A ShapesConfig with ``overrides`` (attribute -> value)."""
    return type("TestConfig", (ShapesConfig,), overrides)()


def write_keras2_file(path, layout, rng, weightless=("input_image", "activation"),
                      root=None, value=None):
    """Write ``layout`` ([(group, [(weight name, shape)])]) in the Keras-2 layout
    with random values; returns {(group, weight name): value}.

    ``value(weight_name, shape, rng)`` gives each weight's array (default: standard normal)."""
    values = {}
    with h5py.File(path, "w") as f:
        group = f if root is None else f.create_group(root)
        group.attrs["layer_names"] = np.array(
            [name.encode() for name in weightless] + [name.encode() for name, _ in layout])
        group.attrs["backend"] = b"tensorflow"
        group.attrs["keras_version"] = b"2.2.4"
        for name in weightless:
            group.create_group(name).attrs["weight_names"] = np.array([], dtype="S")
        for layer_name, layer_weights in layout:
            layer_group = group.create_group(layer_name)
            layer_group.attrs["weight_names"] = np.array([w.encode() for w, _ in layer_weights])
            for weight_name, shape in layer_weights:
                array = (rng.standard_normal(shape) if value is None
                         else value(weight_name, shape, rng)).astype(np.float32)
                layer_group[weight_name] = array
                values[(layer_name, weight_name)] = array
    return values


def load_module(name, path):
    """Import a sample script by its path (samples are not packages on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COCO_LAYOUT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                "coco_weights_layout.json")


def coco_layout_rows():
    """[(group, weight name, shape)] of the released mask_rcnn_coco.h5 (committed layout)."""
    with open(COCO_LAYOUT_FILE, encoding="utf-8") as f:
        layers = json.load(f)["layers"]
    return [(group, name, tuple(shape)) for group, weights_ in layers for name, shape in weights_]


def iou_matrix(boxes1, boxes2):
    """IoU [N1, N2] by broadcasting (independent of utils.compute_overlaps)."""
    b1, b2 = boxes1[:, None, :].astype(float), boxes2[None, :, :].astype(float)
    height = np.clip(np.minimum(b1[..., 2], b2[..., 2]) - np.maximum(b1[..., 0], b2[..., 0]), 0, None)
    width = np.clip(np.minimum(b1[..., 3], b2[..., 3]) - np.maximum(b1[..., 1], b2[..., 1]), 0, None)
    intersection = height * width
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    return intersection / (area1 + area2 - intersection)


def mask_iou(a, b):
    """IoU of two boolean masks of one shape; 1 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def matched_detections(served, expected, score_tolerance=1e-4):
    """Pairs (i, j) of served and expected detections (dicts of detect()'s outputs) of one
    class, with scores within ``score_tolerance`` and boxes within a pixel."""
    pairs = []
    for i in range(len(served["scores"])):
        for j in range(len(expected["scores"])):
            if (served["class_ids"][i] == expected["class_ids"][j]
                    and abs(served["scores"][i] - expected["scores"][j]) < score_tolerance
                    and np.abs(served["rois"][i] - expected["rois"][j]).max() <= 1
                    and j not in [pair[1] for pair in pairs]):
                pairs.append((i, j))
                break
    return pairs


def count_sparse_gradients(monkeypatch):
    """The pixels of each sparse gradient computed from now on: ``calls["convolutions"]``
    gets (filters, K) of each layers.sparse_convolution_gradients, ``calls["rpn"]`` the K of
    each heads.rpn_sparse_gradient_graph gradient (in eager mode, tf.cond runs only the
    branch it takes)."""
    from mrcnn import heads, layers

    calls = {"convolutions": [], "rpn": []}
    sparse = layers.sparse_convolution_gradients
    windows = heads.convolution_windows

    def counted_convolution(images, kernel, output_gradient, positions):
        calls["convolutions"].append((kernel.shape[-1], positions.shape[0]))
        return sparse(images, kernel, output_gradient, positions)

    def counted_rpn(images, kernel_shape, positions):
        calls["rpn"].append(positions.shape[0])
        return windows(images, kernel_shape, positions)

    monkeypatch.setattr(layers, "sparse_convolution_gradients", counted_convolution)
    monkeypatch.setattr(heads, "convolution_windows", counted_rpn)
    return calls


def boxes_of(masks):
    """Tight boxes of [H, W, N] masks, x2/y2 exclusive, via np.nonzero."""
    boxes = []
    for i in range(masks.shape[-1]):
        ys, xs = np.nonzero(masks[:, :, i])
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return np.array(boxes, dtype=np.int32).reshape(-1, 4)


@pytest.fixture(scope="session")
def shapes_config():
    """ShapesConfig(): two classes, 128 px, ResNet50."""
    return ShapesConfig()


@pytest.fixture(scope="session")
def shapes_dataset():
    """Five drawn images of squares and circles, one without instances."""
    return ShapesTestDataset([TWO_SHAPES, THREE_SHAPES, ONE_CIRCLE, EMPTY, TWELVE_SQUARES])


@pytest.fixture(scope="session")
def tiny_config():
    return TinyConfig()


@pytest.fixture(scope="session")
def synthetic_dataset():
    """Eight 128x128 synthetic pikachu scenes (in memory, exact masks)."""
    from mrcnn.synthetic import SyntheticDataset

    dataset = SyntheticDataset()
    dataset.load_synthetic(8, 128, 128, seed=3)
    dataset.prepare()
    return dataset


@pytest.fixture(scope="session")
def inference_model(tiny_config, tmp_path_factory):
    from mrcnn import model as modellib

    return modellib.MaskRCNN("inference", tiny_config, str(tmp_path_factory.mktemp("logs")))


def rle_counts(mask):
    """Uncompressed COCO RLE counts of a [H, W] bool mask, computed with numpy: the lengths of
    the runs of the column-major pixels, starting with a (possibly empty) background run."""
    flat = np.asarray(mask).flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0] + counts if flat.size and flat[0] else counts


ROBOFLOW_FILE = "_annotations.coco.json"


def coco_segmentation(mask, kind):
    """A [H, W] bool one-piece mask as a COCO segmentation: "polygon" (through the outline
    pixels' corners), "rle" (compressed, as pycocotools writes it) or "counts" (uncompressed)."""
    from pycocotools import mask as mask_utils

    from mrcnn import synthetic

    if kind == "polygon":
        xs, ys = synthetic.mask_polygon(mask)
        return [[float(v) for xy in zip(xs, ys) for v in xy]]
    if kind == "rle":
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}
    return {"size": list(mask.shape), "counts": rle_counts(mask)}


def write_coco_dataset(root, subsets=(("train", 4), ("val", 2)), image_size=64, seed=3,
                       file_name=ROBOFLOW_FILE):
    """Write synthetic scenes as a COCO-annotated dataset folder, laid out as Roboflow exports.

    Each subset folder holds its images and ``file_name``, with Roboflow's parent category
    (id 0, used by no annotation) and the category "pikachu" (id 1). The instances of each
    image cycle through the three segmentation kinds (polygon, compressed RLE, uncompressed
    RLE); the first image also has a crowd region (iscrowd 1, the 12x12 top-left corner) and
    each subset ends with an image without annotations. Returns ``root``.
    """
    import json

    from PIL import Image

    from mrcnn import synthetic

    for key, (subset, count) in enumerate(subsets, start=1):
        folder = os.path.join(root, subset)
        os.makedirs(folder)
        images, annotations = [], []
        for index in range(count + 1):
            image, masks = synthetic.draw_scene(synthetic.scene_rng(seed, key, index),
                                                image_size, image_size)
            name = f"{subset}_{index}.jpg"
            Image.fromarray(image).save(os.path.join(folder, name), quality=95)
            images.append({"id": index, "file_name": name, "width": image_size,
                           "height": image_size})
            if index == count:
                continue  # a negative
            for i in range(masks.shape[-1]):
                kind = ("polygon", "rle", "counts")[(index + i) % 3]
                annotations.append({"id": len(annotations) + 1, "image_id": index,
                                    "category_id": 1, "iscrowd": 0,
                                    "segmentation": coco_segmentation(masks[..., i], kind)})
            if index == 0:
                crowd = box_mask((image_size, image_size), (0, 0, 12, 12))
                annotations.append({"id": len(annotations) + 1, "image_id": index,
                                    "category_id": 1, "iscrowd": 1,
                                    "segmentation": coco_segmentation(crowd, "counts")})
        data = {"info": {"description": "synthetic pikachu"}, "images": images,
                "annotations": annotations,
                "categories": [{"id": 0, "name": "pikachus", "supercategory": "none"},
                               {"id": 1, "name": "pikachu", "supercategory": "pikachus"}]}
        with open(os.path.join(folder, file_name), "w", encoding="utf-8") as f:
            json.dump(data, f)
    return root
