"""core.data.decoded: photos decoded once into a cache file, read back in rows, streamed as tf.data batches."""

from pathlib import Path

import numpy as np
import pytest

from core.data.decoded import decode_split, make_tf_dataset
from core.data.folders import DatasetError, summarize


def test_truncated_image_is_dropped_at_decode_time(dataset_factory):
    summary = summarize(dataset_factory(broken=True))
    decoded = decode_split(summary, "train", (32, 32))
    assert len(decoded) == 24
    assert [Path(p).name for p, _ in decoded.failures] == ["truncated.jpg"]


def test_tf_dataset_streams_batches(dataset):
    decoded = decode_split(summarize(dataset), "train", (32, 32))
    batches = list(make_tf_dataset(decoded, batch_size=5, shuffle=True, seed=1))
    assert [int(x.shape[0]) for x, _ in batches] == [5, 5, 5, 5, 4]
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(labels.tolist()) == sorted(decoded.labels.tolist())
    # tf.data's autotuner stalls every epoch end on small machines; our pipelines turn it off
    assert make_tf_dataset(decoded, batch_size=5).options().autotune.enabled is False


def test_decode_cache_is_reused(dataset, monkeypatch):
    summary = summarize(dataset)
    first = decode_split(summary, "validation", (32, 32))
    import core.data.decoded as datasets

    monkeypatch.setattr(datasets, "load_array", lambda *a, **k: pytest.fail("decoded twice"))
    second = decode_split(summary, "validation", (32, 32))
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))


def test_decoded_rows_are_read_from_the_cache_file_not_held_in_memory(dataset, tmp_path):
    import pickle

    from core.data.decoded import ImageRows

    decoded = decode_split(summarize(dataset), "train", (32, 32), cache_dir=tmp_path / "cache")
    rows = decoded.images
    assert isinstance(rows, ImageRows) and rows.shape == (24, 32, 32, 3) and len(rows) == 24
    every = np.asarray(rows)
    assert every.dtype == np.uint8 and every.shape == rows.shape
    assert np.array_equal(rows[3], every[3]) and np.array_equal(rows[-1], every[-1])
    assert np.array_equal(rows[2:7], every[2:7]) and np.array_equal(rows[::5], every[::5])
    picks = np.array([9, 2, 3, 4, 17, 2])  # unsorted, repeated, with a run of neighbours
    assert np.array_equal(rows[picks], every[picks])
    assert np.array_equal(pickle.loads(pickle.dumps(rows))[5], every[5])
    with pytest.raises(IndexError):
        rows[np.array([24])]
    with open(rows.path, "r+b") as handle:  # a cache cut short is reported, then rebuilt on the next decode
        handle.truncate(rows.path.stat().st_size - 10)
    with pytest.raises(DatasetError, match="truncated"):
        rows[23]
    assert len(decode_split(summarize(dataset), "train", (32, 32), cache_dir=tmp_path / "cache")) == 24


def test_a_copy_of_a_data_set_names_its_own_photos(dataset_factory, tmp_path):
    """Same photos, same fingerprint, one decode cache: each copy still gets paths inside itself."""
    import shutil

    from core.data.decoded import decode_split
    from core.data.folders import summarize

    original = dataset_factory()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    first, second = summarize(original), summarize(copy)
    assert first.fingerprint == second.fingerprint
    decode_split(first, "train", (32, 32))
    again = decode_split(second, "train", (32, 32))
    assert again.paths and all(path.startswith(str(copy)) for path in again.paths)
