"""Training in a detached worker process: progress on disk, one job at a time, cancel, crashes."""

import os
import signal
import threading
import time

import pytest

from core import jobs
from core.store import ModelStore
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


def test_job_runs_reports_progress_and_lands_a_model(dataset):
    status = jobs.start_job(tiny(dataset))
    seen_batches = wait_until(lambda: (jobs.read_job(status["id"]) or {}).get("batch") or
                              jobs.read_job(status["id"])["state"] not in jobs.ACTIVE_STATES)
    assert seen_batches
    final = jobs.wait_for(status["id"], timeout=300)
    assert final["state"] == "succeeded", final.get("error")
    assert len(final["history"]["val_accuracy"]) == 2
    assert ModelStore().get(final["model_id"]).level == 1
    assert jobs.current_job()["id"] == status["id"]


def test_second_job_is_told_to_wait(dataset):
    first = jobs.start_job(tiny(dataset, epochs=30))
    try:
        with pytest.raises(jobs.JobBusy, match="already running"):
            jobs.start_job(tiny(dataset))
    finally:
        jobs.cancel_job(first["id"])
        assert jobs.wait_for(first["id"], timeout=300)["state"] == "cancelled"
    assert ModelStore().list().models == []


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


def test_killed_worker_is_reported_failed_and_a_new_job_can_start(dataset):
    status = jobs.start_job(tiny(dataset, epochs=30))
    wait_until(lambda: jobs.read_job(status["id"]).get("batch"))
    os.kill(status["pid"], signal.SIGKILL)
    final = wait_until(lambda: (s := jobs.read_job(status["id"]))["state"] not in jobs.ACTIVE_STATES and s)
    assert final["state"] == "failed" and "stopped unexpectedly" in final["error"]
    assert ModelStore().list().models == []
    again = jobs.start_job(tiny(dataset, epochs=1))
    assert jobs.wait_for(again["id"], timeout=300)["state"] == "succeeded"


def test_bad_config_fails_with_the_reason(tmp_path):
    status = jobs.start_job(TrainConfig(level=1, epochs=1, data_dir=str(tmp_path / "nowhere")))
    final = jobs.wait_for(status["id"], timeout=120)
    assert final["state"] == "failed" and "is not a folder" in final["error"]


def test_eta_from_progress():
    status = {"stage": "train", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "fit_elapsed": 15.0}
    assert jobs.eta_seconds(status) == pytest.approx(25.0)
    assert jobs.eta_seconds({"stage": "extract"}) is None
