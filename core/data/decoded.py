"""Decoding a split once into a cache file of uint8 rows, and streaming it with tf.data."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core import settings
from core.atomic_files import atomic_write, atomic_write_json
from core.data.folders import DatasetError, DatasetSummary
from core.data.images import ImageError, load_array


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


def _decoded_paths(fingerprint: str, split: str, size: tuple[int, int], cache_dir=None) -> tuple[Path, Path]:
    folder = (Path(cache_dir) if cache_dir else settings.cache_dir()) / "decoded"
    stem = f"{fingerprint}-{split}-{size[0]}x{size[1]}"
    return folder / f"{stem}.rgb", folder / f"{stem}.json"


def is_decoded(fingerprint: str, split: str, size: tuple[int, int], cache_dir=None) -> bool:
    """Whether a split of the data set `fingerprint` is in the decoded cache at `size` (a run reads it back)."""
    return all(path.is_file() for path in _decoded_paths(fingerprint, split, size, cache_dir))


def forget_decoded(summary: DatasetSummary, split: str, size: tuple[int, int], cache_dir=None) -> None:
    """Deletes a split's decoded cache (for photos decoded once, such as a pool ranked for labelling)."""
    for path in _decoded_paths(summary.fingerprint, split, size, cache_dir):
        path.unlink(missing_ok=True)


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
    rows_path, meta_path = _decoded_paths(summary.fingerprint, split, size, cache_dir)
    row_shape = (int(size[0]), int(size[1]), 3)
    if rows_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            count = len(meta["labels"])
            # Photos are named relative to the data set: a copy of it elsewhere has the same fingerprint, and its
            # paths must be its own (a cache from before relative names is rebuilt once).
            paths = [str(Path(summary.root) / relative) for relative in meta["relative_paths"]]
            if rows_path.stat().st_size == count * int(np.prod(row_shape)) and len(paths) == count:
                return DecodedSplit(ImageRows(rows_path, (count, *row_shape)), np.asarray(meta["labels"], np.int32),
                                    paths, [tuple(f) for f in meta["failures"]])
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
    relative = [Path(path).relative_to(summary.root).as_posix() for path in paths]
    atomic_write_json(meta_path, {"labels": labels, "relative_paths": relative, "failures": failures,
                                  "shape": [len(keep), *row_shape]})
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
    optimisation thread, which left both cores idle at the end of random epochs (see docs/benchmarks.md).
    Our pipelines are a cheap gather from memory, so a fixed two-batch prefetch keeps the model fed.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)
