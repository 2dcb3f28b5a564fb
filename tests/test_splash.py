"""Tests of mrcnn.splash with a stub model whose detections are known."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn import splash

from conftest import box_mask


class StubModel:
    """Detects one instance: the box (10, 20)-(30, 50) of any image."""

    def __init__(self):
        self.calls = 0

    def detect(self, images, verbose=0):
        self.calls += 1
        height, width = images[0].shape[:2]
        masks = box_mask((height, width), (10, 20, 30, 50))[:, :, None]
        return [{"rois": np.array([[10, 20, 30, 50]], np.int32),
                 "class_ids": np.array([1], np.int32), "scores": np.array([0.875], np.float32),
                 "masks": masks}]


def colour_image(height=48, width=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_splash_image_keeps_colour_inside_the_masks_only():
    image = colour_image()
    picture, result = splash.splash_image(StubModel(), image)
    inside = result["masks"][:, :, 0]
    np.testing.assert_array_equal(picture[inside], image[inside])
    outside = picture[~inside]
    assert (outside[:, 0] == outside[:, 1]).all() and (outside[:, 1] == outside[:, 2]).all()
    luminance = image[~inside].astype(float) @ [0.2125, 0.7154, 0.0721]  # ITU-R 709
    assert np.abs(outside[:, 0] - luminance).max() <= 1


def test_save_image_writes_a_png_atomically(tmp_path):
    image = colour_image()
    path = splash.save_image(tmp_path / "out" / "splash.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    assert os.listdir(tmp_path / "out") == ["splash.png"]


def write_video(path, frames=3, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * index, np.uint8))
    writer.release()


def test_splash_video_writes_every_frame(tmp_path, capsys):
    write_video(tmp_path / "clip.mp4")
    model = StubModel()
    output = tmp_path / "out" / "splash.mp4"
    assert splash.splash_video(model, tmp_path / "clip.mp4", output) == 3
    assert model.calls == 3
    capture = cv2.VideoCapture(str(output))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 3
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    assert os.listdir(tmp_path / "out") == ["splash.mp4"]
    assert "clip.mp4 [" in capsys.readouterr().err


def test_splash_video_of_a_file_that_is_no_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(splash.VideoError, match="notes.mp4"):
        splash.splash_video(StubModel(), tmp_path / "notes.mp4", tmp_path / "out" / "s.mp4")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_detection_record_holds_boxes_names_scores_and_rle_masks(tmp_path):
    image = colour_image()
    result = StubModel().detect([image])[0]
    record = splash.detection_record(tmp_path / "a.jpg", image.shape, result, ["BG", "pikachu"])
    assert record["image"] == str(tmp_path / "a.jpg")
    assert (record["height"], record["width"]) == (48, 64)
    [instance] = record["instances"]
    assert instance["box"] == [10, 20, 30, 50]
    assert (instance["class_id"], instance["class_name"], instance["score"]) == (1, "pikachu", 0.875)
    rle = dict(instance["mask"], counts=instance["mask"]["counts"].encode())
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), result["masks"][:, :, 0])
