"""How little data is enough: accuracy against the number of training images per class.

Each point trains a level on a seeded random subset of train/ (`core.data.folders.training_subset`: the
same photos for every level at a given size and seed) and scores it on the whole validation split.

Level 2 takes a fast path: the bottleneck features of every training and validation photo (and of
the validation photos' mirror images) are computed once, and each point trains only the small head
on its subset's rows, with level 2's own hyperparameters, then scores the head the way the saved
model would (averaged with the mirror view where `flip_average` is on). Other levels are ordinary
training runs on the subset, saved in a store of their own so they never become "the latest model".
Results are kept in a JSON file per data set, level and backbone, and reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import settings
from core.atomic_files import atomic_write_json
from core.errors import ConfigError
from core.levels import get_level
from core.training.progress import PHASE, TrainEvent

DEFAULT_SIZES = (5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class CurvePoint:
    level: int
    images_per_class: int
    seed: int
    accuracy: float
    seconds: float


@dataclass
class CurveConfig:
    """One data-efficiency curve: which levels, sizes and seeds, on which data and backbone."""

    levels: list[int] = field(default_factory=lambda: [2])
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    seeds: int = 3
    backbone: str | None = None
    weights: str | None = None
    data_dir: str | None = None
    flip_average: bool = True
    address: str | None = None  # run the points as Ray Tune trials: "local", "auto", "ray://HOST:10001"

    def __post_init__(self):
        for key in self.levels:
            if not get_level(key).trains:
                raise ConfigError(f"Level {key} trains nothing, so it has no data-efficiency curve: "
                                  "its accuracy is the same for any number of training images.")
        if not self.sizes or min(self.sizes) < 1:
            raise ConfigError(f"sizes must be positive numbers of images per class, got {self.sizes}.")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {self.seeds}.")
        self.levels, self.sizes = sorted(set(self.levels)), sorted(set(self.sizes))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CurveConfig":
        return cls(**data)


def results_path(fingerprint: str, level: int, backbone: str | None, cache_dir=None) -> Path:
    root = Path(cache_dir) if cache_dir else settings.home_dir() / "curves"
    return root / f"{fingerprint}-level{level}-{backbone or 'scratch'}.json"


def load_points(fingerprint: str, level: int, backbone: str | None, cache_dir=None) -> list[CurvePoint]:
    """The points measured so far for this data set, level and backbone (none if unreadable)."""
    try:
        data = json.loads(results_path(fingerprint, level, backbone, cache_dir).read_text())
        return [CurvePoint(**p) for p in data["points"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _save_point(point: CurvePoint, fingerprint: str, backbone: str | None, cache_dir=None) -> None:
    points = {(p.images_per_class, p.seed): p for p in load_points(fingerprint, point.level, backbone, cache_dir)}
    points[(point.images_per_class, point.seed)] = point
    atomic_write_json(results_path(fingerprint, point.level, backbone, cache_dir),
                      {"level": point.level, "backbone": backbone, "fingerprint": fingerprint,
                       "points": [asdict(p) for _, p in sorted(points.items())]})


def plan(config: CurveConfig, summary) -> list[tuple[int, int, int]]:
    """The (level, images per class, seed) points to run; sizes above the smallest class are dropped."""
    smallest = min(summary.counts()["train"].values())
    return [(level, size, seed) for level in config.levels for size in config.sizes if size <= smallest
            for seed in range(config.seeds)]


#: Each point of a feature level beyond its head's epochs, on the reference machine: building the head and
#: scoring the validation photos' features (six points on kept features took 13 s, estimated at 3 without it).
HEAD_POINT_SECONDS = 1.5


def estimate_seconds(config: CurveConfig, summary, gflops: float | None = None) -> dict[int, float]:
    """Level -> rough seconds for all its points on this machine, before starting."""
    from core.training.estimate import (LOAD_NETWORK_SECONDS, REFERENCE_GFLOPS, backbone_cost_scale, estimate,
                                        features_cached, judge_seconds, machine_gflops, network_gflops)
    from core.training.loop import TrainConfig

    speed = REFERENCE_GFLOPS / (gflops or machine_gflops())
    counts = summary.counts()
    n_train, n_val, k = sum(counts["train"].values()), sum(counts["validation"].values()), len(summary.classes)
    total: dict[int, float] = {}
    for key, size, _ in plan(config, summary):
        level = get_level(key)
        train_config = TrainConfig(level=key, backbone=config.backbone, flip_average=config.flip_average)
        if _uses_features(key):  # only the head trains per point, then scores the validation photos' features
            seconds = (level.cost.head_epoch * train_config.resolved().epochs * k * size / 100 + HEAD_POINT_SECONDS) * speed
        else:
            # The judge's features are extracted once, by the first point, and banked for the others.
            seconds = sum(estimate(TrainConfig(level=needed, backbone=config.backbone), k * size, n_val, gflops,
                                   judge=False).seconds
                          for needed in (level.requires, key) if needed is not None)
            if key not in total:
                seconds += sum(judge_seconds(train_config.resolved(), n_train, n_val, speed, summary.fingerprint))
        total[key] = total.get(key, 0.0) + seconds
    for key in total:
        if not _uses_features(key):
            continue
        config_2 = TrainConfig(level=key, backbone=config.backbone, weights=config.weights,
                               flip_average=config.flip_average).resolved()
        total[key] += LOAD_NETWORK_SECONDS * speed  # the network is built even when its features are kept
        # The features of every photo, once (validation twice: mirrored too), unless a run or curve on these
        # photos has kept them (a second curve said a minute and took 40 s).
        if not features_cached(config_2, summary.fingerprint):
            total[key] += ((n_train + (2 if config.flip_average else 1) * n_val) * get_level(key).cost.extract * network_gflops(config_2) * speed
                           * backbone_cost_scale(config_2.backbone, get_level(key).cost))
    return total


def _uses_features(key: int) -> bool:
    """Levels that train a small head on cached features take the fast path (level 2)."""
    from core.levels import FeatureCost

    return isinstance(get_level(key).cost, FeatureCost)


def run_curve(config: CurveConfig, report: Callable[[TrainEvent], None] | None = None,
              should_cancel: Callable[[], bool] | None = None, cache_dir=None) -> dict[int, list[CurvePoint]]:
    """Measures every point of the curve; returns level -> points (also kept on disk as they come)."""
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize

    report = report or (lambda event: None)
    should_cancel = should_cancel or (lambda: False)
    folder, source = resolve_data_dir(config.data_dir)
    summary = summarize(folder, source=source)
    todo = plan(config, summary)
    if not todo:
        raise ConfigError(f"Every size asked for is above the smallest class's {min(summary.counts()['train'].values())} "
                          "training images.")
    results: dict[int, list[CurvePoint]] = {level: [] for level in config.levels}

    def keep(point: CurvePoint) -> None:
        results[point.level].append(point)
        _save_point(point, summary.fingerprint, backbone_for(point.level, config.backbone), cache_dir)


    if config.address or settings.ray_address():
        cancelled = _run_points_on_ray(config, summary, todo, keep, report, should_cancel)
    else:
        cancelled = False
        for done, (level, size, seed) in enumerate(todo):
            if should_cancel():
                cancelled = True
                break
            report(TrainEvent(PHASE, phase="curve", done=done, total=len(todo), message=f"Level {level}: {size} images "
                              f"per class, seed {seed} (point {done + 1} of {len(todo)})"))
            point = measure_point(config, summary, level, size, seed, report, should_cancel)
            if point is None:  # cancelled mid-point
                cancelled = True
                break
            keep(point)
    report(TrainEvent(PHASE, phase="curve", done=sum(map(len, results.values())), total=len(todo),
                      message="Curve cancelled" if cancelled else "Curve finished"))
    return results


_HEADS: dict[str, "HeadCurve"] = {}  # per process: a feature level's features, loaded once for all its points


def measure_point(config: CurveConfig, summary, level: int, size: int, seed: int, report=None,
                  should_cancel=None) -> CurvePoint | None:
    """One point of the curve (None if cancelled): a head on cached features, or an ordinary run."""
    report = report or (lambda event: None)
    should_cancel = should_cancel or (lambda: False)
    t0 = time.monotonic()
    if _uses_features(level):
        key = json.dumps([summary.fingerprint, level, config.backbone, config.weights, config.flip_average])
        if key not in _HEADS:
            _HEADS.clear()  # one data set's features at a time
            _HEADS[key] = HeadCurve(config, level, summary, report, should_cancel)
        accuracy = _HEADS[key].point(size, seed)
    else:
        accuracy = _train_point(config, summary, level, size, seed, should_cancel)
    return None if accuracy is None else CurvePoint(level, size, seed, accuracy, round(time.monotonic() - t0, 3))


def _run_points_on_ray(config: CurveConfig, summary, todo, keep, report, should_cancel) -> bool:
    """The points as Ray Tune trials (one at a time on a small machine; spread over a cluster); True if cancelled."""
    from ray import tune

    from core.training.ray_support import connect, make_relay, resources_per_trial, run_tune, trial_error

    report(TrainEvent(PHASE, phase="curve", message=f"Starting Ray for {len(todo)} points", done=0, total=len(todo)))
    connect(None if config.address == "local" else config.address)
    relay = make_relay()
    finished: set[str] = set()

    def on_event(source, event):
        if event.kind == "done":
            finished.add(source)
        report(TrainEvent(PHASE, phase="curve", done=len(finished), total=len(todo),
                          message=f"{source}: {event.message or event.phase}"))

    function = tune.with_parameters(_point_trial, config=config.to_dict(), data_dir=str(summary.root),
                                    subset=summary.fingerprint, relay=relay)
    grid, cancelled = run_tune(function, {"point": tune.grid_search([list(p) for p in todo])},
                               resources_per_trial(None, None), f"curve-{int(time.time())}", relay, on_event,
                               should_cancel)
    for result in grid:
        level, size, seed = (result.config or {}).get("point", (None, None, None))
        metrics = result.metrics or {}
        if result.error is not None:
            report(TrainEvent(PHASE, phase="curve", message=f"Level {level}, {size} per class, seed {seed} failed: "
                                                            f"{trial_error(result.error)}"))
        elif metrics.get("accuracy") is not None:
            keep(CurvePoint(level, size, seed, metrics["accuracy"], metrics["seconds"]))
    return cancelled


def _point_trial(params: dict, config: dict, data_dir: str, subset: str, relay) -> None:
    """One curve point as a Tune trial, in a Ray worker."""
    from ray import tune

    from core.data.folders import summarize
    from core.training.progress import DONE
    from core.training.ray_support import RelayClient

    level, size, seed = params["point"]
    client = RelayClient(relay, source=f"level {level}, {size} per class, seed {seed}")
    summary = summarize(data_dir)
    if summary.fingerprint != subset:
        raise ConfigError(f"The data set at {data_dir} changed while the curve was running.")
    point = measure_point(CurveConfig.from_dict(config), summary, level, size, seed, client.report,
                          client.should_cancel)
    if point is None:
        tune.report({"accuracy": None})
        return
    client.report(TrainEvent(DONE, message=f"{point.accuracy:.2%}", metrics={"val_accuracy": point.accuracy}))
    tune.report({"accuracy": point.accuracy, "seconds": point.seconds})


def backbone_for(level: int, backbone: str | None = None) -> str | None:
    """The backbone a level's curve runs on (its results are kept under it): as a training run resolves it."""
    from core.training.loop import TrainConfig

    return TrainConfig(level=level, backbone=backbone).resolved().backbone


