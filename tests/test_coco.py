"""Tests of mrcnn.coco: COCO instance files read into masks, their problems reported."""

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

from mrcnn import coco, via
from mrcnn.images import EXIF_ORIENTATION_TAG

from conftest import box_mask, rle_counts

H, W = 40, 60
PIKACHU = {"id": 1, "name": "pikachu", "supercategory": "pikachus"}
RAICHU = {"id": 3, "name": "raichu"}
ROBOFLOW_PARENT = {"id": 0, "name": "pikachus", "supercategory": "none"}


def rect_polygon(y1, x1, y2, x2):
    """A COCO polygon around the pixels y1..y2-1, x1..x2-1 (pixel i spans [i, i + 1))."""
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def write_image(path, size=(W, H), exif=None):
    image = Image.new("RGB", size, (90, 120, 200))
    image.save(path, **({"exif": exif} if exif else {}))
    return str(path)


def write_coco(folder, annotations, images=None, categories=(PIKACHU,), name="annotations.json",
               **extra):
    """Write a COCO file into ``folder``; images default to one 60x40 image a.png (id 1)."""
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H}] if images is None \
        else images
    data = {"images": images, "annotations": annotations, "categories": list(categories), **extra}
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def annotation(segmentation, id=1, image_id=1, category_id=1, iscrowd=0):
    return {"id": id, "image_id": image_id, "category_id": category_id, "iscrowd": iscrowd,
            "segmentation": segmentation, "bbox": [0, 0, 1, 1], "area": 1}


@pytest.fixture
def folder(tmp_path):
    write_image(tmp_path / "a.png")
    return tmp_path


def messages(problems):
    return [problem.message for problem in problems]


# ---------------------------------------------------------------------------
# Masks of every segmentation kind


def test_polygons_and_rles_become_the_masks_they_describe(folder):
    l_shape = box_mask((H, W), (5, 30, 35, 36)) | box_mask((H, W), (29, 30, 35, 55))
    rows, cols = np.mgrid[:H, :W]
    band = (np.abs(rows - cols * 0.5) < 3) & (cols > 2)
    two_pieces = [rect_polygon(0, 0, 4, 4), rect_polygon(36, 56, 40, 60)]
    compressed = mask_utils.encode(np.asfortranarray(l_shape.astype(np.uint8)))
    path = write_coco(folder, [
        annotation([rect_polygon(2, 2, 20, 20)], id=10),
        annotation(two_pieces, id=11),
        annotation({"size": [H, W], "counts": compressed["counts"].decode()}, id=12),
        annotation({"size": [H, W], "counts": rle_counts(band)}, id=13, category_id=3),
        annotation({"size": [H, W], "counts": rle_counts(box_mask((H, W), (20, 0, 40, 10)))},
                   id=14, iscrowd=1),
    ], categories=[PIKACHU, RAICHU])
    loaded = coco.load_coco(path)
    assert loaded.problems == [] and loaded.class_names == ["pikachu", "raichu"]
    [image] = loaded.images
    assert (image.path, image.height, image.width) == (str(folder / "a.png"), H, W)
    assert [(r.annotation_id, r.label, r.crowd) for r in image.regions] == [
        (10, "pikachu", False), (11, "pikachu", False), (12, "pikachu", False),
        (13, "raichu", False), (14, "pikachu", True)]
    masks = coco.image_masks(image)
    assert masks.shape == (H, W, 5) and masks.dtype == bool
    expected = [box_mask((H, W), (2, 2, 20, 20)),
                box_mask((H, W), (0, 0, 4, 4)) | box_mask((H, W), (36, 56, 40, 60)),
                l_shape, band, box_mask((H, W), (20, 0, 40, 10))]
    for i, mask in enumerate(expected):
        np.testing.assert_array_equal(masks[..., i], mask, err_msg=f"region {i}")


