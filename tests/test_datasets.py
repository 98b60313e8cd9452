"""Data sets: summaries, validation of unusable ones, safe zips, the download path, decoding."""

import functools
import http.server
import io
import os
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core import settings
from core.datasets import (DatasetError, decode_split, extract_zip, find_root, make_tf_dataset,
                           resolve_data_dir, summarize)
from tests.helpers import make_dataset, zip_folder


def test_summary_counts_and_classes(dataset):
    summary = summarize(dataset)
    assert summary.classes == ["circles", "squares"]
    assert summary.counts() == {"train": {"circles": 12, "squares": 12}, "validation": {"circles": 6, "squares": 6}}
    assert summary.unreadable == [] and len(summary.fingerprint) == 16


def test_unreadable_and_stray_files_are_skipped_and_listed(dataset_factory):
    summary = summarize(dataset_factory(broken=True))
    unreadable = {Path(rel).name for rel, _ in summary.unreadable}
    assert {"zero.jpg", "random.jpg"} <= unreadable
    assert any(p.endswith("notes.txt") for p in summary.ignored)
    assert not any(".DS_Store" in p for p in summary.ignored + [r for r, _ in summary.unreadable])
    assert summary.counts()["train"] == {"circles": 12, "squares": 13}  # truncated.jpg passes the header check


def test_truncated_image_is_dropped_at_decode_time(dataset_factory):
    summary = summarize(dataset_factory(broken=True))
    decoded = decode_split(summary, "train", (32, 32))
    assert len(decoded) == 24
    assert [Path(p).name for p, _ in decoded.failures] == ["truncated.jpg"]


def test_fingerprint_follows_content(tmp_path):
    a = make_dataset(tmp_path / "a", n_train=3, n_val=2)
    b = make_dataset(tmp_path / "b", n_train=3, n_val=2)
    assert summarize(a).fingerprint == summarize(b).fingerprint  # same seed, same bytes
    (a / "train" / "circles" / "circles.0.jpg").write_bytes((b / "train" / "squares" / "squares.0.jpg").read_bytes())
    assert summarize(a).fingerprint != summarize(b).fingerprint


def test_nested_top_folder_is_accepted(tmp_path):
    make_dataset(tmp_path / "cats_and_dogs", n_train=2, n_val=2)
    assert find_root(tmp_path) == tmp_path / "cats_and_dogs"


def test_non_ascii_class_names(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=2, n_val=2)
    for split in ("train", "validation"):
        (root / split / "circles").rename(root / split / "chats_félins")
        (root / split / "squares").rename(root / split / "犬")
    summary = summarize(root)
    assert summary.classes == ["chats_félins", "犬"]
    assert len(decode_split(summary, "train", (32, 32))) == 4


@pytest.mark.parametrize("damage, message", [
    ("one_class", "at least two class folders"),
    ("empty_class", "no readable images"),
    ("missing_in_validation", "validation/ has no folder"),
    ("no_validation", "no train/ and validation/"),
])
def test_unusable_data_sets_say_what_is_wrong(tmp_path, damage, message):
    root = make_dataset(tmp_path / "d", n_train=2, n_val=2)
    import shutil

    if damage == "one_class":
        for split in ("train", "validation"):
            shutil.rmtree(root / split / "squares")
    elif damage == "empty_class":
        for f in (root / "train" / "squares").iterdir():
            f.unlink()
    elif damage == "missing_in_validation":
        shutil.rmtree(root / "validation" / "squares")
    elif damage == "no_validation":
        shutil.rmtree(root / "validation")
    with pytest.raises(DatasetError, match=message):
        summarize(root)


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
    import core.datasets as datasets

    monkeypatch.setattr(datasets, "load_array", lambda *a, **k: pytest.fail("decoded twice"))
    second = decode_split(summary, "validation", (32, 32))
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))


# --- Zips -------------------------------------------------------------------------------------

def test_zip_round_trip_with_nested_folder_and_mac_junk(dataset, tmp_path):
    data = zip_folder(dataset, prefix="my_pets/")
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as bundle:
        bundle.writestr("__MACOSX/my_pets/._train", b"junk")
        bundle.writestr("my_pets/.DS_Store", b"junk")
    root = extract_zip(buffer.getvalue(), tmp_path / "out")
    assert root == tmp_path / "out" / "my_pets"
    assert summarize(root).counts()["train"] == {"circles": 12, "squares": 12}
    assert not (tmp_path / "out" / "__MACOSX").exists()


