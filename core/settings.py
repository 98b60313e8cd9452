"""Where Little Data finds data, weights and models, and where it writes.

Every setting is an environment variable; the CLI flags override them. Paths default to a
`var/` folder inside the project, so a fresh clone works without any configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The tutorial's data set, as TensorFlow publishes it (1000+1000 train, 500+500 validation).
DEFAULT_DATASET_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


def _path_env(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else default


def home_dir() -> Path:
    """Root of everything Little Data writes (`LITTLE_DATA_HOME`, default `./var`)."""
    return _path_env("LITTLE_DATA_HOME", PROJECT_ROOT / "var")


def models_dir() -> Path:
    """The model store (`LITTLE_DATA_MODELS_DIR`, default `$LITTLE_DATA_HOME/models`)."""
    return _path_env("LITTLE_DATA_MODELS_DIR", home_dir() / "models")


def cache_dir() -> Path:
    """Decoded images and bottleneck features (`LITTLE_DATA_CACHE_DIR`)."""
    return _path_env("LITTLE_DATA_CACHE_DIR", home_dir() / "cache")


def jobs_dir() -> Path:
    """Training-job state shared by the app and its worker processes."""
    return _path_env("LITTLE_DATA_JOBS_DIR", home_dir() / "jobs")


def shared_dir() -> Path | None:
    """The offline material folder (`LITTLE_DATA_SHARED_DIR`, default `../shared` when present)."""
    path = _path_env("LITTLE_DATA_SHARED_DIR", PROJECT_ROOT.parent / "shared")
    return path if path.is_dir() else None


def data_dir_setting() -> Path | None:
    """An explicit data set folder (`LITTLE_DATA_DATA_DIR`), or None for the default data set."""
    value = os.environ.get("LITTLE_DATA_DATA_DIR", "").strip()
    return Path(value).expanduser() if value else None


def dataset_url() -> str:
    """Where the default data set is downloaded from (`LITTLE_DATA_DATASET_URL`)."""
    return os.environ.get("LITTLE_DATA_DATASET_URL", "").strip() or DEFAULT_DATASET_URL


def weights_setting(backbone: str) -> str | None:
    """Per-backbone weights (`LITTLE_DATA_WEIGHTS_<BACKBONE>`): "imagenet", "none" or a file."""
    value = os.environ.get(f"LITTLE_DATA_WEIGHTS_{backbone.upper()}", "").strip()
    return value or None


def fold_batch_norm() -> bool:
    """Whether frozen batch norm is folded into convolutions for speed (`LITTLE_DATA_FOLD_BATCH_NORM`, default 1)."""
    return os.environ.get("LITTLE_DATA_FOLD_BATCH_NORM", "1").strip().lower() not in ("0", "false", "no", "off")


def keras_home() -> Path:
    """Keras' own cache folder (`KERAS_HOME`, default ~/.keras), where it keeps downloaded weights."""
    return _path_env("KERAS_HOME", Path("~/.keras").expanduser())


def weights_dirs() -> list[Path]:
    """Folders searched for local ImageNet weight files before Keras downloads them.

    `LITTLE_DATA_WEIGHTS_DIR` (os.pathsep-separated), then `<shared>/weights` and its Keras cache.
    """
    dirs = [Path(p).expanduser() for p in os.environ.get("LITTLE_DATA_WEIGHTS_DIR", "").split(os.pathsep) if p]
    shared = shared_dir()
    if shared is not None:
        dirs += [shared / "weights", shared / "weights" / "keras_cache" / "models"]
    return [d for d in dirs if d.is_dir()]


# Input limits: what one upload or one data-set image may cost us.
MAX_UPLOAD_BYTES = int(os.environ.get("LITTLE_DATA_MAX_UPLOAD_MB", "25")) * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000  # a 20-megapixel photo is fine; a 30000x30000 bomb is not
MAX_ZIP_BYTES = int(os.environ.get("LITTLE_DATA_MAX_ZIP_MB", "1024")) * 1024 * 1024  # uncompressed
MAX_ZIP_FILES = 50_000
MAX_ZIP_RATIO = 200  # uncompressed/compressed, per entry: JPEGs hardly compress, bombs do
