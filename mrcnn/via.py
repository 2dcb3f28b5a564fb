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

Everything that is odd but not fatal (missing image files, points outside the
image, regions without a class, ...) is collected as :class:`Problem` items
``(file, message)``; what makes loading impossible raises :class:`ViaError`
with a message that names the file and the fix.
"""

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import skimage.draw
from PIL import Image

from mrcnn.errors import InputError

ANNOTATION_FILE = "via_region_data.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
AREA_SHAPES = ("polygon", "polyline", "rect", "circle", "ellipse")
NO_AREA_SHAPES = ("point", "line")
VIA3_SHAPES = {1: "point", 2: "rect", 3: "circle", 4: "ellipse", 5: "line",
               6: "polyline", 7: "polygon", 8: "extreme_rectangle", 9: "extreme_circle"}
VIA3_IMAGE_FILE_TYPE = 2
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


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
    """Result of :func:`load_via`: usable images, class names, problems found."""

    images: list
    class_names: list
    problems: list
    version: str


# ---------------------------------------------------------------------------
# Reading the JSON of any VIA version


def read_json(path):
    """Parse a JSON file; malformed JSON raises ViaError naming line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ViaError(f"{path}: file not found. Export the annotations from VIA "
                       f"(Annotation > Export as JSON) and save them there.") from None
    except UnicodeDecodeError as error:
        raise ViaError(f"{path}: not a UTF-8 text file ({error.reason}). "
                       "Save the VIA export as JSON again.") from None
    except json.JSONDecodeError as error:
        raise ViaError(f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: "
                       f"{error.msg}. Fix the file there or export it from VIA again.") from None


def parse_via(data, source):
    """Images and regions of a parsed VIA file of any version.

    Args:
        data: the parsed JSON.
        source: the file name, for messages.

    Returns:
        (version, images, problems): version is "1.x", "2.x" or "3.x"; images is
        a list of :class:`ViaImage` without path or size; problems a list of
        :class:`Problem` for regions that could not be read.
    """
    try:
        if isinstance(data, dict) and "_via_img_metadata" in data:
            images, problems = _parse_image_entries(data["_via_img_metadata"], source)
            return "2.x", images, problems
        if isinstance(data, dict) and {"project", "file", "metadata"} <= set(data):
            images, problems = _parse_via3(data, source)
            return "3.x", images, problems
        if isinstance(data, dict) and all(isinstance(e, dict) and "filename" in e
                                          for e in data.values()):
            images, problems = _parse_image_entries(data, source)
            regions = [e.get("regions") for e in data.values()]
            version = "2.x" if any(isinstance(r, list) for r in regions) else "1.x"
            return version, images, problems
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as error:
        raise ViaError(f"{source}: unexpected structure in a VIA file ({type(error).__name__}: "
                       f"{error}). Export the annotations from VIA again.") from None
    raise ViaError(
        f"{source}: not a VIA annotation file. Expected a VIA 1.x/2.x export "
        "({key: {filename, regions}}), a VIA 2.x project (_via_img_metadata) or a VIA 3.x "
        "project (project, file, metadata). In VIA, use Annotation > Export as JSON.")


def _parse_image_entries(entries, source):
    """VIA 1.x/2.x entries ``{key: {filename, regions}}`` -> images, problems."""
    images, problems = [], []
    for entry in entries.values():
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            problems.append(Problem(source, f"an entry has no filename ({_short(entry)}); skipped"))
            continue
        raw_regions = entry.get("regions") or []
        if isinstance(raw_regions, dict):
            raw_regions = list(raw_regions.values())
        regions = []
        for index, raw in enumerate(raw_regions):
            shape_attributes = dict(raw.get("shape_attributes") or {})
            shape = shape_attributes.pop("name", None)
            if not shape:
                problems.append(Problem(source, f"{filename}: region {index} has no shape "
                                                "name; skipped"))
                continue
            attributes = dict(raw.get("region_attributes") or {})
            regions.append(Region(shape, shape_attributes, attributes))
        images.append(ViaImage(filename, regions))
    return _merge_duplicates(images, source, problems), problems


def _parse_via3(data, source):
    """VIA 3.x project -> images, problems."""
    attributes = data.get("attribute") or {}
    views = data.get("view") or {}
    files = {str(fid): f for fid, f in (data.get("file") or {}).items()
             if f.get("type", VIA3_IMAGE_FILE_TYPE) == VIA3_IMAGE_FILE_TYPE}
    problems = [Problem(source, f"file {fid} has no fname; skipped")
                for fid, f in files.items() if not (f.get("fname") or f.get("src"))]
    images = {fid: ViaImage(f.get("fname") or f.get("src"), []) for fid, f in files.items()
              if f.get("fname") or f.get("src")}
    for metadata_id, item in (data.get("metadata") or {}).items():
        xy = item.get("xy") or []
        if not xy or item.get("z"):
            continue  # file-level or temporal metadata: no spatial region
        fid_list = (views.get(str(item.get("vid"))) or {}).get("fid_list") or []
        image = images.get(str(fid_list[0])) if fid_list else None
        if image is None:
            problems.append(Problem(source, f"metadata {metadata_id} refers to view "
                                            f"{item.get('vid')!r} that holds no image; skipped"))
            continue
        shape = VIA3_SHAPES.get(int(xy[0]), f"shape id {xy[0]}")
        region_attributes = {}
        for attribute_id, value in (item.get("av") or {}).items():
            definition = attributes.get(str(attribute_id)) or {}
            options = definition.get("options") or {}
            name = definition.get("aname", str(attribute_id))
            region_attributes[name] = options.get(value, value) if isinstance(value, str) else value
        image.regions.append(Region(shape, _via3_geometry(shape, xy[1:]), region_attributes))
    return _merge_duplicates(list(images.values()), source, problems), problems


