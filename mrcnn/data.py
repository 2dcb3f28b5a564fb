"""Training data of Mask R-CNN: ground truth, augmentation, batches.

The path of one training image, as in the original implementation:

1. ``load_image_gt`` loads the image and its instance masks from a
   ``utils.Dataset``, resizes both (``transform.resize_image`` /
   ``resize_mask``), applies the augmentation, drops instances that
   vanished, and computes boxes and the image metadata
   (``transform.compose_image_meta``).
2. ``targets.build_rpn_targets`` labels every anchor
   positive/negative/neutral and gives the box deltas of the positive ones.
3. Optionally (``random_rois``, used with ``USE_RPN_ROIS = False`` and in
   the notebooks), ``targets.generate_random_rois`` draws ROIs around the
   boxes and ``targets.build_detection_targets`` gives the classifier and
   mask head targets.
4. ``DataGenerator`` (a ``keras.utils.PyDataset``) stacks images into the
   seven model inputs; ``data_generator`` is the original's endless Python
   generator on top of it.

Conventions: boxes are ``[N, (y1, x1, y2, x2)]`` int32 pixels with ``y2``
and ``x2`` exclusive; masks are ``[height, width, N]`` bool; class ids are
int32, 0 is the background and negative ids mark crowd boxes (COCO
``iscrowd``), which are neither positive nor negative for the RPN.

Augmentation (``augmentation=``) is an albumentations transform (called as
``aug(image=..., masks=...)``: geometric transforms move the masks with the
image, pixel-level ones leave them alone) or any callable
``(image, masks) -> (image, masks)`` on ``[H, W, 3]`` uint8 and
``[H, W, N]`` bool arrays. It must keep the image size and the number of
instances. imgaug is not supported: it does not import under numpy 2.

``augment=True`` is the original's older, deprecated switch: a horizontal
flip of half the images, applied before ``augmentation``. It keeps its place
as the fourth argument of ``load_image_gt`` and ``data_generator``, so the
original's positional calls mean what they meant.
"""

import itertools
import os
import sys
import warnings

import keras
import numpy as np

from mrcnn import images, utils
from mrcnn.anchors import pyramid_anchors
from mrcnn.targets import build_detection_targets, build_rpn_targets, generate_random_rois
from mrcnn.transform import compose_image_meta, mold_image, resize_image, resize_mask

# Keys that keep DataGenerator's random streams of passes and batches apart.
PASS_STREAM, SAMPLE_STREAM = 0, 1


############################################################
#  Ground truth of one image
############################################################

def load_image_gt(dataset, config, image_id, augment=False, augmentation=None,
                  use_mini_mask=False, *, rng=None):
    """Load an image and its ground truth, resized for the model.

    Args:
        dataset: a prepared ``utils.Dataset``.
        config: the model's ``Config`` (IMAGE_RESIZE_MODE, IMAGE_MIN_DIM,
            IMAGE_MAX_DIM, IMAGE_MIN_SCALE, MINI_MASK_SHAPE).
        image_id: internal id of the image in ``dataset``.
        augment: deprecated, as in the original: flip the image and its
            masks left-right with probability 0.5 (before ``augmentation``).
            Prefer ``augmentation=albumentations.HorizontalFlip(p=0.5)``.
        augmentation: None, an albumentations transform, or a callable
            ``(image, masks) -> (image, masks)``; see ``apply_augmentation``.
        use_mini_mask: return each mask cropped to its box and resized to
            ``config.MINI_MASK_SHAPE`` (see ``utils.minimize_mask``).
        rng: seed or ``np.random.Generator`` of the ``augment`` flip.

    Returns:
        image: uint8 [H, W, 3], resized (and padded or cropped).
        image_meta: [config.IMAGE_META_SIZE], see ``compose_image_meta``.
        class_ids: int32 [N] of the instances still visible after resizing,
            cropping and augmentation.
        bbox: int32 [N, (y1, x1, y2, x2)] tight boxes of their masks.
        mask: bool [H, W, N], or [mini_height, mini_width, N] with
            ``use_mini_mask``.
    """
    image = dataset.load_image(image_id)
    mask, class_ids = _load_checked_mask(dataset, image_id, image.shape)
    original_shape = image.shape
    image, window, scale, padding, crop = resize_image(
        image,
        min_dim=config.IMAGE_MIN_DIM,
        min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM,
        mode=config.IMAGE_RESIZE_MODE)
    mask = resize_mask(mask, scale, padding, crop)

    if _check_augment(augment, "load_image_gt"):
        warnings.warn(AUGMENT_DEPRECATION, FutureWarning, stacklevel=2)
        if np.random.default_rng(rng).random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
    if augmentation is not None:
        image, mask = apply_augmentation(augmentation, image, mask)

    visible = mask.any(axis=(0, 1))
    mask = mask[:, :, visible]
    class_ids = class_ids[visible]
    bbox = utils.extract_bboxes(mask)

    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1

    if use_mini_mask:
        mask = utils.minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)

    image_meta = compose_image_meta(image_id, original_shape, image.shape,
                                    window, scale, active_class_ids)
    return image, image_meta, class_ids, bbox, mask


