"""Image-folder data sets: find, check, summarise, fetch, unpack safely, decode once, stream.

A data set is a folder with `train/<class>/` and `validation/<class>/` (and optionally
`test/<class>/`). Problems that make it unusable raise `DatasetError` with a message saying what to
fix; files that merely cannot be read are skipped and listed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import tempfile
import threading
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image

from core import settings
from core.images import ImageError, is_image_name, load_array
from core.atomic_files import atomic_write, atomic_write_json
from core.errors import LittleDataError

SPLITS = ("train", "validation", "test")
REQUIRED_SPLITS = ("train", "validation")
IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}


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
    """

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    fingerprint: str = ""
    source: str = ""

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
                "unreadable": [list(u) for u in self.unreadable], "ignored": self.ignored}


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
        if width * height > settings.MAX_IMAGE_PIXELS:
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
    return summary


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


# --- Getting data -----------------------------------------------------------------------------

def default_dataset_dir() -> Path:
    """Where the downloaded default data set lives once unpacked."""
    return settings.cache_dir() / "datasets" / "cats_and_dogs_filtered"


def resolve_data_dir(data_dir: str | Path | None = None, download: bool = True,
                     progress: Callable[[int, int | None], None] | None = None) -> tuple[Path, str]:
    """Picks the data set folder and says where it came from.

    Order: the argument, `LITTLE_DATA_DATA_DIR`, the offline copy in `<shared>/datasets`, an
    earlier download, then (if `download`) the tutorial's data set from `settings.dataset_url()`.

    Returns:
        (folder, source description).
    """
    if data_dir:
        return Path(data_dir).expanduser(), f"local folder {data_dir}"
    explicit = settings.data_dir_setting()
    if explicit:
        return explicit, f"LITTLE_DATA_DATA_DIR={explicit}"
    shared = settings.shared_dir()
    if shared is not None and (shared / "datasets" / "cats_vs_dogs").is_dir():
        return shared / "datasets" / "cats_vs_dogs", "offline copy of Kaggle cats vs dogs (1000+1000 / 400+400)"
    target = default_dataset_dir()
    if target.is_dir():
        return target, f"cats vs dogs downloaded from {settings.dataset_url()}"
    if not download:
        raise DatasetError(
            "No data set here yet. Download the default (needs internet), set LITTLE_DATA_DATA_DIR "
            "or pass --data-dir to a folder with train/<class>/ and validation/<class>/, or upload a zip.")
    return download_default_dataset(progress=progress), f"cats vs dogs downloaded from {settings.dataset_url()}"


