"""core.app.workspace: the app's saved state on disk, the active data set and the lab's augmentation settings."""

from core.app import workspace
from core.data.augment import preset


def test_augment_settings_round_trip():
    workspace.set_augment_settings(preset("aggressive"), "aggressive")
    assert workspace.augment_settings() == (preset("aggressive"), "aggressive")


def test_active_data_dir_must_exist(tmp_path):
    workspace.set_active_data_dir(tmp_path)
    assert workspace.active_data_dir() == str(tmp_path)
    workspace.set_active_data_dir(tmp_path / "gone")
    assert workspace.active_data_dir() is None