AUGMENT_DEPRECATION = (
    "augment=True is deprecated (as in the original): it flips half the images left-right. "
    "Pass augmentation=albumentations.HorizontalFlip(p=0.5) instead.")


def _check_augment(augment, function):
    """``augment`` as a bool; a transform given in its place is a TypeError that says where it goes.

    The original's fourth argument of ``load_image_gt`` (and of
    ``data_generator`` after ``shuffle``) is the ``augment`` flag, so a
    transform passed there by position would otherwise be taken for a flip.
    """
    if augment is None or isinstance(augment, (bool, np.bool_, int, np.integer)):
        return bool(augment)
    raise TypeError(
        f"{function}() got {type(augment).__name__} for augment, the original's on/off "
        "left-right flip switch; pass transforms by name: augmentation=...")


def _load_checked_mask(dataset, image_id, image_shape):
    """``dataset.load_mask`` as bool [H, W, N] and int32 [N], shapes checked."""
    mask, class_ids = dataset.load_mask(image_id)
    mask = np.asarray(mask)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    where = f"{type(dataset).__name__}.load_mask({image_id})"
    if mask.ndim != 3 or len(class_ids) != mask.shape[-1]:
        raise ValueError(
            f"{where} returned masks of shape {mask.shape} and "
            f"{len(class_ids)} class ids: it must return bool masks "
            "[height, width, instance_count] and one class id per instance.")
    if mask.shape[-1] == 0:
        return np.zeros(tuple(image_shape[:2]) + (0,), dtype=bool), class_ids
    if mask.shape[:2] != tuple(image_shape[:2]):
        raise ValueError(
            f"{where} returned masks of {mask.shape[:2]} pixels for an image "
            f"of {tuple(image_shape[:2])} pixels (load_image): each mask must "
            "have the size of the image." + _exif_hint(dataset, image_id, mask.shape, image_shape))
    return mask.astype(bool), class_ids


def _exif_hint(dataset, image_id, mask_shape, image_shape):
    """What to change when masks were sized from an EXIF-rotated file's stored size, else "".

    ``load_image`` applies the EXIF orientation (as VIA displays, and
    annotates, the photo), so a 90-degree orientation swaps the height and
    width; code written for the original often sizes its masks from
    ``skimage.io.imread``, which does not.
    """
    path = dataset.image_info[image_id].get("path")
    if mask_shape[:2] != tuple(image_shape[1::-1]) or not isinstance(path, (str, os.PathLike)):
        return ""
    try:
        _, _, orientation = images.displayed_size(path)
    except (OSError, utils.ImageError):
        return ""
    if orientation not in images.TRANSPOSING_ORIENTATIONS:
        return ""
    return (f" {path} has EXIF orientation {orientation} (rotated by 90 degrees), which "
            "load_image applies, as VIA displays the photo and its regions: the masks have the "
            "size stored in the file, the height and width swapped. Size the masks from the "
            "image as load_image returns it, e.g. height, width = "
            "self.load_image(image_id).shape[:2] (or mrcnn.images.displayed_size(path)), not from "
            "skimage.io.imread(path).shape.")


