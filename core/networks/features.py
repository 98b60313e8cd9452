"""Bottleneck features: a frozen network's outputs for every photo of a split, computed once and cached.

Level 2 and the data-efficiency curve train small heads on these instead of running the network in
every epoch. The cache file's name changes with the data, the network, its weights and the input size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from core import settings
from core.atomic_files import atomic_write_npy
from core.data.decoded import DecodedSplit, decode_split, without_autotune
from core.errors import Cancelled
from core.networks.feature_bank import FeatureBank, feature_bank


def feature_dataset(features: np.ndarray, labels, batch_size: int, shuffle_seed: int | None = None):
    """(features, labels) as a batched `tf.data.Dataset`, shuffled each epoch when a seed is given."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(features), seed=shuffle_seed)
    return without_autotune(ds.batch(batch_size))


def bottleneck_parts(flip_average: bool) -> list[tuple[str, str, bool]]:
    """Level 2's cached feature arrays as (name, split, mirror): each split's photos, and the validation
    photos' mirror images when the saved model averages both views (they score it without the network)."""
    return [("train", "train", False), ("validation", "validation", False)] + (
        [("mirrored", "validation", True)] if flip_average else [])


def feature_cache_path(cache_dir, fingerprint: str, backbone: str, weights_key: str, image_size, split: str,
                       mirror: bool = False) -> Path:
    """Where one split's features are cached: the name changes with the data, network, weights or size."""
    raw = json.dumps([fingerprint, backbone, weights_key, list(image_size), split] + (["mirror"] if mirror else []))
    root = Path(cache_dir) if cache_dir else settings.cache_dir()
    return root / "features" / f"{hashlib.sha256(raw.encode()).hexdigest()[:24]}.npy"


class LazyExtractor:
    """A feature extractor built on first use (`build()`): a split whose features are all cached or in
    the bank needs no network, and building one takes a second or two."""

    def __init__(self, build):
        self._build, self._model = build, None

    def model(self):
        if self._model is None:
            self._model = self._build()
        return self._model


def extract_features(extractor, decoded, path: Path | None, should_cancel=None, progress=None, mirror: bool = False,
                     batch_size: int = 32, bank: FeatureBank | None = None) -> tuple[np.ndarray, int]:
    """Bottleneck features of a decoded split (of its mirror images, with `mirror`), cached at `path` (None: not
    cached whole, as for a pool of photos that changes with every label).

    With a `bank` (`core.networks.feature_bank`, for the same network, size and view), photos whose
    features it holds are not sent through the network again, and those that are join it. `extractor`:
    the network, or a `LazyExtractor` that builds it only if a photo needs it.

    Returns:
        (features, how many photos went through the network: 0 when every row came from a cache).
    """
    import tensorflow as tf

    if path is not None and path.exists():
        try:
            features = np.load(path)
            if features.shape[0] == len(decoded):
                return features, 0
        except (OSError, ValueError):
            pass  # a damaged cache is recomputed
    total = len(decoded)
    if not total:
        raise ValueError("No decoded photos to extract features from.")
    digests, found, known = None, np.zeros(total, dtype=bool), None
    if bank is not None:
        digests = bank.digests(decoded.images)
        found, known = bank.lookup(digests)
        built = None if isinstance(extractor, LazyExtractor) else extractor
        if known is not None and built is not None and tuple(built.output_shape[1:]) != known.shape[1:]:
            found, known = np.zeros(total, dtype=bool), None  # another network's rows under this name: replaced below
    missing = np.flatnonzero(~found)
    chunks = []
    if len(missing):
        from core.networks.fold import fold_batch_norm

        network = extractor.model() if isinstance(extractor, LazyExtractor) else extractor
        folded = fold_batch_norm(network, inference=True)  # the same features, fewer passes (`core.networks.fold`)
        forward = tf.function(lambda x: folded(x, training=False), reduce_retracing=True)
        for start in range(0, len(missing), batch_size):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            batch = np.asarray(decoded.images[missing[start:start + batch_size]], dtype=np.float32)
            chunks.append(forward(batch[:, :, ::-1] if mirror else batch).numpy())
            if progress is not None:
                progress(min(start + batch_size, len(missing)), len(missing))
    if known is None:
        features = np.concatenate(chunks)
    else:
        features = known
        if chunks:
            computed = np.concatenate(chunks)
            if computed.shape[1:] != known.shape[1:]:  # the bank holds another network's rows under this name:
                features, _ = extract_features(extractor, decoded, path, should_cancel, progress, mirror, batch_size)
                bank.add(digests, features)  # every photo's, replacing them
                return features, total
            features[missing] = computed
    if bank is not None and len(missing):
        bank.add(digests[missing], features[missing])
    if path is not None:
        atomic_write_npy(path, features)
    return features, len(missing)


def network_features(extractor, decoded, cache_dir, backbone: str, weights_key: str, image_size,
                     fingerprint: str | None, split: str, mirror: bool = False, should_cancel=None,
                     progress=None) -> tuple[np.ndarray, int]:
    """`extract_features` with the caches of one network's features (`backbone` with weights `weights_key` at
    `image_size`, the photos or their mirror images), both named from that one identity: the split's whole
    array under the data set's `fingerprint` (None: not kept whole, as for a pool that changes with every
    label), and the bank, photo by photo."""
    path = (None if fingerprint is None
            else feature_cache_path(cache_dir, fingerprint, backbone, weights_key, image_size, split, mirror))
    return extract_features(extractor, decoded, path, should_cancel, progress, mirror,
                            bank=feature_bank(cache_dir, backbone, weights_key, image_size, mirror))


def split_features(extractor, summary, split: str, backbone: str, weights_key: str, image_size,
                   cache_dir=None, should_cancel=None, progress=None) -> tuple[np.ndarray, DecodedSplit]:
    """A data set split decoded at `image_size` and its features from `extractor` (the `backbone`
    network with weights `weights_key`), both cached; returns (features, the decoded split)."""
    decoded = decode_split(summary, split, image_size, cache_dir=cache_dir)
    features, _ = network_features(extractor, decoded, cache_dir, backbone, weights_key, image_size,
                                   summary.fingerprint, split, should_cancel=should_cancel, progress=progress)
    return features, decoded
