"""Whether a stored model was trained on the active data set as it is now (core.serving.data_match)."""

from pathlib import Path

import pytest

from core.data.folders import DatasetSummary
from core.serving.cards import ModelCard
from core.serving.data_match import DataMatch, data_match
from core.serving.model_store import ModelEntry

ROOT = Path("/data/pets")


def summary(fingerprint="now", classes=("cats", "dogs"), root=ROOT) -> DatasetSummary:
    return DatasetSummary(root=root, classes=list(classes), files={}, fingerprint=fingerprint)


def model(fingerprint="now", classes=("cats", "dogs"), root=ROOT, **hyperparameters) -> ModelEntry:
    dataset = {"root": str(root)} | ({"fingerprint": fingerprint} if fingerprint else {})
    card = ModelCard(level=1, classes=list(classes), image_size=(64, 64), dataset=dataset,
                     hyperparameters={"limit_per_class": None, "train_per_class": None, **hyperparameters})
    return ModelEntry("m", card, Path("m.keras"), Path("m.json"))


@pytest.mark.parametrize("entry, expected", [
    (model(), DataMatch.CURRENT),
    (model(root=Path("/elsewhere")), DataMatch.CURRENT),  # the same photos, moved: still these photos
    (model(fingerprint="before"), DataMatch.OUT_OF_DATE),  # photos moved, removed or added since
    (model(fingerprint="before", root=Path("/elsewhere")), DataMatch.UNKNOWN),  # another folder: another data set
    (model(fingerprint="subset", train_per_class=5), DataMatch.UNKNOWN),  # a subset's fingerprint is its own
    (model(fingerprint="subset", limit_per_class=5), DataMatch.UNKNOWN),
    (model(fingerprint=None), DataMatch.UNKNOWN),  # a card that never recorded one
    (model(classes=("circles", "squares")), DataMatch.OTHER_CLASSES),
])
def test_a_model_is_out_of_date_only_when_its_folders_photos_changed(entry, expected):
    assert data_match(entry, summary()) is expected
