"""Data sets built in the app: name the classes, add photos (files or camera shots), correct them.

A built data set is an ordinary data-set folder (`train/<class>/`, `validation/<class>/`) under
the app's home, so every level, the CLI and the tests use it unchanged. Beside the photos it keeps
`dataset.json` (its classes and split settings) and `.history.json` (what can be undone); deleted
photos wait in `.trash/` until a later edit pushes them out of the undo history.

The validation split is stratified and stable: each new photo goes to validation while its class
has fewer validation photos than `validation_fraction` of its photos (at least one as soon as the
class has two), in a seeded order, so adding photos never moves the ones already placed. Removing
or moving photos only moves another photo when a class would otherwise have no photo on one side.

`EditableDataset` also offers the corrections (move to another class, remove, undo) for data sets
the app unpacked from a zip; folders elsewhere on the machine, and `../shared`, are never edited.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from core.atomic_files import atomic_write, atomic_write_json
from core.data.folders import IGNORED_NAMES, KEPT_LABELS, UNLABELLED, DatasetError, unlabelled_photos
from core.data.images import ImageError, is_image_name, load_image

SPLIT_NAMES = ("train", "validation")
MANIFEST = "dataset.json"
HISTORY = ".history.json"
TRASH = ".trash"
UNDO_DEPTH = 20
STORED_MAX_SIDE = 1024  # photos are kept upright, RGB, at most this many pixels a side: ample for every level
MAX_CLASSES = 50


def datasets_root() -> Path:
    """Where the app keeps the data sets it builds or unpacks."""
    return settings.home_dir() / "datasets"


def slug(name: str, limit: int = 40) -> str:
    """A file-system-safe version of a name: letters, digits, - and _."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())[:limit].strip("_")
    return cleaned or "dataset"


def check_class_name(name: str) -> str:
    """A class name as it will be stored (stripped); raises DatasetError with the reason if unusable."""
    name = name.strip()
    if not name:
        raise DatasetError("A class name cannot be empty.")
    if len(name) > 40:
        raise DatasetError(f"Class name {name[:40]!r}... is too long (40 characters at most).")
    if name.startswith(".") or any(c in name for c in '/\\:*?"<>|') or name in IGNORED_NAMES:
        raise DatasetError(f"Class name {name!r} cannot be a folder name: avoid / \\ : * ? \" < > | and a leading dot.")
    return name


def validation_quota(photos: int, fraction: float) -> int:
    """How many of a class's photos belong in validation: none below two, then at least one."""
    if photos < 2:
        return 0
    return min(photos - 1, max(1, round(fraction * photos)))


@dataclass
class AddReport:
    """What happened to each photo of one upload."""

    added: list[str] = field(default_factory=list)  # stored relative paths
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (upload name, reason)


@dataclass
class Change:
    """One user action, as the renames it made (so it can be undone)."""

    description: str
    renames: list[tuple[str, str]]  # (from, to), relative to the data set root, in order
    time: float = 0.0
    kept: list[str] = field(default_factory=list)  # labels confirmed by this change (undo forgets them)


