"""Read COCO instance annotations: the JSON that CVAT, Label Studio, Roboflow and LabelMe
converters export, and the MS COCO dataset's own files.

A COCO instance file::

    {"images": [{"id": 1, "file_name": "IMG_1.jpg", "width": 640, "height": 480}, ...],
     "categories": [{"id": 1, "name": "pikachu"}, ...],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0,
                      "segmentation": [[x1, y1, x2, y2, x3, y3, ...], ...]}, ...]}

``segmentation`` is a list of polygons (one object may come in several
pieces; pixel coordinates of the image as ``width`` x ``height`` describe it,
x right, y down) or a run-length encoding ``{"size": [height, width],
"counts": ...}``, compressed (``counts`` a string, as pycocotools writes it)
or not (``counts`` a list of run lengths, column by column). An annotation
with ``iscrowd`` 1 outlines a crowd of objects rather than one: it is kept as
a crowd region, which ``load_mask`` returns with a negative class id (as the
original's CocoDataset did) so that the RPN and the heads neither learn from it
nor count anchors and proposals on it as background.

Masks come from pycocotools (``frPyObjects``, ``merge``, ``decode``). They
are in the frame of the image as displayed, EXIF orientation applied, which is
how ``utils.Dataset.load_image`` returns it (see :mod:`mrcnn.via`): when the
file's width and height are those of the stored photo turned a quarter (EXIF
orientations 5 to 8: a tool that ignored the tag), the masks are turned with
the photo.

As for VIA files, what is odd but not fatal (an annotation of an unknown image
or category, a segmentation of the wrong shape, a box without a mask, a
missing image file, ...) is collected as ``via.Problem(file, message)`` and
left out; what makes the file unusable raises :class:`CocoError` with a
message that names the file and the fix.
"""

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn import files, images as image_files, via
from mrcnn.errors import InputError
from mrcnn.via import Problem

# The names under which a subset folder may hold its COCO file, as the tools
# export it: Roboflow, LabelMe converters and most scripts, the MS COCO
# naming, CVAT ("COCO 1.0"), Label Studio ("COCO").
ANNOTATION_FILES = ("_annotations.coco.json", "annotations.json", "instances_{subset}.json",
                    os.path.join("annotations", "instances_default.json"), "result.json")
# Where CVAT puts the images of its export; a file_name not found beside the
# subset folder's images is looked up there.
IMAGES_FOLDER = "images"
EXPORTER = "your annotation tool as COCO JSON"
SEGMENTATION_HELP = ("a list of polygons [[x1, y1, x2, y2, x3, y3, ...], ...] or an RLE "
                     "{\"size\": [height, width], \"counts\": ...}")
# numpy equivalents of the transpositions PIL.ImageOps.exif_transpose applies
# for each EXIF orientation, on [H, W, ...] arrays.
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


class CocoError(InputError):
    """A COCO file that cannot be used; the message names the file and the fix."""


@dataclass
class CocoRegion:
    """One usable annotation.

    Attributes:
        annotation_id: its ``id`` in the file (None when it has none).
        category_id: its ``category_id``.
        label: the category's name.
        crowd: ``iscrowd`` 1.
        rle: its mask as a compressed RLE in the file's frame of the image.
    """

    annotation_id: object
    category_id: object
    label: str
    crowd: bool
    rle: dict


@dataclass
class CocoImage:
    """One image of a COCO file and its usable annotations.

    ``height`` and ``width`` are those of the image as displayed (EXIF
    orientation applied); ``orientation`` is the EXIF orientation still to
    apply to masks decoded in the file's frame (1 when the file describes the
    displayed image).
    """

    image_id: object
    filename: str
    regions: list = field(default_factory=list)
    path: str = None
    height: int = None
    width: int = None
    orientation: int = 1


@dataclass
class CocoAnnotations:
    """Result of :func:`load_coco`.

    Attributes:
        images: the usable :class:`CocoImage` items, in the file's order.
        class_names: the classes, in class-id order.
        categories: every category of the file, id -> name.
        problems: ``via.Problem`` items, one per thing left out or clipped.
        dataset: the file's content restricted to the images that load
            and their well-formed annotations of known categories, each with
            ``iscrowd``, ``area`` and ``bbox`` (computed from its mask when
            the file has none): a COCO dict for ``pycocotools.coco.COCO``
            and COCOeval (see :func:`coco_api`).
    """

    images: list
    class_names: list
    categories: dict
    problems: list
    dataset: dict
    class_attribute = None  # as ViaAnnotations': COCO categories name the classes