def _via3_geometry(shape, coords):
    """VIA 3.x coordinates of a shape -> VIA 2.x shape attributes."""
    coords = [float(v) for v in coords]
    if shape == "rect" and len(coords) == 4:
        return dict(zip(("x", "y", "width", "height"), coords))
    if shape == "circle" and len(coords) == 3:
        return dict(zip(("cx", "cy", "r"), coords))
    if shape == "ellipse" and len(coords) >= 4:
        return dict(zip(("cx", "cy", "rx", "ry", "theta"), coords + [0.0]))
    if shape == "point" and len(coords) == 2:
        return dict(zip(("cx", "cy"), coords))
    return {"all_points_x": coords[0::2], "all_points_y": coords[1::2]}


def _merge_duplicates(images, source, problems):
    """Merge entries that name the same file, reporting each duplicate."""
    merged = {}
    for image in images:
        if image.filename in merged:
            problems.append(Problem(source, f"{image.filename} is listed more than once; "
                                            "its regions are merged"))
            merged[image.filename].regions.extend(image.regions)
        else:
            merged[image.filename] = image
    return list(merged.values())


def _short(value, limit=80):
    text = json.dumps(value)
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
            f"{image_dir} with '..'. A VIA filename must name a file inside that folder: "
            "copy the image there and edit the filename to its bare name.")
    return os.path.join(image_dir, *[p for p in parts if p not in ("", ".")])


