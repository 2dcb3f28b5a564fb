"""Datasets of annotated image folders, ready for training and evaluation.

A dataset folder holds one sub-folder per subset, each with its images and
their annotation file::

    pikachu/
        train/   IMG_001.jpg ... via_region_data.json     (VIA)
        val/     IMG_101.jpg ... _annotations.coco.json   (or COCO)
        test/    (optional) photos without annotations

The annotation file of a subset is either VIA's ``via_region_data.json`` (any
VIA version, see :mod:`mrcnn.via`) or a COCO instance file under one of the
names of ``coco.ANNOTATION_FILES`` (see :mod:`mrcnn.coco`): Roboflow's
``_annotations.coco.json``, ``annotations.json``, ``instances_<subset>.json``,
CVAT's ``annotations/instances_default.json`` or Label Studio's
``result.json``. When a subset holds a VIA file and a COCO file, the VIA file
is used and the COCO file reported as ignored; two COCO files are an error.

``FolderDataset`` loads one subset as a ``utils.Dataset``::

    dataset = FolderDataset()
    dataset.load_subset("pikachu", "train")
    dataset.prepare()
    print(dataset.summary())        # train: 42 images, 57 instances, classes pikachu
    dataset.problems                # [via.Problem(file, message), ...], not fatal

Masks are drawn in the frame of the image as displayed (EXIF orientation
applied), which is how ``load_image`` returns it. COCO crowd regions
(``iscrowd`` 1) come out of ``load_mask`` with negative class ids, which
training and evaluation ignore as the original did.

``check_dataset(folder)`` lists every problem of a dataset folder of either
format before training.
"""

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from mrcnn import coco, utils, via
from mrcnn.errors import InputError
from mrcnn.images import is_image_name
from mrcnn.via import Problem

VIA = "via"
COCO = "coco"
# Other names of a subset folder: Roboflow exports its validation split as valid/.
SUBSET_ALIASES = {"val": ("valid", "validation")}
MASKS = {VIA: via.image_masks, COCO: coco.image_masks}


@dataclass
class AnnotationFile:
    """The annotation file of a subset folder: ``format`` (VIA or COCO), ``path``, and
    ``ignored``, a Problem per other annotation file that is not used."""

    format: str
    path: str
    ignored: list = field(default_factory=list)


def find_annotation_file(subset_dir, via_name=via.ANNOTATION_FILE):
    """The annotation file of a subset folder, VIA or COCO.

    Args:
        subset_dir: the subset folder (its name is the ``<subset>`` of
            ``instances_<subset>.json``).
        via_name: the VIA file's name.

    Returns:
        An :class:`AnnotationFile`, or None when the folder holds none.

    Raises:
        coco.CocoError: the folder holds two COCO files and no VIA file.
    """
    via_path = os.path.join(subset_dir, via_name)
    coco_paths = [os.path.join(subset_dir, name) for name in coco.annotation_names(
                  os.path.basename(os.path.normpath(subset_dir)))
                  if os.path.lexists(os.path.join(subset_dir, name))]
    if os.path.lexists(via_path):
        return AnnotationFile(VIA, via_path, [
            Problem(path, f"ignored: {via_name} is used when a subset holds both; remove one "
                          "of them") for path in coco_paths])
    if len(coco_paths) > 1:
        raise coco.CocoError(f"{subset_dir}: holds several COCO files "
                             f"({', '.join(os.path.relpath(p, subset_dir) for p in coco_paths)}) "
                             "and it is not clear which one to use. Keep one of them.")
    return AnnotationFile(COCO, coco_paths[0]) if coco_paths else None


def subset_folder(dataset_dir, subset):
    """The folder of a subset: ``dataset_dir/subset``, or the first of its
    ``SUBSET_ALIASES`` that exists when it does not (Roboflow's ``valid/`` for ``val``).

    Absolute, so that the paths of its images and of its problems do not
    depend on the working directory and read the same in every message.
    """
    dataset_dir = os.path.abspath(dataset_dir)
    path = os.path.join(dataset_dir, subset)
    for alias in SUBSET_ALIASES.get(subset, ()):
        if not os.path.isdir(path) and os.path.isdir(os.path.join(dataset_dir, alias)):
            return os.path.join(dataset_dir, alias)
    return path


