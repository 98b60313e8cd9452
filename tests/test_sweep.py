"""Sweeps on Ray Tune: the grid, the typed record and its groups, and real trials on a local Ray instance."""

import json

import pytest

from core.errors import ConfigError
from core.experiments.sweep import (SweepConfig, SweepRecord, Trial, TrialResources, TrialStatus, list_sweeps,
                                    parse_grid, summarize, sweeps_dir, trial_label)


def test_grid_values_take_each_setting_type():
    grid = parse_grid(["augment=none,tutorial_train", "learning-rate=1e-4,3e-4", "batch_size=8",
                       "flip_average=false"])
    assert grid == {"augment": ["none", "tutorial_train"], "learning_rate": [1e-4, 3e-4], "batch_size": [8],
                    "flip_average": [False]}


@pytest.mark.parametrize("item, message", [
    ("colour=red", "cannot be swept; choose from"),
    ("learning_rate=fast", "takes numbers"),
    ("augment=wild", "Unknown augmentation preset 'wild'"),
    ("dropout=0.1,0.1", "lists a value twice"),
    ("dropout", "NAME=V1,V2"),
])
def test_bad_grids_say_what_is_wrong(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid([item])


def test_every_combination_is_checked_before_anything_starts():
    with pytest.raises(ConfigError, match="dropout must be in"):
        SweepConfig(level=1, grid={"dropout": [0.2, 1.5]})
    config = SweepConfig(level=1, grid={"dropout": [0.2, 0.5], "batch_size": [8, 16]}, seeds=3)
    assert len(config.trial_params()) == 12
    assert trial_label(config.trial_params()[0]) == "dropout=0.2, batch_size=8, seed 0"


def finished(setting, seed, accuracy, seconds=2.0, model_id=None):
    return Trial(setting, seed, TrialStatus.FINISHED, val_accuracy=accuracy, seconds=seconds,
                 model_id=model_id or f"m{seed}")


def test_groups_are_per_setting_with_mean_and_spread_over_seeds_best_first():
    trials = [finished({"lr": 1}, 0, 0.8), finished({"lr": 1}, 1, 0.9),
              finished({"lr": 2}, 0, 0.95, seconds=1.0, model_id="x"),
              Trial({"lr": 2}, 1, TrialStatus.FAILED, error="boom"),
              Trial({"lr": 3}, 0, TrialStatus.CANCELLED, seconds=0.5)]
    record = SweepRecord(id="s", level=1, trials=trials)
    assert [group.setting for group in record.groups] == [{"lr": 2}, {"lr": 1}, {"lr": 3}]
    first, second, unscored = record.groups
    assert (first.runs, first.failed, first.cancelled, first.mean) == (1, 1, 0, 0.95)
    assert second.mean == pytest.approx(0.85) and (second.lowest, second.highest) == (0.8, 0.9)
    assert second.mean_seconds == 2.0
    assert (unscored.runs, unscored.cancelled, unscored.mean, unscored.lowest) == (0, 1, None, None)
    assert record.best.model_id == "x"
    assert [t.error for t in record.failed_trials] == ["boom"] and len(record.finished_trials) == 3
    assert SweepRecord(id="s", level=1, trials=trials[3:]).best is None


def test_a_record_survives_its_json_file():
    config = SweepConfig(level=1, grid={"dropout": [0.2, 0.4]}, seeds=2, base={"epochs": 1})
    record = SweepRecord(id="sweep-x", level=1, config=config, resources=TrialResources(cpu=2.0, gpu=0.5),
                         seconds=3.5, cancelled=True, created=10.0,
                         trials=[finished({"dropout": 0.2}, 0, 0.7),
                                 Trial({"dropout": 0.4}, 0, TrialStatus.FAILED, error="Out of memory."),
                                 Trial({"dropout": 0.4}, 1, TrialStatus.CANCELLED)])
    data = json.loads(json.dumps(record.to_dict()))
    assert SweepRecord.from_dict(data) == record
    assert [t["status"] for t in data["trials"]] == ["finished", "failed", "cancelled"]
    assert data["best"]["val_accuracy"] == 0.7 and data["groups"][0]["mean"] == 0.7  # for readers of the JSON


# A record file as sweeps wrote it before `TrialStatus`: a trial's "error" was None, the failure's
# message, or "cancelled"; "groups" and "best" were stored. Built with that day's run_sweep/summarize.
RECORD_BEFORE_TRIAL_STATUS = {
    "trials": [
        {"config": {"learning_rate": 0.0001}, "seed": 0, "val_accuracy": 0.8, "seconds": 10.5,
         "model_id": "level1-a", "error": None},
        {"config": {"learning_rate": 0.0001}, "seed": 1, "val_accuracy": 0.9, "seconds": 11.5,
         "model_id": "level1-b", "error": None},
        {"config": {"learning_rate": 0.0003}, "seed": 0, "val_accuracy": None, "seconds": None, "model_id": None,
         "error": "Training diverged (loss is NaN)."},
        {"config": {"learning_rate": 0.0003}, "seed": 1, "val_accuracy": None, "seconds": 4.0, "model_id": None,
         "error": "cancelled"},
    ],
    "groups": [
        {"config": {"learning_rate": 0.0001}, "runs": 2, "failed": 0, "mean": 0.8500000000000001, "min": 0.8,
         "max": 0.9, "mean_seconds": 11.0},
        {"config": {"learning_rate": 0.0003}, "runs": 0, "failed": 2, "mean": None, "min": None, "max": None,
         "mean_seconds": None},
    ],
    "best": {"config": {"learning_rate": 0.0001}, "seed": 1, "val_accuracy": 0.9, "seconds": 11.5,
             "model_id": "level1-b", "error": None},
    "id": "sweep-20240101-120000-ab12",
    "level": 1,
    "config": {"level": 1, "grid": {"learning_rate": [0.0001, 0.0003]}, "seeds": 2,
               "base": {"data_dir": "/data/pets", "epochs": 3}, "cpus_per_trial": None, "gpus_per_trial": None,
               "address": None},
    "resources": {"cpu": 2.0},
    "seconds": 42.25,
    "cancelled": True,
    "created": 1704110400.0,
}


def test_a_record_written_before_trial_status_still_loads():
    (sweeps_dir()).mkdir(parents=True)
    (sweeps_dir() / "old.json").write_text(json.dumps(RECORD_BEFORE_TRIAL_STATUS))
    (sweeps_dir() / "broken.json").write_text('{"trials": "not a list"}')
    [record] = list_sweeps()  # the unreadable file is skipped
    assert (record.id, record.level, record.seconds, record.cancelled) == ("sweep-20240101-120000-ab12", 1, 42.25, True)
    assert record.config == SweepConfig(level=1, grid={"learning_rate": [1e-4, 3e-4]}, seeds=2,
                                        base={"data_dir": "/data/pets", "epochs": 3})
    assert record.resources == TrialResources(cpu=2.0)
    assert [t.status for t in record.trials] == [TrialStatus.FINISHED, TrialStatus.FINISHED, TrialStatus.FAILED,
                                                 TrialStatus.CANCELLED]
    assert record.trials[2].error == "Training diverged (loss is NaN)." and record.trials[3].error is None
    assert record.best == record.trials[1]
    scored, unscored = record.groups  # recomputed from the trials, as they were stored
    stored = RECORD_BEFORE_TRIAL_STATUS["groups"]
    assert (scored.mean, scored.lowest, scored.highest, scored.runs) == (stored[0]["mean"], 0.8, 0.9, 2)
    assert (unscored.failed, unscored.cancelled) == (1, 1)  # the old "failed" counted the cancelled one too


def test_a_record_whose_config_this_version_cannot_read_still_shows_its_results():
    data = RECORD_BEFORE_TRIAL_STATUS | {"config": {"level": 1, "grid": {"colour": ["red"]}}}
    record = SweepRecord.from_dict(data)
    assert record.config is None and len(record.trials) == 4
    assert SweepRecord.from_dict({k: v for k, v in data.items() if k not in ("config", "resources")}).resources.cpu is None


def test_summarize_writes_the_record_fields_from_trials_in_json_form():
    """What tests of the pages use to write a record file by hand."""
    fields = summarize(RECORD_BEFORE_TRIAL_STATUS["trials"])
    assert fields["best"]["model_id"] == "level1-b" and fields["trials"][3]["status"] == "cancelled"
    assert [g["runs"] for g in fields["groups"]] == [2, 0]


@pytest.fixture
def local_ray():
    yield
    import ray

    ray.shutdown()  # the trial workers hold TensorFlow: give the memory back to the rest of the suite


@pytest.mark.slow
def test_a_sweep_runs_every_trial_reports_failures_and_keeps_going(dataset_factory, isolated_home, local_ray):
    from core.serving.model_store import ModelStore
    from core.experiments.sweep import run_sweep

    data = dataset_factory(n_train=8, n_val=4)
    events = []
    config = SweepConfig(level=1, grid={"train_per_class": [4, 1000]}, seeds=2,
                         base={"data_dir": str(data), "epochs": 1, "image_size": (48, 48)})
    record = run_sweep(config, report=events.append)
    assert len(record.trials) == 4
    failed, finished_trials = record.failed_trials, record.finished_trials
    assert [t.setting for t in failed] == [{"train_per_class": 1000}] * 2
    assert all("fewer than 1000 training images" in t.error for t in failed)
    assert sorted(t.seed for t in finished_trials) == [0, 1]
    store = ModelStore()
    for trial in finished_trials:  # each trial is an ordinary run, saved with its card
        card = store.get(trial.model_id).card
        assert card.hyperparameters["train_per_class"] == 4 and card.hyperparameters["seed"] == trial.seed
        assert 0 <= trial.val_accuracy <= 1 and trial.seconds > 0
    assert record.best in finished_trials
    assert record.groups[0].setting == {"train_per_class": 4} and record.groups[0].runs == 2
    assert record.groups[1].failed == 2
    kept = list_sweeps()[0]
    assert (kept.id, kept.trials, kept.best) == (record.id, record.trials, record.best)  # as the file holds it
    assert any("train_per_class=4, seed 0" in e.message for e in events)  # trial progress reaches the driver


@pytest.mark.slow
def test_a_cancelled_sweep_stops_its_trials(dataset_factory, local_ray):
    from core.experiments.sweep import run_sweep

    data = dataset_factory(n_train=8, n_val=4)
    seen = []
    config = SweepConfig(level=1, grid={"dropout": [0.1, 0.2, 0.3]}, seeds=2,
                         base={"data_dir": str(data), "epochs": 30, "image_size": (48, 48)})
    record = run_sweep(config, report=seen.append, should_cancel=lambda: any("epoch 1/30" in e.message for e in seen))
    assert record.cancelled is True
    assert record.finished_trials == []
    assert len(record.trials) < 6 or all(t.status is TrialStatus.CANCELLED for t in record.trials)


@pytest.mark.slow
def test_a_sweep_runs_as_a_background_job_from_the_app(dataset_factory):
    from core.app import jobs

    data = dataset_factory(n_train=8, n_val=4)
    config = SweepConfig(level=1, grid={"dropout": [0.2, 0.4]}, base={"data_dir": str(data), "epochs": 1,
                                                                      "image_size": (48, 48)})
    job = jobs.wait_for(jobs.start_job(config).id, timeout=300)
    assert job.state is jobs.JobState.SUCCEEDED, job.error
    assert job.message == "2 trials finished" and job.title == "level-1 sweep"
    assert list_sweeps()[0].id == job.sweep_id


@pytest.mark.slow
def test_the_curve_runs_its_points_as_ray_trials(dataset_factory, local_ray):
    from core.experiments.efficiency_curve import CurveConfig, load_points, run_curve
    from core.data.folders import summarize

    data = dataset_factory(n_train=8, n_val=4)
    # Level 2 on a small random-weights backbone: the trials' plumbing, not level 1's 70 epochs per point.
    results = run_curve(CurveConfig(levels=[2], sizes=[2, 4], seeds=1, backbone="mobilenet_025", weights="none",
                                    data_dir=str(data), address="local"))
    assert sorted(p.images_per_class for p in results[2]) == [2, 4]
    assert all(0 <= p.accuracy <= 1 and p.seconds > 0 for p in results[2])
    kept = load_points(summarize(data).fingerprint, 2, "mobilenet_025")
    assert sorted(p.images_per_class for p in kept) == [2, 4]
