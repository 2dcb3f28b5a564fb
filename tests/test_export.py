"""Export for serving: the SavedModel and TFLite files of mrcnn.export, checked against detect()."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn import export, utils
from mrcnn.model import MaskRCNN

from conftest import TinyConfig, mask_iou, matched_detections

CLASS_NAMES = ["BG", "pikachu"]

# Sizes and aspect ratios that are padded, upscaled and downscaled into the
# 128x128 square, plus one already square.
IMAGE_SHAPES = [(128, 128, 3), (100, 200, 3), (300, 90, 3), (64, 64, 3), (37, 251, 3)]


class ExportConfig(TinyConfig):
    # Fewer proposals and detections: with random weights, many boxes overlap,
    # and the more pairs there are, the likelier one pair's IoU is within
    # float rounding of the NMS threshold, where the two graphs may decide
    # differently.
    POST_NMS_ROIS_INFERENCE = 30
    DETECTION_MAX_INSTANCES = 10


def spread_scores(model):
    """Shrink the random class logits: the scores spread below 1 instead of all being 1.0."""
    layer = model.keras_model.get_layer("mrcnn_class_logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 0.1, bias])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny random inference model whose detections have distinct scores and varied masks."""
    keras.utils.set_random_seed(0)
    model = MaskRCNN("inference", ExportConfig(), str(tmp_path_factory.mktemp("logs")))
    spread_scores(model)
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    from mrcnn.synthetic import SyntheticDataset

    dataset = SyntheticDataset()
    dataset.load_synthetic(len(IMAGE_SHAPES), 256, 256, seed=1)
    dataset.prepare()
    scenes = [utils.resize(dataset.load_image(i), shape[:2], preserve_range=True).astype(np.uint8)
              for i, shape in enumerate(IMAGE_SHAPES)]
    gray = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    rgba = rng.integers(0, 256, (120, 90, 4), dtype=np.uint8)
    return scenes + [gray, rgba]


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "pikachu" / "1"
    os.makedirs(path / "variables")   # an earlier export, replaced whole
    (path / "saved_model.pb").write_bytes(b"an earlier export")
    (path / "variables" / "variables.index").write_bytes(b"an earlier export")
    (path / "variables" / "variables.data-00000-of-00002").write_bytes(b"an earlier export")
    assert export.export(model, path, class_names=CLASS_NAMES) == str(path)
    return path


@pytest.fixture(scope="module")
def serve(saved_model):
    return tf.saved_model.load(str(saved_model)).signatures["serving_default"]


def detections_in_fresh_process(saved_model, images, tmp_path):
    """Run the SavedModel on ``images`` in a Python process where mrcnn and Keras cannot be imported."""
    np.savez(tmp_path / "images.npz", *images)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["mrcnn"] = None      # import mrcnn raises ImportError
        sys.modules["keras"] = None
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({str(saved_model)!r}).signatures["serving_default"]
        images = np.load({str(tmp_path / "images.npz")!r})
        outputs = {{}}
        for i in range(len(images.files)):
            for name, value in serve(image=tf.constant(images[f"arr_{{i}}"])).items():
                value = value.numpy()
                if name == "class_names":
                    value = np.char.decode(value.astype(bytes))
                outputs[f"{{i}}/{{name}}"] = value
        np.savez({str(tmp_path / "outputs.npz")!r}, **outputs)
        try:
            import mrcnn
        except ImportError:
            print("mrcnn not importable")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "mrcnn not importable" in run.stdout
    outputs = np.load(tmp_path / "outputs.npz")
    return [{name.split("/")[1]: outputs[name] for name in outputs.files
             if name.startswith(f"{i}/")} for i in range(len(images))]


def assert_same_detections(served, expected, score_tolerance=1e-4):
    """The served detections are detect()'s: same classes, scores, boxes within a pixel, masks IoU >= 0.99."""
    assert served["masks"].shape == expected["masks"].shape
    np.testing.assert_array_equal(served["class_ids"], expected["class_ids"])
    np.testing.assert_allclose(served["scores"], expected["scores"], atol=score_tolerance)
    assert np.abs(served["rois"] - expected["rois"]).max(initial=0) <= 1
    for i in range(served["masks"].shape[-1]):
        assert mask_iou(served["masks"][..., i], expected["masks"][..., i]) >= 0.99, i