def load_annotations(found, subset_dir, class_attribute=None, class_names=None,
                     default_class="object", keep_negatives=False, follow_links=False,
                     decode=True):
    """Load a subset's :class:`AnnotationFile` with ``via.load_via`` or ``coco.load_coco``.

    Returns ``via.ViaAnnotations`` or ``coco.CocoAnnotations``: both have
    ``images`` (with ``filename``, ``path``, ``height``, ``width`` and
    ``regions``, each with a ``label``), ``class_names``, ``class_attribute``
    and ``problems``. The other arguments are ``FolderDataset.load_subset``'s;
    ``class_attribute`` and ``default_class`` are VIA's only (COCO categories
    name the classes).

    Raises:
        via.ViaError, coco.CocoError: see ``load_via`` and ``load_coco``.
    """
    if found.format == VIA:
        # Each missing image is one of the problems returned: no ViaWarning repeating them.
        return via.load_via(found.path, class_attribute=class_attribute,
                            class_names=class_names, default_class=default_class,
                            keep_negatives=keep_negatives, warn=False,
                            follow_links=follow_links, decode=decode)
    return coco.load_coco(found.path, subset_dir, class_names=class_names,
                          keep_negatives=keep_negatives, follow_links=follow_links,
                          decode=decode)


def annotation_file_help(subset_dir, via_name=via.ANNOTATION_FILE):
    """The annotation file names a subset folder may use, as a phrase for messages."""
    names = coco.annotation_names(os.path.basename(os.path.normpath(subset_dir)))
    return f"{via_name} (VIA) or {' or '.join(names)} (COCO)"


class FolderDataset(utils.Dataset):
    """The images of one subset of an annotated dataset folder and their masks.

    Subclasses name their dataset by ``SOURCE`` (the ``utils.Dataset`` source
    of its images and classes) and ``DEFAULT_CLASS`` (the class of regions
    that name none), e.g. the pikachu sample's ``PikachuDataset``.

    Attributes (after ``load_subset``):
        problems: list of ``via.Problem`` found while loading (missing
            images, regions outside the image, ...); the images and regions
            concerned are left out.
        subset_dir: the folder loaded.
        annotation_file: its :class:`AnnotationFile` (format and path).
        class_attribute: the VIA region attribute that named the classes
            (None: none did, or a COCO file); pass it and
            ``class_names[1:]`` to the other subsets.
    """

    SOURCE = "folder"
    DEFAULT_CLASS = "object"

    def load_subset(self, dataset_dir, subset, class_attribute=None, class_names=None,
                    keep_negatives=False, follow_links=False):
        """Register the images of ``dataset_dir/subset`` and their regions.

        Args:
            dataset_dir: folder with one sub-folder per subset.
            subset: "train", "val", ...; the folder holds the images and
                their VIA or COCO file (see the module's docstring). Roboflow's
                ``valid/`` serves as ``val`` when there is no ``val/``.
            class_attribute: VIA only: region attribute naming the class
                (default: the only attribute with text values, if any;
                without one, every region is of ``DEFAULT_CLASS``). A COCO
                file's categories name its classes.
            class_names: the classes to keep, in class-id order (default:
                those found: VIA's sorted, COCO's categories in id order).
                Pass the training subset's to a validation subset so that
                class ids agree.
            keep_negatives: keep images without regions (as negatives)
                instead of skipping them like the original.
            follow_links: accept files that are symbolic links out of the
                subset folder (by default they are reported and skipped).

        Every image is checked before use (``images.check_image``: a regular
        file, a readable header within the pixel limit, pixel data that
        decodes to the end); the ones that fail are left out and listed in
        ``problems``, so that training never meets a bad file.

        Raises:
            via.ViaError, coco.CocoError: missing folder or annotation file,
                malformed file.
        """
        subset_dir = subset_folder(dataset_dir, subset)
        if not os.path.isdir(subset_dir):
            raise via.ViaError(f"{subset_dir}: no such folder. The dataset folder must hold "
                               f"{subset}/ with its images and "
                               f"{annotation_file_help(subset_dir)}.")
        found = find_annotation_file(subset_dir)
        if found is None:
            raise via.ViaError(f"{subset_dir}: no annotation file. Save the annotations there as "
                               f"{annotation_file_help(subset_dir)}.")
        annotations = load_annotations(found, subset_dir, class_attribute, class_names,
                                       self.DEFAULT_CLASS, keep_negatives, follow_links)
        self.subset_dir = subset_dir
        self.annotation_file = found
        self.problems = found.ignored + annotations.problems
        self.class_attribute = annotations.class_attribute
        for class_id, name in enumerate(annotations.class_names, start=1):
            self.add_class(self.SOURCE, class_id, name)
        source_ids = {name: class_id for class_id, name in enumerate(annotations.class_names, 1)}
        for image in annotations.images:
            self.add_image(self.SOURCE, image_id=image.filename, path=image.path,
                           width=image.width, height=image.height, annotation=image,
                           format=found.format,
                           source_class_ids=[_source_class_id(r, source_ids)
                                             for r in image.regions])

    def load_mask(self, image_id):
        """Instance masks bool [height, width, N] and class ids int32 [N] of an image;
        crowd regions have the negative of their class id."""
        info = self.image_info[image_id]
        if info["source"] != self.SOURCE:
            return super().load_mask(image_id)
        class_ids = [np.sign(i) * self.map_source_class_id(f"{self.SOURCE}.{abs(i)}")
                     for i in info["source_class_ids"]]
        return MASKS[info["format"]](info["annotation"]), np.array(class_ids, dtype=np.int32)

    def image_reference(self, image_id):
        """The image's path."""
        return self.image_info[image_id]["path"]

    def instance_count(self, crowd=False):
        """Number of annotated instances over all images (or of crowd regions)."""
        return sum((i < 0) == crowd for info in self.image_info
                   for i in info.get("source_class_ids", ()))

    def summary(self):
        """One line: subset, images, instances (and crowd regions) and classes, e.g.
        ``train: 42 images, 57 instances, classes pikachu``."""
        subset = os.path.basename(self.subset_dir)
        crowds = self.instance_count(crowd=True)
        crowds = f" and {crowds} crowd region{'s' * (crowds > 1)}" if crowds else ""
        return (f"{subset}: {len(self.image_info)} images, {self.instance_count()} "
                f"instances{crowds}, classes "
                f"{', '.join(info['name'] for info in self.class_info[1:])}")


