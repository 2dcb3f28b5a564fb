"""Tests for mrcnn.weights: the Keras-2 by-name HDF5 layout, downloads, checkpoints.

Weight files are written here directly with h5py in the layout of the original's
mask_rcnn_coco.h5 (real layer and weight names, random values); nothing is downloaded.
"""

import io
import logging
import os
import re
import types
import urllib.error
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from mrcnn import weights
from mrcnn.weights import CLASS_SPECIFIC_LAYERS, load_weights, save_weights

from conftest import coco_layout_rows, load_module, write_keras2_file  # noqa: E402

REFERENCE_TSV = (Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"
                 / "mask_rcnn_coco_weights.tsv")
COCO_LAYOUT_SCRIPT = Path(__file__).resolve().parent / "data" / "make_coco_layout.py"

NUM_CLASSES = 3
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def conv(name, kernel, channels_in, channels_out):
    return [(f"{name}/kernel:0", (kernel, kernel, channels_in, channels_out)),
            (f"{name}/bias:0", (channels_out,))]


def batch_norm(name, channels):
    return [(f"{name}/{weight}:0", (channels,)) for weight in BN_WEIGHTS]


def dense(name, units_in, units_out):
    return [(f"{name}/kernel:0", (units_in, units_out)), (f"{name}/bias:0", (units_out,))]


def expected_layout(num_classes=NUM_CLASSES):
    """[(group, [(weight name, shape)])] of build_model(), as Keras 2 names them."""
    return [
        ("conv1", conv("conv1", 3, 3, 4)),
        ("bn_conv1", batch_norm("bn_conv1", 4)),
        ("res2a_branch2a", conv("res2a_branch2a", 1, 4, 8)),
        ("bn2a_branch2a", batch_norm("bn2a_branch2a", 8)),
        ("rpn_model", conv("rpn_conv_shared", 3, 8, 8) + conv("rpn_class_raw", 1, 8, 2)
         + conv("rpn_bbox_pred", 1, 8, 4)),
        ("mrcnn_class_conv1", conv("mrcnn_class_conv1", 5, 8, 6)),
        ("mrcnn_class_bn1", batch_norm("mrcnn_class_bn1", 6)),
        ("mrcnn_class_logits", dense("mrcnn_class_logits", 6, num_classes)),
        ("mrcnn_bbox_fc", dense("mrcnn_bbox_fc", 6, 4 * num_classes)),
        ("mrcnn_mask", conv("mrcnn_mask", 1, 8, num_classes)),
    ]


def build_rpn_model(depth):
    feature_map = KL.Input((None, None, depth), name="input_rpn_feature_map")
    shared = KL.Conv2D(8, 3, padding="same", activation="relu", name="rpn_conv_shared")(feature_map)
    class_logits = KL.Conv2D(2, 1, name="rpn_class_raw")(shared)
    bbox = KL.Conv2D(4, 1, name="rpn_bbox_pred")(shared)
    return keras.Model(feature_map, [class_logits, bbox], name="rpn_model")


def build_model(num_classes=NUM_CLASSES, model_class=keras.Model):
    """A small model with the original's layer names and kinds of layers."""
    image = KL.Input((16, 16, 3), name="input_image")
    x = KL.Conv2D(4, 3, padding="same", name="conv1")(image)
    x = KL.BatchNormalization(name="bn_conv1")(x)
    x = KL.Activation("relu")(x)
    x = KL.Conv2D(8, 1, name="res2a_branch2a")(x)
    x = KL.BatchNormalization(name="bn2a_branch2a")(x)
    rpn_class, rpn_bbox = build_rpn_model(8)(x)
    rois = KL.Input((3, 5, 5, 8), name="input_pooled_rois")
    y = KL.TimeDistributed(KL.Conv2D(6, 5), name="mrcnn_class_conv1")(rois)
    y = KL.TimeDistributed(KL.BatchNormalization(), name="mrcnn_class_bn1")(y)
    y = KL.Reshape((3, 6), name="pool_squeeze")(y)
    logits = KL.TimeDistributed(KL.Dense(num_classes), name="mrcnn_class_logits")(y)
    bbox = KL.TimeDistributed(KL.Dense(4 * num_classes), name="mrcnn_bbox_fc")(y)
    mask = KL.TimeDistributed(KL.Conv2D(num_classes, 1), name="mrcnn_mask")(rois)
    return model_class([image, rois], [rpn_class, rpn_bbox, logits, bbox, mask], name="mask_rcnn")


