"""Shared app state on disk, time estimates, duration formatting."""

from core import workspace
from core.augment import preset
from core.training import TrainConfig


def test_estimates_match_the_measured_reference_runs():
    """The Train page's estimate, for the tutorial's data on the reference machine (220 GFLOP/s)."""
    est = lambda level, **kw: workspace.estimate(TrainConfig(level=level, **kw), 2000, 800, gflops=220).seconds
    assert 45 * 9 < est(1, epochs=45) < 45 * 13  # measured ~10.6-11.2 s per epoch
    assert 15 < est(2, epochs=50) < 90  # measured ~50 s including decoding
    assert 20 * 26 < est(3, epochs=20) < 20 * 37  # measured ~31 s per epoch


def test_augment_settings_round_trip():
    workspace.set_augment_settings(preset("aggressive"), "aggressive")
    assert workspace.augment_settings() == (preset("aggressive"), "aggressive")


def test_active_data_dir_must_exist(tmp_path):
    workspace.set_active_data_dir(tmp_path)
    assert workspace.active_data_dir() == str(tmp_path)
    workspace.set_active_data_dir(tmp_path / "gone")
    assert workspace.active_data_dir() is None


def test_estimate_detail_reads_well_for_tiny_and_real_data():
    tiny = workspace.estimate(TrainConfig(level=1), 24, 12, gflops=220).detail
    real = workspace.estimate(TrainConfig(level=1), 2000, 800, gflops=220).detail
    assert tiny == "under 1 s per epoch" and real == "~11 s per epoch"


def test_format_duration():
    assert [workspace.format_duration(s) for s in (5, 95, 3 * 3600 + 60)] == ["5 s", "1 min 35 s", "3 h 01 min"]
