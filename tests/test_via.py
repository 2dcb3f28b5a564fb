"""Tests of mrcnn.via: VIA 1.x/2.x/3.x files, shapes, classes, EXIF, dataset check."""

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from mrcnn import files, images, utils, via

MUG = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "mug")
H, W = 40, 60


def write_image(path, height=H, width=W, color=(90, 90, 90), exif=None):
    image = Image.fromarray(np.full((height, width, 3), color, np.uint8))
    image.save(path, exif=exif) if exif is not None else image.save(path)
    return path


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def polygon(xs, ys):
    return {"name": "polygon", "all_points_x": xs, "all_points_y": ys}


def via1(images):
    """VIA 1.x export: regions as a dict {"0": region, ...}."""
    return {f"{name}123": {"fileref": "", "size": 123, "filename": name, "base64_img_data": "",
                           "file_attributes": {},
                           "regions": {str(i): {"shape_attributes": s, "region_attributes": a}
                                       for i, (s, a) in enumerate(regions)}}
            for name, regions in images.items()}


def via2(images):
    """VIA 2.x export: regions as a list."""
    return {f"{name}123": {"filename": name, "size": 123, "file_attributes": {},
                           "regions": [{"shape_attributes": s, "region_attributes": a}
                                       for s, a in regions]}
            for name, regions in images.items()}


def centre_grid(height=H, width=W):
    """Pixel-centre coordinates (ys, xs) [H, W]."""
    return np.mgrid[0:height, 0:width].astype(float)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# ---------------------------------------------------------------------------
# Versions and shapes


ALL_SHAPES = [
    (polygon([10, 20, 20, 10], [5, 5, 15, 15]), {"name": "pikachu"}),
    ({"name": "polyline", "all_points_x": [30, 40, 35], "all_points_y": [5, 5, 12]}, {"name": "pikachu"}),
    ({"name": "rect", "x": 2, "y": 20, "width": 8, "height": 6}, {"name": "pikachu"}),
    ({"name": "circle", "cx": 30, "cy": 28, "r": 6}, {"name": "pikachu"}),
    ({"name": "ellipse", "cx": 48, "cy": 25, "rx": 9, "ry": 3, "theta": np.pi / 6}, {"name": "pikachu"}),
    ({"name": "point", "cx": 5, "cy": 5}, {"name": "pikachu"}),
]


def expected_masks():
    """Independent masks of ALL_SHAPES but the point, from pixel-centre geometry."""
    ys, xs = centre_grid()
    square = (xs >= 10) & (xs <= 20) & (ys >= 5) & (ys <= 15)
    rect = (xs >= 2) & (xs < 10) & (ys >= 20) & (ys < 26)
    circle = (xs - 30) ** 2 + (ys - 28) ** 2 < 36
    dx, dy, t = xs - 48, ys - 25, np.pi / 6
    ellipse = ((dx * np.cos(t) + dy * np.sin(t)) / 9) ** 2 + ((-dx * np.sin(t) + dy * np.cos(t)) / 3) ** 2 <= 1
    return square, rect, circle, ellipse


@pytest.fixture
def shapes_dir(tmp_path):
    write_image(tmp_path / "a.png")
    return tmp_path


def check_all_shapes(annotations, image_dir):
    assert annotations.class_names == ["pikachu"]
    [image] = annotations.images
    assert (image.height, image.width) == (H, W)
    assert image.path == os.path.join(str(image_dir), "a.png")
    assert [r.shape for r in image.regions] == ["polygon", "polyline", "rect", "circle", "ellipse"]
    assert all(r.label == "pikachu" for r in image.regions)
    masks = via.image_masks(image)
    assert masks.shape == (H, W, 5) and masks.dtype == bool
    square, rect, circle, ellipse = expected_masks()
    np.testing.assert_array_equal(masks[..., 0], square)
    np.testing.assert_array_equal(masks[..., 2], rect)
    assert iou(masks[..., 3], circle) > 0.9
    assert iou(masks[..., 4], ellipse) > 0.9  # the wrong rotation sense gives ~0.25
    assert masks[7, 35, 1] and masks[..., 1].sum() > 20  # polyline is closed like a polygon
    assert [p.message for p in annotations.problems] == [
        "region 5 (point): point region has no area; skipped (use polygon, rect, circle or ellipse)"]


@pytest.mark.parametrize("writer, version", [(via1, "1.x"), (via2, "2.x")])
def test_export_every_shape(shapes_dir, writer, version):
    path = write_json(shapes_dir / "via_region_data.json", writer({"a.png": ALL_SHAPES}))
    annotations = via.load_via(path)
    assert annotations.version == version
    check_all_shapes(annotations, shapes_dir)