def _is_crowd(region):
    """Whether a VIA or COCO region is a (COCO) crowd region."""
    return getattr(region, "crowd", False)


def _source_class_id(region, source_ids):
    """A region's class id in its source; negative for a crowd region."""
    class_id = source_ids[region.label]
    return -class_id if _is_crowd(region) else class_id


# ---------------------------------------------------------------------------
# Checking a dataset folder


def check_dataset(dataset_dir, subsets=("train", "val"), optional_subsets=("test",),
                  class_attribute=None, class_names=None, default_class="object",
                  follow_links=False, via_name=via.ANNOTATION_FILE):
    """Every problem of a dataset folder, before training.

    The folder holds one sub-folder per subset, each with its images and a
    VIA or COCO annotation file (see the module's docstring). Reported:
    missing subset folders or annotation files, malformed JSON, filenames
    outside the folder, missing, unreadable, truncated or too large images,
    files that are not regular files or are links out of their folder,
    images that the annotation file does not list, EXIF-rotated photos,
    regions of the wrong type or range or that cannot become masks (fewer
    than 3 points, unknown shape, a COCO box without a segmentation or an
    RLE of the wrong size, ...), regions outside the image, annotations of
    unknown classes, images or categories, duplicate images (same content),
    annotation files left unused, and subsets without any annotated instance.

    The subsets are read the way training reads them: the first one finds the
    class attribute and the class names (unless given) and the others are
    read with those, so a class that only the validation subset uses is
    reported. An empty list therefore means that training can load the
    dataset.

    Args:
        class_attribute: VIA only, see ``FolderDataset.load_subset``.
        class_names: the classes to expect; default: those of the first subset.
        default_class: the class of VIA regions that name none (a dataset
            class's ``DEFAULT_CLASS``).
        follow_links: accept files that are symbolic links out of their
            subset folder (see ``via.load_via``).
        via_name: the VIA file's name in each subset.

    Returns:
        list of ``via.Problem``, empty when the dataset is clean.

    Raises:
        via.ViaError: ``dataset_dir`` is not a folder.
    """
    dataset_dir = str(dataset_dir)
    if not os.path.isdir(dataset_dir):
        what = "not a folder" if os.path.lexists(dataset_dir) else "no such dataset folder"
        raise via.ViaError(f"{dataset_dir}: {what}. Give the folder that holds "
                           f"{'/, '.join(subsets)}/ with the images and their annotation file.")
    problems, digests = [], {}
    options = dict(class_attribute=class_attribute, class_names=class_names,
                   default_class=default_class, follow_links=follow_links)
    present = [s for s in optional_subsets if os.path.isdir(os.path.join(dataset_dir, s))]
    for index, subset in enumerate(list(subsets) + present):
        subset_problems, annotations = _check_subset(subset_folder(dataset_dir, subset), via_name,
                                                     options, digests,
                                                     required=subset in subsets)
        problems += subset_problems
        if index == 0 and annotations is not None:
            options.update(class_attribute=annotations.class_attribute,
                           class_names=annotations.class_names)
    for paths in digests.values():
        if len(paths) > 1:
            problems += [Problem(path, f"same image as {paths[0]} (duplicate file)")
                         for path in paths[1:]]
    return problems


