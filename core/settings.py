"""Every setting of Little Data, defined once: where it finds data, weights and models, where it
writes, and the limits on what one upload may cost.

Each setting is an environment variable, read when it is used (never at import), so a test or a
worker that changes the environment sees the change. `SETTINGS` is the one table: the README's
settings table is checked against it by a test, and `worker_environment()` derives from it what Ray
workers must inherit. The CLI's flags override the settings they name. Paths default to a `var/`
folder inside the project, so a fresh clone works without any configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The tutorial's data set, as TensorFlow publishes it (1000+1000 train, 500+500 validation).
DEFAULT_DATASET_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


def _flag(text: str) -> bool:
    return text.strip().lower() not in ("0", "false", "no", "off")


def _megabytes(text: str) -> int:
    return int(float(text) * 1024 * 1024)


def _engine(text: str) -> str:
    if text.lower() not in ("onnxruntime", "tensorflow"):
        raise ValueError("use onnxruntime or tensorflow")
    return text.lower()


def _text(text: str) -> str:
    return text


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, its default as written in the environment, how it is
    parsed, and one line of meaning. A name ending in `<BACKBONE>` is a family (one per backbone)."""

    name: str
    default: str
    meaning: str
    parse: Callable[[str], object] = _text
    #: Whether Ray workers inherit it: everything that changes what a worker reads, computes or writes.
    forwarded: bool = True

    @property
    def is_family(self) -> bool:
        return self.name.endswith(">")

    @property
    def prefix(self) -> str:
        return self.name.split("<")[0]

    def raw(self, suffix: str = "") -> str:
        """The value as written in the environment (stripped), or the default when unset or empty."""
        value = os.environ.get(self.prefix + suffix.upper() if self.is_family else self.name, "").strip()
        return value or self.default

    def value(self, suffix: str = ""):
        """The parsed value, read now."""
        raw = self.raw(suffix)
        try:
            return self.parse(raw) if raw else None
        except ValueError as exc:
            raise ValueError(f"{self.name}={raw!r} is not valid: {exc}") from exc

    def matches(self, variable: str) -> bool:
        return variable.startswith(self.prefix) if self.is_family else variable == self.name


def _table(*settings: Setting) -> dict[str, Setting]:
    return {setting.name: setting for setting in settings}


SETTINGS: dict[str, Setting] = _table(
    Setting("LITTLE_DATA_HOME", "", "Root of everything Little Data writes (default: `var/` in the project)."),
    Setting("LITTLE_DATA_MODELS_DIR", "", "The model store (default: `$LITTLE_DATA_HOME/models`)."),
    Setting("LITTLE_DATA_CACHE_DIR", "", "Decoded photos, bottleneck features, downloads and curve points "
                                         "(default: `$LITTLE_DATA_HOME/cache`)."),
    Setting("LITTLE_DATA_JOBS_DIR", "", "Background jobs' state, shared by the app and its workers "
                                        "(default: `$LITTLE_DATA_HOME/jobs`)."),
    Setting("LITTLE_DATA_DATA_DIR", "", "A data set folder to use instead of the default (`train/<class>/`, "
                                        "`validation/<class>/`)."),
    Setting("LITTLE_DATA_DATASET_URL", DEFAULT_DATASET_URL, "Where the default data set is downloaded from."),
    Setting("LITTLE_DATA_SHARED_DIR", "", "The offline material folder: photos and weights "
                                          "(default: `../shared` when it exists)."),
    Setting("LITTLE_DATA_WEIGHTS_DIR", "", "Folders (separated by `:`) searched for ImageNet weight files "
                                           "before Keras downloads them."),
    Setting("LITTLE_DATA_WEIGHTS_<BACKBONE>", "", "One backbone's weights: `imagenet`, `none` or a file "
                                                  "(e.g. `LITTLE_DATA_WEIGHTS_VGG16=/path/vgg16.h5`)."),
    Setting("LITTLE_DATA_FOLD_BATCH_NORM", "1", "Fold frozen batch norm into convolutions for speed "
                                                "(`0` turns it off; answers are the same).", _flag),
    Setting("LITTLE_DATA_SERVING_ENGINE", "onnxruntime", "What runs the pretrained layers that levels share when "
                                                         "answering photos: `onnxruntime` (checked against TensorFlow "
                                                         "first; faster on a CPU) or `tensorflow`.", _engine),
    Setting("LITTLE_DATA_JUDGE_BACKBONE", "efficientnet_lite2", "The network whose ImageNet features judge \"none of "
                                                                "these\" for models without one (level 1); `none`: no judge."),
    Setting("LITTLE_DATA_RAY_ADDRESS", "", "The Ray cluster for sweeps, curves and multi-worker training "
                                           "(`auto`, `ray://HOST:10001`; default: a local instance).",
            forwarded=False),
    Setting("LITTLE_DATA_MAX_UPLOAD_MB", "50", "The largest photo one upload may be (a 200-megapixel phone JPEG is 20-50 MB).", _megabytes),
    Setting("LITTLE_DATA_MAX_ZIP_MB", "1024", "The most a data-set zip may unpack to.", _megabytes),
    Setting("LITTLE_DATA_MAX_PHOTOS_PER_CLASS", "5000", "The most photos one class of an in-app data set "
                                                        "may hold.", int),
    Setting("LITTLE_DATA_MAX_DATASET_MB", "2048", "The most an in-app data set may hold on disk.", _megabytes),
    Setting("KERAS_HOME", "~/.keras", "Keras' own cache, where it keeps downloaded weights.", _text),
)

# Fixed limits: what one data-set image or archive entry may cost us.
MAX_IMAGE_PIXELS = 64_000_000  # decoded pixels (JPEGs at reduced scale): a 200-megapixel phone JPEG is fine, a 30000x30000 PNG bomb is not
MAX_ZIP_FILES = 50_000
MAX_ZIP_RATIO = 200  # uncompressed/compressed, per entry: JPEGs hardly compress, bombs do


