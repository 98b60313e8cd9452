"""The app's saved state, shared by its pages and surviving a reload or a restart: which data set
is active (and uploaded data sets), and the augmentation settings chosen in the lab, which the
Train page uses for every level that augments.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core import settings
from core.data.augment import AugmentConfig, preset
from core.atomic_files import atomic_write_json


def _state_path() -> Path:
    return settings.home_dir() / "workspace.json"


def _load() -> dict:
    try:
        data = json.loads(_state_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _update(**changes) -> None:
    atomic_write_json(_state_path(), {**_load(), **changes})


def active_data_dir() -> str | None:
    """The data set folder chosen in the app, or None for the default."""
    value = _load().get("data_dir")
    return value if value and Path(value).is_dir() else None


def set_active_data_dir(path: str | Path | None) -> None:
    _update(data_dir=str(path) if path else None)


def augment_settings() -> tuple[AugmentConfig, str]:
    """The lab's augmentation config and the preset it came from ("custom" once edited)."""
    data = _load()
    try:
        return AugmentConfig.from_dict(data["augment"]), data.get("augment_preset", "custom")
    except (KeyError, TypeError, ValueError):
        return preset("tutorial_train"), "tutorial_train"


def set_augment_settings(config: AugmentConfig, preset_name: str = "custom") -> None:
    _update(augment=config.to_dict(), augment_preset=preset_name)


def uploads_dir() -> Path:
    return settings.home_dir() / "datasets"


def install_uploaded_zip(data: bytes, name: str) -> Path:
    """Unpacks an uploaded data-set zip into its own folder and makes it the active data set."""
    from core.data.archives import extract_zip

    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name).stem)[:40] or "upload"
    target = uploads_dir() / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = extract_zip(data, target)
    set_active_data_dir(root)
    return root