def test_via2_project_file(shapes_dir):
    project = {"_via_settings": {}, "_via_attributes": {"region": {}, "file": {}},
               "_via_img_metadata": via2({"a.png": ALL_SHAPES})}
    annotations = via.load_via(write_json(shapes_dir / "project.json", project))
    assert annotations.version == "2.x"
    check_all_shapes(annotations, shapes_dir)


def via3_project(metadata, files=None):
    files = files or {"1": {"fid": "1", "fname": "a.png", "type": 2, "loc": 1, "src": ""}}
    return {
        "project": {"pid": "__VIA_PROJECT_ID__", "vid_list": list(files)},
        "config": {},
        "attribute": {"1": {"aname": "name", "anchor_id": "FILE1_Z0_XY1", "type": 3,
                            "options": {"0": "pikachu", "1": "raichu"}}},
        "file": files,
        "view": {fid: {"fid_list": [fid]} for fid in files},
        "metadata": metadata,
    }


def test_via3_project_file(shapes_dir):
    t = np.pi / 6
    metadata = {
        "1_a": {"vid": "1", "flg": 0, "z": [], "xy": [7, 10, 5, 20, 5, 20, 15, 10, 15], "av": {"1": "0"}},
        "1_b": {"vid": "1", "flg": 0, "z": [], "xy": [6, 30, 5, 40, 5, 35, 12], "av": {"1": "0"}},
        "1_c": {"vid": "1", "flg": 0, "z": [], "xy": [2, 2, 20, 8, 6], "av": {"1": "0"}},
        "1_d": {"vid": "1", "flg": 0, "z": [], "xy": [3, 30, 28, 6], "av": {"1": "0"}},
        "1_e": {"vid": "1", "flg": 0, "z": [], "xy": [4, 48, 25, 9, 3, t], "av": {"1": "0"}},
        "1_f": {"vid": "1", "flg": 0, "z": [], "xy": [1, 5, 5], "av": {"1": "0"}},
        "1_g": {"vid": "1", "flg": 0, "z": [], "xy": [], "av": {"1": "0"}},  # file-level metadata
    }
    annotations = via.load_via(write_json(shapes_dir / "via3.json", via3_project(metadata)))
    assert annotations.version == "3.x"
    check_all_shapes(annotations, shapes_dir)


def test_via3_option_labels_name_the_classes(shapes_dir):
    metadata = {
        "1_a": {"vid": "1", "z": [], "xy": [2, 0, 0, 5, 5], "av": {"1": "0"}},
        "1_b": {"vid": "1", "z": [], "xy": [2, 10, 10, 5, 5], "av": {"1": "1"}},
    }
    annotations = via.load_via(write_json(shapes_dir / "via3.json", via3_project(metadata)))
    assert annotations.class_names == ["pikachu", "raichu"]
    assert [r.label for r in annotations.images[0].regions] == ["pikachu", "raichu"]


# ---------------------------------------------------------------------------
# Bad files and odd regions


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "via_region_data.json"
    path.write_text('{\n  "a.png123": {"filename": "a.png",\n    "regions": [}\n}\n')
    with pytest.raises(via.ViaError) as error:
        via.load_via(path)
    message = str(error.value)
    assert message.startswith(f"{path}: malformed JSON at line 3, column 17")
    assert "export it from VIA again" in message


def test_not_a_via_file(tmp_path):
    with pytest.raises(via.ViaError, match="not a VIA annotation file"):
        via.load_via(write_json(tmp_path / "x.json", [1, 2, 3]))


def test_polygon_outside_the_image_is_clipped(shapes_dir):
    regions = [(polygon([-10, 30, 30, -10], [-5, -5, 10, 10]), {}),
               (polygon([100, 120, 110], [100, 100, 120]), {})]
    path = write_json(shapes_dir / "via.json", via1({"a.png": regions}))
    annotations = via.load_via(path)
    [image] = annotations.images
    assert len(image.regions) == 1
    ys, xs = centre_grid()
    np.testing.assert_array_equal(via.image_masks(image)[..., 0], (xs <= 30) & (ys <= 10))
    messages = [p.message for p in annotations.problems]
    # A region wholly outside is said to be skipped, not also to be clipped.
    assert messages == ["region 0 (polygon) reaches outside the 60x40 image; clipped to it",
                        "region 1 (polygon) covers no pixel of the image; skipped"]


