"""ImageNet's 1000 classes, and how a data set's classes are made of them (level 0's grouping).

A grouping maps each class of the data set to a list of ImageNet class indices; level 0 scores each
class by the mean of the pretrained classifier's probabilities over its list (`ClassGroups`). Cats vs
dogs has one built in; for other data sets the user gives one (the Train page, or `--imagenet-classes`
on the CLI).
"""

from __future__ import annotations

import json
import re
from enum import Enum
from functools import lru_cache
from pathlib import Path

from core import settings
from core.errors import ConfigError

#: Where Keras' `decode_predictions` downloads the class index from.
CLASS_INDEX_URL = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
CLASS_INDEX_FILE = "imagenet_class_index.json"

#: ImageNet's domestic dog breeds (151-268, Chihuahua ... Mexican hairless), and its house cats (281-285:
#: tabby, tiger cat, Persian, Siamese, Egyptian cat). Level 0 scores a group by its mean probability, so
#: the wild cats (286-293: cougar, lynx, ... cheetah) would only dilute the cats' mean: the wild cats were
#: in while level 0 summed (a house cat is often called a lynx). Chosen on the training photos with
#: `scripts/level0_grouping.py` (see docs/design.md, "Level 0").
DOGS = list(range(151, 269))
CATS = list(range(281, 286))
BUILT_IN = {frozenset({"cat", "dog"}): {"cat": CATS, "dog": DOGS}}


class GroupScore(str, Enum):
    """How level 0 scores a class from its ImageNet group (`core.networks.layers.ClassGroups` explains both)."""

    MEAN = "mean"  # what level 0 builds
    SUM = "sum"  # level-0 models built before the mean: their layer config and card do not say


def _singular(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith("s") else name


def default_grouping(classes: list[str]) -> dict[str, list[int]] | None:
    """The built-in grouping for these class names (e.g. cats/dogs, Cat/Dog), or None."""
    key = frozenset(_singular(c) for c in classes)
    grouping = BUILT_IN.get(key)
    if grouping is None or len(key) != len(classes):
        return None
    return {c: list(grouping[_singular(c)]) for c in classes}


def check_grouping(grouping: dict[str, list[int]], classes: list[str]) -> dict[str, list[int]]:
    """The grouping in the data set's class order; raises ConfigError saying what is wrong."""
    missing = [c for c in classes if not grouping.get(c)]
    if missing:
        raise ConfigError(f"Give ImageNet classes for {', '.join(missing)} (each class needs at least one).")
    extra = sorted(set(grouping) - set(classes))
    if extra:
        raise ConfigError(f"The data set has no class {', '.join(extra)}; its classes are {', '.join(classes)}.")
    seen: dict[int, str] = {}
    for name in classes:
        for index in grouping[name]:
            if not 0 <= int(index) < 1000:
                raise ConfigError(f"ImageNet class indices run from 0 to 999, got {index} for {name}.")
            if index in seen and seen[index] != name:
                raise ConfigError(f"ImageNet class {index} is given for both {seen[index]} and {name}.")
            seen[index] = name
    return {c: sorted({int(i) for i in grouping[c]}) for c in classes}


def parse_grouping(specs: list[str]) -> dict[str, list[int]]:
    """CLI form to a grouping: ["cats=281-285", "dogs=151-268,273"] -> {"cats": [...], "dogs": [...]}."""
    grouping: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, ranges = spec.partition("=")
        if not sep or not name.strip() or not re.fullmatch(r"\s*\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*\s*", ranges):
            raise ConfigError(f"Expected CLASS=INDICES such as cats=281-285 or dogs=151-268,273; got {spec!r}.")
        indices = grouping.setdefault(name.strip(), [])
        for part in ranges.split(","):
            low, _, high = part.strip().partition("-")
            indices += list(range(int(low), int(high or low) + 1))
    return grouping


def class_names(download: bool = True) -> list[str]:
    """ImageNet's 1000 class names, by index: a local copy if there is one, else Keras' download.

    Args:
        download: fetch the file (35 kB) when no local copy exists; pages pass False and offer a button.

    Raises:
        ConfigError: the file cannot be had (offline, or not downloading, and no local copy).
    """
    for folder in [*settings.weights_dirs(), Path(settings.keras_home()) / "models"]:
        if (folder / CLASS_INDEX_FILE).is_file():
            return _read(folder / CLASS_INDEX_FILE)
    if not download:
        raise ConfigError(f"ImageNet's class names ({CLASS_INDEX_FILE}) are not on this machine yet.")
    try:
        import keras

        return _read(Path(keras.utils.get_file(CLASS_INDEX_FILE, CLASS_INDEX_URL, cache_subdir="models")))
    except Exception as exc:  # noqa: BLE001 - offline, HTTP errors: all mean "not available"
        raise ConfigError(f"ImageNet's class names could not be loaded ({type(exc).__name__}). Put "
                          f"{CLASS_INDEX_FILE} in a folder named by LITTLE_DATA_WEIGHTS_DIR.") from exc


@lru_cache(maxsize=4)
def _read(path: Path) -> list[str]:
    index = json.loads(path.read_text())
    return [index[str(i)][1] for i in range(1000)]
