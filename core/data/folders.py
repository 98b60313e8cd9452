"""Image-folder data sets: find the root, check it, summarise it, take subsets and samples.

A data set is a folder with `train/<class>/` and `validation/<class>/` (and optionally
`test/<class>/`). Problems that make it unusable raise `DatasetError` with a message saying what to
fix; files that merely cannot be read are skipped and listed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.images import is_image_name, too_many_pixels
from core.errors import LittleDataError

SPLITS = ("train", "validation", "test")
REQUIRED_SPLITS = ("train", "validation")
UNLABELLED = "unlabelled"  # photos without a class yet, beside train/: "label these next" ranks them
IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
#: Beside train/: the photos whose label a person confirmed ("It's right"), so they are no longer suspects.
KEPT_LABELS = ".kept_labels.json"


class DatasetError(LittleDataError, ValueError):
    """A data set that cannot be used as it is; the message says what to do."""


@dataclass
class DatasetSummary:
    """What is in a data set folder.

    Attributes:
        root: the folder holding `train/` and `validation/`.
        classes: class names, sorted; a label is an index into this list.
        files: split -> list of (absolute path, label), readable images only.
        unreadable: (relative path, reason) of images that cannot be decoded; they are skipped.
        ignored: relative paths of files that are not images (skipped).
        fingerprint: a hash of every image's relative path and bytes, for caches.
        source: where the data came from, in words.
        unlabelled: readable images in `unlabelled/` (not part of the fingerprint: no model learns
            from them until they have a class).
    """

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    fingerprint: str = ""
    source: str = ""
    unlabelled: list[Path] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if self.files.get(s)]

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> class -> number of readable images."""
        out = {}
        for split in self.splits:
            per_class = dict.fromkeys(self.classes, 0)
            for _, label in self.files[split]:
                per_class[self.classes[label]] += 1
            out[split] = per_class
        return out

    def to_dict(self) -> dict:
        return {"root": str(self.root), "source": self.source, "classes": self.classes,
                "counts": self.counts(), "fingerprint": self.fingerprint,
                "unreadable": [list(u) for u in self.unreadable], "ignored": self.ignored,
                "unlabelled": len(self.unlabelled)}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_NAMES)


