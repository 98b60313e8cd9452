"""Synthetic data for tests: small images of visibly different classes, and broken files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"

#: Settings a test must not inherit from the machine it runs on.
INHERITED_SETTINGS = ("LITTLE_DATA_MODELS_DIR", "LITTLE_DATA_CACHE_DIR", "LITTLE_DATA_JOBS_DIR", "LITTLE_DATA_DATA_DIR",
                      "LITTLE_DATA_WEIGHTS_DIR", "LITTLE_DATA_DATASET_URL")


def isolate_environment(monkeypatch, root: Path) -> Path:
    """Everything Little Data writes goes under `root/home`, and ../shared is ignored; returns the home.

    `monkeypatch` is the `monkeypatch` fixture or a `pytest.MonkeyPatch.context()` (for wider-scoped fixtures).
    """
    home = root / "home"
    monkeypatch.setenv("LITTLE_DATA_HOME", str(home))
    for name in INHERITED_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LITTLE_DATA_SHARED_DIR", str(root / "no-shared"))
    # Level 1's separate judge would build EfficientNet-Lite2 for every tiny test model; tests that
    # exercise it set a small backbone instead.
    monkeypatch.setenv("LITTLE_DATA_JUDGE_BACKBONE", "none")
    # The reference machine's speed figures, so that estimates are the same everywhere and no page or
    # worker spends seconds measuring this one (tests of the measuring use their own folders).
    from core.training.estimate import REFERENCE_CONVNET_IMAGES_PER_SECOND, REFERENCE_GFLOPS

    (home / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache" / "machine.json").write_text(json.dumps(
        {"matmul_gflops": REFERENCE_GFLOPS, "convnet_images_per_second": REFERENCE_CONVNET_IMAGES_PER_SECOND}))
    return home

# Each class is a shape in a colour family, so even a tiny convnet separates them.
CLASS_STYLES = {
    "circles": ((220, 60, 40), "ellipse"),
    "squares": ((40, 90, 220), "rectangle"),
    "triangles": ((40, 180, 60), "polygon"),
}


def make_image(cls: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    colour, shape = CLASS_STYLES[cls]
    background = tuple(int(v) for v in rng.integers(200, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    lo, hi = int(size * rng.uniform(0.1, 0.25)), int(size * rng.uniform(0.75, 0.9))
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    if shape == "polygon":
        draw.polygon([(lo, hi), (hi, hi), ((lo + hi) // 2, lo)], fill=fill)
    else:
        getattr(draw, shape)([lo, lo, hi, hi], fill=fill)
    noise = rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))


def make_dataset(root: Path, classes=("circles", "squares"), n_train: int = 12, n_val: int = 6,
                 seed: int = 0, size: int = 64, broken: bool = False) -> Path:
    """Writes train/ and validation/ class folders of JPEGs; `broken` adds unreadable files."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("validation", n_val)):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                make_image(cls, rng, size).save(folder / f"{cls}.{i}.jpg", quality=90)
    if broken:
        (root / "train" / classes[0] / "zero.jpg").write_bytes(b"")
        (root / "train" / classes[0] / "random.jpg").write_bytes(rng.bytes(2048))
        good = (root / "train" / classes[1] / f"{classes[1]}.0.jpg").read_bytes()
        (root / "train" / classes[1] / "truncated.jpg").write_bytes(good[: len(good) // 3])
        (root / "train" / classes[1] / "notes.txt").write_text("not an image")
        (root / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def train_tiny_store(root: Path, data: Path, epochs: int = 1) -> Path:
    """Tiny models for levels 1 and 2 (random-weight mobilenet_025, 32x32) trained on `data` in a
    home of their own under `root`; returns that store's folder (for module-wide fixtures)."""
    import pytest

    from core.training.loop import TrainConfig, train

    with pytest.MonkeyPatch.context() as patch:
        home = isolate_environment(patch, root)
        patch.setenv("LITTLE_DATA_DATA_DIR", str(data))
        common = dict(epochs=epochs, batch_size=8, image_size=(32, 32), data_dir=str(data))
        train(TrainConfig(level=1, **common))
        train(TrainConfig(level=2, backbone="mobilenet_025", weights="none", **common))
    return home / "models"


def use_store_copy(store: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of `store` as this test's model store: a test may add, delete or rewrite models."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(store, models)
    monkeypatch.setenv("LITTLE_DATA_MODELS_DIR", str(models))
    return models
