"""The app's saved state on disk: the active data set and the lab's augmentation settings."""

from core import workspace
from core.augment import preset
from core.levels import format_duration


def test_augment_settings_round_trip():
    workspace.set_augment_settings(preset("aggressive"), "aggressive")
    assert workspace.augment_settings() == (preset("aggressive"), "aggressive")


def test_active_data_dir_must_exist(tmp_path):
    workspace.set_active_data_dir(tmp_path)
    assert workspace.active_data_dir() == str(tmp_path)
    workspace.set_active_data_dir(tmp_path / "gone")
    assert workspace.active_data_dir() is None


def test_format_duration():
    assert [format_duration(s) for s in (5, 95, 3 * 3600 + 60)] == ["5 s", "1 min 35 s", "3 h 01 min"]