def test_degenerate_regions_are_reported(shapes_dir):
    regions = [(polygon([1, 5], [1, 5]), {}), ({"name": "freehand"}, {}),
               ({"name": "rect", "x": 1}, {}), (polygon([1, 9, 9], [1, 1, 9]), {})]
    annotations = via.load_via(write_json(shapes_dir / "via.json", via2({"a.png": regions})))
    assert len(annotations.images[0].regions) == 1
    messages = [p.message for p in annotations.problems]
    assert messages[0] == "region 0 (polygon): polygon region has 2 points, fewer than 3; skipped"
    assert messages[1].startswith("region 1 (freehand): unknown shape 'freehand'")
    assert messages[2] == 'region 2 (rect): rect region lacks y, width, height ({"x": 1}); skipped'


@pytest.mark.parametrize("filename", ["../secret.png", "sub/../../secret.png", "/etc/passwd",
                                      "C:\\images\\a.png", "..\\secret.png"])
def test_filename_outside_the_folder_is_refused(tmp_path, filename):
    subset = tmp_path / "train"
    subset.mkdir()
    write_image(tmp_path / "secret.png")
    path = write_json(subset / "via.json", via1({filename: [(polygon([1, 9, 9], [1, 1, 9]), {})]}))
    with pytest.raises(via.ViaError) as error:
        via.load_via(path)
    assert f"image filename {filename!r} is absolute or climbs out of" in str(error.value)
    assert str(error.value).startswith(path)


def test_missing_images_warn_and_all_missing_is_fatal(shapes_dir):
    regions = [(polygon([1, 9, 9], [1, 1, 9]), {})]
    path = write_json(shapes_dir / "via.json", via1({"a.png": regions, "gone.jpg": regions}))
    with pytest.warns(via.ViaWarning, match=r"1 image file\(s\) missing .*: gone.jpg"):
        annotations = via.load_via(path)
    assert [i.filename for i in annotations.images] == ["a.png"]
    assert via.Problem(os.path.join(str(shapes_dir), "gone.jpg"), "image file is missing") \
        in annotations.problems

    path = write_json(shapes_dir / "via.json", via1({"gone.jpg": regions, "lost.jpg": regions}))
    with pytest.raises(via.ViaError, match="none of its 2 image files are in"):
        via.load_via(path)


def test_images_without_regions_are_skipped_or_kept(shapes_dir):
    write_image(shapes_dir / "b.png")
    path = write_json(shapes_dir / "via.json",
                      via1({"a.png": [(polygon([1, 9, 9], [1, 1, 9]), {})], "b.png": []}))
    assert [i.filename for i in via.load_via(path).images] == ["a.png"]
    kept = via.load_via(path, keep_negatives=True).images
    assert [i.filename for i in kept] == ["a.png", "b.png"]
    assert via.image_masks(kept[1]).shape == (H, W, 0)


# ---------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("orientation, to_raw", [(6, Image.Transpose.ROTATE_90),
                                                 (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_photo_mask_lands_on_the_object(tmp_path, orientation, to_raw):
    """A phone photo: stored sideways, shown upright. VIA's polygon is in the upright frame."""
    upright = np.full((64, 40, 3), 40, np.uint8)
    upright[8:24, 4:20] = (230, 20, 20)  # red object near the top left, as displayed
    raw = Image.fromarray(upright).transpose(to_raw)
    assert raw.size == (64, 40)  # stored landscape
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION_TAG] = orientation
    raw.save(tmp_path / "photo.jpg", exif=exif, quality=95, subsampling=0)
    path = write_json(tmp_path / "via.json",
                      via1({"photo.jpg": [(polygon([4, 19, 19, 4], [8, 8, 23, 23]), {})]}))

    [image] = via.load_via(path).images
    assert (image.height, image.width) == (64, 40)
    mask = via.image_masks(image)[..., 0]
    dataset = utils.Dataset()
    dataset.add_image("photos", 0, image.path)
    dataset.prepare()
    pixels = dataset.load_image(0)
    assert pixels.shape == (64, 40, 3)
    inside, outside = pixels[mask].astype(int), pixels[~mask].astype(int)
    assert (inside[:, 0] > 150).all() and (inside[:, 1] < 80).all() and inside[:, 0].mean() > 215
    assert (outside[:, 0] < 120).mean() > 0.97


# ---------------------------------------------------------------------------
# Classes


def test_multi_class_discovered_from_the_only_text_attribute(shapes_dir):
    square = polygon([1, 9, 9, 1], [1, 1, 9, 9])
    regions = [(square, {"name": "pikachu"}), (square, {"name": "raichu", "note": ""}),
               (square, {"name": {"raichu": True, "pikachu": False}}), (square, {}),
               (square, {"name": " "})]
    annotations = via.load_via(write_json(shapes_dir / "via.json", via2({"a.png": regions})))
    assert annotations.class_names == ["pikachu", "raichu"]
    assert [r.label for r in annotations.images[0].regions] == ["pikachu", "raichu", "raichu"]
    assert [p.message for p in annotations.problems] == [
        "a.png: region 3 has no 'name' attribute; give it one of pikachu, raichu. Skipped",
        "a.png: region 4 has an empty 'name' attribute; give it one of pikachu, raichu. Skipped"]