def apply_augmentation(augmentation, image, mask):
    """Augment an image and its instance masks together.

    Args:
        augmentation: an albumentations transform (``BasicTransform`` or a
            ``Compose``), called as ``augmentation(image=image, masks=...)``
            so that geometric transforms move the masks and pixel-level
            ones leave them untouched; or any callable
            ``(image, masks) -> (image, masks)``.
        image: uint8 [H, W, 3].
        mask: bool [H, W, N].

    Returns:
        The augmented image, uint8 [H, W, 3] (a float result of a callable
        is rounded and clipped to 0..255), and masks, bool [H, W, N].

    Raises:
        ValueError: if the augmentation changed the image size or the
            number of instances.
    """
    if _is_albumentations(augmentation):
        new_image, new_mask = _apply_albumentations(augmentation, image, mask)
    else:
        check_augmentation(augmentation)
        new_image, new_mask = augmentation(image, mask)
        new_image, new_mask = np.asarray(new_image), np.asarray(new_mask)
    if new_image.shape != image.shape or new_mask.shape != mask.shape:
        raise ValueError(
            f"The augmentation {type(augmentation).__name__} turned an image {image.shape} "
            f"and masks {mask.shape} into {new_image.shape} and "
            f"{new_mask.shape}: augmentations must keep the image size and "
            "the number of masks ([H, W, N]); resize or crop with "
            "IMAGE_RESIZE_MODE instead.")
    if new_image.dtype != image.dtype:
        new_image = np.clip(np.round(new_image), 0, 255)
    return new_image.astype(image.dtype), new_mask.astype(bool)


def check_augmentation(augmentation):
    """Raise TypeError, saying what to pass instead, unless ``augmentation`` is None, an
    albumentations transform or a callable ``(image, masks) -> (image, masks)``.

    The original took imgaug augmenters; imgaug does not run with numpy 2, so they are
    refused by name (its ``Fliplr(0.5)`` is albumentations' ``HorizontalFlip(p=0.5)``).
    """
    if augmentation is None or _is_albumentations(augmentation):
        return
    kind = type(augmentation)
    if kind.__module__.split(".")[0] == "imgaug" or hasattr(augmentation, "augment_image"):
        raise TypeError(
            f"augmentation is an imgaug augmenter ({kind.__name__}), as the original took; "
            "imgaug does not run with numpy 2. Pass the albumentations transform instead, e.g. "
            "albumentations.HorizontalFlip(p=0.5) for imgaug's Fliplr(0.5), and "
            "albumentations.Compose([...]) for a Sequential.")
    if isinstance(augmentation, (list, tuple)):
        raise TypeError("augmentation is a list: wrap the transforms in "
                        "albumentations.Compose([...]).")
    if not callable(augmentation):
        raise TypeError(f"augmentation is a {kind.__name__}: pass an albumentations transform "
                        "or a function (image, masks) -> (image, masks).")


def _is_albumentations(augmentation):
    """Whether ``augmentation`` is an albumentations transform or Compose."""
    albumentations = sys.modules.get("albumentations")
    if albumentations is None:  # not imported, so not one of its transforms
        return False
    return isinstance(augmentation, (albumentations.BaseCompose,
                                     albumentations.BasicTransform))


def _apply_albumentations(transform, image, mask):
    """Run an albumentations transform on an image and [H, W, N] masks."""
    if mask.shape[-1] == 0:
        return transform(image=image)["image"], mask
    result = transform(image=image,
                       masks=np.moveaxis(mask, -1, 0).astype(np.uint8))
    masks = np.asarray(result["masks"])
    return result["image"], np.moveaxis(masks, 0, -1) > 0


############################################################
#  Batches
############################################################