class EditableDataset:
    """Corrections on a data set the app owns: move a photo to another class, remove it, undo.

    Raises:
        DatasetError: the folder is not under the app's data sets folder (never edit a user's
            folder or the shared photos), or is not a data set.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        owner = datasets_root().resolve()
        if owner not in self.root.parents:
            raise DatasetError(f"{self.root} is not one of the app's own data sets (those live in {owner}); "
                               "the app only edits data sets it built or unpacked. Copy it in as a zip to edit it.")
        if not all((self.root / split).is_dir() for split in SPLIT_NAMES):
            raise DatasetError(f"{self.root} has no train/ and validation/ folders.")

    # --- reading -----------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return sorted(p.name for p in (self.root / "train").iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_NAMES)

    def photos(self, class_name: str, split: str) -> list[Path]:
        folder = self.root / split / class_name
        if not folder.is_dir():
            return []
        return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                       and is_image_name(p.name)), key=lambda p: (p.stat().st_mtime, p.name))

    def counts(self) -> dict[str, dict[str, int]]:
        """class -> {"train": n, "validation": n}."""
        return {c: {s: len(self.photos(c, s)) for s in SPLIT_NAMES} for c in self.classes}

    def locate(self, relative: str | Path) -> Path:
        """A photo's path from its path relative to the root (or an absolute path inside it)."""
        path = Path(relative)
        path = (path if path.is_absolute() else self.root / path).resolve()
        if self.root not in path.parents or not path.is_file():
            raise DatasetError(f"{relative} is not a photo of this data set.")
        return path

    # --- corrections -------------------------------------------------------------------------

    def move(self, photo: str | Path, class_name: str) -> Change:
        """Moves a photo to another class, in the same split."""
        path = self.locate(photo)
        split, old_class = path.relative_to(self.root).parts[:2]
        if class_name not in self.classes:
            raise DatasetError(f"No class {class_name!r}; the classes are {', '.join(self.classes)}.")
        if class_name == old_class:
            raise DatasetError(f"{path.name} is already in {class_name}.")
        target = self._free_name(self.root / split / class_name / path.name)
        renames = [self._rename(path, target)]
        renames += self._keep_both_sides(old_class) + self._keep_both_sides(class_name)
        return self._record(f"moved {path.name} from {old_class} to {class_name}", renames)

    def remove(self, photo: str | Path) -> Change:
        """Moves a photo (labelled or not) to the trash (undo brings it back)."""
        path = self.locate(photo)
        relative = path.relative_to(self.root)
        target = self._free_name(self.root / TRASH / f"{time.time_ns()}" / relative)
        if relative.parts[0] == UNLABELLED:
            return self._record(f"removed unlabelled {path.name}", [self._rename(path, target)])
        renames = [self._rename(path, target)] + self._keep_both_sides(relative.parts[1])
        return self._record(f"removed {relative.parts[1]}/{path.name}", renames)

    def unlabelled(self) -> list[Path]:
        """The photos waiting for a class (`unlabelled/`), oldest first."""
        return unlabelled_photos(self.root, check_headers=False)

    def label(self, photo: str | Path, class_name: str) -> Change:
        """Gives an unlabelled photo its class: it joins `train/<class>/` (undo puts it back)."""
        path = self.locate(photo)
        if path.relative_to(self.root).parts[0] != UNLABELLED:
            raise DatasetError(f"{path.name} already has a class; move it instead.")
        if class_name not in self.classes:
            raise DatasetError(f"No class {class_name!r}; the classes are {', '.join(self.classes)}.")
        target = self._free_name(self.root / "train" / class_name / path.name)
        renames = [self._rename(path, target)] + self._keep_both_sides(class_name)
        return self._record(f"labelled {path.name} as {class_name}", renames)

    def keep_label(self, photo: str | Path) -> Change:
        """Records that a photo's label is right, so it stops being listed as a suspect (undo forgets it)."""
        relative = self.locate(photo).relative_to(self.root).as_posix()
        if relative.split("/")[0] not in SPLIT_NAMES:
            raise DatasetError(f"{relative} has no label to confirm.")
        atomic_write_json(self.root / KEPT_LABELS, sorted(self.kept_labels() | {relative}))
        return self._record(f"kept {relative.split('/')[1]} for {Path(relative).name}", [], kept=[relative])

    def kept_labels(self) -> set[str]:
        """Photos (relative paths) whose label a person confirmed; a photo moved since is no longer among them."""
        return kept_labels(self.root)

    def last_change(self) -> Change | None:
        history = self._history()
        return history[-1] if history else None

    def history(self) -> list[Change]:
        """The changes that can still be undone, oldest first."""
        return self._history()

    def undo(self) -> Change | None:
        """Reverses the last change; returns it, or None when there is nothing to undo."""
        history = self._history()
        if not history:
            return None
        change = history.pop()
        if change.kept:
            atomic_write_json(self.root / KEPT_LABELS, sorted(self.kept_labels() - set(change.kept)))
        for source, target in reversed(change.renames):
            src, dst = self.root / target, self.root / source
            if src.exists() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            if source.startswith(TRASH + "/"):  # an added photo, taken back: nothing to keep it for
                shutil.rmtree(self.root / TRASH / source.split("/")[1], ignore_errors=True)
        self._write_history(history)
        return change

    # --- internals ---------------------------------------------------------------------------

    def _rename(self, source: Path, target: Path) -> tuple[str, str]:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return (source.relative_to(self.root).as_posix(), target.relative_to(self.root).as_posix())

    @staticmethod
    def _free_name(target: Path) -> Path:
        candidate, n = target, 1
        while candidate.exists():
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
            n += 1
        return candidate

    def _keep_both_sides(self, class_name: str) -> list[tuple[str, str]]:
        """With two or more photos, a class keeps at least one on each side; moves the fewest to ensure it."""
        train, validation = self.photos(class_name, "train"), self.photos(class_name, "validation")
        if len(train) + len(validation) < 2:
            return []
        if not validation:
            return [self._rename(train[-1], self.root / "validation" / class_name / train[-1].name)]
        if not train:
            return [self._rename(validation[-1], self.root / "train" / class_name / validation[-1].name)]
        return []

    def _history(self) -> list[Change]:
        try:
            items = json.loads((self.root / HISTORY).read_text())
            return [Change(i["description"], [tuple(r) for r in i["renames"]], i.get("time", 0.0), list(i.get("kept", [])))
                    for i in items]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _write_history(self, history: list[Change]) -> None:
        recent, dropped = history[-UNDO_DEPTH:], history[:-UNDO_DEPTH]
        atomic_write_json(self.root / HISTORY, [{"description": c.description, "renames": [list(r) for r in c.renames],
                                                 "time": c.time, "kept": c.kept} for c in recent])
        for change in dropped:  # beyond undo's reach: empty the trash they used
            for _, target in change.renames:
                if target.startswith(TRASH + "/"):
                    shutil.rmtree(self.root / TRASH / target.split("/")[1], ignore_errors=True)

    def _record(self, description: str, renames: list[tuple[str, str]], kept: list[str] | None = None) -> Change:
        change = Change(description, renames, time.time(), kept or [])
        self._write_history(self._history() + [change])
        return change