def test_saved_model_gives_detect_results_without_mrcnn(model, images, saved_model, tmp_path):
    """The exported graph and detect() run the same network on bit-identical molded images, but
    TensorFlow optimizes the two graphs differently (oneDNN fusions), so their outputs differ by
    about 1e-6. With random weights many boxes overlap, and an NMS decision or a box rounding
    within that of its threshold can come out the other way, and a box kept on one side may
    suppress others there: one detection in ten may then be another. Every other detection must
    be the same."""
    served = detections_in_fresh_process(saved_model, images, tmp_path)
    matched = total = 0
    for image, result in zip(images, served):
        (expected,) = model.detect([image])
        assert result["masks"].dtype == bool and result["rois"].dtype == np.int32
        assert result["masks"].shape[:2] == image.shape[:2]
        pairs = matched_detections(result, expected)
        count = max(len(result["scores"]), len(expected["scores"]))
        assert len(pairs) >= count - max(1, count // 10), (len(pairs), count)
        for i, j in pairs:
            assert mask_iou(result["masks"][..., i], expected["masks"][..., j]) >= 0.99
        assert list(result["class_names"]) == [CLASS_NAMES[i] for i in result["class_ids"]]
        matched += len(pairs)
        total += count
    # Not vacuous: there are several detections an image, and at least 90 % of them are the same.
    assert total >= 3 * len(images) and matched >= 0.9 * total, (matched, total)


def test_unmold_graph_matches_unmold_detections(model, images):
    """On the same network outputs, the exported post-processing is detect()'s, pixel for pixel."""
    for image in images[:5]:
        molded, metas, windows = model.mold_inputs([image])
        detections, _, _, mrcnn_mask, _, _, _ = model.predict_molded(molded, metas)
        expected = model.unmold_detections(detections[0], mrcnn_mask[0], image.shape,
                                           molded.shape[1:], windows[0])
        served = export.unmold_detections_graph(
            tf.constant(detections[0]), tf.constant(mrcnn_mask[0]), tf.constant(image.shape[:2]),
            tf.constant(molded.shape[1:3]), tf.constant(windows[0], tf.int32))
        for a, b in zip(served, expected):
            np.testing.assert_array_equal(a.numpy(), b)


def test_saved_model_signature(serve):
    (spec,) = serve.structured_input_signature[1].values()
    assert (spec.name, spec.dtype, spec.shape.rank) == ("image", tf.uint8, None)
    assert set(serve.structured_outputs) == {"rois", "class_ids", "class_names", "scores", "masks"}


def test_export_replaces_the_folder_and_leaves_no_temporary_files(saved_model):
    assert sorted(os.listdir(saved_model)) == ["assets", "fingerprint.pb", "saved_model.pb",
                                              "variables"]
    assert "variables.data-00000-of-00002" not in os.listdir(saved_model / "variables")
    assert os.listdir(saved_model.parent) == ["1"]


@pytest.mark.parametrize("format", ["saved_model", "tflite"])
def test_export_never_replaces_what_is_not_an_earlier_export(model, tmp_path, format):
    """A folder of the user's (even the current one) or a file that is not a TFLite model is
    refused before anything is built, and left as it was."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "README.txt").write_text("mine")
    (tmp_path / "notes.tflite").write_text("mine too")
    target = tmp_path if format == "saved_model" else tmp_path / "notes.tflite"
    message = "holds README.txt, notes.tflite, photos" if format == "saved_model" else \
        "exists and is not a TFLite file"
    with pytest.raises(export.ExportError, match=message):
        export.export(model, target, class_names=CLASS_NAMES, format=format)
    assert sorted(os.listdir(tmp_path)) == ["README.txt", "notes.tflite", "photos"]
    assert (tmp_path / "notes.tflite").read_text() == "mine too"


def test_check_export_path_accepts_free_paths_and_earlier_exports(tmp_path):
    export.check_export_path(str(tmp_path / "new" / "1"))
    export.check_export_path(str(tmp_path / "new.tflite"), "tflite")
    (tmp_path / "empty").mkdir()
    export.check_export_path(str(tmp_path / "empty"))
    (tmp_path / "old" / "variables").mkdir(parents=True)
    (tmp_path / "old" / "saved_model.pb").write_bytes(b"")
    export.check_export_path(str(tmp_path / "old"))
    (tmp_path / "old.tflite").write_bytes(b"\x1c\x00\x00\x00" + export.TFLITE_IDENTIFIER + b"...")
    export.check_export_path(str(tmp_path / "old.tflite"), "tflite")
    # Only SavedModel files, but no saved_model.pb: not an export.
    (tmp_path / "half" / "variables").mkdir(parents=True)
    with pytest.raises(export.ExportError, match="half: holds variables, which is not an earlier"):
        export.check_export_path(str(tmp_path / "half"))
    with pytest.raises(export.ExportError, match="old.tflite: exists and is not a folder"):
        export.check_export_path(str(tmp_path / "old.tflite"))
    with pytest.raises(export.ExportError, match="old: exists and is not a file"):
        export.check_export_path(str(tmp_path / "old"), "tflite")


def test_check_export_path_refuses_the_current_folder(tmp_path, monkeypatch):
    """An export swaps its whole folder: the current one would be renamed away."""
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    for path in (".", str(tmp_path / "empty"), str(tmp_path)):
        with pytest.raises(export.ExportError, match="is the current folder"):
            export.check_export_path(os.path.abspath(path))
    export.check_export_path(os.path.abspath("export/1"))


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 0, 3), np.uint8), "image is empty"),
    (np.zeros((5, 0), np.uint8), "image is empty"),
    (np.zeros((8, 8, 5), np.uint8), "1 \\(gray\\), 2 \\(gray \\+ alpha\\), 3 \\(RGB\\) or 4 \\(RGBA\\)"),
    (np.zeros((1, 8, 8, 3), np.uint8), "\\[height, width\\] or \\[height, width, channels\\]"),
])
def test_bad_images_get_a_clear_error(serve, image, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(image=tf.constant(image))


def test_float_images_are_refused_by_the_signature(serve):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        serve(image=tf.constant(np.zeros((8, 8, 3), np.float32)))


@pytest.mark.parametrize("in_shape, out_shape", [
    ((28, 28, 1), (5, 40)), ((28, 28, 1), (1, 1)), ((100, 60, 3), (128, 77)),
    ((300, 200, 3), (128, 85)), ((7, 9, 3), (64, 100))])
def test_resize_graph_matches_scikit_image(in_shape, out_shape):
    image = np.random.default_rng(1).random(in_shape) * 200 + 30
    expected = utils.resize(image, out_shape, preserve_range=True)
    resized = export.resize_bilinear_graph(tf.constant(image), out_shape).numpy()
    np.testing.assert_allclose(resized, expected, rtol=0, atol=1e-9)


class Pad64Config(ExportConfig):
    IMAGE_RESIZE_MODE = "pad64"
    IMAGE_MIN_DIM = 64


@pytest.mark.parametrize("config_class", [TinyConfig, Pad64Config])
@pytest.mark.parametrize("shape", [(100, 200, 3), (300, 90, 3), (37, 251, 3)])
def test_mold_graph_matches_mold_inputs(config_class, shape):
    config = config_class()
    image = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    model = MaskRCNN.__new__(MaskRCNN)  # mold_inputs only reads the config
    model.config = config
    molded, metas, windows = model.mold_inputs([image])
    graph_molded, window, scale = export.mold_image_graph(tf.constant(image), config)
    np.testing.assert_array_equal(graph_molded.numpy(), molded[0])
    np.testing.assert_array_equal(window.numpy(), windows[0])
    meta = export.image_meta_graph(tf.shape(image), tf.shape(graph_molded), window, scale,
                                   config.NUM_CLASSES)
    np.testing.assert_allclose(meta.numpy(), metas[0], rtol=1e-6)


@pytest.mark.parametrize("size", [(128, 128), (64, 192), (320, 128)])
def test_anchors_graph_matches_get_anchors(inference_model, size):
    expected = inference_model.get_anchors(size)
    anchors = export.pyramid_anchors_graph(inference_model.config, tf.constant(size)).numpy()
    np.testing.assert_allclose(anchors, expected, rtol=0, atol=1e-6)


def test_pad64_export_gives_detect_results(tmp_path):
    keras.utils.set_random_seed(1)
    model = MaskRCNN("inference", Pad64Config(), str(tmp_path))
    spread_scores(model)
    path = export.export(model, tmp_path / "pad64")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    for shape in [(100, 200, 3), (64, 64, 3)]:
        image = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
        (expected,) = model.detect([image])
        served = {name: value.numpy() for name, value in serve(image=tf.constant(image)).items()}
        assert_same_detections(served, expected)


def test_a_training_model_exports_through_a_one_image_twin(tmp_path):
    class TwoImages(TinyConfig):
        IMAGES_PER_GPU = 2

    keras.utils.set_random_seed(2)
    training = MaskRCNN("training", TwoImages(), str(tmp_path))
    twin = export.one_image_inference_model(training)
    assert twin.mode == "inference" and twin.config.BATCH_SIZE == 1
    assert twin.config.IMAGE_MAX_DIM == 128 and type(twin.config).__name__ == "TwoImages"
    for name in ["conv1", "rpn_model", "mrcnn_mask", "mrcnn_class_logits"]:
        for a, b in zip(twin.keras_model.get_layer(name).get_weights(),
                        training.keras_model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_export_errors_say_what_to_change(inference_model, tmp_path):
    with pytest.raises(export.ExportError, match="format is 'onnx': use one of saved_model, tflite"):
        export.export(inference_model, tmp_path / "m", format="onnx")
    with pytest.raises(export.ExportError, match="class_names has 3 names but NUM_CLASSES is 2"):
        export.export(inference_model, tmp_path / "m", class_names=["BG", "a", "b"])

    class Crop(TinyConfig):
        IMAGE_RESIZE_MODE = "crop"

    crop_model = MaskRCNN.__new__(MaskRCNN)
    crop_model.config = Crop()
    with pytest.raises(export.ExportError, match="IMAGE_RESIZE_MODE is 'crop'"):
        export.export(crop_model, tmp_path / "m")
    assert not os.path.exists(tmp_path / "m")


@pytest.fixture(scope="module")
def tflite_file(model, tmp_path_factory):
    return export.export(model, tmp_path_factory.mktemp("tflite") / "pikachu.tflite",
                         class_names=CLASS_NAMES, format="tflite")


def test_tflite_file_has_the_serving_signature(tflite_file):
    assert os.path.getsize(tflite_file) > 1e6
    interpreter = tf.lite.Interpreter(model_path=tflite_file)
    signature = interpreter.get_signature_list()["serving_default"]
    assert signature["inputs"] == ["image"]
    assert sorted(signature["outputs"]) == ["class_ids", "class_names", "masks", "rois", "scores"]
    (image_input,) = [detail for detail in interpreter.get_input_details()]
    assert image_input["dtype"] == np.uint8 and list(image_input["shape_signature"]) == [-1, -1, -1]


@pytest.mark.parametrize("image_index", [1, 4])
def test_tflite_gives_detect_results(model, images, tflite_file, image_index):
    """Any TFLite runtime runs the file (builtin ops only) and finds detect()'s instances.

    Its resizing is float32, where detect()'s is float64: a resized pixel may
    be one level lower, which moves the scores by up to about 1e-3.
    """
    runner = tf.lite.Interpreter(model_path=tflite_file).get_signature_runner("serving_default")
    image = images[image_index]
    served = runner(image=image)
    (expected,) = model.detect([image])
    assert len(expected["scores"]) >= 3
    assert_same_detections(served, expected, score_tolerance=5e-3)


def test_tflite_file_has_builtin_ops_only(tflite_file):
    """No Select TF op: the runtimes without TensorFlow's kernels run the file.

    Select TF ops are custom ops named "Flex<op>" in the flatbuffer; builtins are stored by code.
    """
    with open(tflite_file, "rb") as f:
        assert b"Flex" not in f.read()


def test_serving_outputs_are_json_serializable(serve, images):
    """What TensorFlow Serving's REST API returns: plain lists, strings and booleans."""
    outputs = serve(image=tf.constant(images[1]))
    payload = {name: (value.numpy().astype(str) if value.dtype == tf.string else value.numpy()).tolist()
               for name, value in outputs.items()}
    decoded = json.loads(json.dumps(payload))
    assert len(decoded["rois"]) == len(decoded["scores"]) == len(decoded["class_names"])
    assert np.array(decoded["masks"]).shape == images[1].shape[:2] + (len(decoded["scores"]),)