def _zip_with(entries) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for info, payload in entries:
            bundle.writestr(info, payload)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["../evil.jpg", "/tmp/evil.jpg", "train/../../evil.jpg", "..\\evil.jpg", "C:/evil.jpg"])
def test_zip_slip_is_refused_and_nothing_escapes(tmp_path, name):
    target = tmp_path / "inside" / "data"
    with pytest.raises(DatasetError, match="Unsafe path"):
        extract_zip(_zip_with([(name, b"x")]), target)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "inside" / "evil.jpg").exists()
    assert not target.exists()
    inside = tmp_path / "inside"
    assert not inside.exists() or list(inside.iterdir()) == []  # no staging left behind


def test_zip_symlink_entries_are_skipped(dataset, tmp_path):
    link = zipfile.ZipInfo("train/circles/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = io.BytesIO(zip_folder(dataset))
    with zipfile.ZipFile(buffer, "a") as bundle:
        bundle.writestr(link, "/etc/passwd")
    root = extract_zip(buffer.getvalue(), tmp_path / "out")
    assert not (root / "train" / "circles" / "link.jpg").exists()
    assert not any(p.is_symlink() for p in root.rglob("*"))


def test_zip_bomb_is_refused(tmp_path):
    bomb = _zip_with([("train/a/bomb.jpg", b"\0" * (50 * 2**20))])
    assert len(bomb) < 200_000
    with pytest.raises(DatasetError, match="zip bomb"):
        extract_zip(bomb, tmp_path / "out")


def test_zip_total_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(DatasetError, match="limit"):
        extract_zip(_zip_with([("train/a/x.jpg", os.urandom(2000))]), tmp_path / "out")


def test_not_a_zip(tmp_path):
    with pytest.raises(DatasetError, match="zip"):
        extract_zip(b"PK\x03\x04 definitely not", tmp_path / "out")


def test_zip_of_unusable_data_keeps_the_previous_folder(dataset, tmp_path):
    target = tmp_path / "out"
    extract_zip(zip_folder(dataset), target)
    with pytest.raises(DatasetError, match="at least two"):
        extract_zip(_zip_with([("train/only/a.jpg", (dataset / "train/circles/circles.0.jpg").read_bytes()),
                               ("validation/only/a.jpg", b"x")]), target)
    assert summarize(target).classes == ["circles", "squares"]


# --- The default data set: the real keras.utils.get_file download, against a local server ------

@pytest.fixture
def local_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_default_data_set_downloads_with_progress(dataset, local_server, monkeypatch):
    served, base = local_server
    (served / "cats_and_dogs_filtered.zip").write_bytes(zip_folder(dataset, prefix="cats_and_dogs_filtered/"))
    monkeypatch.setenv("LITTLE_DATA_DATASET_URL", f"{base}/cats_and_dogs_filtered.zip")
    seen = []
    folder, source = resolve_data_dir(progress=lambda done, total: seen.append((done, total)))
    assert "downloaded" in source
    summary = summarize(folder)
    assert summary.counts()["validation"] == {"circles": 6, "squares": 6}
    assert seen and seen[-1][0] == seen[-1][1] > 0
    # A second resolve uses the unpacked copy without downloading again.
    (served / "cats_and_dogs_filtered.zip").unlink()
    assert resolve_data_dir()[0] == settings.cache_dir() / "datasets" / "cats_and_dogs_filtered"


def test_failed_download_says_what_to_do(local_server, monkeypatch):
    _, base = local_server
    monkeypatch.setenv("LITTLE_DATA_DATASET_URL", f"{base}/missing.zip")
    with pytest.raises(DatasetError, match="LITTLE_DATA_DATA_DIR"):
        resolve_data_dir()


def test_offline_without_download_explains(monkeypatch):
    with pytest.raises(DatasetError, match="upload a zip"):
        resolve_data_dir(download=False)


def test_explicit_setting_wins(dataset, monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_DATA_DIR", str(dataset))
    assert resolve_data_dir()[0] == dataset


def test_decoded_rows_are_read_from_the_cache_file_not_held_in_memory(dataset, tmp_path):
    import pickle

    from core.datasets import ImageRows

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
