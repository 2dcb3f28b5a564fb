"""Tests of mrcnn.runs: run folders, checkpoints, saved settings, weight choices."""

import datetime
import os
import re

import keras
import pytest
from keras import layers as KL

from mrcnn import runs, weights
from mrcnn.config import Config, ConfigError
from mrcnn.training import TrainingStage
from mrcnn.weights import WeightsError, save_weights


def small_model():
    return keras.Sequential([keras.Input((2,)), KL.Dense(1, name="dense")])


def test_checkpoint_names_are_the_originals():
    now = datetime.datetime(2026, 1, 25, 15, 30)
    assert runs.log_dir_name("Shapes", now) == "shapes20260125T1530"
    template = runs.checkpoint_path_template("logs/shapes20260125T1530", "Shapes")
    assert template.format(epoch=7) == os.path.join("logs/shapes20260125T1530",
                                                    "mask_rcnn_shapes_0007.h5")


def test_epoch_from_checkpoint():
    assert runs.epoch_from_checkpoint("logs/shapes20260125T1530/mask_rcnn_shapes_0003.h5") == 3
    windows_path = r"C:\logs\my-data20260125T1530\mask_rcnn_my-data_0120.h5"
    assert runs.epoch_from_checkpoint(windows_path) == 120
    assert runs.epoch_from_checkpoint("mask_rcnn_coco.h5") is None
    assert runs.epoch_from_checkpoint("logs/mask_rcnn_shapes_0003.h5") is None


def test_runs_started_in_the_same_minute_get_folders_of_their_own(tmp_path):
    now = datetime.datetime(2026, 1, 25, 15, 30, 42, 123456)
    folders = [runs.new_run_folder(str(tmp_path / "logs"), "Shapes", now) for _ in range(3)]
    assert [os.path.basename(folder) for folder in folders] == [
        "shapes20260125T1530", "shapes20260125T153042", "shapes20260125T153042123456"]
    assert all(os.path.isdir(folder) for folder in folders)
    with pytest.raises(FileExistsError, match="another run started at the same moment"):
        runs.new_run_folder(str(tmp_path / "logs"), "shapes", now)
    # Sorted names are in the order the runs began; a later minute sorts after them all.
    later = runs.new_run_folder(str(tmp_path / "logs"), "shapes", now.replace(minute=31, second=0))
    assert sorted(folders + [later]) == folders + [later]


def test_find_last_checkpoint_and_resume_in_a_folder_named_to_the_second(tmp_path):
    model = small_model()
    make_run(tmp_path, model, "shapes20260125T1530", [1, 2, 3])
    second = make_run(tmp_path, model, "shapes20260125T153042", [1])
    assert runs.find_last_checkpoint(tmp_path, "shapes") == str(second / "mask_rcnn_shapes_0001.h5")
    assert runs.epoch_from_checkpoint(str(second / "mask_rcnn_shapes_0001.h5")) == 1
    assert runs.epoch_from_checkpoint(
        "logs/shapes20260125T153042123456/mask_rcnn_shapes_0012.h5") == 12
    assert runs.epoch_from_checkpoint("logs/shapes20260125T153/mask_rcnn_shapes_0012.h5") is None


def test_run_settings_record_whether_the_run_started_from_weights(tmp_path):
    for pretrained in (True, False, None):
        runs.save_run_settings(str(tmp_path), Config(), ["pikachu"], pretrained)
        assert runs.read_settings(str(tmp_path / runs.SETTINGS_FILE)).pretrained is pretrained
    (tmp_path / runs.SETTINGS_FILE).write_text(
        '{"config": {}, "class_names": ["pikachu"], "pretrained": "yes"}')
    with pytest.raises(ConfigError, match="'pretrained' is not true, false or null"):
        runs.read_settings(str(tmp_path / runs.SETTINGS_FILE))


