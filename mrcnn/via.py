"""Read annotations made with the VGG Image Annotator (VIA).

Supported files:

* VIA 1.x exports: ``{key: {"filename", "size", "regions": {"0": region, ...},
  "file_attributes"}}``.
* VIA 2.x exports (``regions`` is a list) and VIA 2.x project files (the same
  entries wrapped in ``_via_img_metadata``).
* VIA 3.x project files: ``{"project", "config", "attribute", "file", "view",
  "metadata"}`` where each metadata item holds ``xy = [shape_id, coords...]``
  and ``av = {attribute_id: value}``.

Region shapes polygon, polyline (closed like a polygon, as the original
balloon sample did), rect, circle and ellipse become masks; point and line
regions have no area and are reported and skipped. Coordinates are VIA's:
pixels of the image as the browser showed it, that is after its EXIF
orientation is applied, x to the right and y down. Shapes reaching outside the
image are clipped to it.

Every field of a region is validated before use: coordinates must be JSON
numbers (not text, not booleans), finite and within ``COORDINATE_LIMIT``
pixels; radii, widths and heights positive; polygons need as many x as y
coordinates, at least 3 points. A region that fails is reported and skipped.
Image files are checked by ``images.check_image`` (regular files inside their
folder, readable header, pixel limit, pixel data decoded to the end).

Everything that is odd but not fatal (missing or unreadable image files,
points outside the image, regions of the wrong type or without a class, ...)
is collected as :class:`Problem` items ``(file, message)``; what makes loading
impossible raises :class:`ViaError` with a message that names the file and
the fix. Nothing else escapes, whatever the file holds.
"""

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import skimage.draw

from mrcnn import files
from mrcnn.errors import InputError
from mrcnn.images import check_image

ANNOTATION_FILE = "via_region_data.json"
AREA_SHAPES = ("polygon", "polyline", "rect", "circle", "ellipse")
NO_AREA_SHAPES = ("point", "line")
VIA3_SHAPES = {1: "point", 2: "rect", 3: "circle", 4: "ellipse", 5: "line",
               6: "polyline", 7: "polygon", 8: "extreme_rectangle", 9: "extreme_circle"}
VIA3_IMAGE_FILE_TYPE = 2
# The number of coordinates after the shape id of each VIA 3.x shape.
VIA3_COORDINATE_COUNTS = {"point": (2,), "rect": (4,), "circle": (3,), "ellipse": (4, 5)}
# The fields of each shape (VIA 2.x shape_attributes) and whether they must be
# positive; theta, the ellipse's rotation, may be left out (0).
SHAPE_FIELDS = {
    "rect": (("x", False), ("y", False), ("width", True), ("height", True)),
    "circle": (("cx", False), ("cy", False), ("r", True)),
    "ellipse": (("cx", False), ("cy", False), ("rx", True), ("ry", True), ("theta", False)),
    "point": (("cx", False), ("cy", False)),
}
OPTIONAL_FIELDS = ("theta",)
POLYGON_FIELDS = ("all_points_x", "all_points_y")
# Coordinates and sizes beyond this many pixels are refused: no photo is that large.
COORDINATE_LIMIT = 1e6


class ViaError(InputError):
    """Annotations that cannot be loaded; the message names the file and the fix."""


class ViaWarning(UserWarning):
    """Annotations loaded with problems (e.g. missing image files)."""


class Problem(NamedTuple):
    """One problem found in a dataset: the file it concerns and what is wrong."""

    file: str
    message: str

    def __str__(self):
        return f"{self.file}: {self.message}"


@dataclass
class Region:
    """One annotated region.

    Attributes:
        shape: VIA shape name: polygon, polyline, rect, circle, ellipse, point, ...
        geometry: the VIA 2.x ``shape_attributes`` without ``name``, whatever the
            file's version: ``all_points_x``/``all_points_y`` (polygon, polyline),
            ``x, y, width, height`` (rect), ``cx, cy, r`` (circle),
            ``cx, cy, rx, ry, theta`` (ellipse, theta in radians, clockwise on
            screen), ``cx, cy`` (point). Pixels, x right, y down.
        attributes: region attributes, name -> value (str, or a dict
            ``{option: True}`` for VIA 2.x checkboxes).
        label: class name, set by :func:`load_via` once classes are resolved.
    """

    shape: str
    geometry: dict
    attributes: dict = field(default_factory=dict)
    label: str = None


