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
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from core.errors import ConfigError
from core.serving.model_store import ModelEntry

if TYPE_CHECKING:
    from core.data.folders import DatasetSummary


class ExportFormat(str, Enum):
    """What an export holds: a model file format, and for LiteRT optionally int8 quantization.

    The values are the texts the CLI and the pages use ("tflite-int8"); `from_text` and `from_parts`
    are the only places such texts are parsed.
    """

    KERAS = "keras"
    SAVED_MODEL = "saved_model"
    TFLITE = "tflite"
    TFLITE_INT8 = "tflite-int8"
    ONNX = "onnx"

    @property
    def file_format(self) -> str:
        """The model file's format without the quantization ("tflite" for tflite-int8), as export.json says it."""
        return self.value.partition("-")[0]

    @property
    def quantize(self) -> str | None:
        """The quantization ("int8"), or None for a float model."""
        return self.value.partition("-")[2] or None

    @property
    def needs_calibration(self) -> bool:
        """int8 needs training photos of the model's classes to measure its value ranges."""
        return self.quantize is not None

    @property
    def model_file(self) -> str:
        """The file or folder name of the model inside the export."""
        return _MODEL_FILES[self.file_format]

    @property
    def runtime(self) -> str:
        """What runs it, for the export's README."""
        return _RUNTIMES[self.file_format]

    @property
    def label(self) -> str:
        """The short name shown on buttons: ".keras", "LiteRT int8"..."""
        return _LABELS[self]

    @classmethod
    def from_text(cls, text: "str | ExportFormat") -> "ExportFormat":
        """`"tflite-int8"` -> `ExportFormat.TFLITE_INT8`.

        Raises:
            ConfigError: not a format; the message lists the choices.
        """
        if isinstance(text, cls):
            return text
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            raise ConfigError(f"Unknown export format {text!r}; use one of {', '.join(FORMATS)} "
                              f"(or {', '.join(f.value for f in cls if f.quantize)}).") from None

    @classmethod
    def from_parts(cls, file_format: "str | ExportFormat", quantize: str | None = None) -> "ExportFormat":
        """The CLI's `--format` and `--quantize` (and export.json's "format" and "quantize") as one format.

        Raises:
            ConfigError: an unknown format or quantization, or a quantization the format does not offer.
        """
        fmt = cls.from_text(file_format)
        if quantize is None:
            return fmt
        if quantize not in QUANTIZATIONS:
            raise ConfigError(f"Unknown quantization {quantize!r}; use {', '.join(QUANTIZATIONS)}.")
        if fmt.quantize == quantize:
            return fmt
        quantized = [f for f in cls if f.file_format == fmt.file_format and f.quantize == quantize]
        if fmt.quantize is not None or not quantized:
            offered = ", ".join(f.file_format for f in cls if f.quantize == quantize)
            raise ConfigError(f"--quantize {quantize} is offered for {offered} only, not {fmt.value}.")
        return quantized[0]


_MODEL_FILES = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
_RUNTIMES = {
    "keras": "Keras 3 (TensorFlow, JAX or PyTorch backend)",
    "saved_model": "TensorFlow (`tf.saved_model.load`), TF Serving, TF.js converter",
    "tflite": "LiteRT (`ai-edge-litert`), TensorFlow Lite on Android, iOS, microcontrollers",
    "onnx": "ONNX Runtime, and anything else that reads ONNX",
}
_LABELS = {ExportFormat.KERAS: ".keras", ExportFormat.SAVED_MODEL: "SavedModel", ExportFormat.TFLITE: "LiteRT (.tflite)",
           ExportFormat.TFLITE_INT8: "LiteRT int8", ExportFormat.ONNX: "ONNX"}
#: The float formats' names, as `--format` takes them.
FORMATS = tuple(f.value for f in ExportFormat if f.quantize is None)
QUANTIZATIONS = ("int8",)
MANIFEST = "export.json"
LAYERS_FILE = "little_data_layers.py"  # the `.keras` export's custom layers, self-contained


@dataclass
class ExportInfo:
    """What `export.json` says about an export."""

    format: str  # the file format ("tflite" for int8 too: `quantize` says so)
    model_file: str
    model_id: str
    level: int
    classes: list[str]
    image_size: tuple[int, int]  # (height, width)
    quantize: str | None = None
    quantize_note: str | None = None  # how the quantization differs from int8 weights and activations
    flip_average: bool = True
    val_accuracy: float | None = None
    temperature: float | None = None  # the calibration inside the model; None: probabilities as trained
    exponent: float = 1.0  # the calibration's margin exponent (1: plain temperature scaling)
    bytes: int = 0  # size of the model file or folder
    seconds: float = 0.0  # time to convert
    extra_files: list[str] = field(default_factory=list)

    @property
    def export_format(self) -> ExportFormat:
        return ExportFormat.from_parts(self.format, self.quantize)

    @classmethod
    def from_dict(cls, data: dict) -> "ExportInfo":
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["image_size"] = tuple(data["image_size"])
        return cls(**data)


