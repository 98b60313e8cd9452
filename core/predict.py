"""Prediction and evaluation with stored models.

A `Predictor` wraps one loaded model and its card. Inputs are paths or raw bytes; each goes
through `core.images.load_array`, exactly as the training images did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.images import ImageError, load_array
from core.store import ModelEntry, load_model


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
    on the first call of each rerun; with Grappler's graph rewriting that costs ~0.45 s per
    MobileNetV2 call (profiled: grappler remapper, NodeDef copies). Without it, re-instantiation costs
    ~0.1 s and steady-state inference is just as fast (43 ms for three models either way). Training
    processes keep Grappler: they instantiate once and run for minutes.
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


def timed_predict(predictor: Predictor, image: np.ndarray, repeats: int = 20) -> float:
    """Median seconds for one already-decoded image through the model (after a warm-up)."""
    batch = image[None]
    predictor.predict_arrays(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_arrays(batch)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@dataclass
class Evaluation:
    accuracy: float
    n: int
    classes: list[str]
    per_class_accuracy: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    probabilities: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "classes": self.classes,
                "per_class_accuracy": self.per_class_accuracy, "confusion_matrix": self.confusion}

    def mistakes(self, limit: int = 24) -> list[dict]:
        """The wrongly classified images, most confidently wrong first."""
        predicted = self.probabilities.argmax(axis=1)
        wrong = np.flatnonzero(predicted != self.labels)
        confidence = self.probabilities[wrong, predicted[wrong]]
        order = wrong[np.argsort(-confidence)][:limit]
        return [{"path": self.paths[i], "true": self.classes[self.labels[i]], "predicted": self.classes[predicted[i]],
                 "probabilities": {c: float(p) for c, p in zip(self.classes, self.probabilities[i])}}
                for i in order]


def evaluate(predictor: Predictor, decoded, batch_size: int = 64) -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix on a decoded split."""
    probs = np.concatenate([predictor.predict_arrays(decoded.images[i:i + batch_size])
                            for i in range(0, len(decoded), batch_size)])
    labels = np.asarray(decoded.labels)
    predicted = probs.argmax(axis=1)
    k = len(predictor.classes)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {c: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, c in enumerate(predictor.classes)}
    return Evaluation(float((predicted == labels).mean()), int(len(labels)), list(predictor.classes), per_class,
                      confusion.tolist(), probs, labels, list(decoded.paths))
