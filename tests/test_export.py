"""Exports: every format of every level answers as the .keras model does, in its own runtime."""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from core.errors import ConfigError
from core.serving.export import (FORMATS, LAYERS_FILE, ExportFormat, calibration_photos, export_model, export_name,
                                 export_zip_bytes, open_export)
from core.data.images import load_array
from core.levels import all_levels, get_level
from core.serving.model_store import ModelStore
from core.serving.predictor import Predictor
from core.training.loop import TrainConfig, train
from tests.helpers import SHARED

LEVELS = [level.key for level in all_levels()]
# Levels 2 and 3 save the same graph (backbone, head, mirror averaging; only trainable flags differ),
# so the format matrix converts level 3 for both; level 1's convnet is converted to keras, ONNX and
# LiteRT by the README-snippet tests below, which check its answers too. That saves CI a minute and more.
EXPORTED_LEVELS = [level for level in LEVELS if level not in (1, 2)]
CATS_VS_DOGS = SHARED / "datasets" / "cats_vs_dogs"
needs_shared = pytest.mark.skipif(not CATS_VS_DOGS.is_dir(), reason="../shared (real photos and weights) is not "
                                                                    "present beside the project")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small model per level, trained on 12 real photos per class with the genuine ImageNet weights.

    MobileNetV2 rather than the default EfficientNet-Lite2: the converters meet the same layer types
    in both (convolutions, depthwise convolutions, batch norm, ReLU6, residual adds) and convert it in
    two thirds of the time; `scripts/bench_export.py` checks Lite2's exports on real photos.
    """
    if not CATS_VS_DOGS.is_dir():
        pytest.skip("../shared (real photos and weights) is not present beside the project")
    root = tmp_path_factory.mktemp("export-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITTLE_DATA_SHARED_DIR", str(SHARED))
        patch.setenv("LITTLE_DATA_HOME", str(root / "home"))
        for level in LEVELS:
            train(TrainConfig(level=level, epochs=1, limit_per_class=12, data_dir=str(CATS_VS_DOGS),
                              backbone="mobilenet_v2" if get_level(level).needs_backbone else None,
                              models_dir=str(root / "models"), cache_dir=str(root / "cache")))
    store = ModelStore(root / "models")
    return {level: store.latest(level) for level in LEVELS}


def real_photos(entry, count: int = 8) -> np.ndarray:
    paths = sorted((CATS_VS_DOGS / "validation" / "cats").glob("*.jpg"))[-count // 2:] + \
        sorted((CATS_VS_DOGS / "validation" / "dogs").glob("*.jpg"))[-count // 2:]
    return np.stack([load_array(p, entry.image_size) for p in paths])


# Level 0's .keras and SavedModel go through the same TensorFlow graph as level 3's; its converted
# formats (LiteRT, ONNX) meet its class groups (a division by their total), the part no other level has.
MATRIX = [(level, fmt) for level in EXPORTED_LEVELS for fmt in FORMATS
          if level != 0 or fmt in ("tflite", "onnx")]


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("level, fmt", MATRIX)
def test_every_format_matches_the_keras_model_on_real_photos(trained, tmp_path, level, fmt):
    entry = trained[level]
    photos = real_photos(entry)
    expected = Predictor(entry).predict_arrays(photos)
    info = export_model(entry, fmt, tmp_path / "export")
    loaded_info, predict = open_export(tmp_path / "export")
    assert loaded_info == info and info.classes == ["cats", "dogs"] and info.bytes > 10_000
    got = predict(photos)
    assert got.shape == (len(photos), 2)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(predict(photos.astype(np.uint8)), expected, atol=1e-4, rtol=0)  # uint8 pixels too
    assert (tmp_path / "export" / "labels.txt").read_text() == "cats\ndogs\n"
    readme = (tmp_path / "export" / "README.md").read_text()
    height, width = entry.image_size
    assert f"[N, {height}, {width}, 3]" in readme and "0 = cats, 1 = dogs" in readme


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "onnx", "tflite"])
def test_the_readme_snippet_runs_with_nothing_of_ours(trained, tmp_path, fmt):
    """The usage snippet, run as written in a clean folder, gives the model's answer for a real photo."""
    entry = trained[1]
    folder = tmp_path / "export"
    export_model(entry, fmt, folder)
    readme = (folder / "README.md").read_text()
    snippet = readme.split("```python\n")[1].split("```")[0]
    photo = sorted((CATS_VS_DOGS / "validation" / "dogs").glob("*.jpg"))[0]
    shutil.copyfile(photo, folder / "photo.jpg")
    (folder / "run.py").write_text(snippet)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run([sys.executable, "run.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    label, probability = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    expected = Predictor(entry).predict([photo])[0]
    assert label == expected.label
    assert abs(float(probability) - expected.probabilities[label]) < 1e-4
    assert "core" not in done.stdout + done.stderr.replace("onnxruntime", "")  # nothing of ours was imported


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("level", [0, 1])  # level 0's special case, and an ordinary network
def test_int8_litert_is_smaller_and_agrees(trained, tmp_path, level):
    entry = trained[level]
    with pytest.raises(ConfigError, match="calibration"):
        export_model(entry, "tflite", tmp_path / "x", quantize="int8")
    calibration = calibration_photos(entry, CATS_VS_DOGS, count=16)
    assert len(calibration) == 16 and calibration[0].shape == (*entry.image_size, 3)
    int8 = export_model(entry, "tflite", tmp_path / "int8", quantize="int8", calibration=calibration)
    float_bytes = 4 * Predictor(entry).model.count_params()  # what a float32 file holds, without converting one
    assert int8.quantize == "int8" and int8.bytes < float_bytes / 2
    # Level 0's class-group division fails on int8 activations, so it keeps them float.
    assert (int8.quantize_note is not None) == (level == 0)
    photos = real_photos(entry, 16)
    _, predict = open_export(tmp_path / "int8")
    quantized, expected = predict(photos), Predictor(entry).predict_arrays(photos)
    assert (quantized.argmax(1) == expected.argmax(1)).mean() >= 0.85
    assert np.abs(quantized - expected).max() < 0.25
    assert "int8" in (tmp_path / "int8" / "README.md").read_text()


def test_formats_and_quantization_are_checked():
    from core.serving.export import check_format

    with pytest.raises(ConfigError, match="Unknown export format 'pt'; use one of keras, saved_model, tflite, onnx"):
        check_format("pt")
    with pytest.raises(ConfigError, match="tflite only"):
        check_format("onnx", "int8")
    with pytest.raises(ConfigError, match="Unknown quantization"):
        check_format("tflite", "int4")


def test_a_format_text_is_parsed_once_into_an_export_format():
    assert ExportFormat.from_text("tflite-int8") is ExportFormat.TFLITE_INT8
    assert ExportFormat.from_text(" ONNX ") is ExportFormat.ONNX
    assert ExportFormat.from_parts("tflite", "int8") is ExportFormat.TFLITE_INT8  # the CLI's --format, --quantize
    assert ExportFormat.from_parts("tflite-int8", "int8") is ExportFormat.TFLITE_INT8
    assert ExportFormat.from_parts(ExportFormat.KERAS) is ExportFormat.KERAS
    int8 = ExportFormat.TFLITE_INT8
    assert (int8.file_format, int8.quantize, int8.needs_calibration, int8.model_file) == \
        ("tflite", "int8", True, "model.tflite")
    assert (ExportFormat.SAVED_MODEL.quantize, ExportFormat.SAVED_MODEL.model_file) == (None, "saved_model")
    assert [f.label for f in ExportFormat] == [".keras", "SavedModel", "LiteRT (.tflite)", "LiteRT int8", "ONNX"]
    assert FORMATS == ("keras", "saved_model", "tflite", "onnx")
    with pytest.raises(ConfigError, match=r"Unknown export format 'tflite-int4'; use one of .* \(or tflite-int8\)"):
        ExportFormat.from_text("tflite-int4")
    with pytest.raises(ConfigError, match="offered for tflite only, not keras"):
        ExportFormat.from_parts("keras", "int8")


def test_int8_is_offered_only_with_photos_of_the_models_classes():
    from types import SimpleNamespace

    from core.serving.cards import ModelCard
    from core.serving.export import offered_formats
    from core.serving.model_store import ModelEntry

    entry = ModelEntry("m", ModelCard(level=1, classes=["cats", "dogs"], image_size=(64, 64)), None, None)
    floats = [ExportFormat.KERAS, ExportFormat.SAVED_MODEL, ExportFormat.TFLITE, ExportFormat.ONNX]
    assert offered_formats(entry, SimpleNamespace(classes=["cats", "dogs"])) == [*floats[:3], ExportFormat.TFLITE_INT8,
                                                                                 floats[3]]
    assert offered_formats(entry, SimpleNamespace(classes=["circles", "squares"])) == floats
    assert offered_formats(entry, None) == floats  # no usable data set: nothing to calibrate on
    assert export_name(entry, ExportFormat.TFLITE_INT8) == export_name(entry, "tflite", "int8") == "m-tflite-int8.zip"


def test_keras_export_ships_its_layers_and_a_zip_holds_everything(dataset, tmp_path):
    """A level-1 model on synthetic shapes: the cheap path through export, zip and the CLI."""
    from core.cli import main

    result = train(TrainConfig(level=1, epochs=1, batch_size=8, data_dir=str(dataset)))
    data, info = export_zip_bytes(result.entry, "keras")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == sorted(["model.keras", LAYERS_FILE, "labels.txt", "README.md",
                                                     "export.json"])
        assert archive.read("labels.txt").decode() == "circles\nsquares\n"
    assert info.format == "keras" and info.level == 1

    # The CLI writes the zip atomically and reports it; a bad combination is a one-line error.
    out = tmp_path / "shapes.zip"
    assert main(["export", result.entry.id, "--format", "onnx", "-o", str(out), "--json"]) == 0
    with zipfile.ZipFile(out) as archive:
        assert "model.onnx" in archive.namelist()
        assert json.loads(archive.read("export.json"))["format"] == "onnx"
    assert main(["export", result.entry.id, "--format", "onnx", "--quantize", "int8"]) == 2
    assert main(["export", result.entry.id, "--format", "pt"]) == 2
    assert not list(tmp_path.glob(".export-*"))  # no temp folders left behind


def test_a_failed_export_leaves_the_previous_one(dataset, tmp_path, monkeypatch):
    result = train(TrainConfig(level=1, epochs=1, batch_size=8, data_dir=str(dataset)))
    target = tmp_path / "out" / "export"
    export_model(result.entry, "keras", target)
    before = (target / "model.keras").read_bytes()

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("keras.Model.save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_model(result.entry, "keras", target)
    assert (target / "model.keras").read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["export"]  # no temp folder left
