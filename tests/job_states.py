"""Jobs of every kind in every state, written to a jobs folder as a worker would leave them.

Pages are rendered against these (tests/test_pages_with_jobs.py) without running a worker: a
"running" job is believed because the test holds the worker lock, as a live worker does; a
"worker died" job is a running one whose lock nobody holds.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from core.app import jobs
from core.app.jobs import Job, JobKind, JobState
from core.experiments.efficiency_curve import CurveConfig
from core.experiments.label_review import LabelsConfig, LabelTask
from core.experiments.sweep import SweepConfig
from core.training.loop import TrainConfig
from core.training.progress import TrainEvent, TrainProgress

#: What a page can meet: the job states, and a running job whose worker has gone.
WORKER_DIED = "worker died"
STATES = ["starting", "running", "succeeded", "failed", "cancelled", WORKER_DIED]


def example_config(kind: JobKind, data_dir: Path):
    data = str(data_dir)
    if kind is JobKind.TRAIN:
        return TrainConfig(level=2, backbone="mobilenet_025", weights="none", epochs=3, data_dir=data)
    if kind is JobKind.SEQUENCE:  # the quick start's shape
        return [TrainConfig(level=2, backbone="mobilenet_v2", data_dir=data),
                TrainConfig(level=0, backbone="mobilenet_v2", data_dir=data)]
    if kind is JobKind.CURVE:
        return CurveConfig(levels=[1, 2], sizes=[5, 10], seeds=1, data_dir=data)
    if kind is JobKind.LABELS:
        return LabelsConfig(LabelTask.SUSPECTS, data_dir=data)
    return SweepConfig(level=1, grid={"learning_rate": [1e-3, 3e-4]}, base={"data_dir": data, "epochs": 1})


def _progress(state: str) -> TrainProgress:
    progress = TrainProgress()
    progress.apply(TrainEvent("phase", phase="decode-train", message="Decoding photos", done=10, total=24))
    if state == "starting":
        return TrainProgress()
    progress.apply(TrainEvent("epoch", epoch=1, epochs=3, elapsed=2.0,
                              history={"loss": [0.7], "accuracy": [0.5], "val_loss": [0.69], "val_accuracy": [0.5]}))
    progress.apply(TrainEvent("batch", epoch=2, epochs=3, batch=2, batches=3, elapsed=3.0, logs={"loss": 0.6}))
    if state == "succeeded":
        progress.apply(TrainEvent("done", model_id="level2-example", seconds=9.0,
                                  metrics={"val_accuracy": 0.75, "last_epoch_val_accuracy": 0.7,
                                           "best_val_accuracy": 0.75, "best_epoch": 2}))
    if state == "failed":
        progress.apply(TrainEvent("failed", error="Example failure: the disk is full."))
    return progress


def write_job(jobs_dir: Path, kind: JobKind, state: str, data_dir: Path) -> Job:
    """A job of `kind` in `state` (one of `STATES`), saved as the current job in `jobs_dir`."""
    now = time.time()
    saved_state = JobState.RUNNING if state == WORKER_DIED else JobState(state)
    job = Job(id=f"example-{kind.value}-{state.replace(' ', '-')}", kind=kind, state=saved_state,
              config=example_config(kind, data_dir), created=now - 60, updated=now, pid=999999,
              progress=_progress(state))
    if saved_state.active:
        job.message = "Starting the training worker"
        if kind is JobKind.SEQUENCE:
            job.step, job.steps = 1, 2
    elif saved_state is JobState.SUCCEEDED:
        job.seconds, job.finished = 9.0, now
        job.model_id = "level2-example" if kind is JobKind.TRAIN else None
        job.model_ids = ["level2-example", "level0-example"] if kind is JobKind.SEQUENCE else []
        job.sweep_id = "sweep-example" if kind is JobKind.SWEEP else None
        job.message = {JobKind.TRAIN: "Saved level2-example", JobKind.SEQUENCE: "Saved level2-example, level0-example",
                       JobKind.CURVE: "Curve measured.", JobKind.SWEEP: "2 trials finished",
                       JobKind.LABELS: "3 suspect labels in 4 s"}[kind]
    elif saved_state is JobState.FAILED:
        job.error, job.finished = "Example failure: the disk is full.", now
    else:
        job.message, job.finished = "Cancelled; nothing was saved.", now
    if state == "starting":
        job.created = now  # within the grace period a new worker has to take its lock
    (jobs_dir / job.id).mkdir(parents=True, exist_ok=True)
    jobs._save(jobs_dir, job)
    (jobs_dir / "current.json").write_text(f'{{"job_id": "{job.id}"}}')
    return job


@contextmanager
def worker_for(jobs_dir: Path, state: str):
    """Stands in for the job's worker while the block runs: holds its lock for an active job."""
    if state not in ("starting", "running"):
        yield
        return
    with jobs._locked(jobs.worker_lock_path(jobs_dir)) as got:
        assert got
        yield
