"""Sweeps on Ray Tune: every combination of some settings, over several seeds, as Tune trials.

    python -m core sweep --level 3 --grid augment=tutorial_train,aggressive \\
        --grid learning_rate=1e-4,3e-4 --seeds 3 [--address auto|ray://HOST:10001] [--json]

Each trial is an ordinary `core.training.train` run: its model is saved to the store with its card.
Ray Tune schedules the trials, on this machine (a local Ray instance, the default) or on a cluster.
A trial that fails is reported with its error and the sweep goes on; a cancel stops every trial.
Results are kept as JSON under `$LITTLE_DATA_HOME/sweeps/`, for the app's comparison table.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import settings
from core.atomic_files import atomic_write_json
from core.errors import ConfigError
from core.progress import PHASE, TrainEvent
from core.ray_support import absolute_paths, trial_error

# The settings a sweep may vary, and how a value written on the command line becomes one.
_INT_KEYS = ("epochs", "batch_size", "train_per_class", "limit_per_class", "image_size", "subset_seed")
_FLOAT_KEYS = ("learning_rate", "dropout")
_TEXT_KEYS = ("augment", "backbone", "arch", "schedule", "weights")
SWEEPABLE = _INT_KEYS + _FLOAT_KEYS + _TEXT_KEYS + ("flip_average",)


def parse_grid(items: list[str]) -> dict[str, list]:
    """`["augment=a,b", "learning_rate=1e-4,3e-4"]` -> `{"augment": ["a", "b"], "learning_rate": [1e-4, 3e-4]}`.

    Raises:
        ConfigError: a malformed item, a setting that cannot be swept, or a value of the wrong type.
    """
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError(f"--grid takes NAME=V1,V2,..., got {item!r}.")
        if key not in SWEEPABLE:
            raise ConfigError(f"{key!r} cannot be swept; choose from {', '.join(SWEEPABLE)}.")
        grid[key] = [_parse_value(key, v.strip()) for v in values.split(",") if v.strip()]
    return check_grid(grid)


def _parse_value(key: str, text: str):
    try:
        if key in _INT_KEYS:
            return int(text)
        if key in _FLOAT_KEYS:
            return float(text)
    except ValueError:
        raise ConfigError(f"{key} takes numbers, got {text!r}.") from None
    if key == "flip_average":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"flip_average takes true or false, got {text!r}.")
        return text.lower() in ("true", "1", "yes")
    return text


def check_grid(grid: dict[str, list]) -> dict[str, list]:
    from core.augment import PRESETS

    for key, values in grid.items():
        if key not in SWEEPABLE:
            raise ConfigError(f"{key!r} cannot be swept; choose from {', '.join(SWEEPABLE)}.")
        if not values:
            raise ConfigError(f"{key} has no values to try.")
        if len(set(map(str, values))) != len(values):
            raise ConfigError(f"{key} lists a value twice: {values}.")
        if key == "augment":
            unknown = [v for v in values if v not in PRESETS]
            if unknown:
                raise ConfigError(f"Unknown augmentation preset {unknown[0]!r}; choose from {', '.join(PRESETS)}.")
    return grid


@dataclass
class SweepConfig:
    """One sweep: a level, the grid of settings, the seeds, and what every trial shares.

    Attributes:
        grid: setting -> values; every combination is run once per seed.
        seeds: trials per combination, with seeds 0, 1, ... (the `seed` of `TrainConfig`).
        base: other `TrainConfig` fields every trial shares (data_dir, epochs, backbone...).
        cpus_per_trial / gpus_per_trial: Ray resources of one trial (default: a whole machine's CPUs).
        address: the Ray cluster ("auto", "ray://HOST:10001"); None: a local Ray instance.
    """

    level: int
    grid: dict[str, list] = field(default_factory=dict)
    seeds: int = 1
    base: dict = field(default_factory=dict)
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    address: str | None = None

    def __post_init__(self):
        if self.seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {self.seeds}.")
        check_grid(self.grid)
        if "seed" in self.base or "level" in self.base:
            raise ConfigError("A sweep's level and seeds are set by the sweep itself.")
        for params in self.trial_params():  # every combination must be a valid training config now
            trial_config(self.level, self.base, params)

    def trial_params(self) -> list[dict]:
        """Every trial's settings (one per combination and seed), in a stable order."""
        keys = list(self.grid)
        return [{**dict(zip(keys, combo)), "seed": seed}
                for combo in itertools.product(*(self.grid[k] for k in keys)) for seed in range(self.seeds)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepConfig":
        return cls(**data)


def trial_config(level: int, base: dict, params: dict):
    """The `TrainConfig` of one trial: the shared fields, then the trial's settings."""
    from core.augment import preset
    from core.training import TrainConfig

    values = {**base, **params}
    if isinstance(values.get("augment"), str):
        values["augment"] = preset(values["augment"])
    if isinstance(values.get("image_size"), int):
        values["image_size"] = (values["image_size"], values["image_size"])
    return TrainConfig(level=level, **values)


def _run_trial(params: dict, level: int, base: dict, relay) -> None:
    """One Tune trial, in a Ray worker: an ordinary training run, its outcome reported to Tune."""
    from ray import tune

    from core.ray_support import RelayClient
    from core.training import train

    client = RelayClient(relay, source=trial_label(params))
    result = train(trial_config(level, base, params), report=client.report, should_cancel=client.should_cancel)
    if result.cancelled:
        tune.report({"cancelled": True, "seconds": result.seconds})
    else:
        tune.report({"val_accuracy": result.entry.val_accuracy, "seconds": round(result.seconds, 2),
                     "model_id": result.entry.id, "cancelled": False})


def trial_label(params: dict) -> str:
    """'augment=aggressive, learning_rate=0.0003, seed 1'."""
    settings_text = ", ".join(f"{k}={v}" for k, v in params.items() if k != "seed")
    return f"{settings_text}{', ' if settings_text else ''}seed {params.get('seed', 0)}"


def run_sweep(config: SweepConfig, report: Callable[[TrainEvent], None] | None = None,
              should_cancel: Callable[[], bool] | None = None, name: str | None = None) -> dict:
    """Runs every trial on Ray Tune and keeps the results; returns the sweep record (see `summarize`)."""
    from ray import tune

    from core.ray_support import connect, make_relay, resources_per_trial, run_tune

    report = report or (lambda event: None)
    params = config.trial_params()
    sweep_id = name or time.strftime("sweep-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    started = time.monotonic()
    report(TrainEvent(PHASE, phase="sweep", message=f"Starting Ray for {len(params)} trials", done=0,
                      total=len(params)))
    connect(config.address)
    resources = resources_per_trial(config.cpus_per_trial, config.gpus_per_trial)
    relay = make_relay()
    param_space = {key: tune.grid_search(values) for key, values in config.grid.items()}
    param_space["seed"] = tune.grid_search(list(range(config.seeds)))
    finished: set[str] = set()

    def on_event(source, event):
        if event.kind in ("done", "failed"):
            finished.add(source)
        report(TrainEvent(PHASE, phase="sweep", done=len(finished), total=len(params),
                          message=f"{source}: {_event_text(event)}"))

    function = tune.with_parameters(_run_trial, level=config.level, base=absolute_paths(config.base), relay=relay)
    grid, was_cancelled = run_tune(function, param_space, resources, sweep_id, relay, on_event,
                                   should_cancel or (lambda: False))
    trials = [_trial_record(result) for result in grid]
    record = summarize(trials)
    record.update(id=sweep_id, level=config.level, config=config.to_dict(), resources=resources,
                  seconds=round(time.monotonic() - started, 2), cancelled=was_cancelled, created=time.time())
    atomic_write_json(sweeps_dir() / f"{sweep_id}.json", record)
    report(TrainEvent(PHASE, phase="sweep", done=len(trials), total=len(params),
                      message="Sweep cancelled" if was_cancelled else "Sweep finished"))
    return record


def _event_text(event) -> str:
    if event.kind == "epoch":
        return f"epoch {event.epoch}/{event.epochs}"
    if event.kind == "done":
        return f"done, validation accuracy {event.metrics.get('val_accuracy', 0):.4f}"
    if event.kind == "failed":
        return f"failed: {event.error}"
    return event.message or event.phase


def _trial_record(result) -> dict:
    params = dict(result.config or {})
    seed = params.pop("seed", 0)
    metrics = result.metrics or {}
    record = {"config": params, "seed": seed, "val_accuracy": metrics.get("val_accuracy"),
              "seconds": metrics.get("seconds"), "model_id": metrics.get("model_id"), "error": None}
    if result.error is not None:
        record["error"] = trial_error(result.error)
    elif metrics.get("cancelled") or "val_accuracy" not in metrics:
        record["error"] = "cancelled"
    return record


def summarize(trials: list[dict]) -> dict:
    """The sweep record: the trials, per-setting groups (mean and spread over seeds), and the best trial."""
    groups: dict[str, dict] = {}
    for trial in trials:
        key = json.dumps(trial["config"], sort_keys=True)
        group = groups.setdefault(key, {"config": trial["config"], "accuracies": [], "seconds": [], "failed": 0})
        if trial["error"] is None:
            group["accuracies"].append(trial["val_accuracy"])
            group["seconds"].append(trial["seconds"] or 0.0)
        else:
            group["failed"] += 1
    rows = []
    for group in groups.values():
        accuracies = group["accuracies"]
        rows.append({"config": group["config"], "runs": len(accuracies), "failed": group["failed"],
                     "mean": float(np.mean(accuracies)) if accuracies else None,
                     "min": min(accuracies) if accuracies else None, "max": max(accuracies) if accuracies else None,
                     "mean_seconds": float(np.mean(group["seconds"])) if group["seconds"] else None})
    rows.sort(key=lambda row: -1 if row["mean"] is None else row["mean"], reverse=True)
    done = [trial for trial in trials if trial["error"] is None]
    best = max(done, key=lambda trial: trial["val_accuracy"]) if done else None
    return {"trials": trials, "groups": rows, "best": best}


def sweeps_dir() -> Path:
    return settings.home_dir() / "sweeps"


def list_sweeps() -> list[dict]:
    """Every kept sweep record, newest first (unreadable files are skipped)."""
    records = []
    for path in sorted(sweeps_dir().glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda record: record.get("created", 0), reverse=True)