def test_run_settings_record_the_runs_schedule(tmp_path):
    stages = [TrainingStage("heads", 1, 0.001), TrainingStage("all", 2, 0.0001)]
    runs.save_run_settings(str(tmp_path), Config(), ["pikachu"], True, stages)
    settings = runs.read_settings(str(tmp_path / runs.SETTINGS_FILE))
    assert settings.schedule == [["heads", 1, 0.001], ["all", 2, 0.0001]]
    runs.save_run_settings(str(tmp_path), Config(), ["pikachu"])
    assert runs.read_settings(str(tmp_path / runs.SETTINGS_FILE)).schedule is None
    for schedule in ('[["heads", "1", 0.001]]', '[]', '{"heads": 1}', '[["all", true, 0.1]]'):
        (tmp_path / runs.SETTINGS_FILE).write_text(
            '{"config": {}, "class_names": ["pikachu"], "schedule": %s}' % schedule)
        with pytest.raises(ConfigError, match="'schedule' is not a list of"):
            runs.read_settings(str(tmp_path / runs.SETTINGS_FILE))


def test_architecture_changes_compare_values_not_types():
    saved = runs.RunSettings({"BACKBONE": "resnet50", "RPN_ANCHOR_SCALES": [8, 16, 32],
                              "IMAGE_MAX_DIM": 128, "STEPS_PER_EPOCH": 10}, ["pikachu"])
    assert saved.architecture_changes({"RPN_ANCHOR_SCALES": (8, 16, 32), "IMAGE_MAX_DIM": 128.0,
                                       "STEPS_PER_EPOCH": 5}) == {}
    assert saved.architecture_changes({"BACKBONE": "resnet101", "IMAGE_MAX_DIM": 256}) == {
        "BACKBONE": ("resnet50", "resnet101"), "IMAGE_MAX_DIM": (128, 256)}
    assert runs.same_setting((8, 16), [8, 16]) and not runs.same_setting([8, 16], [16, 8])


