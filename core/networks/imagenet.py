"""ImageNet's 1000 classes, and how a data set's classes are made of them (level 0's grouping).

A grouping maps each class of the data set to a list of ImageNet class indices; level 0 scores each
class by the mean of the pretrained classifier's probabilities over its list (`ClassGroups`). Cats vs
dogs has one built in; for other data sets the user may give one (the Train page, or `--imagenet-classes`
on the CLI), or level 0 finds one from the training photos (`find_grouping`): what a person would do
by hand, looking at which ImageNet classes the network sees in each class's photos.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np

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
    """The grouping in the data set's class order, each class's ImageNet classes once each in the order
    given (a found grouping's most probable first); raises ConfigError saying what is wrong."""
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
    return {c: list(dict.fromkeys(int(i) for i in grouping[c])) for c in classes}  # in order, once each


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


#: The group sizes (ImageNet classes per class, at most) that `find_grouping` tries.
GROUP_SIZES = (1, 2, 5, 10, 20, 50, 100)
#: The size taken when a class has too few training photos to try them (fewer than two).
UNTRIED_GROUP_SIZE = 10


@dataclass(frozen=True)
class FoundGrouping:
    """A grouping found from a data set's training photos, and how well groups of its size did on
    training photos they were not found from."""

    grouping: dict[str, list[int]]  # each class's ImageNet classes, most probable first
    per_class: int  # the most ImageNet classes a class was given
    held_out_accuracy: float | None  # None when a class had too few photos to try sizes
    photos: int


def group_by_photos(probabilities: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int) -> list[list[int]]:
    """Each class's ImageNet classes, from its photos' ImageNet `probabilities` [N, 1000]: every ImageNet class
    goes to the class whose photos give it the highest mean probability, and each class keeps the `per_class`
    of those its photos give most. A class given none (its photos are like another class's, only less so)
    takes the ImageNet class its photos give most that no other class kept, so no class is left empty."""
    labels = np.asarray(labels)
    means = np.stack([probabilities[labels == c].mean(axis=0) if np.any(labels == c) else np.zeros(1000)
                      for c in range(num_classes)])
    owner = means.argmax(axis=0)
    groups = [[int(i) for i in np.argsort(-means[c], kind="stable") if owner[i] == c][:per_class]
              for c in range(num_classes)]
    for c, group in enumerate(groups):
        if not group:
            kept = {i for g in groups for i in g}
            group.append(next(int(i) for i in np.argsort(-means[c], kind="stable") if i not in kept))
    return groups


def describe_group(group: list[int], names: list[str] | None, shown: int = 4) -> str:
    """A group in words, its first classes by name: "vase, pot, picket fence, tray and 16 more"."""
    words = [names[i].replace("_", " ") if names else str(i) for i in group[:shown]]
    rest = len(group) - len(words)
    return ", ".join(words) + (f" and {rest} more" if rest > 0 else "")


def _grouped_accuracy(groups: list[list[int]], probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Level 0's accuracy with these groups: the class whose ImageNet classes have the highest mean probability."""
    scores = np.stack([probabilities[:, group].mean(axis=1) for group in groups], axis=1)
    return float(np.mean(scores.argmax(axis=1) == labels))


def find_grouping(probabilities: np.ndarray, labels: np.ndarray, classes: list[str], sizes=GROUP_SIZES,
                  repeats: int = 5, seed: int = 0) -> FoundGrouping:
    """A grouping for `classes` from the training photos' ImageNet `probabilities` [N, 1000] (`group_by_photos`).

    How many ImageNet classes a class should take depends on the data set: one may do where ImageNet has
    the very class, many where it has none and a class is recognised by what its photos tend to look
    like (flowers: vases, bees, fences). Each size is tried on halves of the photos (each class split in
    two, `repeats` times, each half scoring the groups found on the other); the smallest size within one
    standard error of the best is kept (shorter groups read better, and the best is partly luck), and
    the groups are found again from every photo.
    """
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] != 1000 or len(probabilities) != len(labels):
        raise ValueError(f"Expected [N, 1000] ImageNet probabilities for {len(labels)} photos, got {probabilities.shape}.")
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 2:
        per_class, held_out = UNTRIED_GROUP_SIZE, None
    else:
        rng = np.random.default_rng(seed)
        scores = {size: [] for size in sizes}
        for _ in range(repeats):
            half = np.zeros(len(labels), dtype=bool)
            for c in range(len(classes)):
                members = rng.permutation(np.flatnonzero(labels == c))
                half[members[: len(members) // 2]] = True
            for found, scored in ((half, ~half), (~half, half)):
                for size in sizes:
                    groups = group_by_photos(probabilities[found], labels[found], len(classes), size)
                    scores[size].append(_grouped_accuracy(groups, probabilities[scored], labels[scored]))
        means = {size: float(np.mean(values)) for size, values in scores.items()}
        best = max(means, key=means.get)
        error = float(np.std(scores[best], ddof=1) / np.sqrt(len(scores[best])))
        per_class = min(size for size in sizes if means[size] >= means[best] - error)
        held_out = means[per_class]
    groups = group_by_photos(probabilities, labels, len(classes), per_class)
    return FoundGrouping({name: group for name, group in zip(classes, groups)}, per_class, held_out, int(len(labels)))