def load_training_sample(dataset, config, image_id, anchors, augment=False, augmentation=None,
                         random_rois=0, detection_targets=False, rng=None):
    """Everything the training model needs of one image.

    Args:
        dataset, config, image_id, augment, augmentation: as for
            ``load_image_gt`` (masks are mini-masks when ``config.USE_MINI_MASK``).
        anchors: [A, (y1, x1, y2, x2)] anchors of ``config.IMAGE_SHAPE``.
        random_rois: if > 0, also draw that many ROIs
            (``generate_random_rois``).
        detection_targets: also build the head targets for those ROIs
            (``build_detection_targets``).
        rng: ``np.random.Generator`` for every random choice.

    Returns:
        None if the image has no instance (class id > 0) left; otherwise a
        dict with image (uint8 [H, W, 3]), image_meta, rpn_match [A],
        rpn_bbox, gt_class_ids, gt_boxes, gt_masks (at most
        MAX_GT_INSTANCES instances, a random subset if there are more; the
        RPN targets use all of them), and with ``random_rois`` rpn_rois,
        plus with ``detection_targets`` rois, mrcnn_class_ids, mrcnn_bbox
        and mrcnn_mask.
    """
    rng = np.random.default_rng(rng)
    image, image_meta, gt_class_ids, gt_boxes, gt_masks = load_image_gt(
        dataset, config, image_id, augment=augment, augmentation=augmentation,
        use_mini_mask=config.USE_MINI_MASK, rng=rng)
    if not np.any(gt_class_ids > 0):
        return None
    if tuple(image.shape) != tuple(config.IMAGE_SHAPE):
        raise ValueError(
            f"Image {image_id} ({dataset.image_reference(image_id)}) is "
            f"{image.shape} after resizing but training needs "
            f"config.IMAGE_SHAPE {tuple(int(side) for side in config.IMAGE_SHAPE)}: train with "
            'IMAGE_RESIZE_MODE "square" or "crop".')

    sample = {"image": image, "image_meta": image_meta}
    sample["rpn_match"], sample["rpn_bbox"] = build_rpn_targets(
        image.shape, anchors, gt_class_ids, gt_boxes, config, rng=rng)
    if random_rois:
        sample["rpn_rois"] = generate_random_rois(
            image.shape, random_rois, gt_class_ids, gt_boxes, rng=rng)
        if detection_targets:
            (sample["rois"], sample["mrcnn_class_ids"], sample["mrcnn_bbox"],
             sample["mrcnn_mask"]) = build_detection_targets(
                sample["rpn_rois"], gt_class_ids, gt_boxes, gt_masks, config,
                rng=rng)

    if len(gt_class_ids) > config.MAX_GT_INSTANCES:
        ids = rng.choice(len(gt_class_ids), config.MAX_GT_INSTANCES, replace=False)
        gt_class_ids, gt_boxes, gt_masks = gt_class_ids[ids], gt_boxes[ids], gt_masks[:, :, ids]
    sample.update(gt_class_ids=gt_class_ids, gt_boxes=gt_boxes, gt_masks=gt_masks)
    return sample


