"""Background jobs that outlive a web page: a detached worker process with its state on disk.

The app calls `start_job`; a `python -m core.worker <job dir>` process runs it and writes
`status.json` as it goes (a `Job`, its `TrainProgress` included); any page, or a reloaded one,
reads it back with `current_job`. One job runs at a time: starting is serialised by a lock file,
and the worker holds its own lock for its lifetime, so a killed worker is noticed (the lock is free
but the status says running).

A job is one of five kinds (`JobKind`): a training run, a sequence of them (the quick start), a
data-efficiency curve, a sweep, or a label review (suspect labels, photos to label next). `RUNNERS` maps each kind to the function that runs it; `Job`
knows its kind's typed config, title and levels, so no page reads the status file's keys.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Callable, Union

from core import settings
from core.atomic_files import atomic_write_json
from core.errors import LittleDataError, describe
from core.experiments.efficiency_curve import CurveConfig
from core.experiments.label_review import LabelsConfig
from core.experiments.sweep import SweepConfig
from core.training.loop import TrainConfig
from core.training.progress import BATCH, PHASE, TrainEvent, TrainProgress

#: A worker that was just spawned may not hold its lock yet: how long "starting" is believed without it.
START_GRACE_SECONDS = 30
WORKER_DIED = ("The training worker stopped unexpectedly (killed or crashed). Nothing was saved; "
               "you can start a new job.")


class JobKind(str, Enum):
    """What a job runs. The values are the strings status files have always held."""

    TRAIN = "train"
    SEQUENCE = "sequence"
    CURVE = "curve"
    SWEEP = "sweep"
    LABELS = "labels"


class JobState(str, Enum):
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (JobState.STARTING, JobState.RUNNING)


#: A job's typed config, by kind: a `TrainConfig`, a list of them, a `CurveConfig`, a `SweepConfig` or a `LabelsConfig`.
JobConfig = Union[TrainConfig, list, CurveConfig, SweepConfig, LabelsConfig]


#: Each kind's config class; a sequence is a list of `TrainConfig`s.
_CONFIG_CLASSES = {JobKind.TRAIN: TrainConfig, JobKind.CURVE: CurveConfig, JobKind.SWEEP: SweepConfig,
                   JobKind.LABELS: LabelsConfig}


def _kind_of(config) -> JobKind:
    if isinstance(config, (list, tuple)):
        return JobKind.SEQUENCE
    for kind, config_class in _CONFIG_CLASSES.items():
        if isinstance(config, config_class):
            return kind
    raise TypeError(f"Not a job config: {type(config).__name__}.")


def _config_to_dict(kind: JobKind, config) -> dict:
    if kind is JobKind.SEQUENCE:
        return {"steps": [step.to_dict() for step in config]}
    return config.to_dict()


def _config_from_dict(kind: JobKind, data: dict):
    if kind is JobKind.SEQUENCE:
        return [TrainConfig.from_dict(step) for step in data["steps"]]
    return _CONFIG_CLASSES[kind].from_dict(data)


@dataclass
class Job:
    """One background job as its status file holds it.

    Attributes:
        config: the typed config (see `JobConfig`); None when the file's config could not be read
            (written by another version), so the page can still say what state the job is in.
        model_id: the saved model (a training job); model_ids: those saved so far (a sequence).
        step / steps: which training of a sequence is running.
        sweep_id: the kept sweep record (a sweep).
    """

    id: str
    kind: JobKind
    state: JobState
    config: JobConfig | None
    created: float
    updated: float = 0.0
    message: str = ""
    error: str | None = None
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    progress: TrainProgress = field(default_factory=TrainProgress)
    model_id: str | None = None
    model_ids: list[str] = field(default_factory=list)
    step: int | None = None
    steps: int | None = None
    sweep_id: str | None = None

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def train_configs(self) -> list[TrainConfig]:
        """The training runs of a training job or a sequence, in order; [] for other kinds."""
        if isinstance(self.config, TrainConfig):
            return [self.config]
        return list(self.config) if isinstance(self.config, list) else []

    @property
    def levels(self) -> list[int]:
        """The levels this job trains or measures."""
        if isinstance(self.config, LabelsConfig):
            return []
        if isinstance(self.config, CurveConfig):
            return list(self.config.levels)
        if isinstance(self.config, SweepConfig):
            return [self.config.level]
        return [config.level for config in self.train_configs]

    @property
    def title(self) -> str:
        """'level-2 training', 'first models (levels 2, 0)', 'level-1 sweep' or 'data-efficiency curve (level 2)'."""
        levels = ", ".join(map(str, self.levels))
        plural = "s" if len(self.levels) > 1 else ""
        if self.config is None:
            return f"{self.kind.value} job"
        if isinstance(self.config, LabelsConfig):
            return self.config.task.title
        return {JobKind.TRAIN: f"level-{levels} training",
                JobKind.SEQUENCE: f"first models (level{plural} {levels})",
                JobKind.SWEEP: f"level-{levels} sweep",
                JobKind.CURVE: f"data-efficiency curve (level{plural} {levels})"}[self.kind]

    @property
    def status_text(self) -> str:
        """What the job is doing now, or how it ended, in a few words."""
        if self.active:
            return self.progress.message or self.message or "Starting…"
        if self.state is JobState.FAILED:
            return self.error or "Failed."
        return self.message or self.state.value

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(kind=self.kind.value, state=self.state.value, progress=self.progress.to_dict(),
                    config=_config_to_dict(self.kind, self.config) if self.config is not None else None)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Job":
        """A status file's job; fields it lacks take their defaults and unknown ones are ignored."""
        kind = JobKind(data.get("kind", JobKind.TRAIN.value))
        try:
            config = _config_from_dict(kind, data["config"])
        except (KeyError, TypeError, ValueError, LittleDataError):
            config = None
        known = {f.name for f in fields(cls)} - {"kind", "state", "config", "progress"}
        return cls(kind=kind, state=JobState(data.get("state", JobState.FAILED.value)), config=config,
                   progress=TrainProgress.from_dict(data.get("progress")),
                   **{key: value for key, value in data.items() if key in known})