@dataclass
class ViaImage:
    """One image of an export and its regions.

    ``height`` and ``width`` are those of the image as displayed, after its
    EXIF orientation is applied: the frame the regions are drawn in.
    """

    filename: str
    regions: list
    path: str = None
    height: int = None
    width: int = None


@dataclass
class ViaAnnotations:
    """Result of :func:`load_via`: usable images, class names, problems found,
    and the region attribute that named the classes (None: no attribute)."""

    images: list
    class_names: list
    problems: list
    version: str
    class_attribute: str = None


# ---------------------------------------------------------------------------
# Reading the JSON of any VIA version


def read_json(path, follow_links=False):
    """Parse a VIA file: ``files.read_json`` with ViaError and VIA's advice."""
    return files.read_json(path, ViaError, "VIA", follow_links)


def parse_via(data, source):
    """Images and regions of a parsed VIA file of any version.

    Args:
        data: the parsed JSON.
        source: the file name, for messages.

    Returns:
        (version, images, problems): version is "1.x", "2.x" or "3.x"; images is
        a list of :class:`ViaImage` without path or size; problems a list of
        :class:`Problem` for entries and regions that could not be read
        (skipped).

    Raises:
        ViaError: the file is not a VIA file, or its top-level structure is
            broken.
    """
    if isinstance(data, dict) and "_via_img_metadata" in data:
        entries = _mapping(data["_via_img_metadata"], "_via_img_metadata", source)
        images, problems = _parse_image_entries(entries, source)
        return "2.x", images, problems
    if isinstance(data, dict) and {"project", "file", "metadata"} <= set(data):
        images, problems = _parse_via3(data, source)
        return "3.x", images, problems
    if isinstance(data, dict) and (not data or any(_is_image_entry(e) for e in data.values())):
        images, problems = _parse_image_entries(data, source)
        regions = [e.get("regions") for e in data.values() if _is_image_entry(e)]
        version = "2.x" if any(isinstance(r, list) for r in regions) else "1.x"
        return version, images, problems
    raise ViaError(
        f"{source}: not a VIA annotation file. Expected a VIA 1.x/2.x export "
        "({key: {filename, regions}}), a VIA 2.x project (_via_img_metadata) or a VIA 3.x "
        "project (project, file, metadata). In VIA, use Annotation > Export as JSON.")


def _is_image_entry(entry):
    return isinstance(entry, dict) and "filename" in entry