def exif_orientation(image):
    """EXIF orientation (1..8) of an open PIL image; 1 when absent."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (ValueError, TypeError, SyntaxError):
        return 1


def displayed_size(path):
    """(height, width, orientation) of an image as displayed.

    Reads only the header. Height and width are those after the EXIF
    orientation is applied (swapped for orientations 5-8), as VIA shows the
    photo and as utils.Dataset.load_image returns it.

    Raises:
        OSError: the file cannot be opened as an image.
    """
    with Image.open(path) as image:
        width, height = image.size
        orientation = exif_orientation(image)
    if orientation in TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    return height, width, orientation


# ---------------------------------------------------------------------------
# Geometry


def shape_points(region):
    """Vertices of a polygon or polyline region: float arrays (xs, ys)."""
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


def geometry_error(region):
    """Why a region cannot become a mask, or None when it can."""
    if region.shape in NO_AREA_SHAPES:
        return f"{region.shape} region has no area; skipped (use polygon, rect, circle or ellipse)"
    if region.shape not in AREA_SHAPES:
        return f"unknown shape {region.shape!r}; skipped (use polygon, rect, circle or ellipse)"
    keys = {"rect": ("x", "y", "width", "height"), "circle": ("cx", "cy", "r"),
            "ellipse": ("cx", "cy", "rx", "ry")}.get(region.shape, ())
    try:
        if any(not np.isfinite(float(region.geometry[k])) for k in keys):
            return f"{region.shape} region has a non-finite coordinate; skipped"
        if region.shape in ("polygon", "polyline"):
            xs, ys = shape_points(region)
            if len(xs) != len(ys):
                return (f"{region.shape} region has {len(xs)} x but {len(ys)} y "
                        "coordinates; skipped")
            if len(xs) < 3:
                return f"{region.shape} region has {len(xs)} points, fewer than 3; skipped"
            if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
                return f"{region.shape} region has a non-finite coordinate; skipped"
    except (KeyError, TypeError, ValueError):
        return f"{region.shape} region lacks coordinates ({_short(region.geometry)}); skipped"
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

    Text, dropdown and radio values are strings; a VIA 2.x checkbox is a dict
    ``{option: True}`` and names a class when exactly one option is ticked.
    """
    value = attributes.get(class_attribute)
    if isinstance(value, dict):
        ticked = [option for option, on in value.items() if on]
        value = ticked[0] if len(ticked) == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
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
                problems.append(Problem(source, f"{image.filename}: region {index} has no "
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
             default_class="object", keep_negatives=False, warn=True):
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

    Returns:
        :class:`ViaAnnotations`. Each image has ``path``, ``height`` and
        ``width`` (as displayed, EXIF orientation applied) and its usable
        regions, each with a ``label`` from ``class_names``.

    Raises:
        ViaError: unreadable or malformed file, ambiguous or absent class
            attribute, a filename outside ``image_dir``, or every image missing.
    """
    source = str(annotation_path)
    image_dir = os.path.dirname(os.path.abspath(source)) if image_dir is None else str(image_dir)
    version, images, problems = parse_via(read_json(source), source)
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
        if not os.path.isfile(image.path):
            missing.append(image.filename)
            problems.append(Problem(image.path, "image file is missing"))
            continue
        try:
            image.height, image.width, _ = displayed_size(image.path)
        except OSError as error:
            problems.append(Problem(image.path, f"cannot read image ({error}); skipped"))
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
    return ViaAnnotations(usable, class_names, problems, version)


def _usable_regions(image):
    """Regions of an image that give a non-empty mask, and a Problem per other one."""
    kept, problems = [], []
    for index, region in enumerate(image.regions):
        what = f"region {index} ({region.shape})"
        error = geometry_error(region)
        if error:
            problems.append(Problem(image.path, f"{what}: {error}"))
            continue
        x1, y1, x2, y2 = shape_extent(region)
        if x1 < 0 or y1 < 0 or x2 > image.width or y2 > image.height:
            problems.append(Problem(image.path, f"{what} reaches outside the {image.width}x"
                                                f"{image.height} image; clipped to it"))
        if not rasterize(region, image.height, image.width).any():
            problems.append(Problem(image.path, f"{what} covers no pixel of the image; skipped"))
            continue
        kept.append(region)
    return kept, problems


# ---------------------------------------------------------------------------
# Checking a dataset folder


def check_dataset(dataset_dir, subsets=("train", "val"), optional_subsets=("test",),
                  annotation_name=ANNOTATION_FILE, class_attribute=None, class_names=None):
    """Every problem of a dataset folder, before training.

    The folder holds one sub-folder per subset, each with its images and
    ``annotation_name``. Reported: missing subset folders or annotation files,
    malformed JSON, filenames outside the folder, missing or unreadable
    images, images in the folder that the export does not list, EXIF-rotated
    photos, regions outside the image, with fewer than 3 points, of unknown
    shape or class, duplicate images (same content) and subsets without any
    annotated instance.

    Returns:
        list of :class:`Problem`, empty when the dataset is clean.

    Raises:
        ViaError: ``dataset_dir`` is not a folder.
    """
    dataset_dir = str(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise ViaError(f"{dataset_dir}: no such dataset folder. Give the folder that holds "
                       f"{'/, '.join(subsets)}/ with the images and {annotation_name}.")
    problems, digests = [], {}
    for subset in list(subsets) + [s for s in optional_subsets
                                   if os.path.isdir(os.path.join(dataset_dir, s))]:
        problems += _check_subset(os.path.join(dataset_dir, subset), annotation_name,
                                  class_attribute, class_names, digests,
                                  required=subset in subsets)
    for paths in digests.values():
        if len(paths) > 1:
            problems += [Problem(path, f"same image as {paths[0]} (duplicate file)")
                         for path in paths[1:]]
    return problems


def _check_subset(subset_dir, annotation_name, class_attribute, class_names, digests, required):
    """Problems of one subset folder; fills ``digests`` (content hash -> paths)."""
    if not os.path.isdir(subset_dir):
        return [Problem(subset_dir, "subset folder is missing")]
    annotation_path = os.path.join(subset_dir, annotation_name)
    listed = set()
    problems = []
    if os.path.isfile(annotation_path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ViaWarning)
                annotations = load_via(annotation_path, class_attribute=class_attribute,
                                       class_names=class_names, keep_negatives=True)
            problems += annotations.problems
            listed = {os.path.abspath(image.path) for image in annotations.images}
            listed |= {os.path.abspath(p.file) for p in annotations.problems}
            if not any(image.regions for image in annotations.images):
                problems.append(Problem(annotation_path, "subset has no annotated instance"))
        except ViaError as error:
            message = str(error).removeprefix(f"{annotation_path}: ")
            problems.append(Problem(annotation_path, message))
    elif required:
        problems.append(Problem(annotation_path, "annotation file is missing; export the "
                                                 "regions from VIA as JSON under this name"))
    images = sorted(f for f in os.listdir(subset_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        problems.append(Problem(subset_dir, "subset has no image"))
    for name in images:
        path = os.path.join(subset_dir, name)
        problems += _check_image_file(path, digests)
        if listed and os.path.abspath(path) not in listed:
            problems.append(Problem(path, f"image is not listed in {annotation_name}; "
                                          "annotate it in VIA or move it out"))
    return problems


def _check_image_file(path, digests):
    """Problems of one image file: unreadable, EXIF-rotated. Records its digest."""
    with open(path, "rb") as f:
        digests.setdefault(hashlib.sha1(f.read()).hexdigest(), []).append(path)
    try:
        with Image.open(path) as image:
            orientation = exif_orientation(image)
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        return [Problem(path, f"cannot read image ({error}); re-save it as JPEG or PNG")]
    if orientation != 1:
        return [Problem(path, f"photo is EXIF-rotated (orientation {orientation}); VIA and "
                              "mrcnn show it rotated, so check that its regions were drawn on the "
                              "rotated view, or save it upright without the EXIF tag")]
    return []