class JobBusy(LittleDataError):
    """Another job is already running; the message says which."""


def _root(jobs_dir=None) -> Path:
    root = Path(jobs_dir) if jobs_dir else settings.jobs_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def _locked(path: Path, blocking: bool = True):
    """An exclusive `flock` on `path`; yields False instead of waiting when not `blocking`."""
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


def worker_lock_path(jobs_dir=None) -> Path:
    """The lock a worker holds for its lifetime (tests hold it to stand in for a live worker)."""
    return _root(jobs_dir) / "worker.lock"


def _worker_alive(root: Path) -> bool:
    """True while some worker holds the worker lock."""
    with _locked(worker_lock_path(root), blocking=False) as got:
        return not got


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _save(root: Path, job: Job) -> None:
    atomic_write_json(root / job.id / "status.json", job.to_dict())


def read_job(job_id: str, jobs_dir=None) -> Job | None:
    """A job's status; a job marked active whose worker has died is reported (and saved) as failed."""
    root = _root(jobs_dir)
    data = _read_json(root / job_id / "status.json")
    if data is None:
        return None
    try:
        job = Job.from_dict(data)
    except (TypeError, ValueError):
        return None  # not a status file this version can read
    if job.active and not _worker_alive(root):
        # The worker may have finished between reading the file and probing its lock: read it again.
        job = Job.from_dict(_read_json(root / job_id / "status.json") or data)
        if job.active and (job.state is JobState.RUNNING or time.time() - job.created > START_GRACE_SECONDS):
            job.state, job.finished, job.error = JobState.FAILED, time.time(), WORKER_DIED
            _save(root, job)
    return job


def current_job(jobs_dir=None) -> Job | None:
    """The newest job (running or finished), or None."""
    pointer = _read_json(_root(jobs_dir) / "current.json")
    return read_job(pointer["job_id"], jobs_dir) if pointer and "job_id" in pointer else None


def active_job(jobs_dir=None) -> Job | None:
    """The job starting or running now, or None."""
    job = current_job(jobs_dir)
    return job if job is not None and job.active else None


def is_busy(jobs_dir=None) -> bool:
    """Whether a job is starting or running, so no other can start."""
    return active_job(jobs_dir) is not None


