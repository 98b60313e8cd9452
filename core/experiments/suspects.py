"""Suspect labels: the photos whose given class an out-of-fold model disbelieves.

Every photo gets probabilities from a model that never saw it: k small softmax heads, each fitted
on the other folds' cached bottleneck features (the level-2 recipe without the network: seconds,
not a retraining). Confident learning (Northcutt, Jiang and Chuang, 2021) then flags a photo when
some other class is at least as probable for it as that class typically is for its own photos
(the per-class threshold is the mean probability the class's photos get for it), and ranks flagged
photos by how little the model believes the given label (1 - its probability: cleanlab's
"self-confidence"). Written here in a few lines rather than taken from cleanlab (AGPL).

    features, labels = ...                          # [N, D] bottleneck features, [N] class indices
    probabilities = out_of_fold_probabilities(features, labels)
    for suspect in rank_suspects(probabilities, labels, classes, paths)[:10]: ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_FOLDS = 10  # flowers (150 photos): 76% of flipped labels found over 10 seeds, against 71% with 5; cats vs dogs the same
#: The heads' L2 penalty and steps: a linear softmax on L2-normalised features, fitted by full-batch
#: gradient descent with momentum (no dependency; a 2,000 x 1,280 split takes about a second a fold).
L2 = 1e-3
STEPS = 300
LEARNING_RATE = 1.0


@dataclass(frozen=True)
class Suspect:
    """One photo whose given label the out-of-fold model disbelieves."""

    image: str
    given: str
    suggested: str  # the class it more likely belongs to
    score: float  # 1 - the out-of-fold probability of the given class: higher is more suspect

    def to_dict(self) -> dict:
        return asdict(self)


def unit_rows(features: np.ndarray) -> np.ndarray:
    """[N, D] float32 rows scaled to unit length (any trailing shape is flattened)."""
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_head(features: np.ndarray, labels: np.ndarray, classes: int, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """A softmax head (weights [D, C], bias [C]) on L2-normalised features, with an L2 penalty."""
    x = unit_rows(features)
    n, d = x.shape
    # Features of unit length give logits of order 1; a scale lets the head be sure where it should.
    x = x * np.sqrt(d)
    onehot = np.eye(classes, dtype=np.float32)[np.asarray(labels)]
    weights, bias = np.zeros((d, classes), np.float32), np.zeros(classes, np.float32)
    velocity_w, velocity_b = np.zeros_like(weights), np.zeros_like(bias)
    rate = LEARNING_RATE / d
    for _ in range(steps):
        error = (_softmax(x @ weights + bias) - onehot) / n
        grad_w = x.T @ error + L2 * weights
        grad_b = error.sum(axis=0)
        velocity_w = 0.9 * velocity_w - rate * grad_w
        velocity_b = 0.9 * velocity_b - rate * d * grad_b
        weights += velocity_w
        bias += velocity_b
    return weights, bias


def head_probabilities(head: tuple[np.ndarray, np.ndarray], features: np.ndarray) -> np.ndarray:
    weights, bias = head
    x = unit_rows(features) * np.sqrt(weights.shape[0])
    return _softmax(x @ weights + bias)


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: int = DEFAULT_FOLDS,
                              seed: int = 0) -> np.ndarray:
    """[N, C] probabilities, each row from a head fitted without that photo (stratified folds)."""
    labels = np.asarray(labels, dtype=np.int64)
    classes = int(labels.max()) + 1
    if len(np.unique(labels)) < 2:
        raise ValueError("Suspect labels need photos of at least two classes.")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):  # stratified: every fold holds its share of every class
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = np.arange(len(members)) % folds
    probabilities = np.zeros((len(labels), classes), dtype=np.float64)
    for fold in range(folds):
        held_out = fold_of == fold
        if not held_out.any():
            continue
        head = fit_head(features[~held_out], labels[~held_out], classes)
        probabilities[held_out] = head_probabilities(head, features[held_out])
    return probabilities


def confident_learning(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flagged [N] bool, the class each photo confidently belongs to [N]; -1 where none).

    A photo confidently belongs to class j when its probability for j reaches j's threshold (the
    mean probability photos labelled j get for j); of several, the most probable. Flagged: it
    confidently belongs to a class other than its label.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    classes = probabilities.shape[1]
    thresholds = np.array([probabilities[labels == j, j].mean() if np.any(labels == j) else 1.0
                           for j in range(classes)])
    above = probabilities >= thresholds[None, :]
    confident = np.where(above.any(axis=1), np.where(above, probabilities, -1.0).argmax(axis=1), -1)
    return (confident >= 0) & (confident != labels), confident


def rank_suspects(probabilities: np.ndarray, labels: np.ndarray, classes: list[str],
                  images: list[str | Path]) -> list[Suspect]:
    """The suspects, most suspect first, each with the class it more likely belongs to.

    A suspect is a photo confident learning flags, or one whose most probable class is not its label
    (confident learning's thresholds are strict where the model is sure of nearly everything: a cat
    labelled dog at 80% "cat" stays below the 97% cats typically get).
    """
    labels = np.asarray(labels, dtype=np.int64)
    flagged, confident = confident_learning(probabilities, labels)
    likeliest = np.asarray(probabilities).argmax(axis=1)
    suspect = flagged | (likeliest != labels)
    suggested = np.where(flagged, confident, likeliest)
    scores = 1.0 - probabilities[np.arange(len(labels)), labels]
    order = [i for i in np.argsort(-scores, kind="stable") if suspect[i]]
    return [Suspect(str(images[i]), classes[labels[i]], classes[suggested[i]], float(scores[i])) for i in order]


SPLITS = ("train", "validation", "all")


@dataclass
class LabelledFeatures:
    """One split's bottleneck features with their labels and photo paths."""

    features: np.ndarray
    labels: np.ndarray
    paths: list[str]


