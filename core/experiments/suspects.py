"""Suspect labels: the photos whose given class an out-of-fold model disbelieves.

Every photo gets probabilities from a model that never saw it: k small softmax heads, each fitted
on the other folds' cached bottleneck features (the level-2 recipe without the network: seconds,
not a retraining). Confident learning (Northcutt, Jiang and Chuang, 2021) then flags a photo when
some other class is at least as probable for it as that class typically is for its own photos
(the per-class threshold is the mean probability the class's photos get for it), and ranks flagged
photos by how little the model believes the given label (1 - its probability: cleanlab's
"self-confidence"). Written here in a few lines rather than taken from cleanlab (AGPL).

The probabilities are an average of three opinions that err on different photos: heads on the
default network's features, heads on a second pretrained network's (`SECOND_OPINION`), and a vote
of each photo's nearest neighbours among the others (default network). With 5% of labels flipped
(`scripts/bench_labels.py`), the average finds 83.4% of them on the flowers (150 photos, 40 seeds),
against 78.1% for the first network's heads alone, and 97.2% on cats vs dogs (5 seeds).

    views, labels = [...], ...                      # [N, D] features per network, [N] class indices
    probabilities = suspect_probabilities(views, labels)
    for suspect in rank_suspects(probabilities, labels, classes, paths)[:10]: ...
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 10  # flowers (150 photos): 76% of flipped labels found over 10 seeds, against 71% with 5; cats vs dogs the same
#: The heads' L2 penalty and steps: a linear softmax on L2-normalised features, fitted by full-batch
#: gradient descent with momentum (no dependency; a 2,000 x 1,280 split takes about a second a fold).
L2 = 1e-3
STEPS = 300
LEARNING_RATE = 1.0
#: The network whose heads give a second opinion on the default network's (a different architecture,
#: trained differently, errs elsewhere). Used when its weights can be had; without them, one network.
SECOND_OPINION = {"efficientnet_lite2": "mobilenet_v2"}
#: The neighbours' vote: this many nearest photos (cosine similarity of the features), each weighted
#: by exp(similarity / temperature), so a near-copy outweighs a vaguely similar photo.
NEIGHBOURS = 10
NEIGHBOUR_TEMPERATURE = 0.1


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
    features = np.asarray(features, dtype=np.float32)
    features = features.reshape(len(features), int(np.prod(features.shape[1:])))  # -1 cannot size an empty set
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


def neighbour_probabilities(features: np.ndarray, labels: np.ndarray, classes: int,
                            queries: np.ndarray | None = None, k: int = NEIGHBOURS) -> np.ndarray:
    """[Q, C] the labels of each query's k nearest photos in `features` (cosine), weighted by
    exp(similarity / NEIGHBOUR_TEMPERATURE). Without `queries`, each photo's own neighbours, itself left out."""
    labels = np.asarray(labels, dtype=np.int64)
    x = unit_rows(features)
    own = queries is None
    q = x if own else unit_rows(queries)
    k = max(1, min(k, len(x) - 1 if own else len(x)))
    probabilities = np.zeros((len(q), classes), dtype=np.float64)
    for start in range(0, len(q), 1024):  # a block of rows at a time: 25,000 photos need no 2.5 GB matrix
        similarity = q[start:start + 1024] @ x.T
        if own:
            block = np.arange(start, min(start + 1024, len(q)))
            similarity[block - start, block] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        closeness = np.take_along_axis(similarity, nearest, axis=1).astype(np.float64)
        weights = np.exp((closeness - closeness.max(axis=1, keepdims=True)) / NEIGHBOUR_TEMPERATURE)
        rows = np.repeat(np.arange(len(nearest))[:, None], k, axis=1)
        np.add.at(probabilities[start:start + 1024], (rows, labels[nearest]), weights)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def suspect_probabilities(views: list[np.ndarray], labels: np.ndarray, folds: int = DEFAULT_FOLDS,
                          seed: int = 0) -> np.ndarray:
    """[N, C] out-of-fold probabilities: each view's heads (one feature matrix per network, rows in
    the same order) and the first view's neighbours' vote, averaged. No photo's own label is used for it."""
    labels = np.asarray(labels, dtype=np.int64)
    parts = [out_of_fold_probabilities(view, labels, folds, seed) for view in views]
    parts.append(neighbour_probabilities(views[0], labels, parts[0].shape[1]))
    return np.mean(parts, axis=0)


