"""A traced TensorFlow forward pass, run by ONNX Runtime instead: the same answers, less CPU time.

Why: on the 2-core reference box ONNX Runtime runs the shared EfficientNet-Lite2 trunk of levels 0, 2
and 3 (both mirror views) for one photo in 28 ms against TensorFlow's 58 ms, and for 16 photos in
470 ms against 630 ms (`python scripts/bench_serving.py`). When a room of phones uploads at
once, the models' CPU time is what everyone waits for.

The conversion (tf2onnx, ~8 s for Lite2 with three heads) is done once per set of models and kept
in the cache folder, so a restarted server loads it in a fraction of a second. `checked` compares
the runtime's outputs with TensorFlow's on a test picture before it is used (and converts a kept
file that no longer agrees once more); `core.serving.predictor.accelerate` leaves anything that does
not convert or does not agree on TensorFlow.

    forward = OnnxForward.load_or_convert(tf_function, cache_dir() / "serving" / "abc.onnx")
    outputs = forward(images)  # list of arrays, in the traced function's output order
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from core.atomic_files import atomic_write

#: ONNX operator set used for the conversion (ONNX Runtime 1.32 runs up to 23; tf2onnx converts to 18 at most).
OPSET = 17
#: Converted forward passes kept in the cache folder (the newest; each is tens of megabytes).
KEEP_CONVERTED = 4
#: Changes whenever the code that builds a traced pass changes what it computes, so no file converted
#: by older code is taken for a new one's (the check would refuse it; this saves converting twice).
FORMAT = 1


class OnnxForward:
    """An ONNX model with one float32 image input, called like the function it was converted from."""

    def __init__(self, model_bytes: bytes):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # No busy-waiting between operators: on a small box the browsers, Streamlit and TensorFlow's
        # Grad-CAM need the cores the runtime's idle threads would otherwise spin on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return self._session.run(None, {self._input: np.asarray(images, dtype=np.float32)})

    @classmethod
    def convert(cls, function) -> bytes:
        """A `tf.function` with an input signature -> the serialized ONNX model."""
        import tf2onnx

        proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=OPSET)
        return proto.SerializeToString()

    @classmethod
    def load_or_convert(cls, function, path: Path, fresh: bool = False) -> "OnnxForward":
        """The model kept at `path` if there is one that loads (unless `fresh`), else `function`
        converted and kept there."""
        path = Path(path)
        if path.exists() and not fresh:
            try:
                forward = cls(path.read_bytes())
                path.touch()  # recently used: kept by `_prune`
                return forward
            except Exception:  # noqa: BLE001 - a truncated or foreign file: convert again over it
                pass
        model_bytes = cls.convert(function)
        forward = cls(model_bytes)
        atomic_write(path, lambda tmp: tmp.write_bytes(model_bytes))
        _prune(path.parent)
        return forward


def checked(function, path: Path, check: np.ndarray, expected: list[np.ndarray],
            agree: Callable[[int, np.ndarray, np.ndarray], bool]) -> OnnxForward:
    """`function` under ONNX Runtime (kept at `path`), once its outputs on `check` agree with `expected`
    (TensorFlow's, in the same order) as `agree(index, got, expected)` says; raises ValueError if not."""
    for fresh in (False, True):  # a kept file that disagrees (older code, other versions) is converted once more
        forward = OnnxForward.load_or_convert(function, path, fresh=fresh)
        problem = _disagreement(forward, check, expected, agree)
        if problem is None:
            return forward
    raise ValueError(problem)


def _disagreement(forward: OnnxForward, check: np.ndarray, expected: list[np.ndarray], agree) -> str | None:
    """Why `forward` is not TensorFlow's pass on `check` (as a batch, and its first row alone), or None."""
    for rows in (len(check), 1):  # the server sends batches of any size, often of one
        try:
            got = forward(check[:rows])
        except Exception as exc:  # noqa: BLE001 - a pass that cannot run on these inputs is not the same pass
            return f"the converted pass fails: {type(exc).__name__}: {exc}"
        if len(got) != len(expected):
            return f"the converted pass gives {len(got)} outputs, not {len(expected)}"
        for index, (mine, theirs) in enumerate(zip(got, expected)):
            if mine.shape != theirs[:rows].shape or not agree(index, mine, theirs[:rows]):
                return f"ONNX Runtime's output {index} differs from TensorFlow's"
    return None


def cache_name(*parts: object) -> str:
    """A file name for a converted forward pass, from everything that decides what it computes."""
    import keras
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    versions = (tf.__version__, keras.__version__, tf2onnx.__version__, onnxruntime.__version__, OPSET, FORMAT)
    text = repr((parts, versions))
    return hashlib.sha256(text.encode()).hexdigest()[:20] + ".onnx"


def _prune(folder: Path) -> None:
    """Deletes all but the newest conversions. Never fails: another process may be pruning too."""
    def age(path: Path) -> float:
        try:
            return -path.stat().st_mtime
        except OSError:
            return 0.0

    converted = sorted((p for p in folder.glob("*.onnx") if not p.name.startswith(".")), key=age)  # not temp files
    for stale in converted[KEEP_CONVERTED:]:
        try:
            stale.unlink(missing_ok=True)
        except OSError:
            pass