def download_default_dataset(progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Downloads the tutorial's data set with `keras.utils.get_file` and unpacks it safely.

    Args:
        progress: called with (bytes so far, total bytes or None) while downloading.

    Raises:
        DatasetError: the download failed (offline, say), with what to do instead.
    """
    import keras  # heavy; only needed here

    url = settings.dataset_url()
    downloads = settings.cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    fname = Path(url.split("?")[0]).name or "dataset.zip"
    total = _content_length(url)
    result: dict = {}

    def fetch():
        try:
            result["path"] = keras.utils.get_file(fname=fname, origin=url, cache_dir=str(downloads),
                                                  cache_subdir="")
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.25)
        if progress is not None:
            partial = downloads / fname
            progress(partial.stat().st_size if partial.exists() else 0, total)
    if "error" in result:
        raise DatasetError(
            f"Could not download the default data set from {url} ({result['error']}). Without "
            "internet, point LITTLE_DATA_DATA_DIR (or --data-dir) at a local folder with "
            "train/<class>/ and validation/<class>/, or upload a zip of one.") from result["error"]
    if progress is not None:
        size = Path(result["path"]).stat().st_size
        progress(size, size)
    target = default_dataset_dir()
    extract_zip(result["path"], target)
    return target


def _content_length(url: str) -> int | None:
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http(s) only
            return int(response.headers.get("Content-Length") or 0) or None
    except Exception:  # noqa: BLE001 - the size is a nicety for the progress bar
        return None


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The entry's relative path, or None if it would land outside the target folder."""
    name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        return None
    return path


def extract_zip(archive: str | Path | bytes, target: str | Path) -> Path:
    """Unpacks a data-set zip into `target` (replacing it) and returns the data set root in it.

    Refuses archives with entries that escape the folder, too many files, too much uncompressed
    data or bomb-like compression ratios; skips symlinks, hidden files and `__MACOSX/`.
    Nothing is written outside `target`, and `target` is only replaced once everything is good.

    Raises:
        DatasetError: the archive is not a zip, is unsafe or too large, or holds no data set.
    """
    import io

    target = Path(target)
    source = io.BytesIO(archive) if isinstance(archive, (bytes, bytearray)) else archive
    try:
        bundle = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"Not a readable zip archive ({exc}).") from exc
    with bundle:
        members = bundle.infolist()
        if len(members) > settings.MAX_ZIP_FILES:
            raise DatasetError(f"The zip has {len(members)} entries; the limit is {settings.MAX_ZIP_FILES}.")
        declared = sum(m.file_size for m in members)
        if declared > settings.MAX_ZIP_BYTES:
            raise DatasetError(f"The zip unpacks to {declared / 2**20:.0f} MB; the limit is "
                               f"{settings.MAX_ZIP_BYTES / 2**20:.0f} MB.")
        for member in members:
            if _safe_member_path(member.filename) is None:
                raise DatasetError(f"Unsafe path in zip: {member.filename!r} would land outside the "
                                   "data set folder. Nothing was extracted.")
            if member.file_size > 2**20 and member.file_size > settings.MAX_ZIP_RATIO * max(member.compress_size, 1):
                raise DatasetError(f"{member.filename!r} expands {member.file_size // max(member.compress_size, 1)}x: "
                                   "refusing a likely zip bomb. Nothing was extracted.")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
        try:
            written = 0
            for member in members:
                rel = _safe_member_path(member.filename)
                mode = member.external_attr >> 16
                if (member.is_dir() or stat.S_ISLNK(mode) or not rel.parts
                        or any(p.startswith(".") or p in IGNORED_NAMES for p in rel.parts)):
                    continue
                out = staging.joinpath(*rel.parts)
                if staging.resolve() not in out.resolve().parents:
                    raise DatasetError(f"Unsafe path in zip: {member.filename!r}.")
                out.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > settings.MAX_ZIP_BYTES:  # headers can lie
                            raise DatasetError("The zip unpacks to more than its declared size limit.")
                        dst.write(chunk)
            root = find_root(staging)
            summarize(root)  # refuse unusable data before replacing anything
            rel_root = root.relative_to(staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            return target / rel_root
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"The zip is corrupt ({exc}).") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


# --- Decoding once, streaming with tf.data ----------------------------------------------------

