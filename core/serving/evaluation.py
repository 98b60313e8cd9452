"""How well a model does on a decoded split: accuracy, per-class accuracy, confusion, mistakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.decoded import DecodedSplit, make_tf_dataset
from core.serving.calibration import expected_calibration_error
from core.serving.predictor import Predictor, to_probabilities


@dataclass(frozen=True)
class Mistake:
    """One wrongly classified photo.

    Attributes:
        confidence: the probability the model gave `predicted_class`.
        probabilities: class -> probability, for every class.
    """

    path: str
    true_class: str
    predicted_class: str
    confidence: float
    probabilities: dict[str, float]


@dataclass
class Evaluation:
    accuracy: float
    n: int
    classes: list[str]
    per_class_accuracy: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    probabilities: np.ndarray  # calibrated, where the model's card has a temperature
    labels: np.ndarray
    paths: list[str]
    ece: float | None = None  # expected calibration error (15 bins) of `probabilities`
    ece_uncalibrated: float | None = None  # the same before the card's temperature
    unknown_rate: float | None = None  # share of the split's photos the model refused; None without a judge

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "classes": self.classes,
                "per_class_accuracy": self.per_class_accuracy, "confusion_matrix": self.confusion,
                "ece": self.ece, "ece_uncalibrated": self.ece_uncalibrated, "unknown_rate": self.unknown_rate}

    def mistakes(self, limit: int = 24) -> list[Mistake]:
        """The wrongly classified photos, most confidently wrong first, at most `limit`."""
        predicted = self.probabilities.argmax(axis=1)
        wrong = np.flatnonzero(predicted != self.labels)
        confidence = self.probabilities[wrong, predicted[wrong]]
        order = wrong[np.argsort(-confidence, kind="stable")][:limit]
        return [Mistake(path=self.paths[i], true_class=self.classes[self.labels[i]],
                        predicted_class=self.classes[predicted[i]], confidence=float(self.probabilities[i, predicted[i]]),
                        probabilities={c: float(p) for c, p in zip(self.classes, self.probabilities[i])})
                for i in order]


def refused_share(predictor: Predictor, decoded: DecodedSplit) -> float | None:
    """The share of `decoded` (decoded at the judge's size) that the model says look like none of its classes."""
    if predictor.judge is None:
        return None
    return float(np.mean([verdict.unknown for verdict in predictor.judge.verdicts(decoded.images)] or [0.0]))


def evaluate(predictor: Predictor, decoded: DecodedSplit, batch_size: int = 64,
             judged: DecodedSplit | None = None) -> Evaluation:
    """Accuracy, per-class accuracy, confusion matrix and calibration error of a stored model on a split;
    with `judged` (the same split decoded at the judge's size), the share of photos it refuses."""
    raw = predictor.predict_rows(decoded.images, calibrated=False, batch_size=batch_size)
    probs = predictor.calibrate(raw)
    labels = np.asarray(decoded.labels)
    predicted = probs.argmax(axis=1)
    k = len(predictor.classes)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {c: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, c in enumerate(predictor.classes)}
    return Evaluation(float((predicted == labels).mean()), int(len(labels)), list(predictor.classes), per_class,
                      confusion.tolist(), probs, labels, list(decoded.paths),
                      ece=expected_calibration_error(probs, labels), ece_uncalibrated=expected_calibration_error(raw, labels),
                      unknown_rate=refused_share(predictor, judged) if judged is not None else None)


def accuracy_of_outputs(outputs: np.ndarray, labels, num_classes: int) -> float:
    """The share of right answers among a model's raw outputs (sigmoid units or softmax rows)."""
    return float(np.mean(to_probabilities(outputs, num_classes).argmax(axis=1) == np.asarray(labels)))


def model_outputs(model, decoded: DecodedSplit, batch_size: int = 16) -> np.ndarray:
    """A (not yet saved) Keras `model`'s raw outputs on every image of `decoded`, in order.

    Batches of 16: a mirror-averaged network holds both views' activations at once, and 16 is as
    fast as 32 with a smaller memory peak (see docs/design.md).
    """
    return model.predict(make_tf_dataset(decoded, batch_size), verbose=0)


def accuracy(model, decoded: DecodedSplit, num_classes: int, batch_size: int = 16) -> float:
    """The share of `decoded` images that a (not yet saved) Keras `model` classifies right."""
    return accuracy_of_outputs(model_outputs(model, decoded, batch_size), decoded.labels, num_classes)
