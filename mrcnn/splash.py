"""What a trained model's detections become: color splashes and detection records.

- ``splash_image(model, image)``: the picture in gray, the detected objects in
  color (``visualize.color_splash``).
- ``splash_video(model, video_path, output_path)``: the same for every frame of
  a video, written atomically as MP4.
- ``detection_record(path, shape, result, class_names)``: one image's
  detections as JSON-ready data (boxes, class names, scores, COCO RLE masks).
- ``save_image(path, image)``: write a picture atomically.

``model`` is a ``MaskRCNN`` in inference mode with BATCH_SIZE 1 (anything
with ``detect([image])``).
"""

import os

from PIL import Image

from mrcnn import evaluate, files, images, visualize
from mrcnn.errors import InputError


class VideoError(InputError):
    """A video that cannot be read; the message names it and what to do."""


def splash_image(model, image):
    """(splash [H, W, 3] uint8, detect() result) of one [H, W, 3] uint8 RGB image."""
    result = model.detect([image], verbose=0)[0]
    return visualize.color_splash(image, result["masks"]), result


def save_image(path, image):
    """Write a [H, W, 3] uint8 image atomically, in the format of ``path``'s extension."""
    return files.write_atomically(path, lambda temporary: Image.fromarray(image).save(temporary))


def splash_video(model, video_path, output_path, progress=True):
    """Color splash of every frame of a video, written to ``output_path`` (MP4).

    Args:
        model: see the module docstring.
        video_path: any video OpenCV reads.
        output_path: the .mp4 to write; written under a temporary name and
            renamed when complete.
        progress: show a progress bar of the frames on stderr.

    Returns:
        The number of frames written.

    Raises:
        VideoError: the video cannot be opened or has no readable frame.
        files.FileError: ``video_path`` is not a regular file.
    """
    import cv2

    capture = _open_video(video_path)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    count = 0
    try:
        with files.atomic_path(output_path) as temporary:
            writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                     (width, height))
            bar = files.ProgressBar(total, os.path.basename(video_path)) if progress else None
            try:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    splash, _ = splash_image(model, frame[..., ::-1].copy())
                    writer.write(splash[..., ::-1].copy())
                    count += 1
                    if bar:
                        bar.advance()
            finally:
                writer.release()
                if bar:
                    bar.close()
            if not count:
                raise VideoError(f"{video_path}: no frame could be read. Convert it to MP4 "
                                 "(H.264).")
    finally:
        capture.release()
    return count


def check_video(video_path):
    """Raise VideoError (or files.FileError) unless a video file opens and has a first frame.

    Commands call it before loading a model, so that a bad video stops them
    early. An image file is refused too: OpenCV would read it as a video of one frame.
    """
    if images.is_image_name(os.path.basename(video_path)):
        files.regular_file(video_path, what="video")
        raise VideoError(f"{video_path}: an image, not a video. Splash it as an image "
                         "(--image).")
    capture = _open_video(video_path)
    try:
        if not capture.read()[0]:
            raise VideoError(f"{video_path}: no frame could be read. Convert it to MP4 (H.264).")
    finally:
        capture.release()


def _open_video(video_path):
    """An opened cv2.VideoCapture of a regular file; VideoError when OpenCV cannot open it."""
    import cv2

    files.regular_file(video_path, what="video")
    capture = cv2.VideoCapture(os.fspath(video_path))
    if not capture.isOpened():
        raise VideoError(f"{video_path}: OpenCV cannot open this video. Convert it to MP4 "
                         "(H.264).")
    return capture


def detection_record(path, shape, result, class_names):
    """One image's detections as JSON-ready data.

    Args:
        path: the image file.
        shape: [H, W, ...] of the image.
        result: its ``detect()`` dict.
        class_names: names indexed by class id, background first
            (``dataset.class_names``).

    Returns:
        {"image", "height", "width", "instances": [{"box": [y1, x1, y2, x2]
        pixels (y2/x2 exclusive), "class_id", "class_name", "score", "mask":
        COCO RLE}]}.
    """
    return {
        "image": os.path.abspath(path),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "instances": [
            {"box": [int(v) for v in box], "class_id": int(class_id),
             "class_name": class_names[class_id], "score": round(float(score), 4), "mask": rle}
            for box, class_id, score, rle in zip(
                result["rois"], result["class_ids"], result["scores"],
                evaluate.encode_masks(result["masks"]))],
    }