def start_job(config: JobConfig, jobs_dir=None, env: dict | None = None) -> Job:
    """Launches a worker for `config`; returns its first status.

    `config` is a `TrainConfig`, a `CurveConfig`, a `SweepConfig`, or a list of `TrainConfig`s trained
    one after the other in the same worker (the quick start: TensorFlow and the decoded photos load once).

    Raises:
        JobBusy: a job is already starting or running.
    """
    kind = _kind_of(config)
    root = _root(jobs_dir)
    with _locked(root / "launch.lock"):
        current = active_job(root)
        if current is not None:
            raise JobBusy(f"A {current.title} job is already running "
                          f"(started {time.strftime('%H:%M:%S', time.localtime(current.created))}). "
                          "Wait for it to finish or cancel it.")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        (root / job_id).mkdir()
        job = Job(id=job_id, kind=kind, state=JobState.STARTING, config=list(config) if kind is JobKind.SEQUENCE
                  else config, created=time.time(), updated=time.time(), message="Starting the training worker")
        _save(root, job)
        log = open(root / job_id / "worker.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "core.worker", str(root / job_id)], cwd=settings.PROJECT_ROOT,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {}), "LITTLE_DATA_JOBS_DIR": str(root)})
        log.close()
        job.pid = process.pid
        _save(root, job)
        atomic_write_json(root / "current.json", {"job_id": job_id})
    return job


def cancel_job(job_id: str, jobs_dir=None) -> None:
    """Asks the job's worker to stop after the current batch; nothing of that run is saved."""
    (_root(jobs_dir) / job_id / "cancel").touch()


def wait_for(job_id: str, jobs_dir=None, timeout: float = 600, poll: float = 0.5) -> Job:
    """Blocks until the job leaves the active states (for tests and scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = read_job(job_id, jobs_dir)
        if job is not None and not job.active:
            return job
        time.sleep(poll)
    raise TimeoutError(f"Job {job_id} still running after {timeout:.0f}s.")


# --- The worker ------------------------------------------------------------------------------

#: What a runner gets: the job (to record results in), a progress callback, a cancel check, and a
#: `save()` that writes the job's status now. It sets the job's final state, message and results.
Runner = Callable[[Job, Callable[[TrainEvent], None], Callable[[], bool], Callable[[], None]], None]


def _run_training(job: Job, report, should_cancel, save) -> None:
    from core.training.loop import train

    result = train(job.config, report=report, should_cancel=should_cancel)
    if result.cancelled:
        job.state, job.message = JobState.CANCELLED, "Cancelled; nothing was saved."
    else:
        job.state, job.message = JobState.SUCCEEDED, f"Saved {result.entry.id}"
        job.model_id, job.seconds = result.entry.id, result.seconds


def _run_sequence(job: Job, report, should_cancel, save) -> None:
    from core.training.loop import train

    started = time.monotonic()
    job.model_ids, job.steps = [], len(job.config)
    for number, config in enumerate(job.config, start=1):
        job.step = number
        save()
        result = train(config, report=report, should_cancel=should_cancel)
        if result.cancelled:
            break
        job.model_ids.append(result.entry.id)
    done = len(job.model_ids) == len(job.config)
    job.state = JobState.SUCCEEDED if done else JobState.CANCELLED
    job.message = f"Saved {', '.join(job.model_ids)}" if done else "Cancelled; the models finished before are kept."
    job.seconds = time.monotonic() - started


def _run_curve(job: Job, report, should_cancel, save) -> None:
    from core.experiments.efficiency_curve import run_curve

    started = time.monotonic()
    run_curve(job.config, report=report, should_cancel=should_cancel)
    cancelled = should_cancel()
    job.state = JobState.CANCELLED if cancelled else JobState.SUCCEEDED
    job.message = "Cancelled; the points measured so far are kept." if cancelled else "Curve measured."
    job.seconds = time.monotonic() - started


def _run_sweep(job: Job, report, should_cancel, save) -> None:
    from core.experiments.sweep import run_sweep

    started = time.monotonic()
    record = run_sweep(job.config, report=report, should_cancel=should_cancel)
    failed = len(record.failed_trials)
    job.state = JobState.CANCELLED if record.cancelled else JobState.SUCCEEDED
    job.sweep_id, job.seconds = record.id, time.monotonic() - started
    job.message = ("Cancelled; the finished trials are kept." if record.cancelled else
                   f"{len(record.finished_trials)} trials finished" + (f", {failed} failed" if failed else ""))


def _run_labels(job: Job, report, should_cancel, save) -> None:
    from core.errors import Cancelled
    from core.experiments.label_review import run_label_review

    try:
        review = run_label_review(job.config, should_cancel=should_cancel,
                                  phase=lambda message: report(TrainEvent(PHASE, phase="labels", message=message)))
    except Cancelled:
        job.state, job.message = JobState.CANCELLED, "Cancelled; the last finished review is kept."
        return
    job.state, job.seconds = JobState.SUCCEEDED, review.seconds
    job.message = job.config.task.outcome(len(review.items), review.seconds)


RUNNERS: dict[JobKind, Runner] = {
    JobKind.TRAIN: _run_training,
    JobKind.SEQUENCE: _run_sequence,
    JobKind.CURVE: _run_curve,
    JobKind.SWEEP: _run_sweep,
    JobKind.LABELS: _run_labels,
}


#: What the first job runs to time level 1's network (`core.training.estimate.machine_convnet_speed`).
MACHINE_PROBE = "from core.training.estimate import machine_convnet_speed; machine_convnet_speed()"
MACHINE_PROBE_TIMEOUT = 120


def _trains_a_small_convnet(job: Job) -> bool:
    """Whether the job trains level 1 (whose estimate needs `_measure_machine`): minutes of work, which a few
    seconds more hardly change, where the quick start's first model on 60 photos took 14 s."""
    from core.levels import LEVELS

    return any(LEVELS[key].archs for key in job.levels if key in LEVELS)


def _measure_machine(report) -> None:
    """The first level-1 job on a machine times level 1's network for the time estimates (about 6 s with its
    start-up; `core.training.estimate`), before its own work: not on the Train page, where Chromium drawing
    the page on the same two cores made the probe read 124 photos/s against 280 in a quiet process, and the
    figure is kept for good.

    In a child process: TensorFlow started in this one would take a GPU's memory and fix its devices before
    the job places its own work, and a probe that fails must not fail the job (the estimate keeps guessing).
    """
    from core.training.estimate import convnet_speed_known

    if convnet_speed_known():
        return
    report(TrainEvent(PHASE, phase="machine", message="Measuring how fast this machine trains (once, a few seconds)"))
    try:
        done = subprocess.run([sys.executable, "-c", MACHINE_PROBE], cwd=settings.PROJECT_ROOT, capture_output=True,
                              text=True, timeout=MACHINE_PROBE_TIMEOUT)
        if done.returncode:
            print(f"Measuring this machine failed:\n{done.stderr[-2000:]}", file=sys.stderr)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"Measuring this machine failed: {exc}", file=sys.stderr)


