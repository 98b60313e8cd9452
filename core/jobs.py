"""Training jobs that outlive a web page: a detached worker process with its state on disk.

The app calls `start_job`; a `python -m core.worker <job dir>` process trains and writes
`status.json` as it goes (the job's state, and its `TrainProgress` under "progress"); any page,
or a reloaded one, reads it back with `current_job`.
One job runs at a time: starting is serialised by a lock file, and the worker holds its own lock
for its lifetime, so a killed worker is noticed (the lock is free but the status says running).
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
from pathlib import Path

from core import settings
from core.atomic_files import atomic_write_json
from core.errors import LittleDataError, describe
from core.progress import BATCH, TrainEvent, TrainProgress

ACTIVE_STATES = ("starting", "running")


class JobBusy(LittleDataError):
    """Another training job is already running; the message says which."""


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


def _worker_alive(root: Path) -> bool:
    """True while some worker holds the worker lock."""
    with _locked(root / "worker.lock", blocking=False) as got:
        return not got


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_job(job_id: str, jobs_dir=None) -> dict | None:
    """A job's status; a job marked active whose worker has died is reported (and saved) as failed."""
    root = _root(jobs_dir)
    status = _read_json(root / job_id / "status.json")
    if status is None:
        return None
    if status.get("state") in ACTIVE_STATES and not _worker_alive(root):
        # A worker that was just spawned may not hold its lock yet; give it a grace period.
        if status.get("state") == "running" or time.time() - status.get("created", 0) > 30:
            status.update(state="failed", finished=time.time(),
                          error="The training worker stopped unexpectedly (killed or crashed). Nothing was saved; "
                                "you can start a new job.")
            atomic_write_json(root / job_id / "status.json", status)
    return status


def current_job(jobs_dir=None) -> dict | None:
    """The newest job (running or finished), or None."""
    pointer = _read_json(_root(jobs_dir) / "current.json")
    return read_job(pointer["job_id"], jobs_dir) if pointer else None


def job_title(status: dict) -> str:
    """'level-2 training' or 'data-efficiency curve (levels 1, 2)', for messages."""
    config = status.get("config", {})
    if status.get("kind") == "sequence":
        return f"first models (levels {', '.join(str(step['level']) for step in config['steps'])})"
    if status.get("kind") == "sweep":
        return f"level-{config['level']} sweep"
    if status.get("kind") == "curve":
        return f"data-efficiency curve (level{'s' if len(config['levels']) > 1 else ''} " \
               f"{', '.join(map(str, config['levels']))})"
    return f"level-{config.get('level')} training"