def test_classes_are_the_used_categories_in_id_order(folder):
    square = [rect_polygon(2, 2, 20, 20)]
    path = write_coco(folder, [annotation(square, id=1, category_id=3),
                               annotation(square, id=2, category_id=1)],
                      categories=[RAICHU, ROBOFLOW_PARENT, PIKACHU])
    loaded = coco.load_coco(path)
    assert loaded.class_names == ["pikachu", "raichu"]  # the unused parent category is no class
    assert loaded.categories == {3: "raichu", 0: "pikachus", 1: "pikachu"}
    only = coco.load_coco(path, class_names=["raichu"])
    assert [r.label for r in only.images[0].regions] == ["raichu"]
    assert messages(only.problems) == [
        "a.png: annotation 2 has class 'pikachu', not one of raichu; skipped"]


def test_images_without_annotations_are_negatives(folder):
    write_image(folder / "b.png")
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H},
              {"id": 2, "file_name": "b.png", "width": W, "height": H}]
    crowd_only = annotation({"size": [H, W], "counts": rle_counts(box_mask((H, W), (0, 0, 9, 9)))},
                            iscrowd=1)
    path = write_coco(folder, [crowd_only], images=images)
    assert coco.load_coco(path).images == []
    kept = coco.load_coco(path, keep_negatives=True).images
    assert [(image.filename, len(image.regions)) for image in kept] == [("a.png", 1), ("b.png", 0)]
    assert coco.image_masks(kept[1]).shape == (H, W, 0)


def test_file_names_may_sit_in_an_images_folder_as_cvat_exports_them(tmp_path):
    os.makedirs(tmp_path / "images")
    write_image(tmp_path / "images" / "a.png")
    path = write_coco(tmp_path, [annotation([rect_polygon(2, 2, 20, 20)])],
                      name=os.path.join("annotations", "instances_default.json"))
    [image] = coco.load_coco(path, image_dir=tmp_path).images
    assert image.path == str(tmp_path / "images" / "a.png")


# ---------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_arrays_as_pil_turns_photos(orientation):
    stored = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5) * 10
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    photo = Image.fromarray(stored)
    photo.getexif()[EXIF_ORIENTATION_TAG] = orientation
    expected = np.asarray(ImageOps.exif_transpose(photo))
    np.testing.assert_array_equal(coco.ORIENT[orientation](stored), expected)


def exif(orientation):
    tags = Image.Exif()
    tags[EXIF_ORIENTATION_TAG] = orientation
    return tags


def test_masks_follow_a_photo_annotated_without_its_exif_rotation(tmp_path):
    # Stored 60x40, EXIF orientation 6: displayed 40 wide and 60 high.
    write_image(tmp_path / "stored.jpg", exif=exif(6))
    write_image(tmp_path / "shown.jpg", exif=exif(6))
    write_image(tmp_path / "resized.jpg", exif=exif(6))
    images = [{"id": 1, "file_name": "stored.jpg", "width": W, "height": H},   # the stored frame
              {"id": 2, "file_name": "shown.jpg", "width": H, "height": W},    # the displayed one
              {"id": 3, "file_name": "resized.jpg", "width": 30, "height": 20}]
    path = write_coco(tmp_path, [annotation([rect_polygon(2, 4, 10, 30)], id=1, image_id=1),
                                 annotation([rect_polygon(2, 4, 10, 30)], id=2, image_id=2),
                                 annotation([rect_polygon(2, 4, 10, 20)], id=3, image_id=3)],
                      images=images)
    loaded = coco.load_coco(path)
    stored, shown = loaded.images
    assert (stored.height, stored.width, stored.orientation) == (W, H, 6)
    assert (shown.height, shown.width, shown.orientation) == (W, H, 1)
    mask_image = Image.fromarray(box_mask((H, W), (2, 4, 10, 30)).astype(np.uint8) * 255)
    mask_image.getexif()[EXIF_ORIENTATION_TAG] = 6
    turned = np.asarray(ImageOps.exif_transpose(mask_image)) > 0
    np.testing.assert_array_equal(coco.image_masks(stored)[..., 0], turned)
    np.testing.assert_array_equal(coco.image_masks(shown)[..., 0],
                                  box_mask((W, H), (2, 4, 10, 30)))
    assert loaded.problems == [via.Problem(str(tmp_path / "resized.jpg"),
                                           "the COCO file gives its size as 30x20 but the image "
                                           "is 40x60. Export the annotations of the images as "
                                           "they are now; skipped")]


