"""core.data.folders: data set folders summarised, and unusable ones refused with what is wrong.

Decoding lives in test_decoded, zips in test_archives, the default data set's download in test_download.
"""

from pathlib import Path

import pytest

from core.data.decoded import decode_split
from core.data.folders import DatasetError, find_root, summarize
from tests.helpers import make_dataset


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
