"""Predicting with stored models: one model on many inputs, or one photo through every level.

A `Predictor` wraps one loaded model and its card. Inputs are paths or raw bytes; each goes
through `core.images`, exactly as the training images did. `predict_every_level` is what the
Predict page calls: it decodes once and asks each level's predictor in turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.images import ImageError, load_array, load_image, to_array
from core.model_store import ModelEntry, load_model


@dataclass
class Prediction:
    name: str
    probabilities: dict[str, float] | None  # class -> probability; None on error
    error: str | None = None

    @property
    def label(self) -> str | None:
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.get)


def to_probabilities(outputs: np.ndarray, num_classes: int) -> np.ndarray:
    """Model outputs to an [N, C] probability matrix (a sigmoid unit becomes two columns)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if num_classes == 2:
        p = outputs.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return outputs


def configure_for_serving() -> None:
    """Process-wide TensorFlow settings for a web server that predicts (the app).

    Streamlit runs every page rerun afresh, and TensorFlow re-instantiates a traced model function
    on the first call of each rerun; Grappler's graph rewriting makes that several times slower,
    while steady-state inference is as fast without it (see the README). Training processes keep
    Grappler: they instantiate once and run for minutes.
    """
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


class Predictor:
    """A stored model ready to predict."""

    def __init__(self, entry: ModelEntry, model=None):
        import tensorflow as tf

        self.entry = entry
        self.model = model if model is not None else load_model(entry)
        self.classes = entry.classes
        self.image_size = entry.image_size
        h, w = self.image_size
        self._forward = tf.function(lambda x: self.model(x, training=False),
                                    input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)])

    def warm_up(self) -> None:
        """Traces the model's function now (once), so the first real prediction is as fast as the next."""
        if not getattr(self, "_warm", False):
            h, w = self.image_size
            self.predict_arrays(np.zeros((1, h, w, 3), np.uint8))
            self._warm = True

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] at the model's size -> probabilities [N, C]."""
        outputs = self._forward(np.asarray(images, dtype=np.float32)).numpy()
        return to_probabilities(outputs, len(self.classes))

    def predict(self, sources, names=None) -> list[Prediction]:
        """Predicts each path or bytes object; a bad input gets an error, the others a result."""
        names = list(names) if names is not None else [Path(s).name if isinstance(s, (str, Path)) else f"image {i + 1}"
                                                       for i, s in enumerate(sources)]
        arrays, results = [], []
        for source, name in zip(sources, names):
            try:
                arrays.append(load_array(source, self.image_size, name=name))
                results.append(Prediction(name, None))
            except ImageError as exc:
                results.append(Prediction(name, None, error=str(exc)))
        good = [r for r in results if r.error is None]
        if good:
            probs = self.predict_arrays(np.stack(arrays))
            for result, row in zip(good, probs):
                result.probabilities = {c: float(p) for c, p in zip(self.classes, row)}
        return results


@dataclass
class MultiPrediction:
    """One photo's predictions from several levels' models."""

    name: str
    image: object | None = None  # upright RGB PIL image, for display
    per_level: dict[int, dict[str, float]] = field(default_factory=dict)  # level -> class -> probability
    error: str | None = None
    model_errors: dict[int, str] = field(default_factory=dict)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)  # level -> Grad-CAM heatmap, 0..1
    explain_errors: dict[int, str] = field(default_factory=dict)
    server_ms: float = 0.0


def predict_every_level(data: bytes, name: str, predictors: dict, explainers: dict | None = None) -> MultiPrediction:
    """Decodes once, then runs each level's predictor. A bad image gives `error`, never an exception.

    Args:
        predictors: level -> `Predictor` (or an exception instance for a model that is unusable).
        explainers: level -> `core.explain.Explainer` (or an exception) to add Grad-CAM heatmaps; one
            gradient pass then gives both the probabilities and the heatmap.
    """
    start = time.perf_counter()
    result = MultiPrediction(name)
    try:
        image = load_image(data, name=name)
    except ImageError as exc:
        result.error = str(exc)
        result.server_ms = (time.perf_counter() - start) * 1000
        return result
    result.image = image
    arrays = {}
    for level, predictor in predictors.items():
        if isinstance(predictor, Exception):
            result.model_errors[level] = str(predictor)
            continue
        size = predictor.image_size
        if size not in arrays:
            arrays[size] = to_array(image, size)
        explainer = (explainers or {}).get(level)
        if explainer is not None and not isinstance(explainer, Exception):
            heatmaps, probabilities = explainer.explain_arrays(arrays[size][None])
            result.heatmaps[level], probs = heatmaps[0], probabilities[0]
        else:
            if isinstance(explainer, Exception):
                result.explain_errors[level] = str(explainer)
            probs = predictor.predict_arrays(arrays[size][None])[0]
        result.per_level[level] = {c: float(p) for c, p in zip(predictor.classes, probs)}
    result.server_ms = (time.perf_counter() - start) * 1000
    return result
