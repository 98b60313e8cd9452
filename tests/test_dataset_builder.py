"""Data sets built in the app: safe adds, a stable stratified split, corrections with undo, the zip."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.data.builder import (BuiltDataset, EditableDataset, built_datasets, datasets_root, editable, kept_labels,
                               validation_quota)
from core.data.folders import DatasetError, summarize
from core.training.loop import TrainConfig, train
from core.app.workspace import install_uploaded_zip
from tests.helpers import jpeg_bytes, make_image, png_bytes, zip_folder


def photos(cls: str, n: int, seed: int = 0, size: int = 64) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    return [(f"{cls}-{i}.jpg", jpeg_bytes(make_image(cls, rng, size), quality=90)) for i in range(n)]


@pytest.mark.parametrize("n, fraction, expected", [(0, 0.2, 0), (1, 0.2, 0), (2, 0.2, 1), (3, 0.2, 1), (10, 0.2, 2),
                                                    (10, 0.5, 5), (3, 0.5, 2), (2, 0.5, 1)])
def test_validation_quota_keeps_one_photo_on_each_side(n, fraction, expected):
    assert validation_quota(n, fraction) == expected


def test_create_checks_names_and_classes():
    with pytest.raises(DatasetError, match="at least two classes"):
        BuiltDataset.create("pets", ["cats"])
    with pytest.raises(DatasetError, match="differ"):
        BuiltDataset.create("pets", ["Cats", "cats"])
    with pytest.raises(DatasetError, match="folder name"):
        BuiltDataset.create("pets", ["cats", "../dogs"])
    with pytest.raises(DatasetError, match="name"):
        BuiltDataset.create("  ", ["cats", "dogs"])
    with pytest.raises(DatasetError, match="between 5% and 50%"):
        BuiltDataset.create("pets", ["cats", "dogs"], validation_fraction=0.9)
    built = BuiltDataset.create("My pets!", ["cats", "dogs", "birds"])
    assert built.root.parent == datasets_root().resolve()
    assert built.classes == ["birds", "cats", "dogs"] and built.name == "My pets!"
    assert built.problems() == [f"{c} needs at least 2 photos (it has 0): one to learn from, one to check."
                                for c in ["birds", "cats", "dogs"]]
    assert [d.root for d in built_datasets()] == [built.root]


def test_adding_photos_decodes_safely_and_splits_stratified_and_stable():
    built = BuiltDataset.create("shapes", ["circles", "squares"], validation_fraction=0.25, seed=3)
    rgba = Image.new("RGBA", (80, 60), (255, 0, 0, 128))
    cmyk = Image.new("CMYK", (50, 50), (0, 255, 255, 0))
    batch = photos("circles", 6) + [("alpha.png", png_bytes(rgba)), ("cmyk.jpg", jpeg_bytes(cmyk)),
                                    ("notes.jpg", b"not an image at all"), ("empty.png", b"")]
    report = built.add_photos("circles", batch)
    assert len(report.added) == 8  # odd modes are converted, not refused
    assert [name for name, _ in report.skipped] == ["notes.jpg", "empty.png"]
    assert all("image" in reason or "empty" in reason for _, reason in report.skipped)
    assert not any(reason.startswith(name) for name, reason in report.skipped)  # the name is said once, beside it
    assert built.counts()["circles"] == {"train": 6, "validation": 2}
    for path in built.photos("circles", "train"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.format == "JPEG"
    placed = {s: set(built.photos("circles", s)) for s in ("train", "validation")}

    again = built.add_photos("circles", photos("circles", 6))  # the same bytes: nothing added twice
    assert again.added == [] and all("already in the data set" in r for _, r in again.skipped)
    built.add_photos("circles", photos("circles", 12, seed=1))
    counts = built.counts()["circles"]
    assert counts == {"train": 15, "validation": 5}  # 25% of 20
    for split, paths in placed.items():  # nothing placed before has moved
        assert paths <= set(built.photos("circles", split))

    # The same uploads into a twin data set land in the same splits: the split is seeded.
    twin = BuiltDataset.create("twin", ["circles", "squares"], validation_fraction=0.25, seed=3)
    twin.add_photos("circles", batch)
    assert {p.name for p in twin.photos("circles", "validation")} == {p.name for p in placed["validation"]}


def test_one_photo_goes_to_train_and_the_second_to_validation():
    built = BuiltDataset.create("pair", ["a", "b"])
    first, second = photos("circles", 2)
    built.add_photos("a", [first])
    assert built.counts()["a"] == {"train": 1, "validation": 0}
    built.add_photos("a", [second])
    assert built.counts()["a"] == {"train": 1, "validation": 1}


def test_limits_refuse_with_a_reason(monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_MAX_PHOTOS_PER_CLASS", "3")
    built = BuiltDataset.create("small", ["circles", "squares"])
    report = built.add_photos("circles", photos("circles", 5))
    assert len(report.added) == 3 and len(report.skipped) == 2
    assert all("limit" in reason for _, reason in report.skipped)
    monkeypatch.setenv("LITTLE_DATA_MAX_UPLOAD_MB", "0.0001")  # about 100 bytes
    report = built.add_photos("squares", photos("squares", 1))
    assert report.added == [] and "limit per photo" in report.skipped[0][1]
    with pytest.raises(DatasetError, match="No class 'dogs'"):
        built.add_photos("dogs", photos("circles", 1))


def test_huge_photos_are_stored_upright_and_bounded(monkeypatch):
    built = BuiltDataset.create("big", ["circles", "squares"])
    image = Image.new("RGB", (3000, 1000), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = jpeg_bytes(image, exif=exif)
    built.add_photos("circles", [("tall.jpg", data)])
    (stored,) = built.photos("circles", "train")
    with Image.open(stored) as result:
        assert result.size == (341, 1024)  # upright (EXIF applied) and at most 1024 a side


def test_built_data_set_trains_and_round_trips_as_a_zip():
    built = BuiltDataset.create("shapes", ["circles", "squares"])
    built.add_photos("circles", photos("circles", 10))
    built.add_photos("squares", photos("squares", 10, seed=1))
    summary = summarize(built.root)
    assert summary.counts() == {"train": {"circles": 8, "squares": 8}, "validation": {"circles": 2, "squares": 2}}
    result = train(TrainConfig(level=1, epochs=1, batch_size=8, data_dir=str(built.root)))
    assert result.entry.card.dataset["counts"] == summary.counts()

    data = built.zip_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    assert len(names) == 20 and all(n.startswith("shapes/train/") or n.startswith("shapes/validation/") for n in names)
    root = install_uploaded_zip(data, "shapes.zip")
    assert summarize(root).counts() == summary.counts()
    assert summarize(root).fingerprint == summary.fingerprint
    assert kept_labels(root) == set()


def test_the_zip_carries_the_labels_confirmed_with_its_right():
    built = BuiltDataset.create("shapes", ["circles", "squares"])
    built.add_photos("circles", photos("circles", 6))
    built.add_photos("squares", photos("squares", 6, seed=1))
    kept, later_moved = built.photos("circles", "train")[:2]
    built.keep_label(kept.relative_to(built.root))
    built.keep_label(later_moved.relative_to(built.root))
    built.move(later_moved.relative_to(built.root), "squares")  # a photo moved since is no longer confirmed
    with zipfile.ZipFile(io.BytesIO(built.zip_bytes())) as archive:
        assert json.loads(archive.read("shapes/.kept_labels.json")) == [kept.relative_to(built.root).as_posix()]
    root = install_uploaded_zip(built.zip_bytes(), "shapes.zip")
    assert kept_labels(root) == {kept.relative_to(built.root).as_posix()}
    assert summarize(root).fingerprint == summarize(built.root).fingerprint


def test_corrections_move_remove_and_undo():
    built = BuiltDataset.create("shapes", ["circles", "squares"])
    built.add_photos("circles", photos("circles", 10))
    built.add_photos("squares", photos("squares", 10, seed=1))
    before = summarize(built.root).fingerprint
    wrong = built.photos("circles", "validation")[0]

    change = built.move(wrong.relative_to(built.root), "squares")
    assert change.description == f"moved {wrong.name} from circles to squares"
    assert (built.root / "validation" / "squares" / wrong.name).is_file() and not wrong.exists()
    assert summarize(built.root).fingerprint != before  # models trained before are now out of date

    gone = built.photos("squares", "train")[0]
    built.remove(gone)
    assert not gone.exists() and built.counts()["squares"]["train"] == 7
    assert built.last_change().description.startswith("removed squares/")

    assert built.undo().description.startswith("removed")
    assert gone.is_file()
    assert built.undo().description.startswith("moved")
    assert wrong.is_file() and summarize(built.root).fingerprint == before
    assert built.undo().description == "added 10 photo(s) to squares"  # adding photos is undone too
    assert built.counts()["squares"] == {"train": 0, "validation": 0} and built.counts()["circles"]["train"] > 0
    assert built.undo().description == "added 10 photo(s) to circles"
    assert built.undo() is None
    assert not [p for p in (built.root / ".trash").rglob("*") if p.is_file()]  # nothing kept of undone photos


def test_adding_photos_without_a_class_is_undone_too():
    built = BuiltDataset.create("shapes", ["circles", "squares"])
    report = built.add_unlabelled(photos("circles", 3))
    assert len(built.unlabelled()) == 3 and built.last_change().description == "added 3 photo(s) without a class"
    assert sorted(report.added) == sorted(p.relative_to(built.root).as_posix() for p in built.unlabelled())
    built.undo()
    assert built.unlabelled() == []
    again = built.add_unlabelled(photos("circles", 3))  # the same photos can be added again after
    assert len(again.added) == 3 and not again.skipped


def test_a_class_keeps_a_photo_on_each_side():
    built = BuiltDataset.create("pair", ["circles", "squares"])
    built.add_photos("circles", photos("circles", 3))
    (only_validation,) = built.photos("circles", "validation")
    built.remove(only_validation)  # a train photo takes its place in validation
    assert built.counts()["circles"] == {"train": 1, "validation": 1}
    built.undo()
    assert built.counts()["circles"] == {"train": 2, "validation": 1}


def test_changing_the_fraction_moves_the_fewest_photos():
    built = BuiltDataset.create("shapes", ["circles", "squares"], validation_fraction=0.2)
    built.add_photos("circles", photos("circles", 10))
    validation = set(built.photos("circles", "validation"))
    change = built.set_validation_fraction(0.4)
    assert built.counts()["circles"] == {"train": 6, "validation": 4}
    assert len(change.renames) == 2 and {p.name for p in validation} <= {p.name for p in built.photos("circles", "validation")}
    built.undo()
    assert built.counts()["circles"] == {"train": 8, "validation": 2}


def test_only_the_apps_own_data_sets_are_edited(dataset, tmp_path):
    assert editable(dataset) is None  # a folder elsewhere on the machine
    with pytest.raises(DatasetError, match="not one of the app's own"):
        EditableDataset(dataset)
    with pytest.raises(DatasetError, match="not a photo of this data set"):
        BuiltDataset.create("x", ["a", "b"]).move("../../etc/passwd", "a")
    unpacked = editable(install_uploaded_zip(zip_folder(dataset), "shapes.zip"))
    assert type(unpacked) is EditableDataset  # a zip unpacked by the app can be corrected too
    photo = unpacked.photos("circles", "validation")[0]
    unpacked.move(photo, "squares")
    assert unpacked.counts()["squares"]["validation"] == 7 and (dataset / "validation" / "circles" / photo.name).is_file()


def test_photos_without_a_class_wait_in_unlabelled_and_a_label_moves_one_to_train():
    built = BuiltDataset.create("shapes", ["circles", "squares"], validation_fraction=0.25)
    built.add_photos("circles", photos("circles", 4))
    built.add_photos("squares", photos("squares", 4, seed=1))
    report = built.add_unlabelled(photos("circles", 2, seed=7) + photos("circles", 1) + [("junk.jpg", b"nope")])
    assert len(report.added) == 2 and all(p.startswith("unlabelled/") for p in report.added)
    assert [name for name, _ in report.skipped] == ["circles-0.jpg", "junk.jpg"]  # a duplicate, an unreadable file
    assert "already in the data set" in report.skipped[0][1]
    summary = summarize(built.root)
    assert len(summary.unlabelled) == 2 and summary.counts()["train"] == {"circles": 3, "squares": 3}
    fingerprint = summary.fingerprint

    photo = built.unlabelled()[0]
    change = built.label(photo, "squares")
    assert not photo.exists() and (built.root / "train" / "squares" / photo.name).is_file()
    assert change.description == f"labelled {photo.name} as squares"
    assert summarize(built.root).fingerprint != fingerprint  # a new training photo: caches and models see it
    with pytest.raises(DatasetError, match="already has a class"):
        built.label(built.root / "train" / "squares" / photo.name, "circles")
    with pytest.raises(DatasetError, match="No class"):
        built.label(built.unlabelled()[0], "triangles")
    built.undo()
    assert photo.is_file() and len(built.unlabelled()) == 2 and summarize(built.root).fingerprint == fingerprint

    built.remove(built.unlabelled()[0])  # "none of these"
    assert len(built.unlabelled()) == 1 and built.last_change().description.startswith("removed unlabelled")
    built.undo()
    assert len(built.unlabelled()) == 2


def test_kept_labels_are_remembered_across_a_restart_and_undo_forgets_them():
    built = BuiltDataset.create("shapes", ["circles", "squares"])
    built.add_photos("circles", photos("circles", 5))
    built.add_photos("squares", photos("squares", 5, seed=1))
    photo = built.photos("circles", "train")[0]
    relative = photo.relative_to(built.root).as_posix()
    change = built.keep_label(photo)
    assert change.kept == [relative] and change.renames == []
    reopened = editable(built.root)  # as after a restart: only what is on disk
    assert reopened.kept_labels() == {relative} and reopened.last_change().kept == [relative]
    reopened.move(built.photos("squares", "train")[0], "circles")  # other changes keep it
    reopened.undo()
    assert EditableDataset(built.root).kept_labels() == {relative}
    EditableDataset(built.root).undo()  # the "It's right" itself
    assert EditableDataset(built.root).kept_labels() == set()
    with pytest.raises(DatasetError, match="not a photo"):
        built.keep_label("train/circles/missing.jpg")


def test_a_data_set_is_called_by_the_name_it_was_built_under(tmp_path):
    from core.data.builder import dataset_name

    built = BuiltDataset.create("my pets", ["cats", "dogs"])
    assert dataset_name(built.root) == "my pets" != built.root.name  # the folder's name has a time stamp
    plain = tmp_path / "cats_vs_dogs"
    plain.mkdir()
    assert dataset_name(plain) == "cats_vs_dogs"  # a folder the app did not build: its own name
    (built.root / "dataset.json").write_text("{not json")
    assert dataset_name(built.root) == built.root.name  # a damaged manifest: the folder's name