def held_out_probabilities(train_views: list[np.ndarray], train_labels: np.ndarray, views: list[np.ndarray],
                           classes: int) -> np.ndarray:
    """[M, C] probabilities of photos none of the training photos is: the same three opinions, fitted on the training split."""
    parts = [head_probabilities(fit_head(train, train_labels, classes), view) for train, view in zip(train_views, views)]
    parts.append(neighbour_probabilities(train_views[0], train_labels, classes, queries=views[0]))
    return np.mean(parts, axis=0)


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
                      cache_dir=None, should_cancel=None) -> LabelledFeatures:
    """A split's bottleneck features from the backbone (cached as level 2 caches them)."""
    from core.networks.backbones import DEFAULT_BACKBONE, get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    from core.networks.features import LazyExtractor, split_features

    spec = get_backbone(backbone or DEFAULT_BACKBONE)
    resolved = resolve_weights(spec, weights)
    extractor = LazyExtractor(lambda: make_feature_extractor(spec, resolved))
    features, decoded = split_features(extractor, summary, split, spec.name,
                                       resolved.key, spec.image_size, cache_dir, should_cancel=should_cancel)
    return LabelledFeatures(features, np.asarray(decoded.labels, dtype=np.int64), list(decoded.paths))


def opinion_networks(backbone: str, second_opinion: bool = True) -> list[str]:
    """The networks whose heads judge the labels: `backbone`, then its second opinion (`SECOND_OPINION`) if asked."""
    return [backbone] + ([SECOND_OPINION[backbone]] if second_opinion and backbone in SECOND_OPINION else [])


def find_suspects(summary, split: str = "train", backbone: str | None = None, weights: str | None = None,
                  cache_dir=None, folds: int = DEFAULT_FOLDS, should_cancel=None,
                  second_opinion: bool = True) -> list[Suspect]:
    """Suspect labels of a data set's split, most suspect first; photos whose label a person confirmed
    in the app ("It's right") are left out.

    `train` and `all`: out-of-fold within the photos; `validation`: heads fitted on the training
    split judge the validation photos (none of which they saw). With `second_opinion`, a second
    network's heads join (`SECOND_OPINION`) when its weights can be had; its features are cached too.
    """
    from core.data.builder import kept_labels
    from core.data.folders import DatasetError
    from core.errors import Cancelled
    from core.networks.backbones import DEFAULT_BACKBONE

    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if len(summary.classes) < 2:
        raise DatasetError("Suspect labels need at least two classes: with one, every label is right.")
    names = ("train", "validation") if split in ("all", "validation") else ("train",)
    networks = opinion_networks(backbone or DEFAULT_BACKBONE, second_opinion)
    primary = networks[0]
    views: list[dict[str, LabelledFeatures]] = []
    for network in networks:
        try:
            views.append({name: features_of_split(summary, name, network, weights if network == primary else None,
                                                  cache_dir, should_cancel) for name in names})
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - the second opinion is optional; the first network's is not
            if network == primary:
                raise
            logger.warning("Suspect labels without %s's opinion: %s", network, exc)
    first = views[0]
    for other in views[1:]:  # the same photos in the same order, whatever the network; if not, one opinion less
        if any(other[name].paths != first[name].paths for name in names):
            logger.warning("Suspect labels without a second opinion: its features list other photos")
            views.remove(other)
    if split == "validation":
        probabilities = held_out_probabilities([view["train"].features for view in views], first["train"].labels,
                                               [view["validation"].features for view in views], len(summary.classes))
        chosen = first["validation"]
    else:
        def joined(view: dict[str, LabelledFeatures]) -> LabelledFeatures:
            return view["train"] if split == "train" else LabelledFeatures(
                np.concatenate([p.features for p in view.values()]), np.concatenate([p.labels for p in view.values()]),
                [path for p in view.values() for path in p.paths])

        chosen = joined(first)
        probabilities = suspect_probabilities([joined(view).features for view in views], chosen.labels, folds)
    kept = kept_labels(summary.root)
    return [suspect for suspect in rank_suspects(probabilities, chosen.labels, list(summary.classes), chosen.paths)
            if Path(suspect.image).relative_to(summary.root).as_posix() not in kept]
