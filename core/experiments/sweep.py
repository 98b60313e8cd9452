"""Sweeps on Ray Tune: every combination of some settings, over several seeds, as Tune trials.

    python -m core sweep --level 3 --grid augment=tutorial_train,aggressive \\
        --grid learning_rate=1e-4,3e-4 --seeds 3 [--address auto|ray://HOST:10001] [--json]

Each trial is an ordinary `core.training.loop.train` run: its model is saved to the store with its card.
Ray Tune schedules the trials, on this machine (a local Ray instance, the default) or on a cluster.
A trial that fails is reported with its error and the sweep goes on; a cancel stops every trial.
Results are kept as JSON under `$LITTLE_DATA_HOME/sweeps/`, for the app's comparison table.

A sweep's outcome is a `SweepRecord`: its `Trial`s (each `TrialStatus` finished, failed or
cancelled), and, computed from them, one `SettingGroup` per combination of settings (mean and
spread over seeds) and the best trial.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core import settings
from core.atomic_files import atomic_write_json
from core.errors import ConfigError, LittleDataError
from core.training.progress import PHASE, TrainEvent
from core.training.ray_support import absolute_paths, trial_error

# The settings a sweep may vary, and how a value written on the command line becomes one.
_INT_KEYS = ("epochs", "batch_size", "train_per_class", "limit_per_class", "image_size", "subset_seed", "views")
_FLOAT_KEYS = ("learning_rate", "dropout")
_TEXT_KEYS = ("augment", "backbone", "arch", "schedule", "weights", "top_block")
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
    from core.data.augment import PRESETS

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
    from core.data.augment import preset
    from core.training.loop import TrainConfig

    values = {**base, **params}
    if isinstance(values.get("augment"), str):
        values["augment"] = preset(values["augment"])
    if isinstance(values.get("image_size"), int):
        values["image_size"] = (values["image_size"], values["image_size"])
    return TrainConfig(level=level, **values)


def _run_trial(params: dict, level: int, base: dict, relay) -> None:
    """One Tune trial, in a Ray worker: an ordinary training run, its outcome reported to Tune."""
    from ray import tune

    from core.training.ray_support import RelayClient
    from core.training.loop import train

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


class TrialStatus(str, Enum):
    """How a trial ended. The values are what record files hold."""

    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: What record files written before `TrialStatus` hold in a cancelled trial's "error".
_LEGACY_CANCELLED_ERROR = "cancelled"


@dataclass
class Trial:
    """One training run of a sweep.

    Attributes:
        setting: the swept settings' values of this run (the seed apart), e.g. {"learning_rate": 3e-4}.
        val_accuracy / seconds / model_id: the saved model's score, training time and id (finished only;
            a cancelled trial may know its seconds).
        error: why it failed (failed only).
    """

    setting: dict[str, Any]
    seed: int
    status: TrialStatus
    val_accuracy: float | None = None
    seconds: float | None = None
    model_id: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status is TrialStatus.FINISHED

    def to_dict(self) -> dict:
        return {"config": self.setting, "seed": self.seed, "val_accuracy": self.val_accuracy,
                "seconds": self.seconds, "model_id": self.model_id, "status": self.status.value, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict) -> "Trial":
        """A trial as a record file holds it, in today's form or the one before `status` (see `_legacy_status`)."""
        status, error = (TrialStatus(data["status"]), data.get("error")) if "status" in data else \
            _legacy_status(data.get("error"))
        return cls(setting=dict(data.get("config") or {}), seed=int(data.get("seed", 0)), status=status,
                   val_accuracy=data.get("val_accuracy"), seconds=data.get("seconds"), model_id=data.get("model_id"),
                   error=error)


def _legacy_status(error: str | None) -> tuple[TrialStatus, str | None]:
    """Older records said how a trial ended in its "error": None, "cancelled", or the failure's message."""
    if error is None:
        return TrialStatus.FINISHED, None
    if error == _LEGACY_CANCELLED_ERROR:
        return TrialStatus.CANCELLED, None
    return TrialStatus.FAILED, error


@dataclass
class SettingGroup:
    """One combination of settings over its seeds: the scores of its finished trials, and what did not finish."""

    setting: dict[str, Any]
    accuracies: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failed: int = 0
    cancelled: int = 0

    @property
    def runs(self) -> int:
        """Finished trials."""
        return len(self.accuracies)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.accuracies)) if self.accuracies else None

    @property
    def lowest(self) -> float | None:
        return min(self.accuracies) if self.accuracies else None

    @property
    def highest(self) -> float | None:
        return max(self.accuracies) if self.accuracies else None

    @property
    def mean_seconds(self) -> float | None:
        return float(np.mean(self.seconds)) if self.seconds else None

    def to_dict(self) -> dict:
        return {"config": self.setting, "runs": self.runs, "failed": self.failed, "cancelled": self.cancelled,
                "mean": self.mean, "min": self.lowest, "max": self.highest, "mean_seconds": self.mean_seconds}


def group_trials(trials: list[Trial]) -> list[SettingGroup]:
    """One group per combination of settings, best mean first; groups with no finished trial last."""
    groups: dict[str, SettingGroup] = {}
    for trial in trials:
        group = groups.setdefault(json.dumps(trial.setting, sort_keys=True), SettingGroup(trial.setting))
        if trial.status is TrialStatus.FINISHED:
            group.accuracies.append(trial.val_accuracy)
            group.seconds.append(trial.seconds or 0.0)
        elif trial.status is TrialStatus.FAILED:
            group.failed += 1
        else:
            group.cancelled += 1
    return sorted(groups.values(), key=lambda group: -1 if group.mean is None else group.mean, reverse=True)


