"""Label reviews as background jobs: suspect labels of a data set, or the unlabelled photos to label next.

Both need bottleneck features (a minute for a new data set on a small machine), so the app runs them
as a job (`core.app.jobs`, kind "labels") and the page reads the kept result back:

    result = run_label_review(LabelsConfig(LabelTask.SUSPECTS, data_dir="..."))
    later = load_review(LabelTask.SUSPECTS, "...")   # the newest result for that data set, or None

A result remembers the data set's fingerprint when it was computed, so a page can tell that photos
have been moved since; photos that no longer exist are simply not shown.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Callable

from core import settings
from core.atomic_files import atomic_write_json
from core.experiments.label_next import Suggestion, suggest
from core.experiments.suspects import SPLITS, Suspect, find_suspects


class LabelTask(str, Enum):
    SUSPECTS = "suspects"
    SUGGEST = "suggest"

    @property
    def title(self) -> str:
        return {LabelTask.SUSPECTS: "suspect labels", LabelTask.SUGGEST: "photos to label next"}[self]

    def outcome(self, found: int, seconds: float) -> str:
        """What a finished review found, in words."""
        what = ({LabelTask.SUSPECTS: "suspect label", LabelTask.SUGGEST: "unlabelled photo ranked"}[self] if found == 1
                else {LabelTask.SUSPECTS: "suspect labels", LabelTask.SUGGEST: "unlabelled photos ranked"}[self])
        return f"{found} {what} in {seconds:.0f} s"


@dataclass
class LabelsConfig:
    """One review: which task, on which data set (`data_dir`; None: `LITTLE_DATA_DATA_DIR` or the
    default download, as for the CLI; the app always names its active data set).

    Attributes:
        split: the photos whose labels are checked (suspects).
        model_id: the model whose uncertainty ranks the unlabelled photos (suggest; required there).
        n: how many to keep (suspects: every one found when 0).
        backbone: the network whose features are used (suspects; None: the default).
    """

    task: LabelTask
    data_dir: str | None = None
    split: str = "train"
    model_id: str | None = None
    n: int = 0
    backbone: str | None = None

    def __post_init__(self):
        from core.data.folders import DatasetError

        self.task = LabelTask(self.task)
        if self.split not in SPLITS:
            raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}.")
        if self.task is LabelTask.SUGGEST and not self.model_id:
            raise DatasetError("Ranking unlabelled photos needs a model: train one first (level 2 takes seconds).")

    def to_dict(self) -> dict:
        return {**asdict(self), "task": self.task.value}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelsConfig":
        return cls(**data)


@dataclass
class LabelReview:
    """A finished review: the suspects or suggestions, most worth a look first."""

    task: LabelTask
    data_dir: str
    fingerprint: str
    items: list[Suspect] | list[Suggestion] = field(default_factory=list)
    model_id: str | None = None
    model_accuracy: float | None = None  # the model's validation accuracy when it ranked (suggest)
    model_level: int | None = None
    split: str = "train"
    created: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "task": self.task.value, "items": [item.to_dict() for item in self.items]}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelReview":
        task = LabelTask(data["task"])
        item_class = Suspect if task is LabelTask.SUSPECTS else Suggestion
        known = {f.name for f in fields(cls)}  # a file from another version may hold fields this one lacks
        return cls(**{**{k: v for k, v in data.items() if k in known}, "task": task,
                      "items": [item_class(**item) for item in data["items"]]})


def review_path(task: LabelTask, data_dir: str | Path) -> Path:
    """Where the newest review of a task for one data set folder is kept."""
    key = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return settings.home_dir() / "labels" / f"{key}-{LabelTask(task).value}.json"


def load_review(task: LabelTask, data_dir: str | Path | None) -> LabelReview | None:
    """The newest finished review of `task` for that data set, or None (never run, or unreadable)."""
    if data_dir is None:
        return None
    try:
        return LabelReview.from_dict(json.loads(review_path(task, data_dir).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_label_review(config: LabelsConfig, phase: Callable[[str], None] | None = None,
                     should_cancel: Callable[[], bool] | None = None) -> LabelReview:
    """Runs the review and keeps its result (atomically) for `load_review`.

    Args:
        phase: called with a message as each step starts (the job's progress line).
        should_cancel: polled while features are computed; `core.errors.Cancelled` is raised when
            it says so, and nothing is kept.
    """
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.serving.model_store import ModelStore

    phase = phase or (lambda message: None)
    started = time.monotonic()
    folder, source = resolve_data_dir(config.data_dir, download=False)
    summary = summarize(folder, source=source)
    review = LabelReview(config.task, str(summary.root), summary.fingerprint, split=config.split, created=time.time())
    if config.task is LabelTask.SUSPECTS:
        phase(f"Bottleneck features of the {config.split} photos from two networks (a minute or more the first "
              "time, cached after), then out-of-fold heads and each photo's neighbours")
        review.items = find_suspects(summary, config.split, config.backbone, should_cancel=should_cancel)
        review.items = review.items[:config.n] if config.n else review.items
    else:
        entry = ModelStore().get(config.model_id)
        phase(f"Ranking {len(summary.unlabelled)} unlabelled photos with {entry.id}")
        review.items = suggest(entry, summary, n=config.n or len(summary.unlabelled), should_cancel=should_cancel)
        review.model_id, review.model_level = entry.id, entry.level
        review.model_accuracy = validation_accuracy_here(entry, summary, phase)
    review.seconds = round(time.monotonic() - started, 2)
    atomic_write_json(review_path(config.task, summary.root), review.to_dict())
    return review


def skipped_path(data_dir: str | Path) -> Path:
    """Where the photos skipped in the newest ranking of one data set folder are kept."""
    return review_path(LabelTask.SUGGEST, data_dir).with_name(
        review_path(LabelTask.SUGGEST, data_dir).stem + "-skipped.json")


def skipped_photos(review: LabelReview) -> set[str]:
    """The photos of `review` (a ranking) skipped so far: kept on disk, so a reload or a second tab still
    passes over them. A new ranking starts with none skipped (it puts the skipped photos back in order)."""
    try:
        data = json.loads(skipped_path(review.data_dir).read_text())
        return set(data["images"]) if data.get("created") == review.created else set()
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def skip_photo(review: LabelReview, image: str) -> set[str]:
    """Passes over `image` in `review` until the photos are ranked again; returns every photo skipped."""
    skipped = skipped_photos(review) | {str(image)}
    atomic_write_json(skipped_path(review.data_dir), {"created": review.created, "images": sorted(skipped)})
    return skipped


def validation_accuracy_here(entry, summary, phase: Callable[[str], None] | None = None) -> float | None:
    """`entry`'s accuracy on this data set's validation photos, which a level 2 retrained after labelling
    is scored on: the card's figure when the model was trained on this folder with the same validation
    photos per class, else measured now (a model of the same classes from another data set, such as the
    tutorial's when a small data set of cats and dogs has none of its own yet). None without validation photos."""
    from core.data.decoded import decode_split
    from core.serving.evaluation import evaluate
    from core.serving.predictor import Predictor

    if not summary.files.get("validation"):
        return None
    validation = summary.counts().get("validation", {})
    if entry.trained_in(summary.root) and ((entry.card.dataset or {}).get("counts") or {}).get("validation") == validation:
        return entry.val_accuracy
    if phase is not None:
        phase(f"Scoring {entry.id} on this data set's {sum(validation.values())} validation photos, to compare after "
              "your labels (it was trained on other photos)")
    return evaluate(Predictor(entry), decode_split(summary, "validation", entry.image_size)).accuracy