def test_given_class_names_report_unknown_classes(shapes_dir):
    square = polygon([1, 9, 9, 1], [1, 1, 9, 9])
    regions = [(square, {"kind": "pikachu"}), (square, {"kind": "eevee"})]
    path = write_json(shapes_dir / "via.json", via1({"a.png": regions}))
    annotations = via.load_via(path, class_names=["pikachu"])
    assert [r.label for r in annotations.images[0].regions] == ["pikachu"]
    assert [p.message for p in annotations.problems] == [
        "a.png: region 1 has unknown class 'eevee' (known: pikachu); skipped"]


def test_several_text_attributes_need_class_attribute(shapes_dir):
    square = polygon([1, 9, 9, 1], [1, 1, 9, 9])
    path = write_json(shapes_dir / "via.json",
                      via1({"a.png": [(square, {"name": "pikachu", "colour": "yellow"})]}))
    with pytest.raises(via.ViaError, match=r"several text attributes \(colour, name\).*--class-attribute"):
        via.load_via(path)
    assert via.load_via(path, class_attribute="colour").class_names == ["yellow"]
    with pytest.raises(via.ViaError, match="no region has a 'species' attribute"):
        via.load_via(path, class_attribute="species")


def test_regions_without_attributes_take_the_default_class(shapes_dir):
    path = write_json(shapes_dir / "via.json",
                      via1({"a.png": [(polygon([1, 9, 9, 1], [1, 1, 9, 9]), {})]}))
    annotations = via.load_via(path, default_class="pikachu")
    assert annotations.class_names == ["pikachu"]
    assert annotations.images[0].regions[0].label == "pikachu"


# ---------------------------------------------------------------------------
# Hostile fields: every field of every shape, of every wrong type and range

GOOD_SHAPES = {
    "polygon": {"name": "polygon", "all_points_x": [2, 20, 20, 2], "all_points_y": [2, 2, 20, 20]},
    "polyline": {"name": "polyline", "all_points_x": [2, 20, 11], "all_points_y": [2, 2, 20]},
    "rect": {"name": "rect", "x": 2, "y": 3, "width": 10, "height": 12},
    "circle": {"name": "circle", "cx": 20, "cy": 20, "r": 5},
    "ellipse": {"name": "ellipse", "cx": 20, "cy": 20, "rx": 5, "ry": 3, "theta": 0.3},
}
# (value, what the problem says about it)
BAD_NUMBERS = [("40", 'is "40", not a number'), (None, "is null, not a number"),
               (True, "is true, not a number"), ([1], "is [1], not a number"),
               ({"a": 1}, 'is {"a": 1}, not a number'), ("text", 'is "text", not a number'),
               (float("nan"), "is nan, not a finite number"),
               (float("inf"), "is inf, not a finite number"),
               (-float("inf"), "is -inf, not a finite number"),
               (1e308, "is 1e+308, beyond the limit of 1e+06"),
               (-1e308, "is -1e+308, beyond the limit of 1e+06"),
               (10 ** 30, "is 1e+30, beyond the limit of 1e+06"),
               (10 ** 400, "is an integer too large for a float, beyond the limit of 1e+06")]
BAD_SIZES = [(0, "is 0, not positive"), (-5, "is -5, not positive"),
             (-0.5, "is -0.5, not positive")]


def hostile_field_cases():
    for shape, good in GOOD_SHAPES.items():
        for field in good:
            if field == "name":
                continue
            positive = field in ("width", "height", "r", "rx", "ry")
            if field.startswith("all_points"):
                for value, said in BAD_NUMBERS:
                    values = list(good[field])
                    values[1] = value
                    yield shape, field, values, f"{field}[1] {said}"
                yield shape, field, "2,20,20", f'{field} is "2,20,20", not a list of numbers'
                yield shape, field, None, f"{field} is null, not a list of numbers"
                yield shape, field, good[field][:-1], "x but"  # lengths differ
                continue
            for value, said in BAD_NUMBERS + (BAD_SIZES if positive else []):
                yield shape, field, value, f"{field} {said}"
            if field != "theta":
                yield shape, field, "<missing>", f"{shape} region lacks {field}"