# ---------------------------------------------------------------------------
# Finding and reading the file


def annotation_names(subset):
    """The file names a subset folder may give its COCO file, in order of preference."""
    return [name.format(subset=subset) for name in ANNOTATION_FILES]


def read_coco(path, follow_links=False, max_bytes=None):
    """Parse a COCO instance file and check its three lists.

    ``follow_links`` and ``max_bytes`` are ``files.read_json``'s.

    Returns:
        the parsed dict, with ``images``, ``annotations`` and ``categories``
        lists.

    Raises:
        CocoError: unreadable or malformed JSON, or not a COCO instance file.
    """
    data = files.read_json(path, CocoError, EXPORTER, follow_links, max_bytes)
    if not isinstance(data, dict):
        raise CocoError(f"{path}: not a COCO instance file: the JSON is a {type(data).__name__}, "
                        "not an object with images, annotations and categories. Export the "
                        "annotations as COCO (instance segmentation) from your annotation tool.")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise CocoError(f"{path}: not a COCO instance file: it has no {', '.join(missing)}. "
                        "Export the annotations as COCO (instance segmentation) from your "
                        "annotation tool.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise CocoError(f"{path}: '{key}' is a {type(data[key]).__name__}; in a COCO file it "
                            "is a list. Export the annotations from your annotation tool again.")
    return data


def coco_api(dataset):
    """A ``pycocotools.coco.COCO`` over a COCO dict in memory, built without printing."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# ---------------------------------------------------------------------------
# Checking entries


def _is_id(value):
    """COCO ids are integers (a few tools write strings)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _size_problem(value, name):
    """Why an image's width or height is not a positive whole number of pixels, or None."""
    problem = via.number_problem(value, name, positive=True)
    if problem is None and value != int(value):
        problem = f"{name} is {value:g}, not a whole number"
    return problem


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _categories(entries, source):
    """{id: name} of the ``categories`` list; a category without id or name is fatal."""
    categories = {}
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and _is_id(entry.get("id"))
                and isinstance(entry.get("name"), str) and entry["name"].strip()):
            raise CocoError(f"{source}: categories[{index}] ({_short(entry)}) needs an integer "
                            "'id' and a 'name'. Fix it there or export the annotations again.")
        if entry["id"] in categories:
            raise CocoError(f"{source}: two categories have id {entry['id']!r} "
                            f"({categories[entry['id']]!r} and {entry['name']!r}). Give each "
                            "category its own id.")
        categories[entry["id"]] = entry["name"].strip()
    return categories


def _images(entries, source, problems):
    """({id: entry} of the well-formed ``images`` entries, ids of the others), reporting
    the others."""
    images, skipped, names = {}, set(), {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not _is_id(entry.get("id")):
            problems.append(Problem(source, f"images[{index}] ({_short(entry)}) has no 'id'; "
                                            "skipped"))
            continue
        image_id, filename = entry["id"], entry.get("file_name")
        size_problem = _size_problem(entry.get("width"), "width") or \
            _size_problem(entry.get("height"), "height")
        if image_id in images or image_id in skipped:
            raise CocoError(f"{source}: two images have id {image_id!r}. Give each image its "
                            "own id (export the annotations again).")
        if not isinstance(filename, str) or not filename.strip():
            problem = f"image {image_id!r} has no 'file_name'; skipped"
        elif size_problem:
            problem = f"image {image_id!r} ({filename}): {size_problem}; skipped"
        elif filename in names:
            problem = (f"image {image_id!r}: {filename} is listed more than once (also image "
                       f"{names[filename]!r}); skipped")
        else:
            names[filename] = image_id
            images[image_id] = entry
            continue
        problems.append(Problem(source, problem))
        skipped.add(image_id)
    return images, skipped


def _numbers(values):
    """Whether every value is a usable number (``via.number_problem``)."""
    return all(via.number_problem(value, "") is None for value in values)


def compressed_counts(text):
    """The run lengths a compressed RLE string encodes (COCO's 6-bit variant of LEB128:
    characters "0" to "o", runs after the second stored as differences).

    Raises:
        ValueError: a character out of range or a number cut short.
    """
    counts, position = [], 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position == len(text):
                raise ValueError("the last run length is cut short")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"{text[position]!r} is not an RLE character")
            value |= (code & 0x1F) << shift
            more = code & 0x20
            position, shift = position + 1, shift + 5
            if not more and code & 0x10:
                value -= 1 << shift
        counts.append(value + (counts[-2] if len(counts) > 2 else 0))
    return counts


