"""Sweeps on Ray Tune: the grid, the summary, and real trials on a local Ray instance."""

import pytest

from core.errors import ConfigError
from core.sweep import SweepConfig, list_sweeps, parse_grid, summarize, trial_label


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


def test_summary_groups_seeds_with_mean_and_spread():
    trials = [{"config": {"lr": 1}, "seed": s, "val_accuracy": a, "seconds": 2.0, "model_id": f"m{s}", "error": None}
              for s, a in enumerate([0.8, 0.9])]
    trials += [{"config": {"lr": 2}, "seed": 0, "val_accuracy": 0.95, "seconds": 1.0, "model_id": "x", "error": None},
               {"config": {"lr": 2}, "seed": 1, "val_accuracy": None, "seconds": None, "model_id": None,
                "error": "boom"}]
    record = summarize(trials)
    assert [row["config"] for row in record["groups"]] == [{"lr": 2}, {"lr": 1}]
    first, second = record["groups"]
    assert (first["runs"], first["failed"], first["mean"]) == (1, 1, 0.95)
    assert second["mean"] == pytest.approx(0.85) and (second["min"], second["max"]) == (0.8, 0.9)
    assert record["best"]["model_id"] == "x"


@pytest.fixture
def local_ray():
    yield
    import ray

    ray.shutdown()  # the trial workers hold TensorFlow: give the memory back to the rest of the suite


@pytest.mark.slow
def test_a_sweep_runs_every_trial_reports_failures_and_keeps_going(dataset_factory, isolated_home, local_ray):
    from core.model_store import ModelStore
    from core.sweep import run_sweep

    data = dataset_factory(n_train=8, n_val=4)
    events = []
    config = SweepConfig(level=1, grid={"train_per_class": [4, 1000]}, seeds=2,
                         base={"data_dir": str(data), "epochs": 1, "image_size": (48, 48)})
    record = run_sweep(config, report=events.append)
    assert len(record["trials"]) == 4
    failed = [t for t in record["trials"] if t["error"]]
    finished = [t for t in record["trials"] if not t["error"]]
    assert [t["config"] for t in failed] == [{"train_per_class": 1000}] * 2
    assert all("fewer than 1000 training images" in t["error"] for t in failed)
    assert sorted(t["seed"] for t in finished) == [0, 1]
    store = ModelStore()
    for trial in finished:  # each trial is an ordinary run, saved with its card
        card = store.get(trial["model_id"]).card
        assert card.hyperparameters["train_per_class"] == 4 and card.hyperparameters["seed"] == trial["seed"]
        assert 0 <= trial["val_accuracy"] <= 1 and trial["seconds"] > 0
    assert record["best"] in finished
    assert record["groups"][0]["config"] == {"train_per_class": 4} and record["groups"][0]["runs"] == 2
    assert list_sweeps()[0]["id"] == record["id"]
    assert any("train_per_class=4, seed 0" in e.message for e in events)  # trial progress reaches the driver


@pytest.mark.slow
def test_a_cancelled_sweep_stops_its_trials(dataset_factory, local_ray):
    from core.sweep import run_sweep

    data = dataset_factory(n_train=8, n_val=4)
    seen = []
    config = SweepConfig(level=1, grid={"dropout": [0.1, 0.2, 0.3]}, seeds=2,
                         base={"data_dir": str(data), "epochs": 30, "image_size": (48, 48)})
    record = run_sweep(config, report=seen.append, should_cancel=lambda: any("epoch 1/30" in e.message for e in seen))
    assert record["cancelled"] is True
    assert len([t for t in record["trials"] if t["error"] is None]) == 0
    assert len(record["trials"]) < 6 or all(t["error"] == "cancelled" for t in record["trials"])


@pytest.mark.slow
def test_a_sweep_runs_as_a_background_job_from_the_app(dataset_factory):
    from core import jobs

    data = dataset_factory(n_train=8, n_val=4)
    config = SweepConfig(level=1, grid={"dropout": [0.2, 0.4]}, base={"data_dir": str(data), "epochs": 1,
                                                                      "image_size": (48, 48)})
    status = jobs.wait_for(jobs.start_job(config)["id"], timeout=300)
    assert status["state"] == "succeeded", status.get("error")
    assert status["message"] == "2 trials finished" and jobs.job_title(status) == "level-1 sweep"
    assert list_sweeps()[0]["id"] == status["sweep_id"]


@pytest.mark.slow
def test_the_curve_runs_its_points_as_ray_trials(dataset_factory, local_ray):
    from core.curve import CurveConfig, load_points, run_curve
    from core.datasets import summarize

    data = dataset_factory(n_train=8, n_val=4)
    # Level 2 on a small random-weights backbone: the trials' plumbing, not level 1's 70 epochs per point.
    results = run_curve(CurveConfig(levels=[2], sizes=[2, 4], seeds=1, backbone="mobilenet_025", weights="none",
                                    data_dir=str(data), address="local"))
    assert sorted(p.images_per_class for p in results[2]) == [2, 4]
    assert all(0 <= p.accuracy <= 1 and p.seconds > 0 for p in results[2])
    kept = load_points(summarize(data).fingerprint, 2, "mobilenet_025")
    assert sorted(p.images_per_class for p in kept) == [2, 4]