def _train_point(config: CurveConfig, summary, level: int, size: int, seed: int, should_cancel) -> float | None:
    """An ordinary run on the subset (level 3 first trains the level-2 model it starts from)."""
    from core.training.loop import TrainConfig, train

    store = settings.home_dir() / "curves" / "models"
    common = dict(backbone=config.backbone, weights=config.weights, data_dir=str(summary.root),
                  models_dir=str(store), train_per_class=size, subset_seed=seed, flip_average=config.flip_average)
    required = get_level(level).requires
    if required is not None:
        if train(TrainConfig(level=required, **common), should_cancel=should_cancel).cancelled:
            return None
    result = train(TrainConfig(level=level, **common), should_cancel=should_cancel)
    return None if result.cancelled else result.entry.val_accuracy


class HeadCurve:
    """A feature level's points from features computed once: only the head is trained per point."""

    def __init__(self, config: CurveConfig, key: int, summary, report, should_cancel):
        from core.networks.backbones import get_backbone, resolve_weights
        from core.data.decoded import decode_split
        from core.networks.factories import make_feature_extractor
        from core.networks.features import network_features
        from core.training.loop import TrainConfig

        self.summary = summary
        self.config = TrainConfig(level=key, backbone=config.backbone, weights=config.weights,
                                  data_dir=str(summary.root)).resolved()
        backbone = get_backbone(self.config.backbone)
        weights = resolve_weights(backbone, self.config.weights)
        size = self.config.image_size
        extractor = make_feature_extractor(backbone, weights, size)

        def progress(phase, message):
            return lambda done, total: report(TrainEvent(PHASE, phase=phase, message=message, done=done, total=total))

        def features(decoded, split, mirror=False):
            what = f"{split} features" + (" (mirror images)" if mirror else "")
            return network_features(extractor, decoded, None, self.config.backbone, weights.key, size,
                                    summary.fingerprint, split, mirror, should_cancel,
                                    progress(f"extract-{split}", f"Extracting {what}"))[0]

        train = decode_split(summary, "train", size, progress("decode-train", "Decoding training photos"))
        val = decode_split(summary, "validation", size, progress("decode-validation", "Decoding validation photos"))
        self.features, self.labels = features(train, "train"), np.asarray(train.labels)
        self.row_of = {path: i for i, path in enumerate(train.paths)}
        self.val_views = [features(val, "validation")] + ([features(val, "validation", mirror=True)]
                                                           if config.flip_average else [])
        self.val_labels = np.asarray(val.labels)
        self.num_classes = len(summary.classes)

    def point(self, per_class: int, seed: int) -> float:
        """Trains a head on the subset's rows with the level's hyperparameters; its validation accuracy."""
        from core.data.folders import training_subset

        subset = training_subset(self.summary, per_class, seed)  # the very photos levels 1 and 3 get
        rows = np.asarray([self.row_of[str(p)] for p, _ in subset.files["train"] if str(p) in self.row_of])
        return head_accuracy(self.config, self.features[rows], self.labels[rows], self.val_views, self.val_labels,
                             self.num_classes, seed)


