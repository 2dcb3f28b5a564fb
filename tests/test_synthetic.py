"""Tests of mrcnn.synthetic: scenes, the in-memory dataset, the VIA dataset writer."""

import json
import os

import numpy as np
import pytest
import skimage.draw
import skimage.measure

from mrcnn import synthetic, via


def yellowish(pixels):
    """Pixels [..., 3] that look like the creatures' yellow (shaded or not)."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return (r > 170) & (g > 140) & (b < 90)


@pytest.fixture(scope="module")
def scenes():
    return [synthetic.draw_scene(synthetic.scene_rng(7, i), 128, 160) for i in range(40)]


def test_scene_shapes_and_types(scenes):
    for image, masks in scenes:
        assert image.shape == (128, 160, 3) and image.dtype == np.uint8
        assert masks.shape[:2] == (128, 160) and masks.dtype == bool
        assert 1 <= masks.shape[-1] <= 3


def test_scenes_are_deterministic_and_vary():
    image, masks = synthetic.draw_scene(synthetic.scene_rng(3, 5), 96, 96)
    again_image, again_masks = synthetic.draw_scene(synthetic.scene_rng(3, 5), 96, 96)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(masks, again_masks)
    other, _ = synthetic.draw_scene(synthetic.scene_rng(3, 6), 96, 96)
    assert np.abs(image.astype(int) - other).mean() > 10


def test_masks_are_disjoint_visible_pieces(scenes):
    for _, masks in scenes:
        assert masks.sum(axis=-1).max() <= 1  # visible parts do not overlap
        for i in range(masks.shape[-1]):
            mask = masks[..., i]
            assert mask.sum() > 30
            assert skimage.measure.label(mask, connectivity=2).max() == 1
            holes = skimage.measure.label(~np.pad(mask, 1), connectivity=1).max() - 1
            assert holes == 0


def test_masks_cover_the_yellow_creatures(scenes):
    for image, masks in scenes:
        for i in range(masks.shape[-1]):
            assert yellowish(image[masks[..., i]]).mean() > 0.6
        union = masks.any(axis=-1)
        assert yellowish(image[~union]).mean() < 0.05


def test_count_size_and_occlusion_vary(scenes):
    counts = [masks.shape[-1] for _, masks in scenes]
    assert set(counts) == {1, 2, 3}
    areas = [masks[..., i].sum() for _, masks in scenes for i in range(masks.shape[-1])]
    assert max(areas) > 3 * min(areas)
    # Some instance is partly hidden: its box holds pixels of another instance.
    occluded = False
    for _, masks in scenes:
        for i in range(masks.shape[-1]):
            rows, cols = np.nonzero(masks[..., i])
            box = masks[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            occluded |= bool(np.delete(box, i, axis=-1).any())
    assert occluded


def test_synthetic_dataset_matches_draw_scene():
    dataset = synthetic.SyntheticDataset()
    dataset.load_synthetic(count=4, height=64, width=128, seed=11)
    dataset.prepare()
    assert dataset.num_images == 4 and dataset.class_names == ["BG", "pikachu"]
    image = dataset.load_image(2)
    masks, class_ids = dataset.load_mask(2)
    expected_image, expected_masks = synthetic.draw_scene(synthetic.scene_rng(11, 2), 64, 128)
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(masks, expected_masks)
    assert class_ids.dtype == np.int32 and (class_ids == 1).all()
    assert len(class_ids) == masks.shape[-1]


def test_mask_polygon_round_trip():
    mask = np.zeros((50, 70), bool)
    mask[skimage.draw.ellipse(25, 30, 15, 22, rotation=0.4)] = True
    xs, ys = synthetic.mask_polygon(mask)
    assert all(isinstance(v, int) for v in xs + ys)
    rebuilt = np.zeros_like(mask)
    rebuilt[skimage.draw.polygon(ys, xs, shape=mask.shape)] = True
    assert (rebuilt & mask).sum() / (rebuilt | mask).sum() > 0.95
    assert len(xs) < mask.sum() / 10


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "pikachu"
    return synthetic.write_via_dataset(root, train=8, val=3, test=2, image_size=96, seed=5)


def test_write_via_dataset_layout(written):
    assert sorted(os.listdir(written)) == ["test", "train", "val"]
    assert os.listdir(os.path.dirname(written)) == ["pikachu"]  # no temporary folder left
    train = sorted(os.listdir(os.path.join(written, "train")))
    assert train[-1] == via.ANNOTATION_FILE and len(train) == 9
    assert {name.rsplit(".", 1)[1] for name in train[:-1]} == {"jpg", "png"}
    assert sorted(os.listdir(os.path.join(written, "test"))) == ["test_0000.jpg", "test_0001.jpg"]
    with open(os.path.join(written, "val", via.ANNOTATION_FILE)) as f:
        export = json.load(f)
    entry = export["val_0000.jpg" + str(os.path.getsize(os.path.join(written, "val", "val_0000.jpg")))]
    region = entry["regions"]["0"]
    assert region["shape_attributes"]["name"] == "polygon"
    assert region["region_attributes"] == {"name": "pikachu"}


def test_written_annotations_match_exact_masks(written):
    annotations = via.load_via(os.path.join(written, "train", via.ANNOTATION_FILE))
    assert annotations.version == "1.x" and annotations.class_names == ["pikachu"]
    assert annotations.problems == [] and len(annotations.images) == 8
    for image in annotations.images:
        index = int(image.filename[6:10])
        _, exact = synthetic.draw_scene(synthetic.scene_rng(5, 1, index), 96, 96)
        masks = via.image_masks(image)
        assert masks.shape == exact.shape
        for i in range(exact.shape[-1]):
            assert (masks[..., i] & exact[..., i]).sum() / (masks[..., i] | exact[..., i]).sum() > 0.85
    assert via.check_dataset(written) == []


def test_write_via_dataset_is_deterministic_and_refuses_to_overwrite(written, tmp_path):
    again = synthetic.write_via_dataset(tmp_path / "again", train=8, val=3, test=2, image_size=96, seed=5)
    for subset in ("train", "val", "test"):
        names = sorted(os.listdir(os.path.join(written, subset)))
        assert names == sorted(os.listdir(os.path.join(again, subset)))
        for name in names:
            with open(os.path.join(written, subset, name), "rb") as a, \
                    open(os.path.join(again, subset, name), "rb") as b:
                assert a.read() == b.read(), name
    with pytest.raises(FileExistsError, match="already exists"):
        synthetic.write_via_dataset(written)