def run_worker(job_dir: Path) -> int:
    """The worker process: runs the job in `job_dir`, keeping its `status.json` current."""
    root = job_dir.parent
    data = _read_json(job_dir / "status.json")
    if data is None:
        print(f"No readable status.json in {job_dir}.", file=sys.stderr)
        return 1
    job = Job.from_dict(data)
    save = lambda: (setattr(job, "updated", time.time()), _save(root, job))  # noqa: E731
    with _locked(worker_lock_path(root), blocking=False) as got:
        if not got:
            job.state, job.error, job.finished = JobState.FAILED, "Another training worker is running.", time.time()
            save()
            return 1
        job.state, job.pid, job.started = JobState.RUNNING, os.getpid(), time.time()
        save()
        last_write = 0.0

        def report(event: TrainEvent) -> None:
            nonlocal last_write
            job.progress.apply(event)
            now = time.monotonic()
            if event.kind != BATCH or now - last_write > 0.5:  # throttle per-batch writes
                save()
                last_write = now

        try:
            if job.config is None:
                raise LittleDataError(f"This {job.kind.value} job's settings could not be read; start it again.")
            if _trains_a_small_convnet(job):
                _measure_machine(report)
            RUNNERS[job.kind](job, report, lambda: (job_dir / "cancel").exists(), save)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the page
            message = describe(exc)
            job.state = JobState.FAILED
            job.error = message if isinstance(exc, LittleDataError) else f"Training failed: {message}"
            traceback.print_exc()
        job.finished = time.time()
        save()
    return 0 if job.state is JobState.SUCCEEDED else 1
