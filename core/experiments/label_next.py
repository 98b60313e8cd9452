"""Label these next: which unlabelled photos would teach the current model most, in the order to label them.

Uncertainty alone (the photos the model is least sure of) picks near-duplicates: ten shots of the
same confusing tulip. Coverage alone (the photos farthest from everything labelled) ignores what the
model already knows. The strategies here, measured by `scripts/bench_labels.py`:

- `MARGIN`: smallest gap between the two most probable classes.
- `MARGIN_DISTINCT`: the margin's order, passing over a photo while it is a near-copy of one labelled
  or already picked (its copies come last): uncertainty, without spending labels on duplicates.
- `MARGIN_BALANCED`: the same, the classes the model predicts taking turns, so that the picks do
  not all fall in one class (margin alone did that on cats vs dogs, and level 2 trained on them
  leaned to that class).
- `COVERAGE`: k-centre greedy on L2-normalised bottleneck features (Sener and Savarese, 2018): each
  pick is the photo farthest from every labelled or already picked photo.
- `MARGIN_COVERAGE`: k-centre greedy with each photo's distance weighted by its margin uncertainty,
  and divided by 1 + the picks already made in its predicted class, so a rare class is not drowned
  by a common one.
- `TYPICAL` (TypiClust, Hacohen et al., 2022, made for a few labels per class): k-means over the
  labelled and unlabelled photos with one cluster per labelled photo and per pick; each pick is the
  most typical photo (closest to its nearest neighbours) of the largest cluster with the fewest labels.
- `BADGE` (Ash et al., 2020): k-means++ seeding on gradient embeddings (p - onehot(argmax p)) x features.
- `REPRESENTATIVE` (the default): facility location (each pick most raises the pool's summed
  similarity to its nearest labelled photo; Wei, Iyer and Bilmes, 2015, for choosing data), the
  classes the model predicts taking turns, the least labelled first. With a few labels per class,
  photos typical of the parts of the pool no label stands near teach a small head more than the
  uncertain ones, which are the odd photos.
- `RANDOM`: the baseline.

    order, scores = choose(probabilities, unlabelled_features, labelled_features, n=20, labelled_labels=classes)
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from core.experiments.suspects import unit_rows

if TYPE_CHECKING:
    from core.data.folders import DatasetSummary
    from core.serving.model_store import ModelEntry


class Strategy(str, Enum):
    RANDOM = "random"
    MARGIN = "margin"
    MARGIN_DISTINCT = "margin_distinct"
    MARGIN_BALANCED = "margin_balanced"
    TYPICAL = "typical"
    COVERAGE = "coverage"
    MARGIN_COVERAGE = "margin_coverage"
    BADGE = "badge"
    REPRESENTATIVE = "representative"
    REPRESENTATIVE_NEED = "representative_need"  # turns weighted by the classes' uncertainty: tried, lost


#: The best on average over the flowers and cats vs dogs, balanced and imbalanced pools (`scripts/bench_labels.py`,
#: docs/benchmarks.md): +1.8 points over random labelling at 25 labels chosen at once, BADGE +0.5; on the
#: flowers in the app's loop (ten labels, retrain, rank again) +2.3.
DEFAULT_STRATEGY = Strategy.REPRESENTATIVE
#: Cosine similarity of bottleneck features above which two photos count as near-copies (burst shots, the
#: same scene twice). Distinct photos of cats vs dogs and of the flowers stay below 0.86 (99th percentile
#: of each photo's nearest neighbour), so only copies are passed over.
NEAR_COPY = 0.92


@dataclass(frozen=True)
class Suggestion:
    """One unlabelled photo worth labelling, and what the current model thinks it is."""

    image: str
    score: float  # the strategy's value of labelling it when it was picked (the list's order is the ranking)
    predicted: str

    def to_dict(self) -> dict:
        return asdict(self)


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): 1 where the two likeliest classes tie, 0 where the model is certain."""
    ordered = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)
    if ordered.shape[1] < 2:
        return np.zeros(len(ordered))
    return 1.0 - (ordered[:, -1] - ordered[:, -2])


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _k_centre(unlabelled: np.ndarray, labelled: np.ndarray, n: int, weight: np.ndarray | None = None,
              groups: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """Greedy k-centre: each pick maximises (distance to the nearest labelled or picked photo) x weight;
    with `groups`, a photo's value is also divided by 1 + the picks already made in its group, so
    the picks spread over the groups (the predicted classes) without forcing near-copies in."""
    nearest = (_squared_distances(unlabelled, labelled).min(axis=1) if len(labelled)
               else np.full(len(unlabelled), 4.0))  # unit vectors: 4 is the largest squared distance
    weight = np.ones(len(unlabelled)) if weight is None else np.asarray(weight, dtype=np.float64)
    groups = np.zeros(len(unlabelled), dtype=np.int64) if groups is None else np.asarray(groups)
    picked_in_group = np.zeros(int(groups.max()) + 1 if len(groups) else 1)
    chosen, scores = [], []
    available = np.ones(len(unlabelled), dtype=bool)
    while len(chosen) < min(n, len(unlabelled)):
        value = np.where(available, nearest * weight / (1.0 + picked_in_group[groups]), -np.inf)
        pick = int(np.argmax(value))
        chosen.append(pick)
        scores.append(float(value[pick]))
        available[pick] = False
        picked_in_group[groups[pick]] += 1
        nearest = np.minimum(nearest, _squared_distances(unlabelled, unlabelled[pick:pick + 1])[:, 0])
    return chosen, scores


def _most_similar(rows: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Each unit row's cosine similarity to its most similar labelled row (-1, the least there is, when none is labelled)."""
    return (rows @ labelled.T).max(axis=1) if len(labelled) else np.full(len(rows), -1.0, dtype=rows.dtype)


def _distinct(order: np.ndarray, unlabelled: np.ndarray, labelled: np.ndarray, n: int, scores: np.ndarray,
              groups: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """`order`, with each photo that is a near-copy of a labelled or earlier pick moved to the end; with
    `groups` (the predicted classes), the groups take turns, each giving its next photo in `order`."""
    closest = _most_similar(unlabelled, labelled)
    groups = np.zeros(len(unlabelled), dtype=np.int64) if groups is None else np.asarray(groups)
    queues = {}
    for i in order:  # each group's photos in `order`; the groups in the order of their first photo
        queues.setdefault(int(groups[i]), []).append(int(i))
    queues = list(queues.values())
    kept, copies, turn = [], [], 0
    while len(kept) < n and any(queues):
        queue = queues[turn % len(queues)]
        turn += 1
        while queue:
            i = queue.pop(0)
            if closest[i] >= NEAR_COPY:
                copies.append(i)
                continue
            kept.append(i)
            closest = np.maximum(closest, unlabelled @ unlabelled[i])
            break
    chosen = (kept + copies)[:n]
    return chosen, [float(scores[i]) for i in chosen]


def _spread_draws(points: np.ndarray, k: int, first: int, rng) -> tuple[list[int], list[float]]:
    """k-means++ seeding: after row `first`, each row is drawn with probability proportional to its squared
    distance to the nearest one drawn (once only the drawn rows or their copies remain, the next row in
    order). Returns the rows in the order drawn and that distance when each was drawn (the first: its norm)."""
    chosen, scores = [first], [float((points[first] ** 2).sum())]
    nearest = _squared_distances(points, points[first:first + 1])[:, 0]
    while len(chosen) < min(k, len(points)):
        if nearest.sum() <= 0:
            pick = next(i for i in range(len(points)) if i not in chosen)
        else:
            pick = int(rng.choice(len(points), p=nearest / nearest.sum()))
            if pick in chosen:  # rounding can leave a drawn row a tiny weight
                continue
        chosen.append(pick)
        scores.append(float(nearest[pick]))
        nearest = np.minimum(nearest, _squared_distances(points, points[pick:pick + 1])[:, 0])
    return chosen, scores


def _k_means(points: np.ndarray, k: int, rng, iterations: int = 30) -> np.ndarray:
    """Cluster of each row: k-means++ seeding, then Lloyd's iterations."""
    centres = points[_spread_draws(points, k, int(rng.integers(len(points))), rng)[0]].copy()
    for _ in range(iterations):
        assignment = _squared_distances(points, centres).argmin(axis=1)
        for cluster in range(len(centres)):
            members = assignment == cluster
            if members.any():
                centres[cluster] = points[members].mean(axis=0)
    return _squared_distances(points, centres).argmin(axis=1)


def _typical(unlabelled: np.ndarray, labelled: np.ndarray, n: int, rng,
             neighbours: int = 20) -> tuple[list[int], list[float]]:
    points = np.concatenate([labelled, unlabelled]) if len(labelled) else unlabelled
    first = len(labelled)
    k = min(first + n, len(points))
    assignment = _k_means(points, k, rng)
    labels_in = np.bincount(assignment[:first], minlength=k).astype(float)
    sizes = np.bincount(assignment, minlength=k)
    available = np.ones(len(unlabelled), dtype=bool)
    chosen, scores = [], []
    while len(chosen) < min(n, len(unlabelled)):
        open_clusters = np.unique(assignment[first:][available])
        cluster = min(open_clusters, key=lambda c: (labels_in[c], -sizes[c]))
        members = np.flatnonzero(assignment == cluster)
        distances = np.sqrt(_squared_distances(points[members], points[members]))
        nearest = np.sort(distances, axis=1)[:, 1:min(neighbours, len(members) - 1) + 1]
        typicality = 1.0 / (nearest.mean(axis=1) + 1e-9) if nearest.size else np.ones(len(members))
        candidates = [(typicality[j], int(m) - first) for j, m in enumerate(members)
                      if m >= first and available[int(m) - first]]
        value, pick = max(candidates)
        chosen.append(pick)
        scores.append(float(value))
        available[pick] = False
        labels_in[cluster] += 1
    return chosen, scores


def _badge(probabilities: np.ndarray, features: np.ndarray, n: int, rng) -> tuple[list[int], list[float]]:
    classes = probabilities.shape[1]
    embedding = ((probabilities - np.eye(classes)[probabilities.argmax(1)])[:, :, None] * features[:, None, :])
    embedding = embedding.reshape(len(features), -1)
    return _spread_draws(embedding, n, int(np.argmax((embedding ** 2).sum(1))), rng)


def _representative(unlabelled: np.ndarray, labelled: np.ndarray, n: int, predicted: np.ndarray,
                    labelled_counts: np.ndarray, rng, most_demand: int = 3000,
                    need: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """Facility location, greedily, the classes taking turns: the class with the fewest labels so far
    (labelled, plus picks as the model predicts them) takes the next pick, and among the photos
    predicted to be of it the pick is the one that most raises the pool's summed similarity to its most
    similar labelled or picked photo. Every part of the pool ends up near a label, dense parts first,
    where k-centre goes for the outliers; the turns keep a rare class from being passed over because
    few photos stand near it, and a class whose photos left are all near-copies of labelled or picked
    ones passes its turn on. Over `most_demand` photos, a random sample of them stands for the pool.
    `need` [C]: the classes' shares of the turns (equal when None)."""
    demand = (np.sort(rng.choice(len(unlabelled), most_demand, replace=False)) if len(unlabelled) > most_demand
              else np.arange(len(unlabelled)))
    similarity = unlabelled @ unlabelled[demand].T  # [candidate, demand photo]
    closest = _most_similar(unlabelled, labelled)  # to the nearest labelled or picked photo; closest[demand] is the coverage
    counts = np.asarray(labelled_counts, dtype=np.float64).copy()
    available = np.ones(len(unlabelled), dtype=bool)
    chosen, scores = [], []
    while len(chosen) < min(n, len(unlabelled)):
        # A turn is not spent on a near-copy of a labelled or picked photo: a class left with only
        # copies passes its turn on, and once only copies are left the least alike go first.
        fresh = available & (closest < NEAR_COPY)
        if not fresh.any():
            pick = int(np.argmin(np.where(available, closest, np.inf)))
            gain = np.zeros(1)
        else:
            turn = fresh
            # The class with the fewest labels first (for its share of the turns, with `need`).
            for cls in np.argsort(counts / (1.0 if need is None else need), kind="stable"):
                if (fresh & (predicted == cls)).any():
                    turn = fresh & (predicted == cls)
                    break
            candidates = np.flatnonzero(turn)
            covered = closest[demand]
            gain = np.concatenate([np.maximum(similarity[rows] - covered[None, :], 0.0).sum(axis=1)  # in chunks:
                                   for rows in np.array_split(candidates, -(-len(candidates) // 2048))])  # bounded memory
            pick = int(candidates[np.argmax(gain)])
        chosen.append(pick)
        scores.append(float(gain.max()))
        available[pick] = False
        counts[predicted[pick]] += 1
        closest = np.maximum(closest, unlabelled @ unlabelled[pick])
    return chosen, scores


def _class_need(uncertainty: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Each class's share of the turns: the mean uncertainty of the photos predicted to be of it, against
    the pool's (a class the model confuses more gets more labels), kept within half and twice an equal share."""
    mean = float(uncertainty.mean()) if len(uncertainty) else 1.0
    need = np.array([uncertainty[predicted == c].mean() if np.any(predicted == c) else mean for c in range(classes)])
    return np.clip(need / max(mean, 1e-9), 0.5, 2.0)


def choose(probabilities: np.ndarray, unlabelled_features: np.ndarray, labelled_features: np.ndarray, n: int,
           strategy: Strategy | str = DEFAULT_STRATEGY, seed: int = 0,
           labelled_labels: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """The `n` unlabelled photos to label first (indices into the unlabelled rows, in order) and the
    strategy's score of each when picked.

    Args:
        probabilities: [U, C] the current model's probabilities for the unlabelled photos.
        unlabelled_features / labelled_features: [U, D] / [L, D] bottleneck features (any scale).
        labelled_labels: [L] the labelled photos' class indices (strategies that balance the classes
            count them; without them every class counts as equally labelled).
    """
    strategy = Strategy(strategy)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) != len(unlabelled_features):
        raise ValueError(f"{len(probabilities)} rows of probabilities for {len(unlabelled_features)} photos.")
    if labelled_labels is not None and len(labelled_labels) != len(labelled_features):
        raise ValueError(f"{len(labelled_labels)} labels for {len(labelled_features)} labelled photos.")
    n = min(int(n), len(probabilities))
    unlabelled, labelled = unit_rows(unlabelled_features), unit_rows(labelled_features)
    uncertainty = margin_uncertainty(probabilities)
    if strategy is Strategy.RANDOM:
        order = np.random.default_rng(seed).permutation(len(probabilities))[:n]
        return order.tolist(), [1.0] * n
    if strategy is Strategy.MARGIN:
        order = np.argsort(-uncertainty, kind="stable")[:n]
        return order.tolist(), uncertainty[order].tolist()
    if strategy is Strategy.MARGIN_DISTINCT:
        return _distinct(np.argsort(-uncertainty, kind="stable"), unlabelled, labelled, n, uncertainty)
    if strategy is Strategy.MARGIN_BALANCED:
        return _distinct(np.argsort(-uncertainty, kind="stable"), unlabelled, labelled, n, uncertainty,
                         groups=probabilities.argmax(axis=1))
    if strategy is Strategy.TYPICAL:
        return _typical(unlabelled, labelled, n, np.random.default_rng(seed))
    if strategy is Strategy.COVERAGE:
        return _k_centre(unlabelled, labelled, n)
    if strategy is Strategy.MARGIN_COVERAGE:
        return _k_centre(unlabelled, labelled, n, weight=uncertainty, groups=probabilities.argmax(1))
    if strategy in (Strategy.REPRESENTATIVE, Strategy.REPRESENTATIVE_NEED):
        classes = probabilities.shape[1]
        counts = (np.bincount(np.asarray(labelled_labels, dtype=np.int64), minlength=classes)[:classes]
                  if labelled_labels is not None and len(labelled_labels) else np.zeros(classes, dtype=np.int64))
        predicted = probabilities.argmax(axis=1)
        need = _class_need(uncertainty, predicted, classes) if strategy is Strategy.REPRESENTATIVE_NEED else None
        return _representative(unlabelled, labelled, n, predicted, counts, np.random.default_rng(seed), need=need)
    return _badge(probabilities, unlabelled, n, np.random.default_rng(seed))


# --- On a data set's unlabelled photos, with a stored model ---------------------------------------


def unlabelled_split(summary: DatasetSummary) -> DatasetSummary:
    """The data set's unlabelled photos as a one-split summary (split "unlabelled"), so they are decoded
    as any split's are (and their features kept photo by photo); its fingerprint follows those photos only."""
    from core.data.folders import UNLABELLED, DatasetError

    if not summary.unlabelled:
        raise DatasetError(f"The data set has no unlabelled photos. Put photos without a class in "
                           f"{Path(summary.root) / UNLABELLED}/ (or, for a data set built in the app, add them "
                           "with \"Add photos without a class\").")
    digest = hashlib.sha256()
    for path in summary.unlabelled:
        stat = path.stat()
        digest.update(f"{path.relative_to(summary.root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return replace(summary, files={"unlabelled": [(path, 0) for path in summary.unlabelled]},
                   fingerprint="u" + digest.hexdigest()[:15], unreadable=[], ignored=[], unlabelled=[])


def suggest(entry: ModelEntry, summary: DatasetSummary, n: int = 20, strategy: Strategy | str = DEFAULT_STRATEGY,
            cache_dir=None, should_cancel: Callable[[], bool] | None = None) -> list[Suggestion]:
    """The data set's unlabelled photos ranked for labelling by `entry`'s model (a `ModelEntry`).

    The model gives the uncertainty; the bottleneck features of its backbone (of the default backbone
    for a model without one) give the coverage, against the labelled training photos. Features are
    kept photo by photo (`core.networks.feature_bank`), so ranking again after a few labels sends only
    new photos through the network; a level-2 model's answers come from those same features (its own
    pass on two photos checks them).
    """
    from core.data.decoded import decode_split, forget_decoded
    from core.data.folders import DatasetError
    from core.experiments.suspects import features_of_split
    from core.networks.backbones import DEFAULT_BACKBONE, get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    from core.networks.features import LazyExtractor, network_features
    from core.serving.predictor import Predictor

    if list(entry.classes) != list(summary.classes):
        raise DatasetError(f"Model {entry.id} knows classes {entry.classes}; the data set has {summary.classes}.")
    pool = unlabelled_split(summary)
    spec = get_backbone(entry.card.backbone or DEFAULT_BACKBONE)
    weights = resolve_weights(spec, None)
    extractor = LazyExtractor(lambda: make_feature_extractor(spec, weights))
    sizes = {tuple(spec.image_size), tuple(entry.image_size)}
    try:  # a pool changes with every label: its decoded photos are not kept (the bank keeps its features)
        decoded = decode_split(pool, "unlabelled", spec.image_size, cache_dir=cache_dir)

        def features(mirror: bool) -> np.ndarray:
            return network_features(extractor, decoded, cache_dir, spec.name, weights.key, spec.image_size, None,
                                    "unlabelled", mirror, should_cancel)[0]

        unlabelled, paths = features(False), list(decoded.paths)
        predictor = Predictor(entry)
        probabilities = _head_probabilities(predictor, weights.key, decoded, unlabelled, lambda: features(True))
        if probabilities is None:  # any other model answers from its own pass over the photos
            at_size = (decoded if tuple(entry.image_size) == tuple(spec.image_size)
                       else decode_split(pool, "unlabelled", entry.image_size, cache_dir=cache_dir))
            probabilities = predictor.predict_rows(at_size.images)
            row_of = {path: i for i, path in enumerate(at_size.paths)}
            both = [i for i, path in enumerate(paths) if path in row_of]  # a photo neither size could decode is left out
            unlabelled, paths = unlabelled[both], [paths[i] for i in both]
            probabilities = probabilities[[row_of[path] for path in paths]]
    finally:
        for size in sizes:
            forget_decoded(pool, "unlabelled", size, cache_dir)
    labelled = features_of_split(summary, "train", spec.name, None, cache_dir, should_cancel)
    order, scores = choose(probabilities, unlabelled, labelled.features, n, strategy, labelled_labels=labelled.labels)
    return [Suggestion(paths[i], round(score, 6), summary.classes[int(probabilities[i].argmax())])
            for i, score in zip(order, scores)]


def _head_probabilities(predictor, weights_key: str, decoded, features: np.ndarray,
                        mirror_features: Callable[[], np.ndarray]) -> np.ndarray | None:
    """A level-2 model's calibrated probabilities for the decoded photos from their bottleneck `features`,
    without running the network again: its saved model is that network (weights `weights_key`) with a
    small head on top, averaged over the photo and its mirror image (`mirror_features`, computed only if
    the model averages). None for any other model, or if the model's own pass disagrees on the first photos."""
    from core.networks.factories import single_view
    from core.serving.predictor import to_probabilities

    card = predictor.entry.card
    if (card.level != 2 or card.weights_key != weights_key
            or tuple(predictor.image_size) != tuple(decoded.images.shape[1:3])):
        return None
    inner = single_view(predictor.model)
    try:
        head = inner.get_layer("head")
    except ValueError:
        return None
    views = [features] + ([mirror_features()] if inner is not predictor.model else [])
    try:
        outputs = np.mean([np.asarray(head(view, training=False)) for view in views], axis=0)
    except ValueError:  # features of another width than the head takes (a network redefined under its name)
        return None
    probabilities = to_probabilities(outputs, len(predictor.classes))
    check = np.asarray(decoded.images[:2])
    # The two agree within 1.2e-7 on real photos (970 cats and dogs, `scripts/bench_labels.py --part rerank`);
    # features of another network or other weights differ by far more.
    if not np.allclose(predictor.predict_arrays(check, calibrated=False), probabilities[:len(check)], atol=1e-4):
        return None
    return predictor.calibrate(probabilities)