def variable_for(model, group, weight_name):
    """The model variable that file weight ``group/weight_name`` belongs to,
    found through the layers' attributes (not through mrcnn.weights)."""
    layer_name, attribute = re.match(r"(.*)/(\w+):0$", weight_name).groups()
    layer = model.get_layer(group)
    if layer_name != group:
        layer = layer.get_layer(layer_name)
    if isinstance(layer, KL.Wrapper):
        layer = layer.layer
    return getattr(layer, attribute)


def value_of(variable):
    return variable.numpy()


def snapshot(model):
    return [value_of(variable) for variable in model.weights]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# Layout mapping --------------------------------------------------------------

def test_layer_weight_names_are_the_keras2_names_in_file_order():
    model = build_model()
    mapped = [(layer.name, [(name, tuple(variable.shape))
                            for name, variable in weights.layer_weight_names(layer)])
              for layer in model.layers if layer.weights]
    assert dict(mapped) == dict(expected_layout())


def test_layer_weight_names_pairs_each_name_with_its_variable():
    model = build_model()
    for group, layer_weights in expected_layout():
        entries = weights.layer_weight_names(model.get_layer(group))
        for (name, variable), (expected_name, _) in zip(entries, layer_weights):
            assert variable is variable_for(model, group, expected_name)


# Loading -----------------------------------------------------------------------

def test_load_by_name_sets_every_variable_from_its_file_weight(tmp_path, rng):
    model = build_model()
    values = write_keras2_file(tmp_path / "w.h5", expected_layout(), rng)

    result = load_weights(model, tmp_path / "w.h5", by_name=True)

    for (group, weight_name), value in values.items():
        np.testing.assert_array_equal(value_of(variable_for(model, group, weight_name)), value)
    assert len(values) == len(model.weights)
    assert sorted(result.loaded) == sorted(group for group, _ in expected_layout())
    assert result.missing == result.unused == result.excluded == []


def test_load_by_order_pairs_weighted_layers_whatever_their_names(tmp_path, rng):
    model = build_model()
    layout = dict(expected_layout())
    in_model_order = [(layer.name, layout[layer.name]) for layer in model.layers if layer.weights]
    renamed = [(f"layer_{i}", [(f"layer_{i}/w{j}:0", shape) for j, (_, shape) in enumerate(ws)])
               for i, (_, ws) in enumerate(in_model_order)]
    values = write_keras2_file(tmp_path / "w.h5", renamed, rng)

    load_weights(model, tmp_path / "w.h5", by_name=False)

    for (group, layer_weights), (renamed_group, renamed_weights) in zip(in_model_order, renamed):
        for (weight_name, _), (renamed_weight, _) in zip(layer_weights, renamed_weights):
            np.testing.assert_array_equal(value_of(variable_for(model, group, weight_name)),
                                          values[(renamed_group, renamed_weight)])


def test_load_by_order_refuses_a_different_layer_count(tmp_path, rng):
    write_keras2_file(tmp_path / "w.h5", expected_layout()[:-1], rng)
    with pytest.raises(ValueError,
                       match=r"has 9 layers with weights and the model has 10.*by_name=True"):
        load_weights(build_model(), tmp_path / "w.h5")


def test_weights_within_a_layer_are_matched_by_name_not_position(tmp_path, rng):
    layout = [(group, list(reversed(ws))) for group, ws in expected_layout()]
    # Keras 2 sometimes suffixed a layer built twice: "conv1_1/kernel:0".
    layout[0] = ("conv1", [("conv1_1/bias:0", (4,)), ("conv1_1/kernel:0", (3, 3, 3, 4))])
    values = write_keras2_file(tmp_path / "w.h5", layout, rng)
    model = build_model()

    load_weights(model, tmp_path / "w.h5", by_name=True)

    np.testing.assert_array_equal(value_of(model.get_layer("conv1").kernel),
                                  values[("conv1", "conv1_1/kernel:0")])
    for group, layer_weights in layout[1:]:
        for weight_name, _ in layer_weights:
            np.testing.assert_array_equal(value_of(variable_for(model, group, weight_name)),
                                          values[(group, weight_name)])


