"""core.data.archives: data-set zips unpacked safely (no zip slip, symlinks, bombs or oversize archives)."""

import io
import os
import stat
import zipfile

import pytest

from core.data.archives import extract_zip
from core.data.folders import DatasetError, summarize
from tests.helpers import zip_folder


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
    assert not (root / ".DS_Store").exists()


def test_of_the_hidden_files_only_the_confirmed_labels_are_kept_and_only_small(dataset, tmp_path, monkeypatch):
    import core.data.archives as archives

    def unpacked(kept: bytes) -> set[str]:
        buffer = io.BytesIO(zip_folder(dataset, prefix="pets/"))
        with zipfile.ZipFile(buffer, "a") as bundle:
            bundle.writestr("pets/.kept_labels.json", kept)
            bundle.writestr("pets/.secret", b"x")
            bundle.writestr("pets/.hidden/.kept_labels.json", b"[]")
            bundle.writestr("pets/train/circles/.kept_labels.json", b"[]")  # only the data set's own counts
        root = extract_zip(buffer.getvalue(), tmp_path / "out")
        return {p.relative_to(root).as_posix() for p in root.rglob(".*")}

    assert unpacked(b'["train/circles/circles.0.jpg"]') == {".kept_labels.json"}
    monkeypatch.setattr(archives, "MAX_KEPT_LABELS_BYTES", 10)
    assert unpacked(b'["train/circles/circles.0.jpg"]') == set()


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
    monkeypatch.setenv("LITTLE_DATA_MAX_ZIP_MB", str(1000 / 2**20))  # 1000 bytes
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