def check_format(fmt: str, quantize: str | None = None) -> ExportFormat:
    """The format `fmt` and `quantize` name (see `ExportFormat.from_parts`); raises ConfigError if none."""
    return ExportFormat.from_parts(fmt, quantize)


def offered_formats(entry: ModelEntry, summary: DatasetSummary | None) -> list[ExportFormat]:
    """The formats a model can be exported to with the active data set `summary` (None: no usable data set).

    int8 is offered only when the data set has the model's classes: its calibration needs their photos.
    """
    calibration_possible = summary is not None and list(summary.classes) == list(entry.classes)
    return [fmt for fmt in ExportFormat if calibration_possible or not fmt.needs_calibration]


def serving_model(model, entry: ModelEntry):
    """`model` with a fixed [N, H, W, 3] float input of raw pixels and a [N, C] probability output,
    calibrated with the card's scaling where it has one (as the Predictor answers)."""
    import keras

    from core.networks.layers import ClassProbabilities, TemperatureScaling

    height, width = entry.image_size
    inputs = keras.Input(shape=(height, width, 3), dtype="float32", name="pixels")
    probabilities = ClassProbabilities(name="class_probabilities")(model(inputs))
    calibration = entry.card.calibration
    temperature, exponent = (calibration.temperature, calibration.exponent) if calibration is not None else (1.0, 1.0)
    outputs = TemperatureScaling(temperature, exponent, name="probabilities")(probabilities)
    wrapped = keras.Model(inputs, outputs, name=f"little_data_level{entry.level}")
    wrapped(np.zeros((1, height, width, 3), np.float32))  # the ONNX exporter wants a model called once
    return wrapped