def test_find_last_checkpoint_skips_incomplete_and_foreign_files(tmp_path):
    model = small_model()
    make_run(tmp_path, model, "shapes20260101T0000", [1, 2])
    newest = make_run(tmp_path, model, "shapes20260102T0930", [1, 2])
    complete = (newest / "mask_rcnn_shapes_0002.h5").read_bytes()
    (newest / "mask_rcnn_shapes_0002.h5").write_bytes(complete[: len(complete) // 2])
    (newest / "mask_rcnn_shapes_0003.h5").write_bytes(b"\0" * 100)
    (newest / ".mask_rcnn_shapes_0004.h5.1a2b3c4d.partial.h5").write_bytes(complete)
    (newest / "mask_rcnn_shapes_0005.h5.tmp").write_bytes(complete)
    make_run(tmp_path, model, "other20270101T0000", [])
    (tmp_path / "other20270101T0000" / "mask_rcnn_shapes_0009.h5").write_bytes(complete)

    last = runs.find_last_checkpoint(tmp_path, "SHAPES")
    assert last == str(newest / "mask_rcnn_shapes_0001.h5")

    (newest / "mask_rcnn_shapes_0001.h5").unlink()
    assert runs.find_last_checkpoint(tmp_path, "shapes") == str(
        tmp_path / "shapes20260101T0000" / "mask_rcnn_shapes_0002.h5")


def test_find_last_checkpoint_without_checkpoints_says_where_they_go(tmp_path):
    (tmp_path / "shapes20260101T0000").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(
            os.path.join(str(tmp_path), "shapesYYYYmmddTHHMM", "mask_rcnn_shapes_0001.h5"))):
        runs.find_last_checkpoint(tmp_path, "shapes")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runs.find_last_checkpoint(tmp_path / "nowhere", "shapes")


def make_run(model_dir, model, folder, epochs):
    run_dir = model_dir / folder
    run_dir.mkdir(parents=True)
    for epoch in epochs:
        save_weights(model, run_dir / f"mask_rcnn_shapes_{epoch:04d}.h5")
    return run_dir


def test_has_checkpoint(tmp_path):
    assert not runs.has_checkpoint(tmp_path / "missing")
    assert not runs.has_checkpoint(tmp_path)
    (tmp_path / "mask_rcnn_my-data_0001.h5").write_bytes(b"")
    assert runs.has_checkpoint(tmp_path)


class Shapes(Config):
    NAME = "shapes"
    NUM_CLASSES = 3
    IMAGE_MAX_DIM = 256
    FPN_CLASSIF_FC_LAYERS_SIZE = 256


def test_run_settings_round_trip(tmp_path):
    path = runs.save_run_settings(tmp_path, Shapes(), ["square", "circle"])
    assert path == str(tmp_path / runs.SETTINGS_FILE)
    settings = runs.load_run_settings(tmp_path / "mask_rcnn_shapes_0003.h5")
    assert settings.class_names == ["square", "circle"]
    assert settings.path == path
    config = settings.to_config(GPU_COUNT=1, IMAGES_PER_GPU=1)
    assert config.to_dict() == dict(Shapes().to_dict(), IMAGES_PER_GPU=1, BATCH_SIZE=1)
    architecture = settings.architecture()
    assert set(architecture) == set(runs.ARCHITECTURE_SETTINGS)
    assert (architecture["IMAGE_MAX_DIM"], architecture["FPN_CLASSIF_FC_LAYERS_SIZE"]) == (256, 256)
    assert "NUM_CLASSES" not in architecture and "LEARNING_RATE" not in architecture


def test_runs_saved_before_roi_align_by_stride_keep_the_originals_sampling(tmp_path):
    """Their settings have no ROI_ALIGN_BY_STRIDE: resuming or fine-tuning one (whose base
    settings, the synthetic demo's, now say True) must build the network they trained."""
    (tmp_path / runs.SETTINGS_FILE).write_text(
        '{"config": {"BACKBONE": "resnet50"}, "class_names": ["pikachu"]}')
    saved = runs.load_run_settings(tmp_path / "mask_rcnn_pikachu_0003.h5")
    assert saved.config["ROI_ALIGN_BY_STRIDE"] is False
    assert saved.architecture() == {"BACKBONE": "resnet50", "ROI_ALIGN_BY_STRIDE": False}
    runs.save_run_settings(tmp_path, Config.from_dict({"NAME": "shapes",
                                                       "ROI_ALIGN_BY_STRIDE": True}), ["square"])
    assert runs.load_run_settings(tmp_path / "x.h5").config["ROI_ALIGN_BY_STRIDE"] is True


def test_run_settings_absent_or_damaged(tmp_path):
    assert runs.load_run_settings(tmp_path / "mask_rcnn_coco.h5") is None
    (tmp_path / runs.SETTINGS_FILE).write_text('{"config": ')
    with pytest.raises(ConfigError, match=f"{tmp_path / runs.SETTINGS_FILE}: cannot read"):
        runs.load_run_settings(tmp_path / "mask_rcnn_shapes_0001.h5")


def test_resolve_weights_choices(tmp_path, monkeypatch):
    assert runs.resolve_weights("none", tmp_path, "shapes") is None
    with pytest.raises(WeightsError, match="--weights=last: No complete checkpoint of 'shapes'"):
        runs.resolve_weights("last", tmp_path, "shapes")
    with pytest.raises(WeightsError, match="^--model=last: No complete checkpoint"):
        runs.resolve_weights("last", tmp_path, "shapes", option="--model")
    newest = make_run(tmp_path, small_model(), "shapes20260102T0930", [1, 2])
    assert runs.resolve_weights("last", tmp_path, "shapes") == str(newest / "mask_rcnn_shapes_0002.h5")
    assert runs.resolve_weights(str(newest / "mask_rcnn_shapes_0001.h5"), tmp_path, "x") == str(
        newest / "mask_rcnn_shapes_0001.h5")
    with pytest.raises(WeightsError, match="nowhere.h5: no such weights file"):
        runs.resolve_weights(str(tmp_path / "nowhere.h5"), tmp_path, "shapes")
    (tmp_path / "notes.h5").write_text("text")
    with pytest.raises(WeightsError, match="notes.h5: not a Keras HDF5 weights file"):
        runs.resolve_weights(str(tmp_path / "notes.h5"), tmp_path, "shapes")

    def offline(*args, **kwargs):
        raise weights.DownloadError("Could not download it. Put the file at: /cache/coco.h5")

    monkeypatch.setattr(weights, "get_coco_weights", offline)
    with pytest.raises(WeightsError, match="--weights=coco: Could not download"):
        runs.resolve_weights("coco", tmp_path, "shapes")