def _counts_error(counts, height, width):
    """Why run lengths cannot be an RLE of a height x width image, or None."""
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return "RLE counts must be non-negative integers"
    if sum(counts) != height * width:
        return (f"RLE counts add up to {sum(counts)} pixels, not the image's "
                f"{height} x {width} = {height * width}")
    return None


def segmentation_error(segmentation, height, width):
    """Why a ``segmentation`` cannot be a mask of a height x width image, or None.

    Polygons need at least 3 points (6 numbers, an even count), finite and
    within an image size of the image (pycocotools walks every pixel step of
    an edge, so a coordinate of 1e9 would take minutes and gigabytes);
    an RLE needs ``size`` [height, width] and ``counts`` (a compressed string
    or a list) of run lengths adding up to height * width.
    """
    if segmentation is None or segmentation == [] or segmentation == {}:
        return ("has no segmentation, only a box: Mask R-CNN learns from masks, so draw a "
                "polygon or a mask in the annotation tool")
    if isinstance(segmentation, list):
        if _numbers(segmentation):
            return (f"segmentation is a flat list of {len(segmentation)} numbers; it must be "
                    f"{SEGMENTATION_HELP}")
        for index, polygon in enumerate(segmentation):
            if not isinstance(polygon, list):
                return (f"polygon {index} is {_short(polygon, 40)}, not a list of numbers; "
                        f"segmentation must be {SEGMENTATION_HELP}")
            for position, value in enumerate(polygon):
                problem = via.number_problem(value, f"polygon {index}[{position}]")
                if problem:
                    return problem
            if len(polygon) % 2 or len(polygon) < 6:
                return (f"polygon {index} has {len(polygon)} numbers; a polygon is x, y pairs "
                        "of at least 3 points")
            xs, ys = polygon[0::2], polygon[1::2]
            if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height \
                    or max(ys) > 2 * height:
                return (f"polygon {index} reaches more than an image size outside the "
                        f"{width}x{height} image: a coordinate is wrong")
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not isinstance(size, list) or size != [height, width]:
            return (f"RLE size {size!r} is not the image's [height, width] [{height}, {width}]; "
                    "segmentation must be " + SEGMENTATION_HELP)
        if isinstance(counts, list):
            return _counts_error(counts, height, width)
        if not isinstance(counts, str):
            return (f"RLE counts is a {type(counts).__name__}; it must be a string (compressed) "
                    "or a list of run lengths")
        try:
            return _counts_error(compressed_counts(counts), height, width)
        except ValueError as error:
            return f"RLE counts are not a compressed RLE ({error})"
    return f"segmentation is a {type(segmentation).__name__}; it must be {SEGMENTATION_HELP}"