@pytest.mark.parametrize("shape, field, value, said", list(hostile_field_cases()))
def test_every_field_of_every_shape_is_validated(shapes_dir, shape, field, value, said):
    geometry = dict(GOOD_SHAPES[shape])
    if value == "<missing>":
        del geometry[field]
    else:
        geometry[field] = value
    regions = [(geometry, {"name": "pikachu"}), (GOOD_SHAPES["rect"], {"name": "pikachu"})]
    path = shapes_dir / "via.json"
    path.write_text(json.dumps(via2({"a.png": regions})))  # NaN and Infinity as JSON allows
    annotations = via.load_via(path)
    [image] = annotations.images
    assert len(image.regions) == 1  # the good rect; the hostile region is skipped
    [problem] = annotations.problems
    assert problem.file == str(shapes_dir / "a.png")
    assert problem.message.startswith(f"region 0 ({shape}): ") and said in problem.message
    assert problem.message.endswith("; skipped")


def test_point_lists_of_other_lengths_are_reported(shapes_dir):
    regions = [(polygon([1, 9, 9], [1, 1]), {}), (polygon([1, 9], [1, 9]), {})]
    annotations = via.load_via(write_json(shapes_dir / "via.json", via2({"a.png": regions})))
    assert annotations.images == []
    assert [p.message for p in annotations.problems] == [
        "region 0 (polygon): polygon region has 3 x but 2 y coordinates; skipped",
        "region 1 (polygon): polygon region has 2 points, fewer than 3; skipped"]


def test_shapes_of_the_largest_accepted_size_are_drawn_clipped(shapes_dir):
    limit = via.COORDINATE_LIMIT
    regions = [({"name": "circle", "cx": 20, "cy": 20, "r": limit}, {}),
               ({"name": "ellipse", "cx": 0, "cy": 0, "rx": limit, "ry": limit, "theta": limit}, {}),
               (polygon([-limit, limit, limit], [-limit, -limit, limit]), {}),
               ({"name": "rect", "x": -limit / 2, "y": -limit / 2, "width": limit,
                 "height": limit}, {})]
    annotations = via.load_via(write_json(shapes_dir / "via.json", via2({"a.png": regions})))
    masks = via.image_masks(annotations.images[0])
    assert masks.shape == (H, W, 4) and masks[..., [0, 1, 3]].all()
    ys, xs = centre_grid()
    np.testing.assert_array_equal(masks[..., 2], xs >= ys)  # the polygon's diagonal


@pytest.mark.parametrize("regions, message", [
    (["junk"], 'a.png: region 0 is "junk", not an object; skipped'),
    ([{"shape_attributes": 4}], "a.png: region 0 has shape_attributes 4, not an object; skipped"),
    ([{"shape_attributes": {"name": 5}}], "a.png: region 0 has no shape name; skipped"),
    ([{"shape_attributes": {"name": ["rect"]}}], "a.png: region 0 has no shape name; skipped"),
    ([{"shape_attributes": GOOD_SHAPES["rect"], "region_attributes": [1]}],
     "a.png: region 0 has region_attributes [1], not an object; skipped"),
    ("all", 'a.png: \'regions\' is "all", not a list; its regions are skipped'),
])
def test_regions_of_the_wrong_type_are_reported_and_skipped(shapes_dir, regions, message):
    export = {"a.png1": {"filename": "a.png", "regions": regions},
              "b": "not an entry", "c": {"filename": 7}, "d": {"filename": "x\u0000.png"}}
    annotations = via.load_via(write_json(shapes_dir / "via.json", export), keep_negatives=True)
    assert [image.filename for image in annotations.images] == ["a.png"]
    messages = [p.message for p in annotations.problems]
    assert messages[0] == message
    assert messages[1] == 'entry "b" is "not an entry", not an image entry; skipped'
    assert messages[2].startswith("an entry has no valid filename")
    assert messages[3].startswith("an entry has no valid filename")