def _path(name: str, default: Path) -> Path:
    raw = SETTINGS[name].raw()
    return Path(raw).expanduser() if raw else default


def home_dir() -> Path:
    """Root of everything Little Data writes (`LITTLE_DATA_HOME`, default `./var`)."""
    return _path("LITTLE_DATA_HOME", PROJECT_ROOT / "var")


def models_dir() -> Path:
    """The model store (`LITTLE_DATA_MODELS_DIR`, default `$LITTLE_DATA_HOME/models`)."""
    return _path("LITTLE_DATA_MODELS_DIR", home_dir() / "models")


def cache_dir() -> Path:
    """Decoded images and bottleneck features (`LITTLE_DATA_CACHE_DIR`)."""
    return _path("LITTLE_DATA_CACHE_DIR", home_dir() / "cache")


def jobs_dir() -> Path:
    """Training-job state shared by the app and its worker processes."""
    return _path("LITTLE_DATA_JOBS_DIR", home_dir() / "jobs")


def shared_dir() -> Path | None:
    """The offline material folder (`LITTLE_DATA_SHARED_DIR`, default `../shared` when present)."""
    path = _path("LITTLE_DATA_SHARED_DIR", PROJECT_ROOT.parent / "shared")
    return path if path.is_dir() else None


def data_dir_setting() -> Path | None:
    """An explicit data set folder (`LITTLE_DATA_DATA_DIR`), or None for the default data set."""
    raw = SETTINGS["LITTLE_DATA_DATA_DIR"].raw()
    return Path(raw).expanduser() if raw else None


def offline_dataset_dir() -> Path | None:
    """The offline copy of cats vs dogs in the shared folder, when it is there."""
    shared = shared_dir()
    folder = shared / "datasets" / "cats_vs_dogs" if shared is not None else None
    return folder if folder is not None and folder.is_dir() else None


def dataset_url() -> str:
    """Where the default data set is downloaded from (`LITTLE_DATA_DATASET_URL`)."""
    return SETTINGS["LITTLE_DATA_DATASET_URL"].raw()


def weights_setting(backbone: str) -> str | None:
    """Per-backbone weights (`LITTLE_DATA_WEIGHTS_<BACKBONE>`): "imagenet", "none" or a file."""
    return SETTINGS["LITTLE_DATA_WEIGHTS_<BACKBONE>"].raw(backbone) or None


def fold_batch_norm() -> bool:
    """Whether frozen batch norm is folded into convolutions for speed (`LITTLE_DATA_FOLD_BATCH_NORM`, default 1)."""
    return SETTINGS["LITTLE_DATA_FOLD_BATCH_NORM"].value()


def serving_engine() -> str:
    """What runs the shared pretrained layers when answering photos (`LITTLE_DATA_SERVING_ENGINE`)."""
    return SETTINGS["LITTLE_DATA_SERVING_ENGINE"].value()


def ray_address() -> str | None:
    """The Ray cluster to use when none is given (`LITTLE_DATA_RAY_ADDRESS`); None: a local instance."""
    return SETTINGS["LITTLE_DATA_RAY_ADDRESS"].raw() or None


def judge_backbone() -> str | None:
    """The backbone that judges novelty for models without a pretrained network, or None (`LITTLE_DATA_JUDGE_BACKBONE`)."""
    value = SETTINGS["LITTLE_DATA_JUDGE_BACKBONE"].raw()
    return None if value.lower() == "none" else value


def keras_home() -> Path:
    """Keras' own cache folder (`KERAS_HOME`, default ~/.keras), where it keeps downloaded weights."""
    return Path(SETTINGS["KERAS_HOME"].raw()).expanduser()


def max_upload_bytes() -> int:
    """The largest photo one upload may be (`LITTLE_DATA_MAX_UPLOAD_MB`)."""
    return SETTINGS["LITTLE_DATA_MAX_UPLOAD_MB"].value()


def max_zip_bytes() -> int:
    """The most a data-set zip may unpack to (`LITTLE_DATA_MAX_ZIP_MB`)."""
    return SETTINGS["LITTLE_DATA_MAX_ZIP_MB"].value()


def max_photos_per_class() -> int:
    """The most photos one class of an in-app data set may hold (`LITTLE_DATA_MAX_PHOTOS_PER_CLASS`)."""
    return SETTINGS["LITTLE_DATA_MAX_PHOTOS_PER_CLASS"].value()


def max_dataset_bytes() -> int:
    """The most an in-app data set may hold on disk (`LITTLE_DATA_MAX_DATASET_MB`)."""
    return SETTINGS["LITTLE_DATA_MAX_DATASET_MB"].value()


def weights_dirs() -> list[Path]:
    """Folders searched for local ImageNet weight files before Keras downloads them.

    `LITTLE_DATA_WEIGHTS_DIR` (os.pathsep-separated), then `<shared>/weights` and its Keras cache.
    """
    raw = SETTINGS["LITTLE_DATA_WEIGHTS_DIR"].raw()
    dirs = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
    shared = shared_dir()
    if shared is not None:
        dirs += [shared / "weights", shared / "weights" / "keras_cache" / "models"]
    return [d for d in dirs if d.is_dir()]


def worker_environment() -> dict[str, str]:
    """What a worker on another process or machine must inherit: every forwarded setting that is set
    here (families included), with this process's home made absolute."""
    forwarded = [s for s in SETTINGS.values() if s.forwarded]
    env = {name: value for name, value in os.environ.items() if any(s.matches(name) for s in forwarded)}
    env["LITTLE_DATA_HOME"] = str(home_dir().resolve())
    return env