def start_job(config, jobs_dir=None, env: dict | None = None) -> dict:
    """Launches a worker for `config`; returns its first status.

    `config` is a `TrainConfig`, a `core.curve.CurveConfig`, a `core.sweep.SweepConfig`, or a list of
    `TrainConfig`s trained one after the other in the same worker (the quick start: TensorFlow and the
    decoded photos load once).

    Raises:
        JobBusy: a job is already starting or running.
    """
    from core.curve import CurveConfig
    from core.sweep import SweepConfig

    root = _root(jobs_dir)
    with _locked(root / "launch.lock"):
        current = current_job(root)
        if current and current.get("state") in ACTIVE_STATES:
            raise JobBusy(f"A {job_title(current)} job is already running "
                          f"(started {time.strftime('%H:%M:%S', time.localtime(current['created']))}). "
                          "Wait for it to finish or cancel it.")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        job_dir = root / job_id
        job_dir.mkdir()
        if isinstance(config, (list, tuple)):
            kind, config_dict = "sequence", {"steps": [step.to_dict() for step in config]}
        else:
            kind = "curve" if isinstance(config, CurveConfig) else "sweep" if isinstance(config, SweepConfig) else "train"
            config_dict = config.to_dict()
        status = {"id": job_id, "state": "starting", "created": time.time(), "updated": time.time(),
                  "kind": kind, "config": config_dict,
                  "message": "Starting the training worker"}
        atomic_write_json(job_dir / "status.json", status)
        log = open(job_dir / "worker.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "core.worker", str(job_dir)], cwd=settings.PROJECT_ROOT,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {}), "LITTLE_DATA_JOBS_DIR": str(root)})
        log.close()
        status["pid"] = process.pid
        atomic_write_json(job_dir / "status.json", status)
        atomic_write_json(root / "current.json", {"job_id": job_id})
    return status


def cancel_job(job_id: str, jobs_dir=None) -> None:
    """Asks the job's worker to stop after the current batch; nothing is saved."""
    (_root(jobs_dir) / job_id / "cancel").touch()


def wait_for(job_id: str, jobs_dir=None, timeout: float = 600, poll: float = 0.5) -> dict:
    """Blocks until the job leaves the active states (for tests and scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_job(job_id, jobs_dir)
        if status and status.get("state") not in ACTIVE_STATES:
            return status
        time.sleep(poll)
    raise TimeoutError(f"Job {job_id} still running after {timeout:.0f}s.")


def progress_of(status: dict) -> TrainProgress:
    """A job status's progress: phase, epoch and batch, history, fraction done and time left."""
    return TrainProgress.from_dict(status.get("progress"))


def run_worker(job_dir: Path) -> int:
    """The worker process: trains the job's config, keeping `status.json` current."""
    from core.training import TrainConfig, train

    root = job_dir.parent
    status_path = job_dir / "status.json"
    status = _read_json(status_path) or {}
    with _locked(root / "worker.lock", blocking=False) as got:
        if not got:
            status.update(state="failed", error="Another training worker is running.", finished=time.time())
            atomic_write_json(status_path, status)
            return 1
        status.update(state="running", pid=os.getpid(), started=time.time(), updated=time.time())
        atomic_write_json(status_path, status)
        progress = TrainProgress()
        last_write = 0.0

        def report(event: TrainEvent) -> None:
            nonlocal last_write
            progress.apply(event)
            status["progress"] = progress.to_dict()
            now = time.monotonic()
            if event.kind != BATCH or now - last_write > 0.5:  # throttle per-batch writes
                status["updated"] = time.time()
                atomic_write_json(status_path, status)
                last_write = now

        should_cancel = lambda: (job_dir / "cancel").exists()  # noqa: E731
        try:
            started = time.monotonic()
            if status.get("kind") == "curve":
                from core.curve import CurveConfig, run_curve

                run_curve(CurveConfig.from_dict(status["config"]), report=report, should_cancel=should_cancel)
                status.update(state="cancelled" if should_cancel() else "succeeded",
                              message="Cancelled; the points measured so far are kept." if should_cancel()
                              else "Curve measured.", seconds=time.monotonic() - started)
            elif status.get("kind") == "sweep":
                from core.sweep import SweepConfig, run_sweep

                record = run_sweep(SweepConfig.from_dict(status["config"]), report=report, should_cancel=should_cancel)
                failed = sum(1 for trial in record["trials"] if trial["error"] not in (None, "cancelled"))
                status.update(state="cancelled" if record["cancelled"] else "succeeded", sweep_id=record["id"],
                              seconds=time.monotonic() - started,
                              message="Cancelled; the finished trials are kept." if record["cancelled"] else
                              f"{len(record['trials']) - failed} trials finished" + (f", {failed} failed" if failed else ""))
            elif status.get("kind") == "sequence":
                status["model_ids"] = []
                steps = status["config"]["steps"]
                for number, step in enumerate(steps, start=1):
                    status.update(step=number, steps=len(steps))
                    result = train(TrainConfig.from_dict(step), report=report, should_cancel=should_cancel)
                    if result.cancelled:
                        break
                    status["model_ids"].append(result.entry.id)
                    atomic_write_json(status_path, status)
                done = len(status["model_ids"]) == len(steps)
                status.update(state="succeeded" if done else "cancelled", seconds=time.monotonic() - started,
                              message=f"Saved {', '.join(status['model_ids'])}" if done else
                              "Cancelled; the models finished before are kept.")
            else:
                result = train(TrainConfig.from_dict(status["config"]), report=report, should_cancel=should_cancel)
                if result.cancelled:
                    status.update(state="cancelled", message="Cancelled; nothing was saved.")
                else:
                    status.update(state="succeeded", message=f"Saved {result.entry.id}", model_id=result.entry.id,
                                  seconds=result.seconds)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the page
            message = describe(exc)
            status.update(state="failed", error=message if isinstance(exc, LittleDataError)
                          else f"Training failed: {message}")
            traceback.print_exc()
        status.update(finished=time.time(), updated=time.time())
        atomic_write_json(status_path, status)
    return 0 if status["state"] == "succeeded" else 1