class ImageRows:
    """A decoded split's images, read from its cache file on demand: `[N, H, W, 3]` uint8.

    Indexing (an int, a slice, or an array of row numbers) reads just those rows with `os.pread`;
    `np.asarray(rows)` reads them all. Unlike a memory map, rows read this way never count towards
    the process's resident memory: they live in the kernel's page cache, which it shares and drops
    as it likes, so training on 25,000 photos needs no more RAM than training on 2,000.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: str | Path, shape: tuple[int, int, int, int]):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self._row_bytes = int(np.prod(self.shape[1:]))
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self):  # picklable (e.g. sent to a Ray worker): reopened on the other side
        return {"path": str(self.path), "shape": self.shape}

    def __setstate__(self, state):
        self.__init__(state["path"], state["shape"])

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)

    def _read(self, first: int, count: int, out: np.ndarray) -> None:
        data = os.pread(self._fd, count * self._row_bytes, first * self._row_bytes)
        if len(data) != count * self._row_bytes:
            raise DatasetError(f"The decoded-image cache {self.path} is truncated; delete it to rebuild it.")
        out[...] = np.frombuffer(data, np.uint8).reshape(out.shape)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                out = np.empty((max(stop - start, 0), *self.shape[1:]), np.uint8)
                if len(out):
                    self._read(start, len(out), out)
                return out
            key = np.arange(start, stop, step)
        rows = np.asarray(key, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} images")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        order = np.argsort(rows, kind="stable")
        run_start = 0
        for i in range(1, len(order) + 1):  # one read per run of consecutive rows
            if i == len(order) or rows[order[i]] != rows[order[i - 1]] + 1:
                first, count = rows[order[run_start]], i - run_start
                chunk = np.empty((count, *self.shape[1:]), np.uint8)
                self._read(int(first), count, chunk)
                out[order[run_start:i]] = chunk
                run_start = i
        return out


@dataclass
class DecodedSplit:
    """One split decoded at one image size, read from the on-disk cache as needed."""

    images: ImageRows  # uint8 [N, H, W, 3]; index it like an array
    labels: np.ndarray  # int32 [N]
    paths: list[str]
    failures: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.labels)


def decode_split(summary: DatasetSummary, split: str, size: tuple[int, int],
                 progress: Callable[[int, int], None] | None = None,
                 cache_dir: str | Path | None = None) -> DecodedSplit:
    """Decodes a split's images once at `size` (height, width) into an on-disk cache.

    The cache (under `cache_dir`, default `settings.cache_dir()`) is keyed by the data set
    fingerprint, split and size; a second call reads it back without decoding. Images are written
    to the cache as they are decoded, so memory stays bounded whatever the number of photos.
    Images that fail to decode are skipped and listed in `failures`.
    """
    if split not in summary.files:
        raise DatasetError(f"The data set has no {split}/ split.")
    folder = (Path(cache_dir) if cache_dir else settings.cache_dir()) / "decoded"
    stem = f"{summary.fingerprint}-{split}-{size[0]}x{size[1]}"
    rows_path, meta_path = folder / f"{stem}.rgb", folder / f"{stem}.json"
    row_shape = (int(size[0]), int(size[1]), 3)
    if rows_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            count = len(meta["labels"])
            if rows_path.stat().st_size == count * int(np.prod(row_shape)):
                return DecodedSplit(ImageRows(rows_path, (count, *row_shape)), np.asarray(meta["labels"], np.int32),
                                    meta["paths"], [tuple(f) for f in meta["failures"]])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    entries = summary.files[split]
    failures, keep = [], []

    def decode(index):
        path = entries[index][0]
        try:
            return index, load_array(path, size), None
        except ImageError as exc:
            return index, None, str(exc)

    def write_rows(tmp_path: Path) -> None:
        with open(tmp_path, "wb") as out, ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 2) * 2)) as pool:
            for done, (index, array, error) in enumerate(pool.map(decode, range(len(entries))), start=1):
                if error:
                    failures.append((Path(entries[index][0]).relative_to(summary.root).as_posix(), error))
                else:
                    out.write(np.ascontiguousarray(array, np.uint8).tobytes())
                    keep.append(index)
                if progress is not None and (done % 50 == 0 or done == len(entries)):
                    progress(done, len(entries))
        if not keep:
            raise DatasetError(f"No image in {split}/ could be decoded.")

    atomic_write(rows_path, write_rows)
    labels = [int(entries[i][1]) for i in keep]
    paths = [str(entries[i][0]) for i in keep]
    atomic_write_json(meta_path, {"labels": labels, "paths": paths, "failures": failures, "shape": [len(keep), *row_shape]})
    return DecodedSplit(ImageRows(rows_path, (len(keep), *row_shape)), np.asarray(labels, np.int32), paths, failures)


def make_tf_dataset(decoded: DecodedSplit, batch_size: int, shuffle: bool = False, seed: int = 0):
    """Streams a decoded split as a `tf.data.Dataset` of (float32 images 0-255, labels).

    Batches are read from the cache file as they are needed, so memory stays bounded whatever the data size.
    """
    import tensorflow as tf

    images, labels = decoded.images, decoded.labels
    height, width = images.shape[1:3]

    def gather(indices):
        order = np.sort(indices)  # runs of consecutive rows are read in one go
        return images[order], labels[order]

    ds = tf.data.Dataset.range(len(labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def fetch(indices):
        x, y = tf.numpy_function(gather, [indices], [tf.uint8, tf.int32])
        x.set_shape([None, height, width, 3])
        y.set_shape([None])
        return tf.cast(x, tf.float32), y

    ds = ds.map(fetch, num_parallel_calls=2, deterministic=True)
    return without_autotune(ds)


def without_autotune(ds):
    """Fixed prefetching instead of tf.data's autotuner.

    Keras makes a new iterator every epoch, and destroying one waits for the autotuner's
    optimisation thread, which left both cores idle at the end of random epochs (see the README).
    Our pipelines are a cheap gather from memory, so a fixed two-batch prefetch keeps the model fed.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)