def _mapping(value, name, source):
    """``value`` if it is a JSON object ({} for null); ViaError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ViaError(f"{source}: '{name}' is {_short(value)}, not an object. Export the "
                       "annotations from VIA again.")
    return value


def _valid_filename(filename):
    return isinstance(filename, str) and filename.strip() and "\0" not in filename


def _parse_image_entries(entries, source):
    """VIA 1.x/2.x entries ``{key: {filename, regions}}`` -> images, problems."""
    images, problems = [], []
    for key, entry in entries.items():
        if not isinstance(entry, dict):
            problems.append(Problem(source, f"entry {_short(key)} is {_short(entry)}, not an "
                                            "image entry; skipped"))
            continue
        filename = entry.get("filename")
        if not _valid_filename(filename):
            problems.append(Problem(source, f"an entry has no valid filename ({_short(entry)}); "
                                            "skipped"))
            continue
        raw_regions = entry.get("regions")
        if isinstance(raw_regions, dict):
            raw_regions = list(raw_regions.values())
        elif raw_regions is None:
            raw_regions = []
        elif not isinstance(raw_regions, list):
            problems.append(Problem(source, f"{filename}: 'regions' is {_short(raw_regions)}, "
                                            "not a list; its regions are skipped"))
            raw_regions = []
        regions = []
        for index, raw in enumerate(raw_regions):
            region, error = _parse_region(raw)
            if error:
                problems.append(Problem(source, f"{filename}: region {index} {error}; skipped"))
            else:
                regions.append(region)
        images.append(ViaImage(filename, regions))
    return _merge_duplicates(images, source, problems), problems


def _parse_region(raw):
    """(Region, None) of a VIA 1.x/2.x region, or (None, why it cannot be read)."""
    if not isinstance(raw, dict):
        return None, f"is {_short(raw)}, not an object"
    shape_attributes = raw.get("shape_attributes")
    if not isinstance(shape_attributes, dict):
        return None, f"has shape_attributes {_short(shape_attributes)}, not an object"
    shape = shape_attributes.get("name")
    if not isinstance(shape, str) or not shape:
        return None, "has no shape name"
    attributes = raw.get("region_attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        return None, f"has region_attributes {_short(attributes)}, not an object"
    geometry = {key: value for key, value in shape_attributes.items() if key != "name"}
    return Region(shape, geometry, dict(attributes)), None


def _parse_via3(data, source):
    """VIA 3.x project -> images, problems."""
    attributes = _mapping(data.get("attribute"), "attribute", source)
    views = _mapping(data.get("view"), "view", source)
    images, problems = {}, []
    for fid, entry in _mapping(data.get("file"), "file", source).items():
        if not isinstance(entry, dict):
            problems.append(Problem(source, f"file {_short(fid)} is {_short(entry)}, not an "
                                            "object; skipped"))
            continue
        if entry.get("type", VIA3_IMAGE_FILE_TYPE) != VIA3_IMAGE_FILE_TYPE:
            continue
        filename = entry.get("fname") or entry.get("src")
        if not _valid_filename(filename):
            problems.append(Problem(source, f"file {_short(fid)} has no valid fname; skipped"))
            continue
        images[str(fid)] = ViaImage(filename, [])
    for metadata_id, item in _mapping(data.get("metadata"), "metadata", source).items():
        region, error = _parse_via3_region(item, views, images, attributes)
        if error:
            problems.append(Problem(source, f"metadata {_short(metadata_id)} {error}; skipped"))
        elif region is not None:
            region[0].regions.append(region[1])
    return _merge_duplicates(list(images.values()), source, problems), problems


def _parse_via3_region(item, views, images, attributes):
    """((ViaImage, Region), None) of a VIA 3.x metadata item, (None, None) for one
    without a spatial region, or (None, why it cannot be read)."""
    if not isinstance(item, dict):
        return None, f"is {_short(item)}, not an object"
    xy = item.get("xy")
    if not xy or item.get("z"):
        return None, None  # file-level or temporal metadata: no spatial region
    if not isinstance(xy, list):
        return None, f"has xy {_short(xy)}, not a list"
    view = views.get(str(item.get("vid")))
    fid_list = view.get("fid_list") if isinstance(view, dict) else None
    image = images.get(str(fid_list[0])) if isinstance(fid_list, list) and fid_list else None
    if image is None:
        return None, f"refers to view {_short(item.get('vid'))} that holds no image"
    shape = _via3_shape(xy[0])
    coords = xy[1:]
    expected = VIA3_COORDINATE_COUNTS.get(shape)
    if expected and len(coords) not in expected:
        return None, (f"is a {shape} with {len(coords)} coordinates "
                      f"(expected {' or '.join(map(str, expected))})")
    av = item.get("av")
    if av is None:
        av = {}
    if not isinstance(av, dict):
        return None, f"has av {_short(av)}, not an object"
    region_attributes = {}
    for attribute_id, value in av.items():
        definition = attributes.get(str(attribute_id))
        definition = definition if isinstance(definition, dict) else {}
        options = definition.get("options")
        options = options if isinstance(options, dict) else {}
        name = definition.get("aname")
        name = name if isinstance(name, str) and name else str(attribute_id)
        region_attributes[name] = options.get(value, value) if isinstance(value, str) else value
    return (image, Region(shape, _via3_geometry(shape, coords), region_attributes)), None


def _via3_shape(shape_id):
    """The shape name of a VIA 3.x shape id, e.g. 7 -> "polygon"."""
    if isinstance(shape_id, float) and shape_id.is_integer():
        shape_id = int(shape_id)
    if isinstance(shape_id, int) and not isinstance(shape_id, bool) and shape_id in VIA3_SHAPES:
        return VIA3_SHAPES[shape_id]
    return f"shape id {_short(shape_id)}"


def _via3_geometry(shape, coords):
    """VIA 3.x coordinates of a shape -> VIA 2.x shape attributes (values unchecked)."""
    names = {"rect": ("x", "y", "width", "height"), "circle": ("cx", "cy", "r"),
             "ellipse": ("cx", "cy", "rx", "ry", "theta"), "point": ("cx", "cy")}.get(shape)
    if names:
        return dict(zip(names, coords))
    return {"all_points_x": coords[0::2], "all_points_y": coords[1::2]}


def _merge_duplicates(images, source, problems):
    """Merge entries that name the same file, reporting each duplicate. A region found in
    both (the same shape, geometry and attributes) is kept once, not made two instances."""
    merged = {}
    for image in images:
        if image.filename in merged:
            regions = merged[image.filename].regions
            new = [region for region in image.regions if region not in regions]
            repeated = len(image.regions) - len(new)
            problems.append(Problem(source, f"{image.filename} is listed more than once; "
                                            "its regions are merged" + (
                                                f" ({repeated} listed again kept once)"
                                                if repeated else "")))
            regions.extend(new)
        else:
            merged[image.filename] = image
    return list(merged.values())


def _short(value, limit=80):
    """``value`` as short JSON text, for messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------
