"""Exporting a stored model to take away: `.keras`, TensorFlow SavedModel, LiteRT (TFLite) or ONNX.

Every artifact is the same network, wrapped so that it needs nothing of ours:

- input: raw RGB pixels, float32 0-255 (uint8 values cast to float), shape [N, H, W, 3] at the
  model's input size; the model's own resizing, preprocessing and mirror averaging are inside;
- output: one probability per class, [N, C], in the order of `labels.txt`.

Keras 3's `Model.export` does the converting (SavedModel; LiteRT through TensorFlow's converter;
ONNX through tf2onnx). An export is a folder (or the same as a zip) holding the model, `labels.txt`,
`README.md` with a usage snippet for its runtime, and `export.json` saying what is inside.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core.errors import ConfigError
from core.model_store import ModelEntry

#: format -> (file or folder name inside the export, runtime named in the README)
FORMATS = {
    "keras": ("model.keras", "Keras 3 (TensorFlow, JAX or PyTorch backend)"),
    "saved_model": ("saved_model", "TensorFlow (`tf.saved_model.load`), TF Serving, TF.js converter"),
    "tflite": ("model.tflite", "LiteRT (`ai-edge-litert`), TensorFlow Lite on Android, iOS, microcontrollers"),
    "onnx": ("model.onnx", "ONNX Runtime, and anything else that reads ONNX"),
}
QUANTIZATIONS = ("int8",)
MANIFEST = "export.json"
LAYERS_FILE = "little_data_layers.py"  # the `.keras` export's custom layers, self-contained


@dataclass
class ExportInfo:
    """What `export.json` says about an export."""

    format: str
    model_file: str
    model_id: str
    level: int
    classes: list[str]
    image_size: tuple[int, int]  # (height, width)
    quantize: str | None = None
    quantize_note: str | None = None  # how the quantization differs from int8 weights and activations
    flip_average: bool = True
    val_accuracy: float | None = None
    bytes: int = 0  # size of the model file or folder
    seconds: float = 0.0  # time to convert
    extra_files: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "ExportInfo":
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["image_size"] = tuple(data["image_size"])
        return cls(**data)


def check_format(fmt: str, quantize: str | None = None) -> None:
    """Raises ConfigError for an unknown format or a quantization the format does not offer."""
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise ConfigError(f"Unknown quantization {quantize!r}; use {', '.join(QUANTIZATIONS)}.")
        if fmt != "tflite":
            raise ConfigError(f"--quantize {quantize} is offered for tflite only, not {fmt}.")


def serving_model(model, entry: ModelEntry):
    """`model` with a fixed [N, H, W, 3] float input of raw pixels and a [N, C] probability output."""
    import keras

    from core.layers import ClassProbabilities

    height, width = entry.image_size
    inputs = keras.Input(shape=(height, width, 3), dtype="float32", name="pixels")
    outputs = ClassProbabilities(name="probabilities")(model(inputs))
    wrapped = keras.Model(inputs, outputs, name=f"little_data_level{entry.level}")
    wrapped(np.zeros((1, height, width, 3), np.float32))  # the ONNX exporter wants a model called once
    return wrapped


def export_model(entry: ModelEntry, fmt: str, output: str | Path, quantize: str | None = None,
                 calibration: Iterable[np.ndarray] | None = None, model=None) -> ExportInfo:
    """Writes an export of a stored model to `output`: a folder, or a zip when it ends in `.zip`.

    The export is built in a temp folder and moved into place at the end, so `output` is never
    left half-written.

    Args:
        entry: the stored model.
        fmt: one of `FORMATS`.
        quantize: "int8" (tflite only): int8 weights and activations, float input and output;
            needs `calibration`.
        calibration: uint8 [H, W, 3] training photos at the model's size, for int8's value ranges
            (a hundred or so is plenty).
        model: the loaded model, if the caller already has it.
    """
    check_format(fmt, quantize)
    if quantize and calibration is None:
        raise ConfigError("int8 quantization needs calibration photos (a hundred training photos or so).")
    from core.model_store import load_model

    output = Path(output)
    model = model if model is not None else load_model(entry)
    wrapped = serving_model(model, entry)
    name = FORMATS[fmt][0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".export-", dir=_existing_parent(output)) as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        target = folder / name
        extra, quantize_note = [], None
        if fmt == "keras":
            wrapped.save(target)
            shutil.copyfile(Path(__file__).with_name("layers.py"), folder / LAYERS_FILE)
            extra.append(LAYERS_FILE)
        elif fmt == "saved_model":
            wrapped.export(str(target), format="tf_saved_model", verbose=False)
        elif fmt == "onnx":
            wrapped.export(str(target), format="onnx", verbose=False)
        else:
            full_integer = not _has_class_groups(model)
            wrapped.export(str(target), format="litert", verbose=False,
                           **_litert_options(quantize, calibration, full_integer))
            if quantize and not full_integer:
                quantize_note = ("int8 weights, float activations: level 0's class-group sums divide by a total "
                                 "that int8 activations can round to zero")
        seconds = time.perf_counter() - start
        info = ExportInfo(format=fmt, model_file=name, model_id=entry.id, level=entry.level,
                          classes=list(entry.classes), image_size=tuple(entry.image_size), quantize=quantize,
                          quantize_note=quantize_note, flip_average=bool(entry.card.flip_average),
                          val_accuracy=entry.val_accuracy,
                          bytes=_size(target), seconds=round(seconds, 2), extra_files=extra)
        (folder / "labels.txt").write_text("\n".join(entry.classes) + "\n")
        (folder / "README.md").write_text(usage_readme(info))
        (folder / MANIFEST).write_text(json.dumps(asdict(info), indent=2) + "\n")
        if output.suffix == ".zip":
            staged = Path(tmp) / "export.zip"
            staged.write_bytes(zip_folder(folder))
        else:
            staged = folder
        _replace(staged, output)
    return info


def export_zip_bytes(entry: ModelEntry, fmt: str, quantize: str | None = None, calibration=None,
                     model=None) -> tuple[bytes, ExportInfo]:
    """The export as zip bytes, for a download button."""
    with tempfile.TemporaryDirectory(prefix="little-data-export-") as tmp:
        path = Path(tmp) / f"{entry.id}-{fmt}.zip"
        info = export_model(entry, fmt, path, quantize=quantize, calibration=calibration, model=model)
        return path.read_bytes(), info


def export_name(entry: ModelEntry, fmt: str, quantize: str | None = None) -> str:
    return f"{entry.id}-{fmt}{'-' + quantize if quantize else ''}.zip"


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def calibration_photos(entry: ModelEntry, data_dir: str | Path | None = None, count: int = 128,
                       seed: int = 0) -> list[np.ndarray]:
    """`count` training photos of the model's classes at its input size, for int8 calibration."""
    from core.datasets import DatasetError, resolve_data_dir, sample_paths, summarize
    from core.images import load_array

    folder, source = resolve_data_dir(data_dir, download=False)
    summary = summarize(folder, source=source)
    if summary.classes != list(entry.classes):
        raise DatasetError(f"Calibration needs photos of the model's classes {entry.classes}; "
                           f"{folder} has {summary.classes}. Pass --data-dir.")
    per_class = max(1, count // len(summary.classes))
    paths = sample_paths(summary, split="train", per_class=per_class, seed=seed)
    return [load_array(path, entry.image_size) for path in paths]


def _has_class_groups(model) -> bool:
    from core.backbones import leaf_layers
    from core.layers import ClassGroups

    return any(isinstance(layer, ClassGroups) for layer in leaf_layers(model))


def _litert_options(quantize: str | None, calibration, full_integer: bool = True) -> dict:
    """The LiteRT converter's options: none for float; int8 weights, and int8 activations when `full_integer`."""
    if not quantize:
        return {}
    import tensorflow as tf

    if not full_integer:
        return {"optimizations": [tf.lite.Optimize.DEFAULT]}  # dynamic range: weights only

    photos = [np.asarray(p, dtype=np.float32)[None] for p in calibration]
    if not photos:
        raise ConfigError("int8 quantization needs at least one calibration photo.")
    return {"optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": lambda: ([photo] for photo in photos)}


def _existing_parent(path: Path) -> Path:
    parent = path.expanduser().resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _replace(staged: Path, output: Path) -> None:
    """Moves the finished export over `output` (a file or a folder)."""
    if output.is_dir() and not output.is_symlink():
        old = output.with_name(f".{output.name}.old-{time.time_ns()}")
        output.rename(old)
        staged.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.replace(output)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- Running an export: what its README shows, as code the tests and the benchmark use ---------

def open_export(folder: str | Path) -> tuple[ExportInfo, Callable[[np.ndarray], np.ndarray]]:
    """Loads an export folder with its own runtime.

    Returns:
        (info, predict) where predict maps float32 or uint8 pixels [N, H, W, 3] to probabilities [N, C].
    """
    folder = Path(folder)
    try:
        info = ExportInfo.from_dict(json.loads((folder / MANIFEST).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{folder} is not a Little Data export ({MANIFEST} missing or unreadable).") from exc
    path = folder / info.model_file
    if info.format == "keras":
        import importlib.util

        import keras

        if keras.saving.get_registered_object("little_data>ClassProbabilities") is None:
            spec = importlib.util.spec_from_file_location("little_data_layers", folder / LAYERS_FILE)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        model = keras.saving.load_model(path, compile=False)
        return info, lambda x: np.asarray(model.predict_on_batch(np.asarray(x, np.float32)))
    if info.format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return info, lambda x: loaded.serve(np.asarray(x, np.float32)).numpy()
    if info.format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return info, lambda x: session.run(None, {input_name: np.asarray(x, np.float32)})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def predict_tflite(x):
        x = np.asarray(x, np.float32)
        if shape[0] != x.shape:  # LiteRT's tensors have fixed shapes; resize only when N changes
            interpreter.resize_tensor_input(input_index, list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return info, predict_tflite


_SNIPPETS = {
    "keras": '''import keras, numpy as np
from PIL import Image
import little_data_layers  # this folder's file: registers the layers the model is made of

model = keras.saving.load_model("model.keras")
labels = open("labels.txt").read().splitlines()
image = Image.open("photo.jpg").convert("RGB").resize(({width}, {height}), Image.BILINEAR)
pixels = np.asarray(image, dtype="float32")[None]          # [1, {height}, {width}, 3], 0-255
probabilities = model.predict(pixels)[0]
print(labels[probabilities.argmax()], probabilities.max())''',
    "saved_model": '''import numpy as np, tensorflow as tf
from PIL import Image

model = tf.saved_model.load("saved_model")
labels = open("labels.txt").read().splitlines()
image = Image.open("photo.jpg").convert("RGB").resize(({width}, {height}), Image.BILINEAR)
pixels = np.asarray(image, dtype="float32")[None]          # [1, {height}, {width}, 3], 0-255
probabilities = model.serve(pixels).numpy()[0]
print(labels[probabilities.argmax()], probabilities.max())''',
    "tflite": '''import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter        # pip install ai-edge-litert

interpreter = Interpreter(model_path="model.tflite")
interpreter.allocate_tensors()
labels = open("labels.txt").read().splitlines()
image = Image.open("photo.jpg").convert("RGB").resize(({width}, {height}), Image.BILINEAR)
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.asarray(image, np.float32)[None])
interpreter.invoke()
probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
print(labels[probabilities.argmax()], probabilities.max())''',
    "onnx": '''import numpy as np, onnxruntime                           # pip install onnxruntime
from PIL import Image

session = onnxruntime.InferenceSession("model.onnx")
labels = open("labels.txt").read().splitlines()
image = Image.open("photo.jpg").convert("RGB").resize(({width}, {height}), Image.BILINEAR)
pixels = np.asarray(image, dtype=np.float32)[None]         # [1, {height}, {width}, 3], 0-255
probabilities = session.run(None, {{session.get_inputs()[0].name: pixels}})[0][0]
print(labels[probabilities.argmax()], probabilities.max())''',
}


def usage_readme(info: ExportInfo) -> str:
    """The README shipped in an export: what goes in, what comes out, and how to run it."""
    height, width = info.image_size
    snippet = _SNIPPETS[info.format].format(height=height, width=width)
    accuracy = f"{info.val_accuracy:.2%} on its validation photos" if info.val_accuracy is not None else "not measured"
    quant = ""
    if info.quantize:
        how = info.quantize_note or "int8 weights and activations"
        quant = (f" Quantized: {how} (input and output stay float32); expect slightly different "
                 "probabilities than the float model.")
    mirror = ("It predicts the mean of the photo and its mirror image (done inside)."
              if info.flip_average else "It predicts on the photo as given (no mirror averaging).")
    return f"""# Little Data model: level {info.level}, {info.format}{' ' + info.quantize if info.quantize else ''}

Model `{info.model_id}`, exported from Little Data. Validation accuracy: {accuracy}.
Runtime: {FORMATS[info.format][1]}.

- **Input:** `float32` array `[N, {height}, {width}, 3]`: RGB pixels, 0-255, not normalised (cast
  `uint8` pixels to `float32`). Resize the photo to {width}x{height} (width x height) yourself,
  bilinear, squashing rather than cropping, as Little Data does. Resizing, ImageNet
  preprocessing and everything else happen inside the model. {mirror}{quant}
- **Output:** `[N, {len(info.classes)}]`, one probability per class, in the order of `labels.txt`:
  {", ".join(f"{i} = {c}" for i, c in enumerate(info.classes))}.

```python
{snippet}
```
"""