def segmentation_rle(segmentation, height, width):
    """A checked ``segmentation`` (see :func:`segmentation_error`) as a compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": [height, width], "counts": segmentation["counts"].encode("ascii")}


def _reaches_outside(segmentation, height, width):
    if not isinstance(segmentation, list):
        return False
    xs = [x for polygon in segmentation for x in polygon[0::2]]
    ys = [y for polygon in segmentation for y in polygon[1::2]]
    return min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height


def _region(annotation, entry, category_name, image_path):
    """(CocoRegion or None, [Problem]) of a well-placed annotation of a known image and category."""
    what = f"annotation {annotation.get('id', '(no id)')!r}"
    height, width = int(entry["height"]), int(entry["width"])
    crowd = annotation.get("iscrowd", 0)
    if crowd not in (0, 1):
        return None, [Problem(image_path, f"{what}: iscrowd is {crowd!r}, not 0 or 1; skipped")]
    segmentation = annotation.get("segmentation")
    error = segmentation_error(segmentation, height, width)
    if error:
        return None, [Problem(image_path, f"{what}: {error}; skipped")]
    rle = segmentation_rle(segmentation, height, width)
    problems = []
    if _reaches_outside(segmentation, height, width):
        problems.append(Problem(image_path, f"{what} reaches outside the {width}x{height} image; "
                                            "clipped to it"))
    if not mask_utils.area(rle):
        return None, problems + [Problem(image_path, f"{what} covers no pixel of the image; "
                                                     "skipped")]
    region = CocoRegion(annotation.get("id"), annotation["category_id"], category_name,
                        bool(crowd), rle)
    return region, problems


# ---------------------------------------------------------------------------
# Image files


def resolve_image(image_dir, filename, source):
    """Path of a ``file_name`` inside ``image_dir``, or in its ``images/`` folder (CVAT's
    export) when it is there and not beside the others.

    Raises:
        via.ViaError: the name is absolute or climbs out with ``..``.
    """
    path = via.image_path(image_dir, filename, source)
    in_images = via.image_path(os.path.join(image_dir, IMAGES_FOLDER), filename, source)
    return in_images if not os.path.isfile(path) and os.path.isfile(in_images) else path


def _frame(image, entry, image_dir, follow_links, decode):
    """The EXIF orientation to apply to masks in the file's frame, after checking the image
    (``images.check_image``); sets the image's displayed height and width.

    Raises:
        InputError: the image file is refused or unreadable, or its size is
            neither the file's width x height nor those turned a quarter
            (EXIF orientations 5 to 8 that the annotation tool ignored).
    """
    height, width = int(entry["height"]), int(entry["width"])
    shown_height, shown_width, orientation = image_files.check_image(
        image.path, image_dir, follow_links, decode=decode)
    image.height, image.width = shown_height, shown_width
    if (height, width) == (shown_height, shown_width):
        return 1
    if orientation in image_files.TRANSPOSING_ORIENTATIONS and \
            (height, width) == (shown_width, shown_height):
        return orientation
    raise CocoError(f"{image.path}: the COCO file gives its size as {width}x{height} but the "
                    f"image is {shown_width}x{shown_height}. Export the annotations of the "
                    "images as they are now.")


def image_masks(image):
    """Masks of a loaded :class:`CocoImage`'s regions: bool [height, width, N], in the
    displayed frame."""
    if not image.regions:
        return np.zeros((image.height, image.width, 0), dtype=bool)
    masks = decode([region.rle for region in image.regions])
    return np.ascontiguousarray(ORIENT[image.orientation](masks)).astype(bool)


def decode(rles):
    """``pycocotools.mask.decode``: uint8 [H, W] of an RLE, [H, W, N] of a list of N.

    pycocotools 2.0 warns under numpy 2 that its array wrapper's ``__array__`` lacks a
    ``copy`` argument; the arrays are right, so that DeprecationWarning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(rles)


# ---------------------------------------------------------------------------
# Loading


