"""core.settings: one table of every setting, read when used, documented in the README, forwarded to workers."""

import re
from pathlib import Path

import pytest

from core import settings
from core.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def _known(name: str) -> bool:
    return any(setting.matches(name) or setting.name == name for setting in SETTINGS.values())


def readme_settings_rows() -> dict[str, str]:
    """The README's settings table: variable -> its row."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Settings"):]
    table = table[:table.index("\n## ", 1)] if "\n## " in table[1:] else table
    return {match[1]: match[0] for match in re.finditer(r"^\| `([A-Z_<>]+)` \|.*$", table, re.M)}


def test_the_readme_table_is_the_settings_table():
    rows = readme_settings_rows()
    assert set(rows) == set(SETTINGS), (set(rows) ^ set(SETTINGS))
    mentioned = set(re.findall(r"LITTLE_DATA_[A-Z_]+(?:<[A-Z]+>)?", (ROOT / "README.md").read_text()))
    assert all(_known(name) for name in mentioned), [n for n in mentioned if not _known(n)]


def test_every_setting_the_code_reads_is_in_the_table():
    sources = [p for folder in ("core", "pages", "scripts") for p in (ROOT / folder).rglob("*.py")] + [ROOT / "app.py"]
    names = {name for path in sources for name in re.findall(r"LITTLE_DATA_[A-Z_]*[A-Z]", path.read_text())}
    unknown = sorted(name for name in names if not _known(name) and name != "LITTLE_DATA_WEIGHTS")
    assert not unknown, f"settings read outside core.settings.SETTINGS: {unknown}"


def test_settings_are_read_when_used(monkeypatch, tmp_path):
    monkeypatch.setenv("LITTLE_DATA_HOME", str(tmp_path / "a"))
    assert settings.models_dir() == tmp_path / "a" / "models"
    monkeypatch.setenv("LITTLE_DATA_HOME", str(tmp_path / "b"))
    monkeypatch.setenv("LITTLE_DATA_MAX_UPLOAD_MB", "2")
    assert settings.models_dir() == tmp_path / "b" / "models" and settings.max_upload_bytes() == 2 * 2**20
    monkeypatch.setenv("LITTLE_DATA_FOLD_BATCH_NORM", "off")
    assert settings.fold_batch_norm() is False
    monkeypatch.setenv("LITTLE_DATA_WEIGHTS_VGG16", "/weights/vgg16.h5")
    assert settings.weights_setting("vgg16") == "/weights/vgg16.h5" and settings.weights_setting("mobilenet_v2") is None


def test_a_bad_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_MAX_PHOTOS_PER_CLASS", "lots")
    with pytest.raises(ValueError, match="LITTLE_DATA_MAX_PHOTOS_PER_CLASS='lots' is not valid"):
        settings.max_photos_per_class()


def test_workers_inherit_every_forwarded_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("LITTLE_DATA_HOME", "relative/home")
    monkeypatch.setenv("LITTLE_DATA_FOLD_BATCH_NORM", "0")
    monkeypatch.setenv("LITTLE_DATA_WEIGHTS_EFFICIENTNET_LITE2", "none")
    monkeypatch.setenv("LITTLE_DATA_RAY_ADDRESS", "auto")  # the driver's choice of cluster, not a worker's
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    env = settings.worker_environment()
    assert env["LITTLE_DATA_FOLD_BATCH_NORM"] == "0" and env["LITTLE_DATA_WEIGHTS_EFFICIENTNET_LITE2"] == "none"
    assert Path(env["LITTLE_DATA_HOME"]).is_absolute() and env["LITTLE_DATA_HOME"].endswith("relative/home")
    assert "LITTLE_DATA_RAY_ADDRESS" not in env and "UNRELATED_SECRET" not in env
