"""Pre- and post-processing: from user images to network inputs and back.

The steps around the network, in one place (torchvision keeps them in its
``transform.py``):

1. ``resize_image`` scales an image and pads (or crops) it to the network's
   input size; ``resize_mask`` does the same to its instance masks.
2. ``mold_image`` subtracts the mean pixel; ``unmold_image`` adds it back.
3. ``compose_image_meta`` packs what the graph needs to know about each image
   (original shape, window of real pixels in the padded input, scale, active
   classes) into one vector; ``parse_image_meta`` unpacks it.
4. ``mold_inputs`` does 1-3 for a batch of user images.
5. ``unmold_detections`` turns the network's normalized detections and
   28x28 mask probabilities back into boxes and full-size masks of the
   original image; ``unmold_mask`` pastes one mask.

Conventions: images are [H, W, 3] uint8 RGB before molding and float32
after; boxes are [N, (y1, x1, y2, x2)] pixels with y2/x2 exclusive, or
normalized (``utils.norm_boxes``) inside the graph; windows are
(y1, x1, y2, x2) pixels of the molded image.
"""

import random

import numpy as np
import skimage.transform

from mrcnn import utils
from mrcnn.config import RESIZE_MODES


############################################################
#  Resizing
############################################################

def resize_image(image, min_dim=None, max_dim=None, min_scale=None,
                 mode="square"):
    """Resize an image, keeping its aspect ratio, and pad or crop it.

    Args:
        image: [H, W] or [H, W, C] array.
        min_dim: if given, scale the image up so that its shorter side is at
            least ``min_dim`` (never down).
        max_dim: for "square", the side of the result; the longer side is
            kept within it.
        min_scale: if given, the image is scaled by at least this factor.
        mode: one of
            - "none": no change; returns the image as is.
            - "square": scale by ``min_dim``/``max_dim``, then pad with zeros
              to a ``max_dim`` x ``max_dim`` square.
            - "pad64": scale up by ``min_dim``/``min_scale``, then pad with
              zeros so that both sides are multiples of 64. ``min_dim``
              must be a multiple of 64.
            - "crop": scale up by ``min_dim``/``min_scale``, then take a
              random ``min_dim`` x ``min_dim`` crop (training only).

    Returns:
        image: the resized image, of the input dtype (values truncated).
        window: (y1, x1, y2, x2) of the resized image inside the result;
            ``(y2, x2)`` are exclusive. Outside it is padding.
        scale: the factor by which the image was resized.
        padding: [(top, bottom), (left, right), (0, 0)] pixels added.
        crop: (y, x, height, width) of the crop in the scaled image, or
            None when not cropping.

    Raises:
        ValueError: for an unknown mode, or a "square", "pad64" or "crop"
            call without the dimension it needs.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(
            f"Unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}.")
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None
    if mode == "none":
        return image, window, scale, padding, crop

    if min_dim:
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale
    if mode == "square":
        if not max_dim:
            raise ValueError('resize mode "square" needs max_dim (the side of '
                             'the square).')
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max
    if scale != 1:
        image = utils.resize(image, (round(h * scale), round(w * scale)),
                       preserve_range=True)

    h, w = image.shape[:2]
    if mode == "square":
        top_pad, bottom_pad = _split_padding(max_dim - h)
        left_pad, right_pad = _split_padding(max_dim - w)
    elif mode == "pad64":
        if not min_dim or min_dim % 64:
            raise ValueError(f'resize mode "pad64" needs min_dim to be a '
                             f'multiple of 64, got {min_dim}.')
        top_pad, bottom_pad = _split_padding(-h % 64)
        left_pad, right_pad = _split_padding(-w % 64)
    else:
        if not min_dim:
            raise ValueError('resize mode "crop" needs min_dim (the side of '
                             'the crop).')
        y = random.randint(0, h - min_dim)
        x = random.randint(0, w - min_dim)
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
        return image.astype(image_dtype), window, scale, padding, crop

    padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
    image = np.pad(image, padding[:image.ndim], mode="constant",
                   constant_values=0)
    window = (top_pad, left_pad, h + top_pad, w + left_pad)
    return image.astype(image_dtype), window, scale, padding, crop


def _split_padding(total):
    """Split ``total`` padding pixels into (before, after), before <= after."""
    before = total // 2
    return before, total - before


def resize_mask(mask, scale, padding, crop=None):
    """Resize, then pad or crop, a mask the way ``resize_image`` did its image.

    Nearest-neighbour sampling on the pixel-centre grid that
    ``resize_image`` uses, so mask and image stay aligned and the result
    has exactly the resized image's size.

    Args:
        mask: [height, width, num_instances] bool.
        scale, padding, crop: as returned by ``resize_image``.

    Returns:
        [new_height, new_width, num_instances], same dtype as ``mask``.
    """
    h, w = mask.shape[:2]
    if scale != 1:
        shape = (round(h * scale), round(w * scale)) + mask.shape[2:]
        if mask.size:
            mask = skimage.transform.resize(
                mask, shape, order=0, mode="constant", preserve_range=True,
                anti_aliasing=False).astype(mask.dtype)
        else:
            mask = np.zeros(shape, dtype=mask.dtype)
    if crop is not None:
        y, x, h, w = crop
        return mask[y:y + h, x:x + w]
    return np.pad(mask, padding, mode="constant", constant_values=0)


############################################################
#  Image metadata and normalization
############################################################

def compose_image_meta(image_id, original_image_shape, image_shape,
                       window, scale, active_class_ids):
    """Pack the attributes of an image into one 1-D array.

    Args:
        image_id: int id of the image (the dataset's internal id).
        original_image_shape: [H, W, C] before resizing or padding.
        image_shape: [H, W, C] after resizing and padding.
        window: (y1, x1, y2, x2) pixels of the real image inside the padded
            one (``y2``/``x2`` exclusive).
        scale: the factor applied by ``resize_image``.
        active_class_ids: [NUM_CLASSES] 1 for the classes of the image's
            dataset (source), 0 for the others.

    Returns:
        float64 [1 + 3 + 3 + 4 + 1 + NUM_CLASSES] = [config.IMAGE_META_SIZE]:
        image_id, original_image_shape, image_shape, window, scale,
        active_class_ids, in that order.
    """
    return np.array(
        [image_id]
        + list(original_image_shape)
        + list(image_shape)
        + list(window)
        + [scale]
        + list(active_class_ids),
        dtype=np.float64)


def parse_image_meta(meta):
    """Unpack image metadata made by ``compose_image_meta``.

    Args:
        meta: [META_SIZE] for one image or [batch, META_SIZE].

    Returns:
        dict of arrays with the leading batch dimension of ``meta`` (if any):
        image_id int32 [], original_image_shape int32 [3], image_shape int32
        [3], window int32 [(y1, x1, y2, x2)], scale float32 [],
        active_class_ids int32 [NUM_CLASSES].
    """
    meta = np.asarray(meta)
    return {
        "image_id": meta[..., 0].astype(np.int32),
        "original_image_shape": meta[..., 1:4].astype(np.int32),
        "image_shape": meta[..., 4:7].astype(np.int32),
        "window": meta[..., 7:11].astype(np.int32),
        "scale": meta[..., 11].astype(np.float32),
        "active_class_ids": meta[..., 12:].astype(np.int32),
    }


def mold_image(images, config):
    """Subtract the mean pixel: uint8 RGB image(s) [..., 3] -> float32.

    The model takes images in this form; ``unmold_image`` is the inverse.
    """
    return images.astype(np.float32) - np.asarray(config.MEAN_PIXEL, np.float32)


def unmold_image(normalized_images, config):
    """Add the mean pixel back to image(s) made by ``mold_image`` -> uint8."""
    images = np.asarray(normalized_images, np.float32) + np.asarray(
        config.MEAN_PIXEL, np.float32)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


############################################################
#  Batches in, detections out
############################################################

def mold_inputs(images, config):
    """Resize and normalize images the way the network expects.

    Args:
        config: IMAGE_RESIZE_MODE, IMAGE_MIN_DIM, IMAGE_MAX_DIM,
            IMAGE_MIN_SCALE, MEAN_PIXEL, NUM_CLASSES.
        images: list of images [H, W, C] of any size; any dtype or channel
            count utils.to_rgb8 accepts.

    Returns:
        molded_images: [N, h, w, 3] float32, resized and mean-subtracted.
        image_metas: [N, IMAGE_META_SIZE] (see compose_image_meta).
        windows: [N, (y1, x1, y2, x2)] pixel area of each molded image
            that holds the original image (the rest is padding).
    """
    molded_images, image_metas, windows = [], [], []
    for image in images:
        image = utils.to_rgb8(image)
        molded_image, window, scale, padding, crop = resize_image(
            image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
            max_dim=config.IMAGE_MAX_DIM, mode=config.IMAGE_RESIZE_MODE)
        molded_image = mold_image(molded_image, config)
        image_meta = compose_image_meta(0, image.shape, molded_image.shape, window, scale,
                                        np.zeros([config.NUM_CLASSES], dtype=np.int32))
        molded_images.append(molded_image)
        windows.append(window)
        image_metas.append(image_meta)
    if len({image.shape for image in molded_images}) > 1:
        raise ValueError("After resizing, the images of one batch must share one shape: "
                         "use IMAGE_RESIZE_MODE 'square' or detect one image at a time.")
    return np.stack(molded_images), np.stack(image_metas), np.stack(windows)


def unmold_detections(detections, mrcnn_mask, original_image_shape, image_shape, window):
    """Turn one image's network output into boxes and masks of the original image.

    Args:
        detections: [N, (y1, x1, y2, x2, class_id, score)] normalized, zero-padded.
        mrcnn_mask: [N, height, width, num_classes] mask probabilities.
        original_image_shape: [H, W, C] before resizing.
        image_shape: [H, W, C] after resizing and padding.
        window: [y1, x1, y2, x2] pixels of the image inside the padding.

    Returns:
        boxes [N, (y1, x1, y2, x2)] int32 pixels, class_ids [N] int32,
        scores [N] float32, masks [H, W, N] bool.
    """
    zero_ix = np.where(detections[:, 4] == 0)[0]
    n = zero_ix[0] if zero_ix.shape[0] > 0 else detections.shape[0]

    boxes = detections[:n, :4]
    class_ids = detections[:n, 4].astype(np.int32)
    scores = detections[:n, 5].astype(np.float32)
    masks = mrcnn_mask[np.arange(n), :, :, class_ids]

    # Boxes are relative to the molded image: shift and scale them to the window.
    window = utils.norm_boxes(window, image_shape[:2])
    wy1, wx1, wy2, wx2 = window
    shift = np.array([wy1, wx1, wy1, wx1])
    scale = np.array([wy2 - wy1, wx2 - wx1, wy2 - wy1, wx2 - wx1])
    boxes = np.divide(boxes - shift, scale)
    boxes = utils.denorm_boxes(boxes, original_image_shape[:2])

    # Drop boxes of zero area (possible with the window clipping).
    keep = np.where((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)[0]
    boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]

    boxes = boxes.astype(np.int32)
    # One [H, W, N] array, each mask written into its box: no full-image
    # mask per instance to stack afterwards (twice the result's memory).
    full_masks = np.zeros(tuple(original_image_shape[:2]) + (len(boxes),), dtype=bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        full_masks[y1:y2, x1:x2, i] = box_mask(masks[i], (y2 - y1, x2 - x1))
    return boxes, class_ids, scores, full_masks


def unmold_mask(mask, bbox, image_shape):
    """Turn a mask predicted by the mask head into a full-image mask.

    Args:
        mask: [height, width] float mask (typically 28x28) of probabilities.
        bbox: (y1, x1, y2, x2) int pixel box the mask fills.
        image_shape: (height, width, ...) of the image.

    Returns:
        bool [height, width] of the image: the mask resized to the box and
        thresholded at 0.5.
    """
    y1, x1, y2, x2 = bbox
    full_mask = np.zeros(image_shape[:2], dtype=bool)
    full_mask[y1:y2, x1:x2] = box_mask(mask, (y2 - y1, x2 - x1))
    return full_mask


def box_mask(mask, box_size):
    """A predicted mask resized to its box (bilinear, as ``utils.resize``) and thresholded at 0.5.

    Args:
        mask: [height, width] float probabilities.
        box_size: (height, width) of the box in pixels.

    Returns:
        bool [box height, box width].
    """
    return utils.resize(mask, box_size) >= 0.5
