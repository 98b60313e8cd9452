"""The data-efficiency curve: identical subsets for every level, level 2's fast path, results kept."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.experiments.efficiency_curve import CurveConfig, estimate_seconds, load_points, plan, run_curve
from core.data.folders import DatasetError, summarize, training_subset
from core.errors import ConfigError
from core.training.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


def test_training_subsets_are_seeded_random_and_stratified(dataset_factory):
    summary = summarize(dataset_factory(n_train=24, n_val=10))
    a = training_subset(summary, 5, seed=0)
    assert a.counts()["train"] == {"circles": 5, "squares": 5}
    assert a.files["validation"] == summary.files["validation"]  # scored on the whole validation split
    assert training_subset(summary, 5, seed=0).files == a.files  # same size and seed: same photos
    assert training_subset(summary, 5, seed=1).files["train"] != a.files["train"]
    assert [p.name for p, _ in a.files["train"]] != [f"circles.{i}.jpg" for i in range(5)]  # not just the first
    assert a.fingerprint != training_subset(summary, 5, seed=1).fingerprint != summary.fingerprint
    with pytest.raises(DatasetError, match="fewer than 25 training images"):
        training_subset(summary, 25, seed=0)


def test_a_level_trained_on_a_subset_sees_exactly_that_subset(dataset_factory):
    data = dataset_factory(n_train=24, n_val=10)
    result = train(TrainConfig(level=1, data_dir=str(data), image_size=(32, 32), epochs=1, batch_size=8,
                               train_per_class=6, subset_seed=2))
    assert result.entry.card.dataset["counts"]["train"] == {"circles": 6, "squares": 6}
    assert result.entry.card.dataset["counts"]["validation"] == {"circles": 10, "squares": 10}
    assert result.entry.card.hyperparameters["train_per_class"] == 6


def test_plan_drops_sizes_above_the_smallest_class(dataset_factory):
    summary = summarize(dataset_factory(n_train=24, n_val=10))
    config = CurveConfig(levels=[1, 2], sizes=[5, 20, 50], seeds=2)
    assert plan(config, summary) == [(1, 5, 0), (1, 5, 1), (1, 20, 0), (1, 20, 1),
                                     (2, 5, 0), (2, 5, 1), (2, 20, 0), (2, 20, 1)]
    guess = estimate_seconds(config, summary, gflops=220)
    assert set(guess) == {1, 2} and all(seconds > 0 for seconds in guess.values())
    with pytest.raises(ConfigError, match="trains nothing"):
        CurveConfig(levels=[0])


def test_level2_curve_trains_heads_on_cached_features_and_keeps_results(dataset_factory, tiny_backbone):
    data = dataset_factory(n_train=24, n_val=10)
    config = CurveConfig(levels=[2], sizes=[2, 20], seeds=2, backbone=tiny_backbone.name, weights="none",
                         data_dir=str(data))
    events = []
    uncached = estimate_seconds(CurveConfig(levels=[2], sizes=[2], seeds=1, backbone=tiny_backbone.name,
                                            weights="none", data_dir=str(data)), summarize(data), gflops=220)[2]
    results = run_curve(config, report=events.append)
    points = results[2]
    assert [(p.images_per_class, p.seed) for p in points] == [(2, 0), (2, 1), (20, 0), (20, 1)]
    assert all(0 <= p.accuracy <= 1 and p.seconds > 0 for p in points)
    assert min(p.accuracy for p in points if p.images_per_class == 20) >= 0.8  # enough photos: it learns
    curve_events = [e for e in events if e.phase == "curve"]
    assert [e.done for e in curve_events] == [0, 1, 2, 3, 4] and curve_events[-1].total == 4
    kept = load_points(summarize(data).fingerprint, 2, tiny_backbone.name)
    assert kept == points
    # The features were extracted once: a second curve reads them from the cache and is faster.
    assert any(e.phase.startswith("extract-") for e in events)
    again = []
    second = CurveConfig(levels=[2], sizes=[2], seeds=1, backbone=tiny_backbone.name, weights="none", data_dir=str(data))
    run_curve(second, report=again.append)
    assert not any(e.phase.startswith("extract-") for e in again)
    assert estimate_seconds(second, summarize(data), gflops=220)[2] < uncached  # nor does its estimate


def test_cancelling_stops_between_points_and_keeps_what_was_measured(dataset_factory, tiny_backbone):
    data = dataset_factory(n_train=24, n_val=10)
    calls = {"n": 0}

    def cancel_after_first_point():
        calls["n"] += 1
        return bool(load_points(summarize(data).fingerprint, 2, tiny_backbone.name))

    results = run_curve(CurveConfig(levels=[2], sizes=[2, 5, 10], seeds=1, backbone=tiny_backbone.name,
                                    weights="none", data_dir=str(data)), should_cancel=cancel_after_first_point)
    assert len(results[2]) == 1


@pytest.mark.slow
def test_cli_curve_json(dataset_factory, tmp_path):
    data = dataset_factory(n_train=24, n_val=10)
    # Level 2 on a small random-weights backbone: the CLI's plumbing, not level 1's 70 epochs per point.
    out = subprocess.run([sys.executable, "-m", "core", "curve", "--level", "2", "--backbone", "mobilenet_025",
                          "--weights", "none", "--sizes", "4,8", "--seeds", "1", "--data-dir", str(data), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "LITTLE_DATA_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Level 2: 2 training runs, about" in out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["level"] == 2 and [p["images_per_class"] for p in result["points"]] == [4, 8]
    assert set(result["points"][0]) == {"level", "images_per_class", "seed", "accuracy", "seconds"}


def test_level3_points_first_train_level2_on_the_same_subset(dataset_factory, tiny_backbone):
    from core import settings
    from core.serving.model_store import ModelStore

    data = dataset_factory(n_train=24, n_val=10)
    results = run_curve(CurveConfig(levels=[3], sizes=[8], seeds=1, backbone=tiny_backbone.name, weights="none",
                                    data_dir=str(data)))
    assert [(p.level, p.images_per_class) for p in results[3]] == [(3, 8)]
    store = ModelStore(settings.home_dir() / "curves" / "models")
    level2, level3 = store.latest(2), store.latest(3)
    assert level3.card.started_from == level2.id
    assert level2.card.dataset["counts"]["train"] == level3.card.dataset["counts"]["train"] == {"circles": 8, "squares": 8}
    assert level2.card.dataset["fingerprint"] == level3.card.dataset["fingerprint"]  # the very same photos
    assert results[3][0].accuracy == level3.val_accuracy
    assert ModelStore().list().models == []  # curve runs never become the app's latest models


def test_statistics_per_size_are_mean_and_spread_over_seeds():
    from core.experiments.curve_statistics import SizeStatistics, statistics_per_size
    from core.experiments.efficiency_curve import CurvePoint

    points = [CurvePoint(2, 10, 0, 0.8, 1.0), CurvePoint(2, 5, 0, 0.6, 1.0), CurvePoint(2, 10, 1, 0.9, 1.0),
              CurvePoint(1, 5, 0, 0.5, 1.0)]
    one, small, big = statistics_per_size(points)  # by level, then size
    assert one == SizeStatistics(level=1, images_per_class=5, mean=0.5, std=0.0, lowest=0.5, highest=0.5, seeds=1)
    assert (small.level, small.images_per_class, small.seeds) == (2, 5, 1)
    assert (big.images_per_class, big.lowest, big.highest, big.seeds) == (10, 0.8, 0.9, 2)
    assert big.mean == pytest.approx(0.85) and big.std == pytest.approx(0.05)
    assert statistics_per_size([]) == []


def test_the_curves_level_0_line_is_the_level_0_of_the_network_the_curve_runs_on(dataset):
    """The quick start's newer MobileNetV2 level 0 was drawn, unnamed, under an EfficientNet-Lite2 curve."""
    from core.experiments.efficiency_curve import backbone_for
    from core.networks.factories import make_level1_model
    from core.serving.cards import Metrics, ModelCard
    from core.serving.model_store import ModelStore
    import pandas as pd

    from core.levels import get_level
    from pages.charts import curve_chart

    summary = summarize(dataset)
    curve_network = backbone_for(2)
    for backbone, accuracy, created in ((curve_network, 0.925, "2026-11-01T10:00:00+00:00"),
                                        ("mobilenet_v2", 0.914, "2026-11-02T10:00:00+00:00")):
        size = TrainConfig(level=0, backbone=backbone).resolved().image_size
        ModelStore().save(make_level1_model(2, (32, 32)), ModelCard(
            level=0, classes=summary.classes, image_size=size, backbone=backbone, metrics=Metrics(val_accuracy=accuracy),
            dataset={"root": str(summary.root), "fingerprint": summary.fingerprint}, created=created))
    frame = pd.DataFrame([{"level": get_level(2).label, "images per class": 5, "accuracy": 0.8, "lowest": 0.75,
                           "highest": 0.85, "seeds": 2}])
    spec = json.dumps(curve_chart(frame, summary).to_dict())
    assert "level 0, no training (EfficientNet-Lite2): 92.5%" in spec and "91.4%" not in spec
    spec = json.dumps(curve_chart(frame, summary, backbone="mobilenet_v2").to_dict())  # another network's curve
    assert "level 0, no training (MobileNetV2 (alpha 1.0)): 91.4%" in spec and "92.5%" not in spec