def load_coco(annotation_path, image_dir=None, class_names=None, keep_negatives=False,
              follow_links=False, decode=True, max_json_bytes=None):
    """Load a COCO instance file and the sizes of its images.

    Args:
        annotation_path: the COCO JSON file.
        image_dir: the folder ``file_name`` is relative to (or to its
            ``images/`` folder); default: the annotation file's folder.
        class_names: the classes to keep, in order; default: the names of
            the categories the annotations use, in category-id order.
            Annotations of other categories are reported and skipped.
        keep_negatives: keep images without a (non-crowd) annotation, as
            negatives, instead of skipping them like the original.
        follow_links: accept image files (and the annotation file) that are
            symbolic links out of their folder (see ``via.load_via``).
        decode: decode every image to the end (``images.check_image``);
            False reads the headers only.
        max_json_bytes: the annotation file's size limit (default
            ``files.MAX_JSON_BYTES``).

    Returns:
        :class:`CocoAnnotations`. Each image has ``path``, ``height`` and
        ``width`` (as displayed) and its usable regions. Images that are
        missing, refused, unreadable or of another size than the file says
        are left out and listed in ``problems``.

    Raises:
        CocoError: unreadable or malformed file, categories without id or
            name, two images or categories with one id, or every image
            missing.
        via.ViaError: a ``file_name`` outside ``image_dir``.
    """
    source = str(annotation_path)
    image_dir = os.path.dirname(os.path.abspath(source)) if image_dir is None else str(image_dir)
    data = read_coco(source, follow_links, max_json_bytes)
    problems = []
    categories = _categories(data["categories"], source)
    entries, skipped = _images(data["images"], source, problems)
    images, unusable, missing = {}, set(skipped), []
    for image_id, entry in entries.items():
        image = CocoImage(image_id, entry["file_name"],
                          path=resolve_image(image_dir, entry["file_name"], source))
        if not os.path.lexists(image.path):
            missing.append(image.filename)
            problems.append(Problem(image.path, "image file is missing"))
            unusable.add(image_id)
            continue
        try:
            image.orientation = _frame(image, entry, image_dir, follow_links, decode)
        except InputError as error:
            message = str(error).removeprefix(f"{image.path}: ").rstrip(".")
            problems.append(Problem(image.path, f"{message}; skipped"))
            unusable.add(image_id)
            continue
        images[image_id] = image
    if entries and len(missing) == len(entries):
        raise CocoError(f"{source}: none of its {len(entries)} image files are in {image_dir} "
                        f"(first: {missing[0]}). Put the images next to the annotation file.")
    kept_annotations = []
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            problems.append(Problem(source, f"annotations[{index}] is a "
                                            f"{type(annotation).__name__}, not an object; skipped"))
            continue
        what = f"annotation {annotation.get('id', '(no id)')!r}"
        image_id = annotation.get("image_id")
        image = images.get(image_id) if _is_id(image_id) else None
        if image is None and _is_id(image_id) and image_id in unusable:
            continue  # its image is reported already
        if image is None:
            problems.append(Problem(source, f"{what}: image_id {image_id!r} is not among the "
                                            "images; skipped"))
            continue
        category_id = annotation.get("category_id")
        if not _is_id(category_id) or category_id not in categories:
            known = ", ".join(map(repr, categories))
            problems.append(Problem(source, f"{what} ({image.filename}): category_id "
                                            f"{category_id!r} is not among the categories "
                                            f"({known}); skipped"))
            continue
        region, region_problems = _region(annotation, entries[image.image_id],
                                          categories[category_id], image.path)
        problems += region_problems
        if region:
            image.regions.append(region)
            kept_annotations.append(_complete(annotation, region))
    class_names = _label_regions(images.values(), class_names, source, problems)
    usable = [image for image in images.values()
              if keep_negatives or any(not region.crowd for region in image.regions)]
    dataset = {key: value for key, value in data.items()
               if key not in ("images", "annotations", "categories")}
    dataset.update(images=[entries[image_id] for image_id in images],
                   annotations=kept_annotations, categories=list(data["categories"]))
    return CocoAnnotations(usable, class_names, categories, problems, dataset)


def _complete(annotation, region):
    """An annotation with the ``iscrowd``, ``area`` and ``bbox`` COCOeval reads: the
    file's when well-formed, else computed from its mask."""
    area, bbox = annotation.get("area"), annotation.get("bbox")
    if not (isinstance(area, (int, float)) and _numbers([area])):
        area = float(mask_utils.area(region.rle))
    if not (isinstance(bbox, list) and len(bbox) == 4 and _numbers(bbox)):
        bbox = mask_utils.toBbox(region.rle).tolist()
    return dict(annotation, iscrowd=int(region.crowd), area=area, bbox=bbox)


def _label_regions(images, class_names, source, problems):
    """Keep the regions whose label is one of ``class_names`` (default: every label, in
    category-id order); returns the class names."""
    if class_names is None:
        labels = {}
        for region in sorted((r for image in images for r in image.regions),
                             key=lambda r: (str(type(r.category_id)), r.category_id)):
            labels.setdefault(region.label)
        class_names = list(labels)
    class_names = list(class_names)
    for image in images:
        kept = []
        for region in image.regions:
            if region.label in class_names:
                kept.append(region)
            else:
                problems.append(Problem(source, f"{image.filename}: annotation "
                                                f"{region.annotation_id!r} has class "
                                                f"{region.label!r}, not one of "
                                                f"{', '.join(class_names)}; skipped"))
        image.regions = kept
    return class_names
