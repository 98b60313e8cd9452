"""State the app's pages share and that must survive a reload: which data set is active, and the
augmentation settings chosen in the lab (used by training levels 1 and 3). Plus the helpers the
pages call: time estimates, predictions from every level, sample images.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from core import settings
from core.augment import AugmentConfig, preset
from core.storage import atomic_write_json


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
    from core.datasets import extract_zip

    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name).stem)[:40] or "upload"
    target = uploads_dir() / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = extract_zip(data, target)
    set_active_data_dir(root)
    return root


# --- How long will it take? -------------------------------------------------------------------

# Seconds per image per GFLOP of forward pass, measured with `python -m core bench` on the
# 2-core reference machine (TensorFlow matmul ~220 GFLOP/s), scaled to this machine's speed.
REFERENCE_GFLOPS = 220.0
# Calibrated on cats vs dogs (2000 train / 800 validation): level 1 ~11 s per epoch at 150x150,
# MobileNetV2 extraction ~115 images/s, level 3 ~31 s per epoch at 224x224.
_COST = {
    1: {"train": 0.029, "eval": 0.007},  # small convnet: forward + backward, augmentation
    2: {"extract": 0.0145, "head_epoch": 0.02},  # head epochs on cached features cost ~seconds
    3: {"train": 0.022, "eval": 0.0097},  # frozen base forward, backward through the top block only
}
DECODE_SECONDS_PER_IMAGE = 0.003  # first run only: JPEG decode + resize into the cache


@dataclass
class Estimate:
    seconds: float
    detail: str


def machine_gflops() -> float:
    """This machine's matmul GFLOP/s, measured once and remembered."""
    path = settings.cache_dir() / "machine.json"
    try:
        return float(json.loads(path.read_text())["matmul_gflops"])
    except (OSError, ValueError, KeyError):
        from core.bench import measure_matmul_gflops

        gflops = measure_matmul_gflops()
        atomic_write_json(path, {"matmul_gflops": gflops})
        return gflops


def estimate(config, n_train: int, n_val: int, gflops: float | None = None) -> Estimate:
    """Rough wall time of a training run on this machine, before starting it."""
    from core.training import TrainConfig  # noqa: F401 - for the type

    config = config.resolved()
    speed = REFERENCE_GFLOPS / (gflops or machine_gflops())
    decode = (n_train + n_val) * DECODE_SECONDS_PER_IMAGE
    views = 2 if config.flip_average else 1  # the final scoring pass, with mirror images or not
    h, w = config.image_size
    if config.level == 1:
        gf = 0.178 * (h * w) / (150 * 150)
        per_epoch = (n_train * _COST[1]["train"] + n_val * _COST[1]["eval"]) * gf * speed
        score = n_val * views * _COST[1]["eval"] * gf * speed
        return Estimate(per_epoch * config.epochs + score + decode, f"{_about(per_epoch)} per epoch")
    from core.backbones import get_backbone

    native = get_backbone(config.backbone).image_size
    gf = {"mobilenet_v2": 0.6, "mobilenet_025": 0.08, "vgg16": 13.2 * 224 * 224 / (150 * 150)}[config.backbone]
    gf *= (h * w) / (native[0] * native[1]) if config.backbone != "vgg16" else (h * w) / (224 * 224)
    if config.level == 2:
        extract = (n_train + n_val) * _COST[2]["extract"] * gf * speed
        head = config.epochs * _COST[2]["head_epoch"] * n_train / 100 * speed
        score = n_val * views * _COST[2]["extract"] * gf * speed
        return Estimate(extract + head + score + decode, f"{_about(extract)} extracting features (once; cached after), "
                                        f"{_about(head)} training the classifier")
    per_epoch = (n_train * _COST[3]["train"] + n_val * _COST[3]["eval"]) * gf * speed
    score = n_val * views * _COST[3]["eval"] * gf * speed
    return Estimate(per_epoch * config.epochs + score + decode, f"{_about(per_epoch)} per epoch")


def _about(seconds: float) -> str:
    return "under 1 s" if seconds < 1 else f"~{format_duration(seconds)}"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 90:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# --- Prediction from every level --------------------------------------------------------------

def latest_per_level(store=None) -> dict:
    """level -> newest usable ModelEntry (cards only; nothing is loaded)."""
    from core.store import ModelStore

    store = store or ModelStore()
    latest = {}
    for entry in store.list().models:
        latest.setdefault(entry.level, entry)
    return dict(sorted(latest.items()))


def sample_paths(summary, split: str = "validation", per_class: int = 3, seed: int | None = None) -> list[Path]:
    """A few image paths per class, for "try an example" buttons and thumbnails."""
    rng = random.Random(seed)
    by_class: dict[int, list[Path]] = {}
    for path, label in summary.files.get(split) or summary.files["train"]:
        by_class.setdefault(label, []).append(path)
    picked = []
    for label in sorted(by_class):
        paths = by_class[label]
        picked += rng.sample(paths, min(per_class, len(paths)))
    return picked