def find_root(folder: str | Path) -> Path:
    """The folder holding `train/` and `validation/`: `folder` itself or one level below it.

    Raises:
        DatasetError: no such folder, or no `train/` + `validation/` pair found.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder.")
    candidates = [folder] + _visible_dirs(folder)
    for candidate in candidates:
        if all((candidate / split).is_dir() for split in REQUIRED_SPLITS):
            return candidate
    raise DatasetError(
        f"{folder} has no train/ and validation/ folders. Expected train/<class>/*.jpg and "
        "validation/<class>/*.jpg (a single top folder around them is fine).")


def _check_header(path: Path) -> str | None:
    """A cheap validity check (header and declared size); None when it looks like an image."""
    try:
        if path.stat().st_size == 0:
            return "the file is empty"
        with Image.open(path) as image:
            width, height = image.size
            if too_many_pixels(image):  # as `load_image` decodes it: a 108 MP JPEG at reduced scale
                return f"declares {width}x{height} pixels"
        return None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"not a readable image ({type(exc).__name__})"


def summarize(folder: str | Path, source: str = "") -> DatasetSummary:
    """Scans a data set folder and checks it can be trained on.

    Raises:
        DatasetError: fewer than two classes, a class without images, or a class present in
            `train/` but missing from `validation/` (or the reverse).
    """
    root = find_root(folder)
    classes = [p.name for p in _visible_dirs(root / "train")]
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DatasetError(f"train/ needs at least two class folders; found {found}.")
    summary = DatasetSummary(root=root, classes=classes, files={}, source=source or str(root))
    digest = hashlib.sha256()
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        split_classes = [p.name for p in _visible_dirs(split_dir)]
        missing = sorted(set(classes) - set(split_classes))
        extra = sorted(set(split_classes) - set(classes))
        if missing:
            raise DatasetError(f"{split}/ has no folder for class(es) {', '.join(missing)} that train/ has.")
        if extra:
            raise DatasetError(f"{split}/ has class folder(s) {', '.join(extra)} that train/ lacks.")
        entries = []
        for label, name in enumerate(classes):
            class_files = 0
            for path in sorted((split_dir / name).rglob("*")):
                rel = path.relative_to(root).as_posix()
                if not path.is_file() or any(part.startswith(".") or part in IGNORED_NAMES
                                             for part in path.relative_to(root).parts):
                    continue
                if not is_image_name(path.name):
                    summary.ignored.append(rel)
                    continue
                problem = _check_header(path)
                if problem:
                    summary.unreadable.append((rel, problem))
                    continue
                entries.append((path, label))
                class_files += 1
                digest.update(rel.encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            if class_files == 0:
                raise DatasetError(f"{split}/{name}/ has no readable images.")
        summary.files[split] = entries
    summary.fingerprint = digest.hexdigest()[:16]
    summary.unlabelled = unlabelled_photos(root)
    return summary


def unlabelled_photos(root: str | Path, check_headers: bool = True) -> list[Path]:
    """The image files under `root/unlabelled/` (any depth), oldest first; with `check_headers`, those
    whose header cannot be read are left out (the app's own uploads were decoded when they arrived)."""
    folder = Path(root) / UNLABELLED
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*"):
        if (path.is_file() and is_image_name(path.name)
                and not any(part.startswith(".") or part in IGNORED_NAMES for part in path.relative_to(folder).parts)
                and (not check_headers or _check_header(path) is None)):
            try:
                found.append((path.stat().st_mtime, path.name, path))
            except OSError:
                continue  # gone while listing (labelled from another session)
    return [path for *_, path in sorted(found)]


def first_per_class(summary: DatasetSummary, per_class: int) -> DatasetSummary:
    """Every split cut to its first `per_class` images of each class (quick demos, tests)."""
    files = {}
    for split, entries in summary.files.items():
        kept, seen = [], {}
        for path, label in entries:
            if seen.get(label, 0) < per_class:
                kept.append((path, label))
                seen[label] = seen.get(label, 0) + 1
        files[split] = kept
    digest = hashlib.sha256(f"{summary.fingerprint}-{per_class}".encode()).hexdigest()[:16]
    return replace(summary, files=files, fingerprint=digest)


def training_subset(summary: DatasetSummary, per_class: int, seed: int) -> DatasetSummary:
    """A seeded random `per_class` training images of each class; the other splits whole.

    The same (data set, size, seed) always gives the same photos, whichever level asks, so the
    data-efficiency curve compares levels on identical subsets.

    Raises:
        DatasetError: a class has fewer training images than asked for.
    """
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for path, label in summary.files["train"]:
        by_class.setdefault(label, []).append((path, label))
    short = [summary.classes[label] for label, entries in sorted(by_class.items()) if len(entries) < per_class]
    if short:
        raise DatasetError(f"{', '.join(short)} has fewer than {per_class} training images.")
    kept = []
    for label, entries in sorted(by_class.items()):
        rng = np.random.default_rng([seed, per_class, label])
        kept += [entries[i] for i in sorted(rng.choice(len(entries), per_class, replace=False))]
    digest = hashlib.sha256(f"{summary.fingerprint}-train{per_class}-seed{seed}".encode()).hexdigest()[:16]
    return replace(summary, files={**summary.files, "train": kept}, fingerprint=digest)


def sample_paths(summary: DatasetSummary, split: str = "validation", per_class: int = 3,
                 seed: int | None = None) -> list[Path]:
    """A few image paths per class (from `split`, else train), for examples and thumbnails."""
    rng = random.Random(seed)
    by_class: dict[int, list[Path]] = {}
    for path, label in summary.files.get(split) or summary.files["train"]:
        by_class.setdefault(label, []).append(path)
    picked = []
    for label in sorted(by_class):
        paths = by_class[label]
        picked += rng.sample(paths, min(per_class, len(paths)))
    return picked