def features_of_split(summary, split: str, backbone: str | None = None, weights: str | None = None,
                      cache_dir=None, should_cancel=None, keep_cache: bool = True) -> LabelledFeatures:
    """A split's bottleneck features from the backbone (cached as level 2 caches them; with
    `keep_cache` False the decoded photos and features are deleted once read, for a one-off split)."""
    from core.data.decoded import forget_decoded
    from core.networks.backbones import DEFAULT_BACKBONE, get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    from core.networks.features import feature_cache_path, split_features

    spec = get_backbone(backbone or DEFAULT_BACKBONE)
    resolved = resolve_weights(spec, weights)
    features, decoded = split_features(make_feature_extractor(spec, resolved), summary, split, spec.name,
                                       resolved.key, spec.image_size, cache_dir, should_cancel=should_cancel)
    if not keep_cache:
        forget_decoded(summary, split, spec.image_size, cache_dir)
        feature_cache_path(cache_dir, summary.fingerprint, spec.name, resolved.key, spec.image_size,
                           split).unlink(missing_ok=True)
    return LabelledFeatures(features, np.asarray(decoded.labels, dtype=np.int64), list(decoded.paths))


def find_suspects(summary, split: str = "train", backbone: str | None = None, weights: str | None = None,
                  cache_dir=None, folds: int = DEFAULT_FOLDS, should_cancel=None) -> list[Suspect]:
    """Suspect labels of a data set's split, most suspect first; photos whose label a person confirmed
    in the app ("It's right") are left out.

    `train` and `all`: out-of-fold within the photos; `validation`: a head fitted on the training
    split judges the validation photos (none of which it saw).
    """
    from core.data.builder import kept_labels
    from core.data.folders import DatasetError

    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if len(summary.classes) < 2:
        raise DatasetError("Suspect labels need at least two classes: with one, every label is right.")
    parts = {name: features_of_split(summary, name, backbone, weights, cache_dir, should_cancel)
             for name in (("train", "validation") if split in ("all", "validation") else ("train",))}
    if split == "validation":
        train, val = parts["train"], parts["validation"]
        head = fit_head(train.features, train.labels, len(summary.classes))
        probabilities, chosen = head_probabilities(head, val.features), val
    else:
        chosen = parts["train"] if split == "train" else LabelledFeatures(
            np.concatenate([p.features for p in parts.values()]), np.concatenate([p.labels for p in parts.values()]),
            [path for p in parts.values() for path in p.paths])
        probabilities = out_of_fold_probabilities(chosen.features, chosen.labels, folds)
    kept = kept_labels(summary.root)
    return [suspect for suspect in rank_suspects(probabilities, chosen.labels, list(summary.classes), chosen.paths)
            if Path(suspect.image).relative_to(summary.root).as_posix() not in kept]