def export_model(entry: ModelEntry, fmt: ExportFormat | str, output: str | Path, quantize: str | None = None,
                 calibration: Iterable[np.ndarray] | None = None, model=None) -> ExportInfo:
    """Writes an export of a stored model to `output`: a folder, or a zip when it ends in `.zip`.

    The export is built in a temp folder and moved into place at the end, so `output` is never
    left half-written.

    Args:
        entry: the stored model.
        fmt: an `ExportFormat`, or its text ("onnx", "tflite-int8"; "tflite" with `quantize="int8"`).
        quantize: "int8" (tflite only): int8 weights and activations, float input and output;
            needs `calibration`. Another way to say `ExportFormat.TFLITE_INT8`.
        calibration: uint8 [H, W, 3] training photos at the model's size, for int8's value ranges
            (a hundred or so is plenty).
        model: the loaded model, if the caller already has it.

    Raises:
        ConfigError: an unknown format, or int8 without calibration photos.
    """
    fmt = ExportFormat.from_parts(fmt, quantize)
    quantize = fmt.quantize
    if fmt.needs_calibration and calibration is None:
        raise ConfigError("int8 quantization needs calibration photos (a hundred training photos or so).")
    from core.serving.model_store import load_model

    output = Path(output)
    model = model if model is not None else load_model(entry)
    wrapped = serving_model(model, entry)
    name = fmt.model_file
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".export-", dir=_existing_parent(output)) as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        target = folder / name
        extra, quantize_note = [], None
        if fmt is ExportFormat.KERAS:
            wrapped.save(target)
            from core.networks import layers  # self-contained: the user imports this copy of it

            shutil.copyfile(layers.__file__, folder / LAYERS_FILE)
            extra.append(LAYERS_FILE)
        elif fmt is ExportFormat.SAVED_MODEL:
            wrapped.export(str(target), format="tf_saved_model", verbose=False)
        elif fmt is ExportFormat.ONNX:
            wrapped.export(str(target), format="onnx", verbose=False)
        else:
            full_integer = not _has_class_groups(model)
            wrapped.export(str(target), format="litert", verbose=False,
                           **_litert_options(quantize, calibration, full_integer))
            if quantize and not full_integer:
                quantize_note = ("int8 weights, float activations: level 0's class groups divide by a total "
                                 "that int8 activations can round to zero")
        seconds = time.perf_counter() - start
        scaling = entry.card.calibration
        calibrated = scaling is not None and not scaling.is_identity
        info = ExportInfo(format=fmt.file_format, model_file=name, model_id=entry.id, level=entry.level,
                          classes=list(entry.classes), image_size=tuple(entry.image_size), quantize=quantize,
                          quantize_note=quantize_note, flip_average=bool(entry.card.flip_average),
                          val_accuracy=entry.val_accuracy,
                          temperature=scaling.temperature if calibrated else None,
                          exponent=scaling.exponent if calibrated else 1.0,
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


def export_zip_bytes(entry: ModelEntry, fmt: ExportFormat | str, quantize: str | None = None, calibration=None,
                     model=None) -> tuple[bytes, ExportInfo]:
    """The export as zip bytes, for a download button."""
    fmt = ExportFormat.from_parts(fmt, quantize)
    with tempfile.TemporaryDirectory(prefix="little-data-export-") as tmp:
        path = Path(tmp) / export_name(entry, fmt)
        info = export_model(entry, fmt, path, calibration=calibration, model=model)
        return path.read_bytes(), info


def export_name(entry: ModelEntry, fmt: ExportFormat | str, quantize: str | None = None) -> str:
    """'level2-...-tflite-int8.zip': the default file name of an export."""
    return f"{entry.id}-{ExportFormat.from_parts(fmt, quantize).value}.zip"


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
    from core.data.folders import DatasetError, sample_paths, summarize
    from core.data.download import resolve_data_dir
    from core.data.images import load_array

    folder, source = resolve_data_dir(data_dir, download=False)
    summary = summarize(folder, source=source)
    if summary.classes != list(entry.classes):
        raise DatasetError(f"Calibration needs photos of the model's classes {entry.classes}; "
                           f"{folder} has {summary.classes}. Pass --data-dir.")
    per_class = max(1, count // len(summary.classes))
    paths = sample_paths(summary, split="train", per_class=per_class, seed=seed)
    return [load_array(path, entry.image_size) for path in paths]


def _has_class_groups(model) -> bool:
    from core.networks.backbones import leaf_layers
    from core.networks.layers import ClassGroups

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
    fmt = info.export_format
    if fmt.file_format == "keras":
        import importlib.util

        import keras

        if keras.saving.get_registered_object("little_data>ClassProbabilities") is None:
            spec = importlib.util.spec_from_file_location("little_data_layers", folder / LAYERS_FILE)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        model = keras.saving.load_model(path, compile=False)
        return info, lambda x: np.asarray(model.predict_on_batch(np.asarray(x, np.float32)))
    if fmt.file_format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return info, lambda x: loaded.serve(np.asarray(x, np.float32)).numpy()
    if fmt.file_format == "onnx":
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
    snippet = _SNIPPETS[info.format].format(height=height, width=width)  # int8 runs as any tflite
    accuracy = f"{info.val_accuracy:.2%} on its validation photos" if info.val_accuracy is not None else "not measured"
    quant = ""
    if info.quantize:
        how = info.quantize_note or "int8 weights and activations"
        quant = (f" Quantized: {how} (input and output stay float32); expect slightly different "
                 "probabilities than the float model.")
    exponent = f", margin exponent {info.exponent:.2f}" if info.exponent != 1.0 else ""
    calibrated = ((f"The probabilities are calibrated (temperature {info.temperature:.2f}{exponent}, fitted on the validation "
                   "photos, applied inside the model): of the photos it calls at 90%, about 90% are right.")
                  if info.temperature is not None else "The probabilities are the model's own, not calibrated.")
    mirror = ("It predicts the mean of the photo and its mirror image (done inside)."
              if info.flip_average else "It predicts on the photo as given (no mirror averaging).")
    return f"""# Little Data model: level {info.level}, {info.format}{' ' + info.quantize if info.quantize else ''}

Model `{info.model_id}`, exported from Little Data. Validation accuracy: {accuracy}.
Runtime: {info.export_format.runtime}.

- **Input:** `float32` array `[N, {height}, {width}, 3]`: RGB pixels, 0-255, not normalised (cast
  `uint8` pixels to `float32`). Resize the photo to {width}x{height} (width x height) yourself,
  bilinear, squashing rather than cropping, as Little Data does. Resizing, ImageNet
  preprocessing and everything else happen inside the model. {mirror}{quant}
- **Output:** `[N, {len(info.classes)}]`, one probability per class, in the order of `labels.txt`:
  {", ".join(f"{i} = {c}" for i, c in enumerate(info.classes))}. {calibrated} Saying "none of
  these" for photos of other things needs Little Data's novelty judge, which is not part of the export.

```python
{snippet}
```
"""
