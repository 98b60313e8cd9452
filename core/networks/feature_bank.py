"""Bottleneck features kept photo by photo, so that a split that changed by a few photos sends only those through the network.

A split's features are also cached whole (`core.networks.features.feature_cache_path`), under a name
that changes with the split's photos: labelling ten photos of a pool moves them from unlabelled/ to
train/, which renames both splits' caches, and without this bank every photo of both would go through
the network again (25 s for a pool of 1,000 on two cores, each time "label these next" ranks again).

The bank is one file per network, weights, input size and view (the photo or its mirror image): the
digests, then the rows, as two .npy arrays one after the other, so a lookup reads the digests and maps
the rows (reading only those it finds). A photo's row is found by a digest of its decoded pixels,
whatever its file is called or wherever it moved, and only for those exact pixels. The oldest rows are
dropped past `MAX_BANK_BYTES`. Two jobs that add rows at the same moment each write the file whole
(atomically): the rows of the one that wrote first are lost and computed again when next needed,
never wrong.

    bank = feature_bank(cache_dir, "efficientnet_lite2", weights_key, (260, 260), mirror=False)
    digests = bank.digests(decoded.images)
    found, rows = bank.lookup(digests)    # which digests it holds, and their rows
    bank.add(digests[missing], computed)  # kept for the next split that holds those photos
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import settings
from core.atomic_files import atomic_write

#: The largest a bank file grows to (its oldest rows are dropped past it): about 40,000 photos of
#: EfficientNet-Lite2's 1,280 pooled features.
MAX_BANK_BYTES = 200 * 2 ** 20
DIGEST_BYTES = 16


@dataclass(frozen=True)
class FeatureBank:
    """The feature rows of one network, weights, input size and view, by photo digest."""

    path: Path

    @staticmethod
    def digests(images, batch_size: int = 64) -> np.ndarray:
        """uint8 [N, DIGEST_BYTES]: a digest of each decoded photo's pixels (rows of `images`, read in batches)."""
        out = np.zeros((len(images), DIGEST_BYTES), dtype=np.uint8)
        for start in range(0, len(images), batch_size):
            batch = np.ascontiguousarray(images[start:start + batch_size], dtype=np.uint8)
            for offset, row in enumerate(batch):
                out[start + offset] = np.frombuffer(hashlib.blake2b(row.tobytes(), digest_size=DIGEST_BYTES).digest(),
                                                    dtype=np.uint8)
        return out

    def _read(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(digests, rows), the rows mapped from the file rather than read: a lookup reads the digests and
        the rows it finds only, whatever the bank's size."""
        try:
            with open(self.path, "rb") as handle:
                digests = np.load(handle, allow_pickle=False)
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
                offset = handle.tell()
            if fortran or dtype.hasobject:
                return None
            rows = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
        except (OSError, ValueError, EOFError):
            return None  # never written, or damaged (cut short, say): it is rebuilt as photos are computed
        if digests.ndim != 2 or digests.shape[1] != DIGEST_BYTES or len(digests) != len(rows):
            return None
        return digests, rows

    def lookup(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found: bool [N], rows [N, ...] with the found photos' features filled in, or None if none was found)."""
        found = np.zeros(len(digests), dtype=bool)
        stored = self._read()
        if stored is None or not len(digests):
            return found, None
        index = {key: i for i, key in enumerate(_keys(stored[0]))}
        where = np.array([index.get(key, -1) for key in _keys(digests)], dtype=np.int64)
        found = where >= 0
        if not found.any():
            return found, None
        rows = np.zeros((len(digests), *stored[1].shape[1:]), dtype=stored[1].dtype)
        rows[found] = stored[1][where[found]]  # copied out of the mapped file
        return found, rows

    def add(self, digests: np.ndarray, rows: np.ndarray) -> None:
        """Keeps `rows` (one per digest), newest last; rows of another shape than the bank's replace it."""
        if not len(digests):
            return
        rows = np.asarray(rows)
        stored = self._read()
        if stored is not None and stored[1].shape[1:] == rows.shape[1:] and stored[1].dtype == rows.dtype:
            new = set(_keys(digests))
            keep = np.array([key not in new for key in _keys(stored[0])], dtype=bool)
            digests = np.concatenate([stored[0][keep], digests])
            rows = np.concatenate([np.asarray(stored[1][keep]), rows])
        most = max(1, MAX_BANK_BYTES // max(1, rows[0].nbytes))
        digests, rows = digests[-most:], rows[-most:]

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # two .npy arrays, one after the other (see `_read`)
                np.save(handle, np.ascontiguousarray(digests), allow_pickle=False)
                np.save(handle, np.ascontiguousarray(rows), allow_pickle=False)

        atomic_write(self.path, write)


def _keys(digests: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(digests, dtype=np.uint8)]


def feature_bank(cache_dir, backbone: str, weights_key: str, image_size, mirror: bool = False) -> FeatureBank | None:
    """The bank for one network (`backbone` with weights `weights_key`) at `image_size`, for the photos or
    their mirror images; under `cache_dir` (default: the app's cache folder). None for random weights
    (key "none"): each build is another network, whose features must not be mixed with an earlier one's."""
    if weights_key == "none":
        return None
    raw = json.dumps([backbone, weights_key, [int(v) for v in image_size]] + (["mirror"] if mirror else []))
    root = Path(cache_dir) if cache_dir else settings.cache_dir()
    return FeatureBank(root / "features" / "bank" / f"{hashlib.sha256(raw.encode()).hexdigest()[:24]}.bank")
