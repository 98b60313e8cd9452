"""Whether a stored model was trained on the active data set as it is now, or is out of date for it.

A model's card records the data set it was trained on (folder and fingerprint, a hash of every
photo). Comparing that with the active data set's summary tells the pages whether the model's
scores and curves describe these photos, photos since corrected, added or removed, or other classes.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from core.serving.model_store import ModelEntry

if TYPE_CHECKING:
    from core.data.folders import DatasetSummary


class DataMatch(Enum):
    """How a model's training data relates to the active data set."""

    CURRENT = "current"  # trained on exactly these photos
    OUT_OF_DATE = "out of date"  # trained on this folder, whose photos changed since
    OTHER_CLASSES = "other classes"  # trained on other classes: its scores say nothing about these photos
    UNKNOWN = "unknown"  # a subset of the photos, or another folder of the same classes: no way to tell


def data_match(entry: ModelEntry, summary: DatasetSummary) -> DataMatch:
    """How `entry`'s training data relates to the data set `summary` describes."""
    if list(entry.classes) != list(summary.classes):
        return DataMatch.OTHER_CLASSES
    dataset = entry.card.dataset or {}
    trained_fingerprint = dataset.get("fingerprint")
    if trained_fingerprint is not None and trained_fingerprint == summary.fingerprint:
        return DataMatch.CURRENT
    hyperparameters = entry.card.hyperparameters or {}
    if hyperparameters.get("limit_per_class") or hyperparameters.get("train_per_class"):
        return DataMatch.UNKNOWN  # its fingerprint is its subset's, which never equals the whole set's
    if trained_fingerprint is not None and entry.trained_in(summary.root):
        return DataMatch.OUT_OF_DATE
    return DataMatch.UNKNOWN