def read_manifest(root: Path) -> dict:
    """The settings a data set was built with (its name, validation share, seed); DatasetError if it was not."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{root} was not built in the app ({MANIFEST} is missing).") from exc
    if not isinstance(manifest, dict):
        raise DatasetError(f"{root}: {MANIFEST} is damaged.")
    return manifest


def dataset_name(root: str | Path) -> str:
    """What to call the data set in `root`: the name it was built under (the Data page's), else its folder's."""
    root = Path(root)
    try:
        return str(read_manifest(root).get("name") or root.name)
    except DatasetError:  # not built in the app, or a damaged manifest
        return root.name


class BuiltDataset(EditableDataset):
    """A data set made in the app: classes named by the user, photos added one upload at a time.

    Create one with `BuiltDataset.create(name, classes)`; open it again with `BuiltDataset(root)`.
    """

    def __init__(self, root: str | Path):
        super().__init__(root)
        self.settings = read_manifest(self.root)

    @classmethod
    def create(cls, name: str, classes: list[str], validation_fraction: float = 0.2, seed: int = 0,
               parent: str | Path | None = None) -> "BuiltDataset":
        """Makes the folder of a new data set with two or more (empty) classes."""
        if not name.strip():
            raise DatasetError("Give the data set a name.")
        names = [check_class_name(c) for c in classes if c.strip()]
        if len(names) < 2:
            raise DatasetError(f"A classifier needs at least two classes; got {len(names)}.")
        if len(names) > MAX_CLASSES:
            raise DatasetError(f"At most {MAX_CLASSES} classes; got {len(names)}.")
        lowered = [n.lower() for n in names]
        if len(set(lowered)) != len(lowered):
            duplicates = sorted({n for n in names if lowered.count(n.lower()) > 1})
            raise DatasetError(f"Class names must differ (ignoring case): {', '.join(duplicates)}.")
        _check_fraction(validation_fraction)
        parent = Path(parent) if parent else datasets_root()
        root = parent / f"{slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while root.exists():
            root = parent / f"{slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
            n += 1
        for split in SPLIT_NAMES:
            for class_name in names:
                (root / split / class_name).mkdir(parents=True)
        atomic_write_json(root / MANIFEST, {"name": name.strip(), "validation_fraction": validation_fraction,
                                            "seed": seed, "created": time.time()})
        return cls(root)

    @staticmethod
    def is_built(root: str | Path) -> bool:
        return (Path(root) / MANIFEST).is_file()

    @property
    def name(self) -> str:
        return self.settings.get("name", self.root.name)

    @property
    def validation_fraction(self) -> float:
        return float(self.settings.get("validation_fraction", 0.2))

    def add_class(self, class_name: str) -> None:
        class_name = check_class_name(class_name)
        if class_name.lower() in (c.lower() for c in self.classes):
            raise DatasetError(f"There is already a class {class_name!r}.")
        if len(self.classes) >= MAX_CLASSES:
            raise DatasetError(f"At most {MAX_CLASSES} classes.")
        for split in SPLIT_NAMES:
            (self.root / split / class_name).mkdir(parents=True, exist_ok=True)

    def add_photos(self, class_name: str, uploads: list[tuple[str, bytes]]) -> AddReport:
        """Adds photos to a class. Each is decoded safely; a bad one is skipped with its reason.

        Args:
            uploads: (file name, bytes) pairs, e.g. from a file uploader or camera shots.
        """
        if class_name not in self.classes:
            raise DatasetError(f"No class {class_name!r}; the classes are {', '.join(self.classes)}.")
        report = AddReport()
        prepared = self._prepare(uploads, report, class_name)
        # A seeded order, so which photos go to validation does not follow upload order.
        rng = random.Random(f"{self.settings.get('seed', 0)}-{class_name}-{''.join(d for _, d, _ in prepared)}")
        rng.shuffle(prepared)
        count = sum(len(self.photos(class_name, s)) for s in SPLIT_NAMES)
        in_validation = len(self.photos(class_name, "validation"))
        size, renames = self._bytes(), []
        for upload_name, digest, jpeg in prepared:
            if count >= settings.max_photos_per_class():
                report.skipped.append((upload_name, f"{class_name} already has {settings.max_photos_per_class()} "
                                                    "photos, the limit"))
                continue
            if size + len(jpeg) > settings.max_dataset_bytes():
                report.skipped.append((upload_name, f"the data set would exceed {settings.max_dataset_bytes() // 2**20} MB"))
                continue
            count += 1
            split = "validation" if in_validation < validation_quota(count, self.validation_fraction) else "train"
            in_validation += split == "validation"
            renames.append(self._place(jpeg, self.root / split / class_name / f"{digest}.jpg"))
            size += len(jpeg)
            report.added.append(renames[-1][1])
        report.added.sort()
        if renames:
            self._record(f"added {len(renames)} photo(s) to {class_name}", renames)
        return report

    def add_unlabelled(self, uploads: list[tuple[str, bytes]]) -> AddReport:
        """Adds photos without a class to `unlabelled/`, checked as `add_photos` checks them; "Label
        these next" ranks them and a person gives each its class (`label`)."""
        report = AddReport()
        count, size, renames = len(self.unlabelled()), self._bytes(), []
        limit = settings.max_photos_per_class() * 2
        for upload_name, digest, jpeg in self._prepare(uploads, report, "unlabelled"):
            if count >= limit:
                report.skipped.append((upload_name, f"there are already {limit} unlabelled photos, the limit"))
                continue
            if size + len(jpeg) > settings.max_dataset_bytes():
                report.skipped.append((upload_name, f"the data set would exceed {settings.max_dataset_bytes() // 2**20} MB"))
                continue
            renames.append(self._place(jpeg, self.root / UNLABELLED / f"{digest}.jpg"))
            count, size = count + 1, size + len(jpeg)
            report.added.append(renames[-1][1])
        report.added.sort()
        if renames:
            self._record(f"added {len(renames)} photo(s) without a class", renames)
        return report

    def _place(self, jpeg: bytes, target: Path) -> tuple[str, str]:
        """Writes a new photo to the trash, then renames it to `target`: recorded as that rename, an added
        photo is undone like any other change (back to the trash, which undo then empties)."""
        bin_ = self.root / TRASH / f"{time.time_ns()}"
        staged = bin_ / target.relative_to(self.root)
        staged.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(staged, lambda tmp: tmp.write_bytes(jpeg))
        rename = self._rename(staged, target)
        shutil.rmtree(bin_, ignore_errors=True)  # its folders, empty now
        return rename

    def _prepare(self, uploads: list[tuple[str, bytes]], report: AddReport, where: str) -> list[tuple[str, str, bytes]]:
        """(upload name, content hash, JPEG bytes) of the uploads that are new, small enough and decodable;
        the others go to `report.skipped` with the reason."""
        known = self._known_hashes()
        prepared = []
        for upload_name, data in uploads:
            digest = hashlib.sha256(data).hexdigest()[:16]
            if digest in known:
                report.skipped.append((upload_name, f"already in the data set ({known[digest]})"))
                continue
            if len(data) > settings.max_upload_bytes():
                report.skipped.append((upload_name, f"{len(data) / 2**20:.0f} MB is over the "
                                                    f"{settings.max_upload_bytes() // 2**20} MB limit per photo"))
                continue
            try:
                image = load_image(data, name=upload_name)
            except ImageError as exc:
                # The report pairs the name with the reason: the message's own "name: " prefix would repeat it.
                report.skipped.append((upload_name, str(exc).removeprefix(f"{upload_name}: ")))
                continue
            image.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=92)
            prepared.append((upload_name, digest, buffer.getvalue()))
            known[digest] = f"{where}/{upload_name}"
        return prepared

    def set_validation_fraction(self, fraction: float) -> Change | None:
        """Changes the fraction and moves the fewest photos (seeded) to reach it in every class."""
        _check_fraction(fraction)
        self.settings["validation_fraction"] = fraction
        atomic_write_json(self.root / MANIFEST, self.settings)
        renames = []
        rng = random.Random(self.settings.get("seed", 0))
        for class_name in self.classes:
            train, validation = self.photos(class_name, "train"), self.photos(class_name, "validation")
            quota = validation_quota(len(train) + len(validation), fraction)
            if len(validation) < quota:
                for path in rng.sample(train, quota - len(validation)):
                    renames.append(self._rename(path, self.root / "validation" / class_name / path.name))
            elif len(validation) > quota:
                for path in rng.sample(validation, len(validation) - quota):
                    renames.append(self._rename(path, self.root / "train" / class_name / path.name))
        return self._record(f"validation fraction set to {fraction:.0%}", renames) if renames else None

    def problems(self) -> list[str]:
        """What stands between this data set and training, in words (empty when it can be trained)."""
        out = []
        for class_name, counts in self.counts().items():
            total = counts["train"] + counts["validation"]
            if total < 2:
                out.append(f"{class_name} needs at least 2 photos (it has {total}): one to learn from, one to check.")
        return out

    def zip_bytes(self) -> bytes:
        """The photos as a zip in the layout the zip upload accepts (`<name>/train/<class>/...`,
        `<name>/unlabelled/...` for the photos still without a class, and the labels confirmed with
        "It's right" in `<name>/.kept_labels.json`, which the upload keeps)."""
        buffer = io.BytesIO()
        top = slug(self.name)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not compress
            for split in SPLIT_NAMES:
                for class_name in self.classes:
                    for path in self.photos(class_name, split):
                        archive.write(path, f"{top}/{split}/{class_name}/{path.name}")
            for path in self.unlabelled():
                archive.write(path, f"{top}/{UNLABELLED}/{path.relative_to(self.root / UNLABELLED).as_posix()}")
            kept = sorted(p for p in self.kept_labels() if (self.root / p).is_file())  # not those moved or removed since
            if kept:
                archive.writestr(f"{top}/{KEPT_LABELS}", json.dumps(kept, indent=1))
        return buffer.getvalue()

    def _known_hashes(self) -> dict[str, str]:
        known = {}
        for split in SPLIT_NAMES:
            for class_name in self.classes:
                for path in self.photos(class_name, split):
                    known[path.stem.split("-")[0]] = f"{split}/{class_name}/{path.name}"
        for path in self.unlabelled():
            known[path.stem.split("-")[0]] = f"{UNLABELLED}/{path.name}"
        return known

    def _bytes(self) -> int:
        return sum(p.stat().st_size for split in SPLIT_NAMES for c in self.classes for p in self.photos(c, split)) + \
            sum(p.stat().st_size for p in self.unlabelled())


def kept_labels(root: str | Path) -> set[str]:
    """The photos of the data set at `root` (relative paths) whose label a person confirmed ("It's right")."""
    try:
        return {p for p in json.loads((Path(root) / KEPT_LABELS).read_text()) if isinstance(p, str)}
    except (OSError, ValueError, TypeError):
        return set()


def _check_fraction(fraction: float) -> None:
    if not 0.05 <= fraction <= 0.5:
        raise DatasetError(f"The validation fraction must be between 5% and 50%, got {fraction:.0%}.")


def built_datasets() -> list[BuiltDataset]:
    """The data sets built in the app, newest first."""
    root = datasets_root()
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.is_dir() and BuiltDataset.is_built(folder):
            try:
                found.append(BuiltDataset(folder))
            except DatasetError:
                continue
    return sorted(found, key=lambda d: d.settings.get("created", 0), reverse=True)


def editable(root: str | Path | None) -> EditableDataset | None:
    """The data set at `root` opened for corrections, or None when the app must not edit it."""
    if root is None:
        return None
    try:
        return BuiltDataset(root) if BuiltDataset.is_built(root) else EditableDataset(root)
    except DatasetError:
        return None
