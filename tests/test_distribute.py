"""Data-parallel training: device choices, MirroredStrategy on CPU replicas, two Ray Train workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.training.distribute import check_devices, place
from core.errors import ConfigError
from core.training.loop import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("devices", ["auto", "cpu", "cpu:2", "1", "4"])
def test_device_choices_are_accepted(devices):
    assert check_devices(devices) == devices


@pytest.mark.parametrize("devices", ["gpu", "0", "cpu:0", "cpu:", "2x", ""])
def test_bad_device_choices_say_what_is_allowed(devices):
    with pytest.raises(ConfigError, match="auto .*cpu:N"):
        TrainConfig(level=1, devices=devices)


def test_workers_must_be_positive_and_level_0_has_nothing_to_share():
    with pytest.raises(ConfigError, match="at least 1"):
        TrainConfig(level=1, workers=0)
    with pytest.raises(ConfigError, match="trains nothing"):
        TrainConfig(level=0, workers=2)


def test_asking_for_more_gpus_than_visible_is_refused():
    import tensorflow as tf

    visible = len(tf.config.list_logical_devices("GPU"))
    with pytest.raises(ConfigError, match=f"asks for {visible + 2} GPUs; this machine shows {visible}"):
        place(str(visible + 2))


def test_a_single_device_keeps_the_default_strategy():
    placement = place("auto")
    if placement.kind == "single":  # a machine with two GPUs or more mirrors instead
        assert placement.replicas == 1 and placement.is_chief


def _train(data: Path, home: Path, *extra: str) -> dict:
    env = {**os.environ, "LITTLE_DATA_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "core", "train", "--level", "1", "--data-dir", str(data),
                           "--epochs", "6", "--image-size", "64", "--json", *extra],  # 64 px: plumbing, not pixels
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_training_on_two_cpu_replicas_scales_batch_and_rate(dataset_factory, tmp_path):
    data = dataset_factory(n_train=40, n_val=12)
    result = _train(data, tmp_path / "home", "--devices", "cpu:2")
    assert result["distribution"] == {"strategy": "mirrored", "replicas": 2, "devices": ["/cpu:0", "/cpu:1"],
                                      "workers": 1, "global_batch_size": 32, "scaled_learning_rate": 0.002}
    assert result["val_accuracy"] >= 0.75


@pytest.mark.slow
def test_two_ray_workers_train_to_the_same_band_as_one(dataset_factory, tmp_path):
    data = dataset_factory(n_train=40, n_val=12)
    one = _train(data, tmp_path / "one")
    two = _train(data, tmp_path / "two", "--workers", "2")
    assert two["distribution"]["strategy"] == "multi_worker"
    assert two["distribution"]["workers"] == 2 and two["distribution"]["global_batch_size"] == 32
    assert one["val_accuracy"] >= 0.75 and two["val_accuracy"] >= 0.75
    assert abs(one["val_accuracy"] - two["val_accuracy"]) <= 0.2
    # The chief saved an ordinary model: it loads and predicts outside any strategy.
    from core.serving.model_store import ModelStore

    entry = ModelStore(tmp_path / "two" / "models").get(two["model_id"])
    assert entry.card.hyperparameters["distribution"]["workers"] == 2