def test_hostile_via3_items_are_reported_and_skipped(shapes_dir):
    metadata = {
        "ok": {"vid": "1", "z": [], "xy": [2, 2, 20, 8, 6], "av": {"1": "0"}},
        "text_id": {"vid": "1", "z": [], "xy": ["x", 1, 2, 3, 4], "av": {}},
        "nan_id": {"vid": "1", "z": [], "xy": [float("nan"), 1, 2, 3, 4], "av": {}},
        "short_rect": {"vid": "1", "z": [], "xy": [2, 1, 2, 3], "av": {}},
        "text_coordinate": {"vid": "1", "z": [], "xy": [3, "30", 28, 6], "av": {}},
        "no_view": {"vid": "9", "z": [], "xy": [3, 30, 28, 6], "av": {}},
        "xy_text": {"vid": "1", "z": [], "xy": "3,30,28,6", "av": {}},
        "av_list": {"vid": "1", "z": [], "xy": [3, 30, 28, 6], "av": [1]},
        "not_object": 5,
    }
    files = {"1": {"fid": "1", "fname": "a.png", "type": 2}, "2": "junk", "3": {"fname": 4}}
    path = write_json(shapes_dir / "via3.json", via3_project(metadata, files))
    annotations = via.load_via(path)
    [image] = annotations.images
    assert [r.shape for r in image.regions] == ["rect"]
    messages = {p.message for p in annotations.problems}
    assert messages == {
        'file "2" is "junk", not an object; skipped',
        'file "3" has no valid fname; skipped',
        'metadata "short_rect" is a rect with 3 coordinates (expected 4); skipped',
        'metadata "no_view" refers to view "9" that holds no image; skipped',
        'metadata "xy_text" has xy "3,30,28,6", not a list; skipped',
        'metadata "av_list" has av [1], not an object; skipped',
        'metadata "not_object" is 5, not an object; skipped',
        'region 1 (shape id "x"): unknown shape \'shape id "x"\'; skipped (use polygon, rect, '
        'circle or ellipse)',
        "region 2 (shape id NaN): unknown shape 'shape id NaN'; skipped (use polygon, rect, "
        "circle or ellipse)",
        'region 3 (circle): cx is "30", not a number; skipped',
    }


def test_a_file_saved_with_a_byte_order_mark_loads(shapes_dir):
    path = shapes_dir / "via.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(via2({"a.png": ALL_SHAPES})).encode())
    assert len(via.load_via(path).images[0].regions) == 5


@pytest.mark.parametrize("content, message", [
    ("[" * 100000 + "]" * 100000, "unreadable JSON"),
    ('{"a.png": {"filename": "a.png", "size": 1' + "0" * 5000 + "}}", "unreadable JSON"),
    ("\xff\xfe{}", "not a UTF-8 text file"),
])
def test_unreadable_json_is_a_via_error(tmp_path, content, message):
    path = tmp_path / "via.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(via.ViaError, match=f"^{path}: {message}"):
        via.load_via(path)


