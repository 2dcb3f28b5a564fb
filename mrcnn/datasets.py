"""Datasets of annotated image folders, ready for training and evaluation.

A dataset folder holds one sub-folder per subset, each with its images and
their annotation file::

    pikachu/
        train/   IMG_001.jpg ... via_region_data.json
        val/     IMG_101.jpg ... via_region_data.json
        test/    (optional) photos without annotations

``FolderDataset`` loads one subset as a ``utils.Dataset``::

    dataset = FolderDataset()
    dataset.load_subset("pikachu", "train")
    dataset.prepare()
    print(dataset.summary())        # train: 42 images, 57 instances, classes pikachu
    dataset.problems                # [via.Problem(file, message), ...], not fatal

Annotations are VIA exports or project files of any version (see
:mod:`mrcnn.via`). Masks are drawn in the frame of the image as displayed
(EXIF orientation applied), which is how ``load_image`` returns it.
"""

import os

import numpy as np

from mrcnn import utils, via


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
        class_attribute: the region attribute that named the classes (None:
            none did); pass it and ``class_names[1:]`` to the other subsets.
    """

    SOURCE = "folder"
    DEFAULT_CLASS = "object"

    def load_subset(self, dataset_dir, subset, class_attribute=None, class_names=None,
                    keep_negatives=False, follow_links=False):
        """Register the images of ``dataset_dir/subset`` and their regions.

        Args:
            dataset_dir: folder with one sub-folder per subset.
            subset: "train", "val", ...; the folder holds the images and
                ``via_region_data.json``.
            class_attribute: region attribute naming the class (default: the
                only attribute with text values, if any; without one, every
                region is of ``DEFAULT_CLASS``).
            class_names: the classes to keep, in class-id order (default:
                those found, sorted). Pass the training subset's to a
                validation subset so that class ids agree.
            keep_negatives: keep images without regions (as negatives)
                instead of skipping them like the original.
            follow_links: accept files that are symbolic links out of the
                subset folder (by default they are reported and skipped).

        Every image is checked before use (``images.check_image``: a regular
        file, a readable header within the pixel limit, pixel data that
        decodes to the end); the ones that fail are left out and listed in
        ``problems``, so that training never meets a bad file.

        Raises:
            via.ViaError: missing folder or annotation file, malformed file.
        """
        subset_dir = os.path.join(dataset_dir, subset)
        if not os.path.isdir(subset_dir):
            raise via.ViaError(f"{subset_dir}: no such folder. The dataset folder must hold "
                               f"{subset}/ with its images and {via.ANNOTATION_FILE}.")
        annotations = via.load_via(os.path.join(subset_dir, via.ANNOTATION_FILE),
                                   class_attribute=class_attribute, class_names=class_names,
                                   default_class=self.DEFAULT_CLASS,
                                   keep_negatives=keep_negatives, follow_links=follow_links)
        self.subset_dir = subset_dir
        self.problems = annotations.problems
        self.class_attribute = annotations.class_attribute
        for class_id, name in enumerate(annotations.class_names, start=1):
            self.add_class(self.SOURCE, class_id, name)
        source_ids = {name: class_id for class_id, name in enumerate(annotations.class_names, 1)}
        for image in annotations.images:
            self.add_image(self.SOURCE, image_id=image.filename, path=image.path,
                           width=image.width, height=image.height, annotation=image,
                           source_class_ids=[source_ids[r.label] for r in image.regions])

    def load_mask(self, image_id):
        """Instance masks bool [height, width, N] and class ids int32 [N] of an image."""
        info = self.image_info[image_id]
        if info["source"] != self.SOURCE:
            return super().load_mask(image_id)
        class_ids = [self.map_source_class_id(f"{self.SOURCE}.{i}")
                     for i in info["source_class_ids"]]
        return via.image_masks(info["annotation"]), np.array(class_ids, dtype=np.int32)

    def image_reference(self, image_id):
        """The image's path."""
        return self.image_info[image_id]["path"]

    def instance_count(self):
        """Number of annotated instances over all images."""
        return sum(len(info.get("source_class_ids", ())) for info in self.image_info)

    def summary(self):
        """One line: subset, images, instances and classes, e.g.
        ``train: 42 images, 57 instances, classes pikachu``."""
        subset = os.path.basename(self.subset_dir)
        return (f"{subset}: {len(self.image_info)} images, {self.instance_count()} instances, "
                f"classes {', '.join(info['name'] for info in self.class_info[1:])}")