def _check_subset(subset_dir, via_name, options, digests, required):
    """(problems, annotations or None) of one subset folder.

    ``options`` are ``load_annotations``'s; fills ``digests`` (content hash ->
    paths). The images checked are those in the folder and in the folders of
    the images its annotation file lists (CVAT's images/, labelme2coco's
    JPEGImages/, ...).
    """
    if not os.path.isdir(subset_dir):
        return [Problem(subset_dir, "subset folder is missing")], None
    annotations, problems, image_dirs = None, [], {subset_dir}
    try:
        found = find_annotation_file(subset_dir, via_name=via_name)
    except InputError as error:
        found, problems = None, [Problem(subset_dir, str(error).removeprefix(f"{subset_dir}: "))]
    if found:
        problems += found.ignored
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", via.ViaWarning)
                annotations = load_annotations(found, subset_dir, keep_negatives=True,
                                               **options)
            problems += annotations.problems
            if not any(not _is_crowd(region) for image in annotations.images
                       for region in image.regions):
                problems.append(Problem(found.path, "subset has no annotated instance"))
        except InputError as error:
            problems.append(Problem(found.path, str(error).removeprefix(f"{found.path}: ")))
        if found.format == COCO:
            image_dirs.add(os.path.join(subset_dir, coco.IMAGES_FOLDER))
    elif required and not problems:
        problems.append(Problem(subset_dir, "annotation file is missing; save the annotations "
                                            f"as {annotation_file_help(subset_dir, via_name)}"))
    loaded = {os.path.abspath(image.path) for image in annotations.images} if annotations else set()
    reported = {os.path.abspath(p.file) for p in annotations.problems} if annotations else set()
    image_dirs |= {os.path.dirname(path) for path in loaded | reported}  # e.g. JPEGImages/
    try:
        paths = sorted({os.path.join(folder, name)
                        for folder in map(os.path.abspath, image_dirs) if os.path.isdir(folder)
                        for name in os.listdir(folder)
                        if is_image_name(name)})
    except OSError as error:
        return problems + [Problem(subset_dir, f"cannot list the folder ({error.strerror})")], \
            annotations
    if not paths:
        problems.append(Problem(subset_dir, "subset has no image"))
    for path in paths:
        if path in reported and path not in loaded:
            continue  # the loader said why it skipped this file
        file_problems, readable = via.check_image_file(path, digests, subset_dir,
                                                        options["follow_links"],
                                                        decode=path not in loaded)
        problems += file_problems
        if annotations and readable and path not in loaded | reported:
            tool = " in VIA" if found.format == VIA else ""
            problems.append(Problem(path, f"image is not listed in "
                                          f"{os.path.basename(found.path)}; annotate it{tool} or "
                                          "move it out"))
    return problems, annotations