# ---------------------------------------------------------------------------
# Malformed files


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "not a COCO instance file: the JSON is a list"),
    ('{"images": [], "categories": []}', "not a COCO instance file: it has no annotations"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' is a dict; in a COCO file "
                                                            "it is a list"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1}]}',
     "categories[0] ({'id': 1}) needs an integer 'id' and a 'name'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, '
     '{"id": 1, "name": "b"}]}', "two categories have id 1 ('a' and 'b')"),
    ('{"images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}, '
     '{"id": 1, "file_name": "b.png", "width": 60, "height": 40}], "annotations": [], '
     '"categories": []}', "two images have id 1"),
    ('{"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png", '
     '"width": 60, "height": 40}], "annotations": [], "categories": []}', "two images have id 1"),
    ('{"images": [], "annotations": [1, 2,,], "categories": []}',
     "malformed JSON at line 1, column 37"),
])
def test_unusable_files_raise_one_message_naming_the_file(folder, content, fragment):
    path = folder / "annotations.json"
    path.write_text(content)
    with pytest.raises(coco.CocoError) as error:
        coco.load_coco(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("file_name", ["../a.png", "/etc/passwd", "sub/../../a.png",
                                       "C:\\images\\a.png"])
def test_file_names_outside_the_folder_are_refused(tmp_path, file_name):
    subset = tmp_path / "train"
    subset.mkdir()
    write_image(tmp_path / "a.png")
    path = write_coco(subset, [], images=[{"id": 1, "file_name": file_name, "width": W,
                                           "height": H}])
    with pytest.raises(via.ViaError) as error:
        coco.load_coco(path)
    assert f"image filename {file_name!r} is absolute or climbs out of" in str(error.value)


def test_every_image_missing_is_fatal(tmp_path):
    path = write_coco(tmp_path, [annotation([rect_polygon(2, 2, 20, 20)])])
    with pytest.raises(coco.CocoError, match="none of its 1 image files are in"):
        coco.load_coco(path)


def test_odd_entries_are_reported_and_left_out(folder):
    write_image(folder / "b.png")
    square = [rect_polygon(2, 2, 20, 20)]
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H},
              {"id": 2, "file_name": "b.png", "width": W},
              {"file_name": "c.png", "width": W, "height": H},
              {"id": 4, "file_name": "a.png", "width": W, "height": H},
              {"id": 5, "file_name": "gone.png", "width": W, "height": H}]
    wrong_size = {"size": [W, H], "counts": rle_counts(np.ones((W, H), bool))}
    annotations = [
        annotation(square, id=1),
        annotation(square, id=2, image_id=99),
        annotation(square, id=3, category_id=7),
        annotation([[1, 1, 5, 5]], id=4),
        annotation([2, 2, 20, 2, 20, 20], id=5),
        annotation([], id=6),
        annotation(wrong_size, id=7),
        annotation({"size": [H, W], "counts": [10, 5]}, id=8),
        annotation({"size": [H, W], "counts": "oooo"}, id=9),
        annotation({"size": [H, W], "counts": "0d0"}, id=15),
        annotation(square, id=10, iscrowd=2),
        annotation([rect_polygon(-5, 50, 10, 70)], id=11),
        annotation([rect_polygon(45, 70, 50, 80)], id=12),
        "not an annotation",
        annotation([["a", 1, 2, 3, 4, 5]], id=14),
        annotation(square, id=16, image_id=2),  # of a skipped image: not reported again
        annotation([[1e300, 1, 5, 5, 1, 9]], id=17),
        annotation([[1e5, 1, 5, 5, 1, 9]], id=19),
        annotation(square, id=18, image_id=5),  # of a missing image: not reported again
    ]
    loaded = coco.load_coco(write_coco(folder, annotations, images=images))
    [image] = loaded.images
    assert [r.annotation_id for r in image.regions] == [1, 11]
    source, a_png = str(folder / "annotations.json"), str(folder / "a.png")
    expected = [
        (source, "image 2 (b.png): height is null, not a number; skipped"),
        (source, "images[2] ({'file_name': 'c.png', 'width': 60, 'height': 40}) has no 'id'; "
                 "skipped"),
        (source, "image 4: a.png is listed more than once (also image 1); skipped"),
        (str(folder / "gone.png"), "image file is missing"),
        (source, "annotation 2: image_id 99 is not among the images; skipped"),
        (source, "annotation 3 (a.png): category_id 7 is not among the categories (1); skipped"),
        (a_png, "annotation 4: polygon 0 has 4 numbers; a polygon is x, y pairs of at least 3 "
                "points; skipped"),
        (a_png, "annotation 5: segmentation is a flat list of 6 numbers; it must be "
                f"{coco.SEGMENTATION_HELP}; skipped"),
        (a_png, "annotation 6: has no segmentation, only a box: Mask R-CNN learns from masks, "
                "so draw a polygon or a mask in the annotation tool; skipped"),
        (a_png, "annotation 7: RLE size [60, 40] is not the image's [height, width] [40, 60]; "
                f"segmentation must be {coco.SEGMENTATION_HELP}; skipped"),
        (a_png, "annotation 8: RLE counts add up to 15 pixels, not the image's 40 x 60 = 2400; "
                "skipped"),
        (a_png, "annotation 9: RLE counts are not a compressed RLE (the last run length is cut "
                "short); skipped"),
        (a_png, "annotation 15: RLE counts add up to 20 pixels, not the image's 40 x 60 = 2400; "
                "skipped"),
        (a_png, "annotation 10: iscrowd is 2, not 0 or 1; skipped"),
        (a_png, "annotation 11 reaches outside the 60x40 image; clipped to it"),
        (a_png, "annotation 12 reaches outside the 60x40 image; clipped to it"),
        (a_png, "annotation 12 covers no pixel of the image; skipped"),
        (source, "annotations[13] is a str, not an object; skipped"),
        (a_png, 'annotation 14: polygon 0[0] is "a", not a number; skipped'),
        (a_png, "annotation 17: polygon 0[0] is 1e+300, beyond the limit of 1e+06; skipped"),
        (a_png, "annotation 19: polygon 0 reaches more than an image size outside the 60x40 "
                "image: a coordinate is wrong; skipped"),
    ]
    assert [tuple(problem) for problem in loaded.problems] == expected
    np.testing.assert_array_equal(coco.image_masks(image)[..., 1],
                                  box_mask((H, W), (0, 50, 10, 60)))


def test_compressed_counts_read_what_pycocotools_writes():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (7, 5), (64, 48)):
        for fill in (0.0, 0.02, 0.5, 1.0):
            mask = rng.random(shape) < fill
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert coco.compressed_counts(rle["counts"].decode()) == rle_counts(mask)
    with pytest.raises(ValueError, match="'~' is not an RLE character"):
        coco.compressed_counts("1~")


def test_the_cleaned_dataset_loads_in_pycocotools(folder):
    square = [rect_polygon(2, 2, 20, 20)]
    loaded = coco.load_coco(write_coco(folder, [annotation(square, id=1),
                                                annotation(square, id=2, category_id=9)],
                                       info={"year": 2026}))
    api = coco.coco_api(loaded.dataset)
    assert list(api.anns) == [1] and list(api.imgs) == [1] and api.dataset["info"]["year"] == 2026
    np.testing.assert_array_equal(api.annToMask(api.anns[1]).astype(bool),
                                  coco.image_masks(loaded.images[0])[..., 0])