def test_a_curves_estimate_counts_the_judges_features_once_per_level(dataset, monkeypatch):
    """Every point of level 1 fits the novelty judge, but only the first extracts its features: the others
    find them banked. Counted at every point, a default curve's estimate was 16 minutes too long."""
    import core.training.estimate as estimates

    config = CurveConfig(levels=[1], sizes=[3, 5], seeds=2, data_dir=str(dataset))
    summary = summarize(dataset)
    assert len(plan(config, summary)) == 4
    without = estimate_seconds(config, summary, gflops=220)[1]  # the tests switch the judge off
    monkeypatch.setattr(estimates, "judge_seconds", lambda *args: (10.0, 2.0))
    assert estimate_seconds(config, summary, gflops=220)[1] == pytest.approx(without + 12.0)


def test_the_curves_level_0_line_says_when_its_groups_came_from_the_photos(dataset):
    """A level 0 whose ImageNet classes were found from the training photos did look at them: its line says so."""
    from core.experiments.efficiency_curve import backbone_for
    from core.networks.factories import make_level1_model
    from core.serving.cards import Metrics, ModelCard
    from core.serving.model_store import ModelStore
    import pandas as pd

    from core.levels import get_level
    from pages.charts import curve_chart

    summary = summarize(dataset)
    backbone = backbone_for(2)
    ModelStore().save(make_level1_model(2, (32, 32)), ModelCard(
        level=0, classes=summary.classes, image_size=TrainConfig(level=0, backbone=backbone).resolved().image_size,
        backbone=backbone, metrics=Metrics(val_accuracy=0.6), imagenet_classes={c: [i] for i, c in enumerate(summary.classes)},
        hyperparameters={"found_imagenet_classes": {"photos": 24, "per_class": 1, "held_out_accuracy": 0.7}},
        dataset={"root": str(summary.root), "fingerprint": summary.fingerprint}, created="2026-12-02T10:00:00+00:00"))
    frame = pd.DataFrame([{"level": get_level(2).label, "images per class": 5, "accuracy": 0.8, "lowest": 0.75,
                           "highest": 0.85, "seeds": 2}])
    spec = json.dumps(curve_chart(frame, summary).to_dict())
    assert "level 0, no training (EfficientNet-Lite2, ImageNet classes found from 24 photos): 60.0%" in spec
