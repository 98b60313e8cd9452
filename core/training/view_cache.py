"""Level 3's cache: the frozen layers' output for a fixed set of views of each photo.

Fine-tuning trains only the top block; everything below it is frozen, so a picture always gives
the same activations at the cut. Instead of running the frozen layers on a fresh augmentation of
every photo in every epoch (the tutorial's way), they run once on `views` pictures per photo (the
photo, its mirror image when the augmentation flips, then random draws of the augmentation),
and each epoch takes one of those per photo. The cache lives beside the bottleneck features,
float16 for the training photos (half the disk, far below the top block's own noise) and float32
for the validation photos (whose scores must be the saved model's). Its name changes with
everything that changes its contents: the data, the network and its weights, the image size, the
cut, the augmentation and the number of views. It is written whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from core import settings
from core.data.augment import AugmentConfig, view_names
from core.errors import Cancelled

#: Bumped when what a cache file holds changes meaning, so old files are never read as new ones.
CACHE_FORMAT = 1
#: View caches kept (the most recently used): a training set and a validation set for two settings.
KEEP_CACHES = 4
#: A partial file untouched this long was left by a process that died while building.
STALE_PARTIAL_SECONDS = 24 * 3600
#: The first augmentation seed; view k draws with its own seed, so a view is the same whatever the view count.
VIEW_SEED = 9000


@dataclass(frozen=True)
class ViewCacheKey:
    """What a view cache's contents depend on; its file name is a hash of all of it."""

    fingerprint: str  # the data set (and subset) it was made from
    backbone: str
    weights_key: str
    image_size: tuple[int, int]
    cut_layer: str  # the layer whose output is cached: where the top block starts
    augment: AugmentConfig
    views: int
    split: str  # "train" or "validation"

    def path(self, cache_dir: str | Path | None = None) -> Path:
        raw = json.dumps([CACHE_FORMAT, self.fingerprint, self.backbone, self.weights_key, list(self.image_size),
                          self.cut_layer, self.augment.to_dict(), self.views, self.split], sort_keys=True)
        root = Path(cache_dir) if cache_dir else settings.cache_dir()
        return root / "views" / f"{hashlib.sha256(raw.encode()).hexdigest()[:24]}.npy"


def cached_views(bottom, decoded, key: ViewCacheKey, cache_dir=None, dtype=np.float16,
                 should_cancel: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 batch_size: int = 32) -> tuple[np.ndarray, bool]:
    """The frozen `bottom`'s output for every view of every photo of `decoded`, shape [views, N, ...].

    Read from the cache when it is there and whole; otherwise computed, written to a temporary
    file beside it and renamed into place at the end, so a cancelled or failed build (raising
    `Cancelled` or the error) leaves nothing behind. Returns (the array, whether it was cached).
    """
    path = key.path(cache_dir)
    names = view_names(key.augment, key.views)
    if path.exists():
        try:
            views = np.load(path, mmap_mode="r")
            if views.shape[:2] == (len(names), len(decoded)) and views.dtype == np.dtype(dtype):
                os.utime(path)  # recently used: the last to be evicted
                return views, True
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt
    forward = _forward(bottom)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
    out = None
    try:
        total, done = len(names) * len(decoded), 0
        for v, name in enumerate(names):
            draw = _drawer(key.augment, name, VIEW_SEED + 100 * v)
            for start in range(0, len(decoded), batch_size):
                if should_cancel is not None and should_cancel():
                    raise Cancelled()
                batch = np.asarray(decoded.images[start:start + batch_size], dtype=np.float32)
                activations = forward(draw(batch)).numpy()
                if out is None:
                    out = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype,
                                                    shape=(len(names), len(decoded), *activations.shape[1:]))
                out[v, start:start + len(batch)] = activations
                done += len(batch)
                if progress is not None:
                    progress(done, total)
        out.flush()
        del out
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    evict(path.parent, keep=KEEP_CACHES, spare=path)
    return np.load(path, mmap_mode="r"), False


def evict(folder: Path, keep: int, spare: Path | None = None) -> list[Path]:
    """Deletes all but the `keep` most recently used caches in `folder` (never `spare`); returns them.

    A cache is hundreds of megabytes (2000 photos, 4 views: 270 MB at Lite2's medium cut), and each
    augmentation or top block makes another: the most recent ones are those a next run reuses.
    """
    now, used = time.time(), {}
    for path in folder.glob("*.npy"):
        try:
            used[path] = path.stat().st_mtime
        except FileNotFoundError:  # another process evicted it meanwhile
            continue
    partial = [p for p in used if p.name.endswith(".partial.npy") and now - used[p] > STALE_PARTIAL_SECONDS]
    caches = sorted((p for p in used if not p.name.endswith(".partial.npy") and p != spare),
                    key=used.get, reverse=True)
    gone = caches[max(keep - (spare is not None), 0):] + partial  # and builds a killed process left behind
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def _forward(bottom):
    import tensorflow as tf

    from core.networks.fold import fold_batch_norm

    folded = fold_batch_norm(bottom, inference=True)  # the same activations, fewer passes (`core.networks.fold`)
    return tf.function(lambda x: folded(x, training=False), reduce_retracing=True)


def _drawer(augment: AugmentConfig, name: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """float32 pixel batch -> that view of it."""
    if name == "photo":
        return lambda batch: batch
    if name == "mirror":
        return lambda batch: np.ascontiguousarray(batch[:, :, ::-1])
    from core.data.augment import make_augmenter

    augmenter = make_augmenter(augment, seed=seed)
    return lambda batch: np.asarray(augmenter(batch, training=True))


class ViewBatches(keras.utils.PyDataset):
    """Training batches from a view cache: every photo once per epoch, in a new order, one of its views.

    Each photo goes through its views in turn from a random starting view, so every view is used
    once in any `views` consecutive epochs. Keras calls `on_epoch_end` after each epoch.
    """

    def __init__(self, views: np.ndarray, labels, batch_size: int, seed: int):
        super().__init__()
        self.views, self.labels, self.batch_size = views, np.asarray(labels), batch_size
        self._rng = np.random.default_rng(seed)
        self._first_view = self._rng.integers(len(views), size=len(self.labels))
        self._order = self._rng.permutation(len(self.labels))
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int):
        photos = np.sort(self._order[index * self.batch_size:(index + 1) * self.batch_size])  # sorted: memmap reads in order
        which = (self._first_view[photos] + self.epoch) % len(self.views)
        return self.views[which, photos].astype(np.float32), self.labels[photos]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._rng.permutation(len(self.labels))