def test_annotation_files_that_are_not_regular_files_are_never_read(tmp_path, monkeypatch):
    subset = tmp_path / "train"
    subset.mkdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps(via1({"gone.png": []})))
    (subset / "link.json").symlink_to(tmp_path / "elsewhere.json")
    (subset / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(subset / "fifo.json")
    with pytest.raises(via.ViaError, match="outside .*--follow-links"):
        via.load_via(subset / "link.json")
    with pytest.raises(via.ViaError, match="none of its 1 image files are in"):
        via.load_via(subset / "link.json", follow_links=True)  # read, then its image is missing
    for name in ("zero.json", "fifo.json"):
        with pytest.raises(via.ViaError, match=f"{subset / name}: not a regular file"):
            via.load_via(subset / name)
    monkeypatch.setattr(files, "MAX_JSON_BYTES", 10)
    with pytest.raises(via.ViaError, match="larger than 0 MB"):
        via.load_via(tmp_path / "elsewhere.json")


def test_image_files_are_checked_and_bad_ones_skipped(tmp_path):
    subset = tmp_path / "train"
    subset.mkdir()
    square = [(polygon([1, 9, 9, 1], [1, 1, 9, 9]), {})]
    write_image(subset / "good.png")
    write_image(tmp_path / "outside.png")
    write_image(subset / "cut.png", color=(1, 2, 3))
    (subset / "cut.png").write_bytes((subset / "cut.png").read_bytes()[:-40])
    (subset / "link.png").symlink_to(tmp_path / "outside.png")
    (subset / "zero.png").symlink_to("/dev/zero")
    (subset / "folder.png").mkdir()
    os.mkfifo(subset / "fifo.png")
    names = ["good.png", "cut.png", "link.png", "zero.png", "folder.png", "fifo.png"]
    path = write_json(subset / via.ANNOTATION_FILE, via1({name: square for name in names}))
    annotations = via.load_via(path)
    assert [image.filename for image in annotations.images] == ["good.png"]
    said = {os.path.basename(p.file): p.message for p in annotations.problems}
    assert said["cut.png"].startswith("image data is truncated or corrupt")
    assert said["link.png"].startswith(f"a symbolic link to {tmp_path / 'outside.png'}")
    assert said["zero.png"].startswith("not a regular file") and said["fifo.png"] == said["zero.png"]
    assert said["folder.png"].startswith("a folder, not an image")
    assert all(message.endswith("; skipped") for message in said.values())
    linked = via.load_via(path, follow_links=True)
    assert [image.filename for image in linked.images] == ["good.png", "link.png"]
    headers_only = via.load_via(path, decode=False)
    assert [image.filename for image in headers_only.images] == ["good.png", "cut.png"]


# ---------------------------------------------------------------------------
# check_dataset


def test_check_finds_every_planted_problem(tmp_path):
    train, val, empty = (tmp_path / name for name in ("train", "val", "test"))
    for folder in (train, val, empty):
        folder.mkdir()
    square = polygon([1, 9, 9, 1], [1, 1, 9, 9])
    write_image(train / "good.png")
    write_image(train / "outside.png", color=(10, 200, 10))
    write_image(train / "few.png", color=(10, 10, 200))
    write_image(train / "unlisted.png", color=(1, 2, 3))
    (train / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION_TAG] = 6
    write_image(train / "rotated.jpg", exif=exif)
    write_image(val / "copy.png")  # same bytes as train/good.png
    write_json(train / via.ANNOTATION_FILE, via1({
        "good.png": [(square, {"name": "pikachu"}), ({"name": "point", "cx": 1, "cy": 1}, {})],
        "outside.png": [(polygon([50, 70, 70], [1, 1, 30]), {"name": "pikachu"})],
        "few.png": [(polygon([1, 9], [1, 9]), {"name": "pikachu"}),
                    ({"name": "blob"}, {"name": "pikachu"}),
                    (square, {"name": "eevee"})],
        "missing.png": [(square, {"name": "pikachu"})],
        "broken.jpg": [(square, {"name": "pikachu"})],
        "rotated.jpg": [(square, {"name": "pikachu"})],
    }))
    trailing_comma = '{"copy.png": {"filename": "copy.png",}'
    (val / via.ANNOTATION_FILE).write_text(trailing_comma)
    with pytest.raises(json.JSONDecodeError) as decoding:  # Python's words differ by version
        json.loads(trailing_comma)
    where = f"line 1, column {decoding.value.colno}: {decoding.value.msg}"

    problems = via.check_dataset(tmp_path, class_names=["pikachu"])
    found = {(os.path.relpath(p.file, tmp_path), p.message.split(";")[0].split(" (")[0])
             for p in problems}
    expected = {
        ("train/good.png", "region 1"),
        ("train/outside.png", "region 0"),
        ("train/few.png", "region 0"),
        ("train/few.png", "region 1"),
        ("train/via_region_data.json", "few.png: region 2 has unknown class 'eevee'"),
        ("train/missing.png", "image file is missing"),
        ("train/broken.jpg", "cannot read image"),
        ("train/rotated.jpg", "photo is EXIF-rotated"),
        ("train/unlisted.png", "image is not listed in via_region_data.json"),
        ("val/via_region_data.json", f"malformed JSON at {where}. Fix the file there or export "
                                     "it from VIA again."),
        ("val/copy.png", "same image as " + str(train / "good.png")),
        ("test", "subset has no image"),
    }
    assert found == expected, (found - expected, expected - found)
    messages = {str(p) for p in problems}
    assert any("reaches outside the 60x40 image" in m for m in messages)
    assert any("has 2 points, fewer than 3" in m for m in messages)
    assert any("unknown shape 'blob'" in m for m in messages)
    assert any("point region has no area" in m for m in messages)


def test_check_reports_missing_and_empty_subsets(tmp_path):
    (tmp_path / "train").mkdir()
    write_image(tmp_path / "train" / "a.png")
    write_json(tmp_path / "train" / via.ANNOTATION_FILE, via1({"a.png": []}))
    problems = via.check_dataset(tmp_path)
    assert [(os.path.relpath(p.file, tmp_path), p.message) for p in problems] == [
        ("train/via_region_data.json", "subset has no annotated instance"),
        ("val", "subset folder is missing")]
    with pytest.raises(via.ViaError, match="no such dataset folder"):
        via.check_dataset(tmp_path / "nowhere")


def test_a_file_listed_twice_has_its_regions_merged_and_a_repeated_one_kept_once():
    a, b, c = (polygon([1, 9, 9], [1, 1, 9]), polygon([2, 8, 8], [2, 2, 8]),
               polygon([3, 7, 7], [3, 3, 7]))
    data = via1({"a.png": [(a, {"name": "pikachu"}), (b, {"name": "pikachu"})]})
    again = via1({"a.png": [(a, {"name": "pikachu"}), (c, {"name": "pikachu"}),
                            (a, {"name": "raichu"})]})
    data["a.png456"] = dict(again["a.png123"], size=456)
    _, images, problems = via.parse_via(data, "via.json")
    [image] = images
    assert [region.geometry["all_points_x"] for region in image.regions] == [
        a["all_points_x"], b["all_points_x"], c["all_points_x"], a["all_points_x"]]
    assert [str(problem) for problem in problems] == [
        "via.json: a.png is listed more than once; its regions are merged (1 listed again "
        "kept once)"]


def test_check_of_a_clean_folder_is_empty(tmp_path):
    for subset in ("train", "val"):
        (tmp_path / subset).mkdir()
        write_image(tmp_path / subset / f"{subset}.png", color=(len(subset), 0, 0))
        write_json(tmp_path / subset / via.ANNOTATION_FILE,
                   via1({f"{subset}.png": [(polygon([1, 9, 9, 1], [1, 1, 9, 9]), {"name": "pikachu"})]}))
        # What a copy from a Mac leaves beside each photo is not an image of the subset.
        (tmp_path / subset / f"._{subset}.png").write_bytes(b"\x00\x05\x16\x07")
    assert via.check_dataset(tmp_path) == []


def test_check_reads_the_subsets_as_training_does(tmp_path):
    for subset, names in (("train", ["pikachu"]), ("val", ["pikachu", "raichu"])):
        (tmp_path / subset).mkdir()
        for index, name in enumerate(names):
            write_image(tmp_path / subset / f"{name}.png", color=(len(subset), index, 9))
        write_json(tmp_path / subset / via.ANNOTATION_FILE, via1({
            f"{name}.png": [(polygon([1, 9, 9, 1], [1, 1, 9, 9]), {"name": name})]
            for name in names}))
    problems = via.check_dataset(tmp_path)
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'val' / via.ANNOTATION_FILE}: raichu.png: region 0 has unknown class "
        "'raichu' (known: pikachu); skipped"]
    # A validation subset whose regions are all of a class train lacks has nothing to use.
    (tmp_path / "val" / "pikachu.png").unlink()
    write_json(tmp_path / "val" / via.ANNOTATION_FILE, via1({
        "raichu.png": [(polygon([1, 9, 9, 1], [1, 1, 9, 9]), {"name": "raichu"})]}))
    messages = [(os.path.relpath(p.file, tmp_path), p.message) for p in via.check_dataset(tmp_path)]
    assert ("val/via_region_data.json", "subset has no annotated instance") in messages