def best_trial(trials: list[Trial]) -> Trial | None:
    """The finished trial with the highest validation accuracy (the first of equals), or None."""
    finished = [trial for trial in trials if trial.finished]
    return max(finished, key=lambda trial: trial.val_accuracy) if finished else None


@dataclass
class TrialResources:
    """What Ray gave each trial: CPUs (None: not recorded), and GPUs (fractions allowed)."""

    cpu: float | None = None
    gpu: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """Ray's form, as `core.training.ray_support.resources_per_trial` gives it: "gpu" only when asked for."""
        return {**({"cpu": self.cpu} if self.cpu is not None else {}), **({"gpu": self.gpu} if self.gpu else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "TrialResources":
        cpu = data.get("cpu")
        return cls(cpu=float(cpu) if cpu is not None else None, gpu=float(data.get("gpu") or 0.0))


@dataclass
class SweepRecord:
    """One sweep as it is kept under `sweeps_dir()`: its trials, and where and how long it ran.

    Attributes:
        config: the sweep's settings; None when a kept file's config cannot be read by this version
            (written by another one), so its results still show.
        seconds: the whole sweep's wall time.
        created: when it ended (seconds since the epoch).
    """

    id: str
    level: int
    trials: list[Trial]
    config: SweepConfig | None = None
    resources: TrialResources = field(default_factory=TrialResources)
    seconds: float = 0.0
    cancelled: bool = False
    created: float = 0.0

    @property
    def groups(self) -> list[SettingGroup]:
        """Per combination of settings, best mean first (see `group_trials`)."""
        return group_trials(self.trials)

    @property
    def best(self) -> Trial | None:
        return best_trial(self.trials)

    @property
    def finished_trials(self) -> list[Trial]:
        return [trial for trial in self.trials if trial.status is TrialStatus.FINISHED]

    @property
    def failed_trials(self) -> list[Trial]:
        return [trial for trial in self.trials if trial.status is TrialStatus.FAILED]

    def to_dict(self) -> dict:
        """The record file's JSON; `groups` and `best` are written for other readers, never read back."""
        best = self.best
        return {"trials": [trial.to_dict() for trial in self.trials],
                "groups": [group.to_dict() for group in self.groups],
                "best": best.to_dict() if best is not None else None,
                "id": self.id, "level": self.level, "config": self.config.to_dict() if self.config else None,
                "resources": self.resources.to_dict(), "seconds": self.seconds, "cancelled": self.cancelled,
                "created": self.created}

    @classmethod
    def from_dict(cls, data: dict) -> "SweepRecord":
        """A record file's sweep, in today's form or an older one.

        Raises:
            KeyError, TypeError, ValueError: not a sweep record (no id, level or trials, or malformed ones).
        """
        try:
            config = SweepConfig.from_dict(data["config"])
        except (KeyError, TypeError, ValueError, LittleDataError):
            config = None  # kept results still show without the settings that made them
        return cls(id=str(data["id"]), level=int(data["level"]), trials=[Trial.from_dict(t) for t in data["trials"]],
                   config=config, resources=TrialResources.from_dict(data.get("resources") or {}),
                   seconds=float(data.get("seconds") or 0.0), cancelled=bool(data.get("cancelled", False)),
                   created=float(data.get("created") or 0.0))


def run_sweep(config: SweepConfig, report: Callable[[TrainEvent], None] | None = None,
              should_cancel: Callable[[], bool] | None = None, name: str | None = None) -> SweepRecord:
    """Runs every trial on Ray Tune and keeps the results; returns the sweep's record (also written to disk)."""
    from ray import tune

    from core.training.ray_support import connect, make_relay, resources_per_trial, run_tune

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
    record = SweepRecord(id=sweep_id, level=config.level, trials=[_trial_of(result) for result in grid],
                         config=config, resources=TrialResources.from_dict(resources),
                         seconds=round(time.monotonic() - started, 2), cancelled=was_cancelled, created=time.time())
    atomic_write_json(sweeps_dir() / f"{sweep_id}.json", record.to_dict())
    report(TrainEvent(PHASE, phase="sweep", done=len(record.trials), total=len(params),
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


def _trial_of(result) -> Trial:
    """A Tune result as a `Trial`: failed if it raised, cancelled if it reported no score."""
    setting = dict(result.config or {})
    seed = setting.pop("seed", 0)
    metrics = result.metrics or {}
    if result.error is not None:
        status, error = TrialStatus.FAILED, trial_error(result.error)
    elif metrics.get("cancelled") or "val_accuracy" not in metrics:
        status, error = TrialStatus.CANCELLED, None
    else:
        status, error = TrialStatus.FINISHED, None
    return Trial(setting=setting, seed=seed, status=status, val_accuracy=metrics.get("val_accuracy"),
                 seconds=metrics.get("seconds"), model_id=metrics.get("model_id"), error=error)


def summarize(trials: list[dict]) -> dict:
    """The "trials", "groups" and "best" of a record file's JSON, from trials in their JSON form.

    For code that writes a record file by hand (tests of the pages); everything else uses `SweepRecord`.
    """
    typed = [Trial.from_dict(trial) for trial in trials]
    best = best_trial(typed)
    return {"trials": [trial.to_dict() for trial in typed], "groups": [group.to_dict() for group in group_trials(typed)],
            "best": best.to_dict() if best is not None else None}


def sweeps_dir() -> Path:
    return settings.home_dir() / "sweeps"


def list_sweeps() -> list[SweepRecord]:
    """Every kept sweep record, newest first (unreadable files are skipped)."""
    records = []
    for path in sorted(sweeps_dir().glob("*.json")):
        try:
            records.append(SweepRecord.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return sorted(records, key=lambda record: record.created, reverse=True)