def train_head(config, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int):
    """Level 2's head trained on `features` as the level trains it (`config`: a resolved level-2 TrainConfig)."""
    import keras

    from core.networks.factories import make_head
    from core.networks.features import feature_dataset
    from core.training.loop import compile_model

    keras.utils.set_random_seed(config.seed + seed)
    head = make_head(features.shape[1:], num_classes, config.dropout)
    compile_model(head, config, num_classes, -(-len(labels) // config.batch_size))
    data = feature_dataset(features, labels, config.batch_size, shuffle_seed=config.seed + seed)
    head.fit(data, epochs=config.epochs, verbose=0, shuffle=False)
    return head


def mean_view_probabilities(head, views: list[np.ndarray], num_classes: int) -> np.ndarray:
    """[N, C] class probabilities of a head, averaged over views of the same photos (the photos, mirrors)."""
    from core.serving.predictor import to_probabilities

    outputs = np.mean([head.predict(view, batch_size=256, verbose=0) for view in views], axis=0)
    return to_probabilities(outputs, num_classes)


def head_accuracy(config, features: np.ndarray, labels: np.ndarray, val_views: list[np.ndarray],
                  val_labels: np.ndarray, num_classes: int, seed: int) -> float:
    """The validation accuracy of level 2's head trained on `features` (`train_head`), averaging the
    validation `val_views` (the photos, their mirrors)."""
    head = train_head(config, features, labels, num_classes, seed)
    predicted = mean_view_probabilities(head, val_views, num_classes).argmax(axis=1)
    return float(np.mean(predicted == np.asarray(val_labels)))