def test_unmatched_weight_names_fall_back_to_the_file_order(tmp_path, rng):
    # Keras 1 files (the ImageNet ResNet50) name weights conv1_W, bn_conv1_running_std, ...
    layout = [("conv1", [("conv1_W:0", (3, 3, 3, 4)), ("conv1_b:0", (4,))]),
              ("bn_conv1", [(f"bn_conv1_{w}:0", (4,))
                            for w in ("gamma", "beta", "running_mean", "running_std")])]
    values = write_keras2_file(tmp_path / "w.h5", layout, rng)
    model = build_model()

    load_weights(model, tmp_path / "w.h5", by_name=True)

    conv1, bn_conv1 = model.get_layer("conv1"), model.get_layer("bn_conv1")
    np.testing.assert_array_equal(value_of(conv1.kernel), values[("conv1", "conv1_W:0")])
    np.testing.assert_array_equal(value_of(conv1.bias), values[("conv1", "conv1_b:0")])
    np.testing.assert_array_equal(value_of(bn_conv1.moving_variance),
                                  values[("bn_conv1", "bn_conv1_running_std:0")])


def test_missing_and_unused_layers_are_reported_and_left_alone(tmp_path, rng, caplog):
    layout = [item for item in expected_layout() if item[0] not in ("res2a_branch2a", "mrcnn_mask")]
    layout.append(("fpn_p6_extra", conv("fpn_p6_extra", 1, 2, 2)))
    write_keras2_file(tmp_path / "w.h5", layout, rng)
    model = build_model()
    kernel_before = value_of(model.get_layer("res2a_branch2a").kernel)

    with caplog.at_level(logging.WARNING, logger="mrcnn.weights"):
        result = load_weights(model, tmp_path / "w.h5", by_name=True)

    assert result.missing == ["res2a_branch2a", "mrcnn_mask"]
    assert result.unused == ["fpn_p6_extra"]
    assert "2 layers of the model are not in" in caplog.text
    assert "res2a_branch2a, mrcnn_mask" in caplog.text
    assert "1 layers of" in caplog.text and "fpn_p6_extra" in caplog.text
    np.testing.assert_array_equal(value_of(model.get_layer("res2a_branch2a").kernel), kernel_before)