# Image files


def image_path(image_dir, filename, source):
    """Path of an export's ``filename`` inside ``image_dir``.

    Raises:
        ViaError: the filename is absolute or climbs out with ``..``: it must
            name a file inside the folder and is never read.
    """
    parts = filename.replace("\\", "/").split("/")
    absolute = os.path.isabs(filename) or filename.startswith(("/", "\\")) or ":" in parts[0]
    if absolute or ".." in parts:
        raise ViaError(
            f"{source}: image filename {filename!r} is absolute or climbs out of "
            f"{image_dir} with '..'. It must name a file inside that folder: "
            "copy the image there and edit the filename to its bare name.")
    return os.path.join(image_dir, *[p for p in parts if p not in ("", ".")])


# ---------------------------------------------------------------------------
# Geometry


def shape_points(region):
    """Vertices of a polygon or polyline region: float arrays (xs, ys).

    The geometry of every function below must have passed ``geometry_error``.
    """
    xs = np.asarray(region.geometry.get("all_points_x") or [], dtype=np.float64)
    ys = np.asarray(region.geometry.get("all_points_y") or [], dtype=np.float64)
    return xs, ys


def shape_extent(region):
    """Bounding box (x1, y1, x2, y2) of a region's shape, in pixels (floats)."""
    g = region.geometry
    if region.shape in ("polygon", "polyline"):
        xs, ys = shape_points(region)
        return xs.min(), ys.min(), xs.max(), ys.max()
    if region.shape == "rect":
        return g["x"], g["y"], g["x"] + g["width"], g["y"] + g["height"]
    if region.shape == "circle":
        return g["cx"] - g["r"], g["cy"] - g["r"], g["cx"] + g["r"], g["cy"] + g["r"]
    theta = g.get("theta", 0.0)
    half_w = np.hypot(g["rx"] * np.cos(theta), g["ry"] * np.sin(theta))
    half_h = np.hypot(g["rx"] * np.sin(theta), g["ry"] * np.cos(theta))
    return g["cx"] - half_w, g["cy"] - half_h, g["cx"] + half_w, g["cy"] + half_h