class DataGenerator(keras.utils.PyDataset):
    """Training batches for ``MaskRCNN.train``, as a Keras ``PyDataset``.

    Item ``i`` is a batch ``(inputs,)`` where ``inputs`` is the tuple of the
    training model's inputs, in the original's order (B = batch size,
    A = number of anchors, G = MAX_GT_INSTANCES, instances zero-padded):

    - batch_images: float32 [B, H, W, 3], molded (``mold_image``).
    - batch_image_meta: float32 [B, IMAGE_META_SIZE].
    - batch_rpn_match: int32 [B, A, 1].
    - batch_rpn_bbox: float32 [B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4].
    - batch_gt_class_ids: int32 [B, G].
    - batch_gt_boxes: int32 [B, G, (y1, x1, y2, x2)] pixels.
    - batch_gt_masks: bool [B, h, w, G], (h, w) = MINI_MASK_SHAPE with
      USE_MINI_MASK, else the image size.

    With ``random_rois`` the inputs end with batch_rpn_rois int32
    [B, random_rois, 4]; with ``detection_targets`` also with batch_rois
    int32 [B, TRAIN_ROIS_PER_IMAGE, 4], and the item is ``(inputs,
    outputs)`` with outputs mrcnn_class_ids int32 [B, TRAIN_ROIS_PER_IMAGE,
    1], mrcnn_bbox float32 [B, TRAIN_ROIS_PER_IMAGE, NUM_CLASSES, 4] and
    mrcnn_mask float32 [B, TRAIN_ROIS_PER_IMAGE, mask h, mask w,
    NUM_CLASSES].

    The batches take their images from an endless stream, as the
    original's generator did: the dataset's images pass after pass, each
    pass in a new random order when shuffling. An epoch is ``steps``
    batches and the next epoch goes on where it ended, so with fewer steps
    than ``image_count // batch_size`` the epochs still cover every image
    in turn. An image without instances is skipped: a random image of the
    dataset takes its place.

    Args:
        dataset: a prepared ``utils.Dataset`` with ``config.NUM_CLASSES``
            classes.
        config: the training ``Config``.
        shuffle: shuffle the images at the start of every epoch.
        augment: the original's deprecated left-right flip of half the
            images (see ``load_image_gt``); applies to every source.
        augmentation: see ``apply_augmentation``.
        random_rois: if > 0, add that many random ROIs per image.
        detection_targets: add the head targets for the random ROIs.
        no_augmentation_sources: dataset sources whose images are never
            augmented.
        batch_size: images per batch (default ``config.BATCH_SIZE``).
        steps: batches per epoch (``len()``), e.g. ``config.STEPS_PER_EPOCH``;
            default ``max(1, image_count // batch_size)``, one pass.
        seed: seed of the shuffling, subsampling and ROI sampling (None:
            random). Each pass and each image draws from its own random
            generator, seeded by the seed and its position in the stream,
            so the samples depend neither on the number of workers nor on
            the batch size.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``
            of ``keras.utils.PyDataset``.
    """

    def __init__(self, dataset, config, shuffle=True, augment=False, augmentation=None,
                 random_rois=0, detection_targets=False,
                 no_augmentation_sources=None, batch_size=None, steps=None,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        if dataset.num_classes != config.NUM_CLASSES:
            raise ValueError(
                f"The dataset has {dataset.num_classes} classes (background "
                f"included) but config.NUM_CLASSES is {config.NUM_CLASSES}: "
                "set NUM_CLASSES = 1 + the number of object classes.")
        if len(dataset.image_ids) == 0:
            raise ValueError("The dataset has no images: add images, then "
                             "call dataset.prepare().")
        if detection_targets and not random_rois:
            raise ValueError("detection_targets=True needs random_rois > 0: "
                             "the targets are built for those ROIs.")
        self.dataset = dataset
        self.config = config
        self.shuffle = shuffle
        self.augment = _check_augment(augment, "DataGenerator")
        self.augmentation = augmentation
        self.random_rois = random_rois
        self.detection_targets = detection_targets
        self.no_augmentation_sources = set(no_augmentation_sources or [])
        self.batch_size = batch_size or config.BATCH_SIZE
        self.seed = np.random.SeedSequence(seed).entropy
        self.anchors = pyramid_anchors(config, config.IMAGE_SHAPE)
        self.steps = steps or max(1, len(dataset.image_ids) // self.batch_size)
        self.epoch = 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} out of range(0, {len(self)}).")
        return self.batch(self.epoch * self.steps + index)

    def batch(self, batch_number):
        """Batch ``batch_number`` of the endless stream, as ``self[i]`` returns it.

        ``self[i]`` is batch ``epoch * steps + i``: the images at positions
        ``batch_number * batch_size`` ... of the stream (``image_id_at``).
        A distributed run (``mrcnn.distribute``) reads the stream in batches
        of one replica's size this way.
        """
        samples = self._samples(batch_number * self.batch_size)
        inputs = tuple(self._stack(samples, key) for key in self._input_keys())
        if not self.detection_targets:
            return (inputs,)
        outputs = (self._stack(samples, "mrcnn_class_ids")[..., np.newaxis],
                   self._stack(samples, "mrcnn_bbox"),
                   self._stack(samples, "mrcnn_mask"))
        return inputs, outputs

    def on_epoch_end(self):
        """Move on to the next epoch's batches of the image stream."""
        self.epoch += 1

    def image_id_at(self, position):
        """The image at ``position`` of the stream of images.

        Position ``p`` is in pass ``p // image_count``; each pass is the
        dataset's image ids in a random order of its own (when shuffling).
        """
        image_ids = self.dataset.image_ids
        pass_number, offset = divmod(position, len(image_ids))
        if not self.shuffle:
            return image_ids[offset]
        rng = np.random.default_rng([self.seed, PASS_STREAM, pass_number])
        return image_ids[rng.permutation(len(image_ids))[offset]]

    def _input_keys(self):
        keys = ["image", "image_meta", "rpn_match", "rpn_bbox",
                "gt_class_ids", "gt_boxes", "gt_masks"]
        if self.random_rois:
            keys.append("rpn_rois")
            if self.detection_targets:
                keys.append("rois")
        return keys

    def _stack(self, samples, key):
        """Batch array of ``sample[key]`` for the samples.

        Images are molded; instances (gt_class_ids, gt_boxes, gt_masks) are
        zero-padded to MAX_GT_INSTANCES; rpn_match gets a last axis of 1.
        """
        arrays = [sample[key] for sample in samples]
        if key == "image":
            return mold_image(np.stack(arrays), self.config)
        if key == "image_meta":
            return np.stack(arrays).astype(np.float32)
        if key == "rpn_match":
            return np.stack(arrays)[..., np.newaxis]
        if key in ("gt_class_ids", "gt_boxes", "gt_masks"):
            instance_axis = -1 if key == "gt_masks" else 0
            return _pad_instances(arrays, self.config.MAX_GT_INSTANCES, instance_axis)
        return np.stack(arrays)

    def _samples(self, start):
        """The samples of the images at ``start``... of the image stream.

        Each position has its own random generator (seeded by the seed and
        the position), so a sample does not depend on the batch size. An
        image without instances is replaced by the next image of a random
        order of the dataset (cycled), as the original's generator skipped
        it.
        """
        image_ids = self.dataset.image_ids
        samples = []
        for position in range(start, start + self.batch_size):
            rng = np.random.default_rng([self.seed, SAMPLE_STREAM, position])
            replacements = itertools.cycle(rng.permutation(image_ids))
            image_id = self.image_id_at(position)
            misses = 0
            while (sample := self._load(image_id, rng)) is None:
                misses += 1
                if misses > len(image_ids):
                    raise ValueError(
                        f"No image of the dataset has an instance (tried "
                        f"{misses} images): training needs images with masks.")
                image_id = next(replacements)
            samples.append(sample)
        return samples

    def _load(self, image_id, rng):
        """``load_training_sample`` of one image, naming the image on error."""
        source = self.dataset.image_info[image_id]["source"]
        augmentation = (None if source in self.no_augmentation_sources
                        else self.augmentation)
        try:
            return load_training_sample(
                self.dataset, self.config, image_id, self.anchors,
                augment=self.augment, augmentation=augmentation, random_rois=self.random_rois,
                detection_targets=self.detection_targets, rng=rng)
        except Exception as error:
            error.add_note(f"While loading image {image_id} "
                           f"({self.dataset.image_reference(image_id)!r}) "
                           "for training.")
            raise


def _pad_instances(arrays, size, axis):
    """Stack arrays after zero-padding their instance ``axis`` to ``size``."""
    padded = []
    for array in arrays:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, size - array.shape[axis])
        padded.append(np.pad(array, widths))
    return np.stack(padded)


def data_generator(dataset, config, shuffle=True, augment=False, augmentation=None,
                   random_rois=0, batch_size=1, detection_targets=False,
                   no_augmentation_sources=None, seed=None):
    """The original's endless generator of training batches, with its arguments.

    Yields ``(inputs, outputs)`` lists, ``inputs`` as the inputs of
    ``DataGenerator`` and ``outputs`` empty, or with ``detection_targets``
    [mrcnn_class_ids, mrcnn_bbox, mrcnn_mask]. ``seed`` (not the original's) is
    DataGenerator's: the same seed, the same stream. It walks through the
    ``DataGenerator`` batches epoch after epoch, an endless stream::

        inputs, outputs = next(data_generator(dataset, config))
    """
    augment = _check_augment(augment, "data_generator")
    batches = DataGenerator(
        dataset, config, shuffle=shuffle, augment=augment, augmentation=augmentation,
        random_rois=random_rois, detection_targets=detection_targets,
        no_augmentation_sources=no_augmentation_sources, batch_size=batch_size, seed=seed)
    while True:
        for index in range(len(batches)):
            batch = batches[index]
            outputs = batch[1] if len(batch) > 1 else ()
            yield list(batch[0]), list(outputs)
        batches.on_epoch_end()