def test_check_reports_bad_files_in_the_folder_without_reading_them(tmp_path):
    for subset in ("train", "val"):
        (tmp_path / subset).mkdir()
        write_image(tmp_path / subset / "a.png", color=(len(subset), 0, 0))
        write_json(tmp_path / subset / via.ANNOTATION_FILE,
                   via1({"a.png": [(polygon([1, 9, 9, 1], [1, 1, 9, 9]), {})]}))
    write_image(tmp_path / "secret.png", color=(5, 5, 5))
    train = tmp_path / "train"
    (train / "zero.jpg").symlink_to("/dev/zero")
    (train / "out.png").symlink_to(tmp_path / "secret.png")
    os.mkfifo(train / "fifo.png")
    (train / "folder.png").mkdir()
    write_image(train / "cut.png", color=(7, 7, 7))
    (train / "cut.png").write_bytes((train / "cut.png").read_bytes()[:-40])
    found = {os.path.basename(p.file): p.message for p in via.check_dataset(tmp_path)}
    assert found["zero.jpg"].startswith("not a regular file")
    assert found["fifo.png"].startswith("not a regular file")
    assert found["folder.png"].startswith("a folder, not an image")
    assert found["out.png"].startswith(f"a symbolic link to {tmp_path / 'secret.png'}")
    assert found["cut.png"].startswith("image data is truncated or corrupt")
    assert len(found) == 5  # and none of them is also "not listed" or a duplicate
    followed = {os.path.basename(p.file): p.message
                for p in via.check_dataset(tmp_path, follow_links=True)}
    assert followed["out.png"] == "image is not listed in via_region_data.json; annotate it in " \
                                  "VIA or move it out"


# ---------------------------------------------------------------------------
# The mug photos (optional)


@pytest.mark.skipif(not os.path.isdir(MUG), reason="../shared/datasets/mug is not present")
def test_mug_dataset_loads_and_checks():
    counts = {}
    for subset in ("train", "val"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", via.ViaWarning)
            annotations = via.load_via(os.path.join(MUG, subset, via.ANNOTATION_FILE))
        assert annotations.version == "1.x" and annotations.class_names == ["mug"]
        counts[subset] = (len(annotations.images), sum(len(i.regions) for i in annotations.images))
        image = annotations.images[0]
        masks = via.image_masks(image)
        assert masks.shape == (image.height, image.width, len(image.regions)) and masks.any()
    assert counts == {"train": (60, 70), "val": (10, 11)}
    assert isinstance(via.check_dataset(MUG), list)