def test_excluded_heads_keep_their_initial_values(tmp_path, rng):
    values = write_keras2_file(tmp_path / "w.h5", expected_layout(num_classes=81), rng)
    model = build_model(num_classes=2)
    heads = [model.get_layer(name)
             for name in ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask")]
    initial = [value_of(variable) for head in heads for variable in head.weights]

    # exclude implies by_name, as in the original
    result = load_weights(model, tmp_path / "w.h5", exclude=CLASS_SPECIFIC_LAYERS)

    for variable, value in zip([v for head in heads for v in head.weights], initial):
        np.testing.assert_array_equal(value_of(variable), value)
    for group, layer_weights in expected_layout()[:7]:
        for weight_name, _ in layer_weights:
            np.testing.assert_array_equal(value_of(variable_for(model, group, weight_name)),
                                          values[(group, weight_name)])
    assert result.excluded == ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"]
    assert result.missing == [] and result.unused == []


def test_class_count_mismatch_names_layers_shapes_and_exclude_and_changes_nothing(tmp_path, rng):
    write_keras2_file(tmp_path / "w.h5", expected_layout(num_classes=81), rng)
    model = build_model(num_classes=2)
    before = snapshot(model)

    with pytest.raises(ValueError) as error:
        load_weights(model, tmp_path / "w.h5", by_name=True)

    message = str(error.value)
    assert str(tmp_path / "w.h5") in message
    assert "mrcnn_class_logits/kernel:0 is (6, 81) in the file, (6, 2) in the model" in message
    assert "mrcnn_bbox_fc/kernel:0 is (6, 324) in the file, (6, 8) in the model" in message
    assert "mrcnn_mask/bias:0 is (81,) in the file, (2,) in the model" in message
    assert ("exclude=['mrcnn_class_logits', 'mrcnn_bbox_fc', 'mrcnn_bbox', 'mrcnn_mask']"
            in message)
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(value_of(variable), value)


def test_a_head_of_another_width_is_not_called_another_class_count(tmp_path, rng):
    """Class-specific layers that differ beside other layers (FPN_CLASSIF_FC_LAYERS_SIZE
    changes both) mean another architecture: the message does not blame NUM_CLASSES."""
    layout = expected_layout(num_classes=81)
    layout[0] = ("conv1", conv("conv1", 7, 3, 4))
    write_keras2_file(tmp_path / "w.h5", layout, rng)
    with pytest.raises(ValueError) as error:
        load_weights(build_model(num_classes=2), tmp_path / "w.h5", by_name=True)
    message = str(error.value)
    assert "NUM_CLASSES" not in message and "another architecture" in message
    assert "FPN_CLASSIF_FC_LAYERS_SIZE" in message
    assert "exclude=['conv1', 'mrcnn_class_logits', 'mrcnn_bbox_fc', 'mrcnn_mask']" in message


def test_other_shape_mismatch_suggests_excluding_that_layer(tmp_path, rng):
    layout = expected_layout()
    layout[0] = ("conv1", conv("conv1", 7, 3, 4))
    write_keras2_file(tmp_path / "w.h5", layout, rng)
    with pytest.raises(ValueError, match=re.escape(
            "conv1/kernel:0 is (7, 7, 3, 4) in the file, (3, 3, 3, 4) in the model")) as error:
        load_weights(build_model(), tmp_path / "w.h5", by_name=True)
    assert "exclude=['conv1']" in str(error.value)


def test_weight_count_mismatch_is_an_error_naming_the_layer(tmp_path, rng):
    layout = expected_layout()
    layout[0] = ("conv1", conv("conv1", 3, 3, 4)[:1])
    write_keras2_file(tmp_path / "w.h5", layout, rng)
    with pytest.raises(ValueError, match=r"conv1: 2 weights in the model .*1 in the file"):
        load_weights(build_model(), tmp_path / "w.h5", by_name=True)


def test_missing_file_says_how_to_get_weights(tmp_path):
    path = tmp_path / "mask_rcnn_coco.h5"
    with pytest.raises(FileNotFoundError, match="get_coco_weights") as error:
        load_weights(build_model(), path, by_name=True)
    assert str(path) in str(error.value)


def test_non_hdf5_file_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_text("<html>Not Found</html>")
    with pytest.raises(ValueError, match=re.escape(f"{path} is not an HDF5 file")):
        load_weights(build_model(), path, by_name=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from Keras's own saving code
def test_keras3_weights_file_is_a_clear_error(tmp_path):
    model = build_model()
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    with pytest.raises(ValueError, match=re.escape(
            f"{path} is an HDF5 file but not in the Keras-2 by-name layout")):
        load_weights(model, path, by_name=True)


def file_layout(path):
    """[(group, [(weight name, shape)])] of the weighted layers of a Keras-2 layout file."""
    with h5py.File(path, "r") as f:
        groups = [name.decode() for name in f.attrs["layer_names"]]
        return [(group, [(name.decode(), f[group][name.decode()].shape)
                         for name in f[group].attrs["weight_names"]])
                for group in groups if len(f[group].attrs["weight_names"])]


def test_keras_model_save_weights_to_h5_writes_the_keras2_layout(tmp_path, rng):
    model = build_model(model_class=weights.Keras2WeightsModel)
    for variable in model.weights:
        variable.assign(rng.standard_normal(variable.shape))
    path = tmp_path / "mask_rcnn_shapes.h5"
    model.save_weights(str(path))  # the original's shapes tutorial
    assert sorted(file_layout(path)) == sorted(expected_layout())

    other = build_model()
    result = load_weights(other, path, by_name=True)
    assert len(result.loaded) == len(expected_layout())
    for saved, loaded in zip(snapshot(model), snapshot(other)):
        np.testing.assert_array_equal(saved, loaded)
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save_weights(path, overwrite=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from Keras's own saving code
def test_keras_model_keeps_keras3_saving_for_weights_h5(tmp_path, rng):
    model = build_model(model_class=weights.Keras2WeightsModel)
    for variable in model.weights:
        variable.assign(rng.standard_normal(variable.shape))
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    with pytest.raises(ValueError, match="not in the Keras-2 by-name layout"):
        load_weights(build_model(), path, by_name=True)
    other = build_model()
    other.load_weights(path)
    for saved, loaded in zip(snapshot(model), snapshot(other)):
        np.testing.assert_array_equal(saved, loaded)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from Keras's own saving code
def test_keras_archive_is_a_clear_error(tmp_path):
    model = build_model()
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(ValueError, match=re.escape(f"{path} is a Keras 3 '.keras' archive")):
        load_weights(model, path, by_name=True)


def test_full_model_file_with_model_weights_group_loads(tmp_path, rng):
    values = write_keras2_file(tmp_path / "w.h5", expected_layout(), rng, root="model_weights")
    model = build_model()
    load_weights(model, tmp_path / "w.h5", by_name=True)
    rpn_bbox_kernel = variable_for(model, "rpn_model", "rpn_bbox_pred/kernel:0")
    np.testing.assert_array_equal(value_of(rpn_bbox_kernel),
                                  values[("rpn_model", "rpn_bbox_pred/kernel:0")])


def test_layer_names_split_in_chunks_are_read(tmp_path, rng):
    path = tmp_path / "w.h5"
    values = write_keras2_file(path, expected_layout(), rng)
    with h5py.File(path, "a") as f:
        names = f.attrs["layer_names"]
        del f.attrs["layer_names"]
        f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:5], names[5:]
    model = build_model()
    load_weights(model, path, by_name=True)
    np.testing.assert_array_equal(value_of(variable_for(model, "mrcnn_mask", "mrcnn_mask/bias:0")),
                                  values[("mrcnn_mask", "mrcnn_mask/bias:0")])


def test_a_model_wrapping_inner_model_loads_into_it(tmp_path, rng):
    values = write_keras2_file(tmp_path / "w.h5", expected_layout(), rng)
    model = build_model()
    load_weights(types.SimpleNamespace(inner_model=model), tmp_path / "w.h5", by_name=True)
    np.testing.assert_array_equal(value_of(model.get_layer("conv1").kernel),
                                  values[("conv1", "conv1/kernel:0")])


# Saving ------------------------------------------------------------------------

def randomize(model, rng):
    for variable in model.weights:
        variable.assign(rng.standard_normal(variable.shape).astype(np.float32))


def test_saved_file_has_the_keras2_layout(tmp_path, rng):
    model = build_model()
    randomize(model, rng)
    save_weights(model, tmp_path / "ckpt.h5")

    with h5py.File(tmp_path / "ckpt.h5", "r") as f:
        layer_names = [n.decode() for n in f.attrs["layer_names"]]
        assert layer_names == [layer.name for layer in model.layers]
        # h5py reads the bytes scalars that Keras 2 wrote (and we write) back as str.
        assert f.attrs["backend"] == "tensorflow"
        assert f.attrs["keras_version"] == keras.__version__
        assert len(f["input_image"].attrs["weight_names"]) == 0
        for group, layer_weights in expected_layout():
            weight_names = [n.decode() for n in f[group].attrs["weight_names"]]
            assert weight_names == [w for w, _ in layer_weights]
            for weight_name, shape in layer_weights:
                np.testing.assert_array_equal(
                    f[group][weight_name][()], value_of(variable_for(model, group, weight_name)))


@pytest.mark.parametrize("by_name", [True, False])
def test_save_then_load_round_trips_bit_for_bit(tmp_path, rng, by_name):
    model = build_model()
    randomize(model, rng)
    save_weights(model, tmp_path / "ckpt.h5")
    fresh = build_model()

    result = load_weights(fresh, tmp_path / "ckpt.h5", by_name=by_name)

    assert len(result.loaded) == len(expected_layout())
    for saved, loaded in zip(model.weights, fresh.weights):
        assert value_of(loaded).tobytes() == value_of(saved).tobytes()


class TwoDense(KL.Layer):
    """A custom layer owning two sublayers: both weights are named "kernel"."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first, self.second = KL.Dense(2, use_bias=False), KL.Dense(2, use_bias=False)

    def call(self, inputs):
        return self.second(self.first(inputs))


def test_save_refuses_a_layer_with_clashing_weight_names(tmp_path):
    inputs = KL.Input((2,))
    model = keras.Model(inputs, TwoDense(name="two_dense")(inputs))
    with pytest.raises(ValueError, match=r"'two_dense' has several weights named two_dense/kernel:0"):
        save_weights(model, tmp_path / "w.h5")
    assert os.listdir(tmp_path) == []


def test_interrupted_save_leaves_the_previous_file_and_no_temp_file(tmp_path, rng, monkeypatch):
    model = build_model()
    path = tmp_path / "mask_rcnn_shapes_0001.h5"
    save_weights(model, path)
    assert os.listdir(tmp_path) == [path.name]
    previous = path.read_bytes()
    randomize(model, rng)
    real_create_dataset = h5py.Group.create_dataset
    calls = []

    def create_then_fail(group, name, **kwargs):
        calls.append(name)
        if len(calls) == 5:
            raise OSError("No space left on device")
        return real_create_dataset(group, name, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_weights(model, path)

    assert os.listdir(tmp_path) == [path.name]
    assert path.read_bytes() == previous


# Checkpoints -------------------------------------------------------------------


# Downloads ---------------------------------------------------------------------

class FakeResponse(io.BytesIO):
    def __init__(self, body, content_length):
        super().__init__(body)
        self.headers = {"Content-Length": str(content_length)}


def h5_bytes(tmp_path):
    path = tmp_path / "source.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv1"])
        f.create_group("conv1").attrs["weight_names"] = np.array([], dtype="S")
    return path.read_bytes()


def serve(monkeypatch, body, content_length=None):
    requested = []

    def urlopen(url, timeout=None):
        requested.append(url)
        return FakeResponse(body, len(body) if content_length is None else content_length)

    monkeypatch.setattr(weights.urllib.request, "urlopen", urlopen)
    return requested


def go_offline(monkeypatch):
    def urlopen(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weights.urllib.request, "urlopen", urlopen)


def test_existing_files_are_used_without_network(tmp_path, monkeypatch):
    go_offline(monkeypatch)
    given = tmp_path / "mine.h5"
    given.write_bytes(b"x")
    assert weights.get_coco_weights(path=given) == str(given)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mask_rcnn_coco.h5").write_bytes(b"x")
    monkeypatch.setenv("MRCNN_CACHE", str(cache))
    assert weights.get_coco_weights() == str(cache / "mask_rcnn_coco.h5")
    assert weights.get_coco_weights(path=tmp_path / "absent.h5") == str(cache / "mask_rcnn_coco.h5")


def test_offline_error_gives_url_and_exact_path(tmp_path, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(weights.DownloadError) as error:
        weights.get_coco_weights(cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert weights.COCO_WEIGHTS_URL in message
    assert str(tmp_path / "cache" / "mask_rcnn_coco.h5") in message
    assert "offline" in message
    assert not (tmp_path / "cache").exists()


def test_unreachable_url_is_a_download_error(tmp_path):
    with pytest.raises(weights.DownloadError, match=re.escape(str(tmp_path / "w.h5"))):
        weights.download_file("http://127.0.0.1:9/mask_rcnn_coco.h5", tmp_path / "w.h5", timeout=5)


def test_download_writes_the_file_with_progress(tmp_path, monkeypatch, capsys):
    body = h5_bytes(tmp_path)
    requested = serve(monkeypatch, body)
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path / "cache"))

    path = weights.get_imagenet_weights()

    assert requested == [weights.IMAGENET_WEIGHTS_URL]
    assert path == str(tmp_path / "cache" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert Path(path).read_bytes() == body
    assert os.listdir(tmp_path / "cache") == [Path(path).name]
    assert "100%" in capsys.readouterr().err


def test_download_to_a_given_path(tmp_path, monkeypatch):
    body = h5_bytes(tmp_path)
    serve(monkeypatch, body)
    target = tmp_path / "project" / "mask_rcnn_coco.h5"
    assert weights.get_coco_weights(path=target, cache_dir=tmp_path / "cache") == str(target)
    assert target.read_bytes() == body


def test_short_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    body = h5_bytes(tmp_path)
    serve(monkeypatch, body, content_length=len(body) + 1000)
    expected_message = f"stopped after {len(body)} of {len(body) + 1000} bytes"
    with pytest.raises(weights.DownloadError, match=expected_message):
        weights.get_coco_weights(cache_dir=tmp_path / "cache")
    assert not os.path.exists(tmp_path / "cache")  # nor the folder made for it


def test_download_that_is_not_hdf5_is_refused(tmp_path, monkeypatch):
    serve(monkeypatch, b"<html>Sign in to continue</html>")
    with pytest.raises(weights.DownloadError, match="did not return the HDF5 file"):
        weights.get_coco_weights(cache_dir=tmp_path / "cache")
    assert not os.path.exists(tmp_path / "cache")  # nor the folder made for it


# The released COCO file's layout against the real model ------------------------

def coco_layout_module():
    """tests/data/make_coco_layout.py, which wrote the committed layout from the reference."""
    return load_module("make_coco_layout", COCO_LAYOUT_SCRIPT)


@pytest.mark.skipif(not REFERENCE_TSV.exists(), reason=f"{REFERENCE_TSV} is not here")
def test_committed_coco_layout_is_the_reference_list():
    module = coco_layout_module()
    assert coco_layout_rows() == module.read_reference_tsv(REFERENCE_TSV)


@pytest.fixture(scope="module")
def coco_inference_model(tmp_path_factory):
    from mrcnn import model as modellib
    from mrcnn.config import Config

    class CocoConfig(Config):
        NAME = "coco"
        NUM_CLASSES = 81
        GPU_COUNT = 1
        IMAGES_PER_GPU = 1

    return modellib.MaskRCNN(mode="inference", config=CocoConfig(),
                             model_dir=str(tmp_path_factory.mktemp("logs")))


def test_coco_file_layout_loads_completely_into_resnet101_coco_model(coco_inference_model,
                                                                      tmp_path):
    rows = coco_layout_rows()
    assert len({group for group, _, _ in rows}) == 233
    assert len({weight_name.split("/")[0] for _, weight_name, _ in rows}) == 235
    assert len(rows) == 690
    keras_model = coco_inference_model.keras_model
    model_rows = [(layer.name, name, tuple(variable.shape))
                  for layer in weights.model_layers(keras_model)
                  for name, variable in weights.layer_weight_names(layer)]
    assert sorted(model_rows) == sorted(rows)

    layout = {}
    for group, weight_name, shape in rows:
        layout.setdefault(group, []).append((weight_name, shape))
    values = write_keras2_file(tmp_path / "mask_rcnn_coco.h5", list(layout.items()),
                               np.random.default_rng(1), weightless=("input_image",))
    result = load_weights(keras_model, tmp_path / "mask_rcnn_coco.h5", by_name=True)

    assert len(result.loaded) == 233
    assert result.missing == result.unused == result.excluded == []
    for (group, weight_name), value in values.items():
        variable = variable_for(keras_model, group, weight_name)
        np.testing.assert_array_equal(value_of(variable), value)


def test_training_checkpoint_loads_completely_into_inference_model(tmp_path, rng):
    from mrcnn import model as modellib
    from mrcnn.config import Config

    class TinyConfig(Config):
        NAME = "shapes"
        NUM_CLASSES = 4
        GPU_COUNT = 1
        IMAGES_PER_GPU = 1
        BACKBONE = "resnet50"
        IMAGE_MIN_DIM = IMAGE_MAX_DIM = 128
        RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
        TRAIN_ROIS_PER_IMAGE = 16
        POST_NMS_ROIS_TRAINING = POST_NMS_ROIS_INFERENCE = 64

    training = modellib.MaskRCNN(mode="training", config=TinyConfig(), model_dir=str(tmp_path))
    inference = modellib.MaskRCNN(mode="inference", config=TinyConfig(), model_dir=str(tmp_path))
    randomize(training.keras_model, rng)
    save_weights(training.keras_model, tmp_path / "mask_rcnn_shapes_0001.h5")

    result = load_weights(inference.keras_model, tmp_path / "mask_rcnn_shapes_0001.h5", by_name=True)

    assert result.missing == result.unused == []
    saved = {(layer.name, name): variable
             for layer in training.keras_model.layers
             for name, variable in weights.layer_weight_names(layer)}
    loaded = {(layer.name, name): variable
              for layer in inference.keras_model.layers
              for name, variable in weights.layer_weight_names(layer)}
    assert saved.keys() == loaded.keys()
    for key, variable in loaded.items():
        assert value_of(variable).tobytes() == value_of(saved[key]).tobytes()


def test_original_download_helper_keeps_working(tmp_path, capsys):
    from mrcnn import utils

    existing = tmp_path / "mask_rcnn_coco.h5"
    existing.write_bytes(b"stand-in")
    assert utils.download_trained_weights(str(existing)) == str(existing)
    assert f"COCO weights at {existing}" in capsys.readouterr().out




# Damaged and hostile files ---------------------------------------------------

def _replace(group, name, **dataset):
    del group[name]
    group.create_dataset(name, **dataset)


DAMAGES = {
    "a weight is missing": (lambda f: f["conv1"].__delitem__("conv1/kernel:0"),
                            "layer 'conv1' lists the weight 'conv1/kernel:0' but holds no "
                            "numeric array under that name"),
    "a weight is text": (lambda f: _replace(f["conv1"], "conv1/kernel:0",
                                            data=np.array([b"ab"] * 4)),
                         "holds no numeric array under that name"),
    "a weight is a group": (lambda f: (f["conv1"].__delitem__("conv1/kernel:0"),
                                       f["conv1"].create_group("conv1/kernel:0")),
                            "holds no numeric array under that name"),
    "a weight holds NaN": (lambda f: f["conv1"]["conv1/kernel:0"].__setitem__(
                               (0, 0, 0, 0), np.nan),
                           "conv1/conv1/kernel:0 holds NaN or infinite values"),
    "a weight holds inf": (lambda f: f["conv1"]["conv1/bias:0"].__setitem__(0, np.inf),
                           "conv1/conv1/bias:0 holds NaN or infinite values"),
    "weight_names is a number": (lambda f: f["conv1"].attrs.__setitem__("weight_names", 5),
                                 "the attribute 'weight_names' is not a list of names"),
    "layer_names is a number": (lambda f: f.attrs.__setitem__("layer_names", 7),
                                "the attribute 'layer_names' is not a list of names"),
    "names are not UTF-8": (lambda f: f["conv1"].attrs.__setitem__(
                                "weight_names", np.array([b"\xff\xfe", b"x"])),
                            "holds names that are not UTF-8 text"),
    "a layer is a dataset": (lambda f: (f.__delitem__("conv1"), f.create_dataset("conv1", data=[1])),
                             "lists layer 'conv1' in 'layer_names' but has no group for it"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_file_is_one_clean_error_and_changes_nothing(tmp_path, rng, damage):
    edit, message = DAMAGES[damage]
    path = tmp_path / "w.h5"
    write_keras2_file(path, expected_layout(), rng)
    with h5py.File(path, "r+") as f:
        edit(f)
    model = build_model()
    before = snapshot(model)
    with pytest.raises(weights.WeightsError, match=re.escape(message)) as error:
        weights.check_weights_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(weights.WeightsError, match=re.escape(message)):
        load_weights(model, path, by_name=True, skip_mismatched=CLASS_SPECIFIC_LAYERS)
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)


def test_a_truncated_file_is_a_clean_error(tmp_path, rng):
    path = tmp_path / "w.h5"
    write_keras2_file(path, expected_layout(), rng)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    assert not weights.is_weights_file(path)
    with pytest.raises(weights.WeightsError, match=re.escape(f"{path} is a damaged HDF5 file")):
        load_weights(build_model(), path, by_name=True)


def test_a_shape_mismatch_is_a_weight_shape_error_with_a_one_line_summary(tmp_path, rng):
    layout = expected_layout()
    layout[0] = ("conv1", conv("conv1", 5, 3, 4))
    write_keras2_file(tmp_path / "w.h5", layout, rng)
    with pytest.raises(weights.WeightShapeError) as error:
        load_weights(build_model(), tmp_path / "w.h5", by_name=True)
    assert error.value.filepath == str(tmp_path / "w.h5")
    assert error.value.summary() == ("weight shapes differ in 1 layer(s) (conv1 kernel:0 is "
                                     "(5, 5, 3, 4) in the file, (3, 3, 3, 4) in the model)")
    weights.check_weights_file(tmp_path / "w.h5")  # shapes need a model: the file itself is fine