def number_problem(value, name, positive=False, limit=COORDINATE_LIMIT):
    """Why a JSON value is not a usable coordinate or size, or None when it is.

    A usable value is a JSON number (int or float; not a bool, not text),
    finite, of magnitude at most ``limit``, and > 0 when ``positive``.

    Example: ``number_problem("40", "x")`` -> ``'x is "40", not a number'``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} is {_short(value)}, not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} is {value}, not a finite number"
    if abs(value) > limit:
        try:
            text = f"{value:g}"
        except OverflowError:
            text = "an integer too large for a float"
        return f"{name} is {text}, beyond the limit of {limit:g}"
    if positive and value <= 0:
        return f"{name} is {value:g}, not positive"
    return None


def geometry_error(region):
    """Why a region cannot become a mask, or None when it can.

    Checks each field of the shape (``SHAPE_FIELDS``, ``POLYGON_FIELDS``) with
    ``number_problem``: types, finiteness, range, positive sizes, the lengths
    of the point lists.
    """
    shape, g = region.shape, region.geometry
    if shape in NO_AREA_SHAPES:
        return f"{shape} region has no area; skipped (use polygon, rect, circle or ellipse)"
    if shape not in AREA_SHAPES:
        return f"unknown shape {shape!r}; skipped (use polygon, rect, circle or ellipse)"
    if shape in ("polygon", "polyline"):
        return _points_error(shape, g)
    missing = [name for name, _ in SHAPE_FIELDS[shape]
               if name not in g and name not in OPTIONAL_FIELDS]
    if missing:
        return f"{shape} region lacks {', '.join(missing)} ({_short(g)}); skipped"
    for name, positive in SHAPE_FIELDS[shape]:
        problem = number_problem(g[name], name, positive) if name in g else None
        if problem:
            return f"{problem}; skipped"
    return None


def _points_error(shape, geometry):
    """Why a polygon's or polyline's point lists cannot make a mask, or None."""
    lists = [geometry.get(name) for name in POLYGON_FIELDS]
    for name, values in zip(POLYGON_FIELDS, lists):
        if not isinstance(values, list):
            return f"{name} is {_short(values)}, not a list of numbers; skipped"
    xs, ys = lists
    if len(xs) != len(ys):
        return f"{shape} region has {len(xs)} x but {len(ys)} y coordinates; skipped"
    if len(xs) < 3:
        return f"{shape} region has {len(xs)} points, fewer than 3; skipped"
    for name, values in zip(POLYGON_FIELDS, lists):
        for index, value in enumerate(values):
            problem = number_problem(value, f"{name}[{index}]")
            if problem:
                return f"{problem}; skipped"
    return None


def rasterize(region, height, width):
    """Mask of a region in its image.

    Args:
        region: a :class:`Region` whose shape is one of AREA_SHAPES.
        height, width: size of the displayed image (after EXIF orientation).

    Returns:
        bool array [height, width]; the parts of the shape outside the image
        are clipped. Polygon pixels are those whose centre lies inside or on
        the outline (skimage.draw.polygon); a rect covers columns
        x .. x + width - 1 and rows y .. y + height - 1.
    """
    mask = np.zeros((height, width), dtype=bool)
    g = region.geometry
    if region.shape in ("polygon", "polyline"):
        xs, ys = shape_points(region)
        rows, cols = skimage.draw.polygon(ys, xs, shape=(height, width))
    elif region.shape == "rect":
        y1, x1 = int(round(g["y"])), int(round(g["x"]))
        y2, x2 = int(round(g["y"] + g["height"])), int(round(g["x"] + g["width"]))
        mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
        return mask
    elif region.shape == "circle":
        rows, cols = skimage.draw.disk((g["cy"], g["cx"]), g["r"], shape=(height, width))
    elif region.shape == "ellipse":
        # VIA's theta turns clockwise on screen (y down); skimage's rotation
        # turns the other way.
        rows, cols = skimage.draw.ellipse(g["cy"], g["cx"], g["ry"], g["rx"], shape=(height, width),
                                          rotation=-float(g.get("theta", 0.0)))
    else:
        raise ValueError(f"{region.shape} regions have no area")
    mask[rows, cols] = True
    return mask


def image_masks(image):
    """Masks of all regions of a loaded :class:`ViaImage`: bool [H, W, N]."""
    masks = np.zeros((image.height, image.width, len(image.regions)), dtype=bool)
    for i, region in enumerate(image.regions):
        masks[:, :, i] = rasterize(region, image.height, image.width)
    return masks


# ---------------------------------------------------------------------------
# Classes


def class_value(attributes, class_attribute):
    """Class name given by a region's attribute, or None.

    Text, dropdown and radio values are strings (an integer is taken as its
    text); a VIA 2.x checkbox is a dict ``{option: True}`` and names a class
    when exactly one option is ticked. Other values name no class.
    """
    value = attributes.get(class_attribute)
    if isinstance(value, dict):
        ticked = [option for option, on in value.items() if on]
        value = ticked[0] if len(ticked) == 1 else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def find_class_attribute(images, source):
    """The only region attribute holding text values, None if there is none.

    Raises:
        ViaError: several attributes hold text, so which one names the class
            must be given.
    """
    names = sorted({name for image in images for region in image.regions
                    for name in region.attributes if class_value(region.attributes, name)})
    if len(names) > 1:
        raise ViaError(
            f"{source}: regions have several text attributes ({', '.join(names)}), so the "
            "class attribute is ambiguous. Say which one names the class: "
            "class_attribute=... (pikachu.py: --class-attribute).")
    return names[0] if names else None


def assign_labels(images, class_attribute, class_names, default_class, source):
    """Set each region's label; drop regions without a known class.

    Returns:
        (class_names, problems): the class names (given, else discovered and
        sorted, else ``[default_class]``) and a Problem per dropped region.
    """
    values = [class_value(r.attributes, class_attribute) if class_attribute else None
              for image in images for r in image.regions]
    if class_names is None:
        class_names = sorted({v for v in values if v}) or [default_class]
    class_names = list(class_names)
    problems = []
    for image in images:
        kept = []
        for index, region in enumerate(image.regions):
            value = class_value(region.attributes, class_attribute) if class_attribute else None
            if value in class_names:
                region.label = value
            elif value is None and len(class_names) == 1:
                region.label = class_names[0]
            elif value is None:
                state = "an empty" if class_attribute in region.attributes else "no"
                problems.append(Problem(source, f"{image.filename}: region {index} has {state} "
                                                f"'{class_attribute}' attribute; give it one of "
                                                f"{', '.join(class_names)}. Skipped"))
                continue
            else:
                known = ", ".join(class_names)
                problems.append(Problem(source, f"{image.filename}: region {index} has unknown "
                                                f"class {value!r} (known: {known}); skipped"))
                continue
            kept.append(region)
        image.regions = kept
    return class_names, problems


# ---------------------------------------------------------------------------
# Loading


def load_via(annotation_path, image_dir=None, class_attribute=None, class_names=None,
             default_class="object", keep_negatives=False, warn=True, follow_links=False,
             decode=True):
    """Load a VIA file and the sizes of its images.

    Args:
        annotation_path: VIA 1.x/2.x export or VIA 2.x/3.x project file.
        image_dir: folder of the images; default: the annotation file's folder.
        class_attribute: region attribute that names the class; default: the
            only attribute with text values, if any.
        class_names: the classes to keep, in order; default: the values found,
            sorted. Regions of other classes are reported and skipped.
        default_class: the class name when no region names one.
        keep_negatives: keep images without regions (as negatives) instead of
            skipping them like the original.
        warn: issue a ViaWarning listing the missing image files.
        follow_links: accept image files (and an annotation file) that are
            symbolic links to files outside their folder; by default they are
            reported and skipped.
        decode: decode every image to the end, so that a truncated or corrupt
            file is reported and skipped now rather than failing training
            (``images.check_image``); False reads the headers only.

    Returns:
        :class:`ViaAnnotations`. Each image has ``path``, ``height`` and
        ``width`` (as displayed, EXIF orientation applied) and its usable
        regions, each with a ``label`` from ``class_names``. Images that are
        missing, refused (not a regular file, a link out of ``image_dir``) or
        unreadable are left out and listed in ``problems``.

    Raises:
        ViaError: unreadable or malformed file, ambiguous or absent class
            attribute, a filename outside ``image_dir``, or every image missing.
    """
    source = str(annotation_path)
    image_dir = os.path.dirname(os.path.abspath(source)) if image_dir is None else str(image_dir)
    version, images, problems = parse_via(read_json(source, follow_links), source)
    if class_attribute is None:
        class_attribute = find_class_attribute(images, source)
    elif images and not any(class_value(r.attributes, class_attribute)
                            for image in images for r in image.regions):
        raise ViaError(f"{source}: no region has a '{class_attribute}' attribute. "
                       "Check the class attribute's name (pikachu.py: --class-attribute).")
    class_names, label_problems = assign_labels(images, class_attribute, class_names,
                                                default_class, source)
    problems += label_problems

    usable, missing = [], []
    for image in images:
        image.path = image_path(image_dir, image.filename, source)
        if not os.path.lexists(image.path):
            missing.append(image.filename)
            problems.append(Problem(image.path, "image file is missing"))
            continue
        try:
            image.height, image.width, _ = check_image(image.path, image_dir, follow_links,
                                                       decode=decode)
        except InputError as error:
            problems.append(Problem(image.path, _skipped(error, image.path)))
            continue
        image.regions, region_problems = _usable_regions(image)
        problems += region_problems
        if image.regions or keep_negatives:
            usable.append(image)
    if images and len(missing) == len(images):
        raise ViaError(f"{source}: none of its {len(images)} image files are in {image_dir} "
                       f"(first: {missing[0]}). Put the images next to the annotation file.")
    if missing and warn:
        warnings.warn(f"{source}: {len(missing)} image file(s) missing from {image_dir}, "
                      f"skipped: {', '.join(missing)}", ViaWarning, stacklevel=2)
    return ViaAnnotations(usable, class_names, problems, version, class_attribute)


def _skipped(error, path):
    """The message of an error about ``path``, without the path, ending in "; skipped"."""
    return str(error).removeprefix(f"{path}: ").rstrip(".") + "; skipped"


def _usable_regions(image):
    """Regions of an image that give a non-empty mask, and a Problem per other one."""
    kept, problems = [], []
    for index, region in enumerate(image.regions):
        what = f"region {index} ({region.shape})"
        error = geometry_error(region)
        if error:
            problems.append(Problem(image.path, f"{what}: {error}"))
            continue
        if not rasterize(region, image.height, image.width).any():
            problems.append(Problem(image.path, f"{what} covers no pixel of the image; skipped"))
            continue
        x1, y1, x2, y2 = shape_extent(region)
        if x1 < 0 or y1 < 0 or x2 > image.width or y2 > image.height:
            problems.append(Problem(image.path, f"{what} reaches outside the {image.width}x"
                                                f"{image.height} image; clipped to it"))
        kept.append(region)
    return kept, problems


# ---------------------------------------------------------------------------
# Checking a dataset folder


def check_dataset(dataset_dir, subsets=("train", "val"), optional_subsets=("test",),
                  annotation_name=ANNOTATION_FILE, class_attribute=None, class_names=None,
                  default_class="object", follow_links=False):
    """Every problem of a dataset folder, before training: see
    :func:`mrcnn.datasets.check_dataset`, which also checks COCO-format subsets."""
    from mrcnn import datasets  # datasets builds on this module

    return datasets.check_dataset(dataset_dir, subsets, optional_subsets, class_attribute,
                                  class_names, default_class, follow_links,
                                  via_name=annotation_name)


def check_image_file(path, digests, folder=None, follow_links=False, decode=True):
    """(problems, readable) of one image file of a dataset folder, for
    ``datasets.check_dataset``.

    Problems: refused (``files.regular_file``), unreadable, truncated or too
    large (``images.check_image``), EXIF-rotated. A readable file's content
    hash is recorded in ``digests`` (hash -> paths), to find duplicates.
    """
    try:
        _, _, orientation = check_image(path, folder, follow_links, decode=decode)
    except InputError as error:
        return [Problem(path, str(error).removeprefix(f"{path}: "))], False
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digests.setdefault(digest.hexdigest(), []).append(path)
    if orientation != 1:
        return [Problem(path, f"photo is EXIF-rotated (orientation {orientation}); VIA and "
                              "mrcnn show it rotated, so check that its regions were drawn on the "
                              "rotated view, or save it upright without the EXIF tag")], True
    return [], True
