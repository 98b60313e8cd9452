"""Training in a detached worker process: progress on disk, one job at a time, cancel, crashes."""

import os
import signal
import threading
import time

import pytest

from core import jobs
from core.model_store import ModelStore
from core.progress import TrainEvent, TrainProgress
from core.training import TrainConfig


def tiny(dataset, epochs=2, **kw):
    return TrainConfig(level=1, epochs=epochs, batch_size=4, image_size=(32, 32), data_dir=str(dataset), **kw)


def wait_until(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError


@pytest.mark.slow
def test_job_runs_reports_progress_and_lands_a_model(dataset):
    status = jobs.start_job(tiny(dataset))
    final = jobs.wait_for(status["id"], timeout=300)
    assert final["state"] == "succeeded", final.get("error")
    progress = jobs.progress_of(final)
    # 24 training images in batches of 4: the last report was batch 6 of 6 in epoch 2 of 2.
    assert (progress.epoch, progress.epochs, progress.batch, progress.batches) == (2, 2, 6, 6)
    assert progress.batches_done == 12 and progress.phase == "save"  # the last phase reported
    assert len(progress.history["val_accuracy"]) == 2 and progress.model_id == final["model_id"]
    assert progress.metrics["val_accuracy"] == ModelStore().get(final["model_id"]).val_accuracy
    assert ModelStore().get(final["model_id"]).level == 1
    assert jobs.current_job()["id"] == status["id"]


@pytest.mark.slow
def test_second_job_is_told_to_wait(dataset):
    first = jobs.start_job(tiny(dataset, epochs=30))
    try:
        with pytest.raises(jobs.JobBusy, match="already running"):
            jobs.start_job(tiny(dataset))
    finally:
        jobs.cancel_job(first["id"])
        assert jobs.wait_for(first["id"], timeout=300)["state"] == "cancelled"
    assert ModelStore().list().models == []


@pytest.mark.slow
def test_two_sessions_starting_at_once_get_one_job(dataset):
    outcomes = []

    def start():
        try:
            outcomes.append(jobs.start_job(tiny(dataset, epochs=30))["id"])
        except jobs.JobBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [o for o in outcomes if o != "busy"]
    assert len(started) == 1 and outcomes.count("busy") == 1
    jobs.cancel_job(started[0])
    jobs.wait_for(started[0], timeout=300)


@pytest.mark.slow
def test_killed_worker_is_reported_failed_and_a_new_job_can_start(dataset):
    status = jobs.start_job(tiny(dataset, epochs=30))
    running = wait_until(lambda: (s := jobs.read_job(status["id"])) and jobs.progress_of(s).batch and s)
    assert 0 < jobs.progress_of(running).fraction < 1  # seen mid-run, from another process
    os.kill(status["pid"], signal.SIGKILL)
    final = wait_until(lambda: (s := jobs.read_job(status["id"]))["state"] not in jobs.ACTIVE_STATES and s)
    assert final["state"] == "failed" and "stopped unexpectedly" in final["error"]
    assert ModelStore().list().models == []
    again = jobs.start_job(tiny(dataset, epochs=1))
    assert jobs.wait_for(again["id"], timeout=300)["state"] == "succeeded"


@pytest.mark.slow
def test_bad_config_fails_with_the_reason(tmp_path):
    status = jobs.start_job(TrainConfig(level=1, epochs=1, data_dir=str(tmp_path / "nowhere")))
    final = jobs.wait_for(status["id"], timeout=120)
    assert final["state"] == "failed" and final["error"].endswith("nowhere is not a folder.")
    assert jobs.progress_of(final).error == final["error"]  # the failed event reached the progress too


def test_progress_arithmetic():
    progress = TrainProgress()
    progress.apply(TrainEvent("phase", phase="extract-train", message="Extracting", done=30, total=120))
    assert progress.fraction == 0.25 and progress.eta_seconds is None
    progress.apply(TrainEvent("batch", epoch=2, epochs=4, batch=5, batches=10, elapsed=15.0, logs={"loss": 0.5}))
    assert progress.batches_done == 15 and progress.fraction == pytest.approx(15 / 40)
    assert progress.eta_seconds == pytest.approx(25.0)  # 1 s per batch, 25 batches to go
    assert progress.message == "Epoch 2/4, batch 5/10"
    progress.apply(TrainEvent("epoch", epoch=2, epochs=4, elapsed=20.0, history={"val_accuracy": [0.5, 0.75]}))
    progress.apply(TrainEvent("done", model_id="m", metrics={"val_accuracy": 0.75}, seconds=30.0))
    again = TrainProgress.from_dict(progress.to_dict())
    assert again == progress and again.history == {"val_accuracy": [0.5, 0.75]}
    with pytest.raises(ValueError, match="kind must be one of"):
        TrainEvent("halfway")
