import os
from pathlib import Path

import pytest

from tests.helpers import SHARED, isolate_environment, make_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test writes under its own temp folder and ignores ../shared unless it asks for it."""
    return isolate_environment(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def dataset_factory(tmp_path_factory):
    cache = {}

    def make(**kwargs) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            cache[key] = make_dataset(tmp_path_factory.mktemp("data"), **kwargs)
        return cache[key]

    return make


@pytest.fixture
def dataset(dataset_factory) -> Path:
    """Two classes, 12 training and 6 validation images each, 64x64."""
    return dataset_factory()


@pytest.fixture
def app_env(dataset, monkeypatch):
    """The synthetic data set as the app's data set (pages read LITTLE_DATA_DATA_DIR)."""
    monkeypatch.setenv("LITTLE_DATA_DATA_DIR", str(dataset))
    return dataset


@pytest.fixture
def shared() -> Path:
    if not (SHARED / "datasets" / "cats_vs_dogs").is_dir():
        pytest.skip("../shared (real photos and weights) is not present beside the project")
    return SHARED


@pytest.fixture
def tiny_backbone(monkeypatch):
    """docs/architecture.md's example backbone, registered for one test."""
    from core.networks.backbones import BACKBONES
    from tests.registry_examples import TINY_BACKBONE

    monkeypatch.setitem(BACKBONES, TINY_BACKBONE.name, TINY_BACKBONE)
    return TINY_BACKBONE


@pytest.fixture
def seeded(monkeypatch, tmp_path):
    """A backbone with fixed weights (`SEEDED_BACKBONE`), registered, and a 'weights file' for it (its builder
    ignores the contents); returns that file's path."""
    from core.networks.backbones import BACKBONES
    from tests.registry_examples import SEEDED_BACKBONE

    monkeypatch.setitem(BACKBONES, SEEDED_BACKBONE.name, SEEDED_BACKBONE)
    weights = tmp_path / "seeded.weights.h5"
    weights.write_bytes(b"fixed seeds")
    return str(weights)


@pytest.fixture
def pixel_level(monkeypatch):
    """docs/architecture.md's example level, registered for one test."""
    from core.levels import LEVELS
    from tests.registry_examples import PIXEL_LEVEL

    monkeypatch.setitem(LEVELS, PIXEL_LEVEL.key, PIXEL_LEVEL)
    return PIXEL_LEVEL
