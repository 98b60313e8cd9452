"""How well a model does on a decoded split: accuracy, per-class accuracy, confusion, mistakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.decoded import DecodedSplit, make_tf_dataset
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
    probabilities: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "classes": self.classes,
                "per_class_accuracy": self.per_class_accuracy, "confusion_matrix": self.confusion}

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


def evaluate(predictor: Predictor, decoded: DecodedSplit, batch_size: int = 64) -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix of a stored model on a decoded split."""
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


def accuracy_of_outputs(outputs: np.ndarray, labels, num_classes: int) -> float:
    """The share of right answers among a model's raw outputs (sigmoid units or softmax rows)."""
    return float(np.mean(to_probabilities(outputs, num_classes).argmax(axis=1) == np.asarray(labels)))


def accuracy(model, decoded: DecodedSplit, num_classes: int, batch_size: int = 16) -> float:
    """The share of `decoded` images that a (not yet saved) Keras `model` classifies right.

    Batches of 16: a mirror-averaged network holds both views' activations at once, and 16 is as
    fast as 32 with a smaller memory peak (see docs/design.md).
    """
    outputs = model.predict(make_tf_dataset(decoded, batch_size), verbose=0)
    return accuracy_of_outputs(outputs, decoded.labels, num_classes)
