"""`ModelCard`: what a saved model is, how it was trained and how well it does.

The store writes one beside every `.keras` file as JSON, and every page, the CLI and the
benchmark read it back through `ModelCard.from_dict`, never as a raw dict. Cards written before
the `version` field existed (version 1) load unchanged; keys this version does not know are kept
in `extra` and written back, so an older program never strips a newer card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from core.levels import LEVELS
from core.networks.imagenet import FoundGrouping, GroupScore
from core.serving.calibration import Calibration
from core.serving.novelty import NoveltyJudge

#: 3: calibration and the novelty judge (cards without them load, and their models predict as before).
CARD_VERSION = 3


@dataclass
class Metrics:
    """Validation figures of a run.

    Attributes:
        val_accuracy: what the saved model scores (mirror-averaged when `flip_average` is on).
        last_epoch_val_accuracy, best_val_accuracy, best_epoch: the training curve, one view per photo.
        val_loss, train_accuracy: the curve's last epoch.
    """

    val_accuracy: float | None = None
    last_epoch_val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    val_loss: float | None = None
    train_accuracy: float | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> "Metrics":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass
class ModelCard:
    """The JSON card of one stored model. `level`, `classes` and `image_size` are required."""

    level: int
    classes: list[str]
    image_size: tuple[int, int]
    id: str = ""
    level_name: str = ""
    backbone: str | None = None
    weights: str | None = None
    weights_key: str | None = None
    started_from: str | None = None
    augment: dict = field(default_factory=dict)
    flip_average: bool = False
    hyperparameters: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    tutorial_accuracy: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    backbone_flops: int | None = None
    imagenet_classes: dict[str, list[int]] | None = None  # level 0's grouping
    calibration: Calibration | None = None
    novelty: NoveltyJudge | None = None
    novelty_note: str | None = None  # why there is no judge
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    model_file: str = ""
    version: int = CARD_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.classes = [str(c) for c in self.classes]
        if len(self.classes) < 2:
            raise ValueError(f"a card needs at least two classes, got {self.classes}")

    @property
    def val_accuracy(self) -> float | None:
        return self.metrics.val_accuracy

    @property
    def sums_class_groups(self) -> bool:
        """A level 0 built when each class summed its ImageNet group's probabilities (its card predates
        `class_groups`), which let a group of many ImageNet classes win the photos the network is unsure of."""
        return (self.imagenet_classes is not None
                and (self.hyperparameters or {}).get("class_groups", GroupScore.SUM.value) == GroupScore.SUM.value)

    @property
    def found_grouping(self) -> FoundGrouping | None:
        """For a level 0 whose ImageNet classes were found from its training photos, what was found; else None."""
        found = (self.hyperparameters or {}).get("found_imagenet_classes") or {}
        if self.imagenet_classes is None or found.get("per_class") is None or found.get("photos") is None:
            return None
        return FoundGrouping(dict(self.imagenet_classes), int(found["per_class"]), found.get("held_out_accuracy"),
                             int(found["photos"]))

    def outvoting_groups(self) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """For a level 0 that summed groups of different sizes: (class, ImageNet classes) of its largest group
        and of its smallest, the bias that building it again removes; None for any other model."""
        if not self.sums_class_groups:
            return None
        sizes = sorted(((len(group), name) for name, group in self.imagenet_classes.items()), reverse=True)
        (most, large), (fewest, small) = sizes[0], sizes[-1]
        return ((large, most), (small, fewest)) if most != fewest else None

    @property
    def augmented(self) -> bool:
        """Whether training used any augmentation (the fill mode alone is not augmentation)."""
        return any(v for k, v in self.augment.items() if k != "fill_mode")

    @property
    def level_label(self) -> str:
        level = LEVELS.get(self.level)
        return level.label if level else f"Level {self.level}"

    def label(self) -> str:
        score = f"{self.val_accuracy:.1%}" if self.val_accuracy is not None else "n/a"
        return f"Level {self.level} · {self.backbone or 'small convnet'} · {score} · {self.id}"

    def to_dict(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        data["image_size"] = list(self.image_size)
        data["calibration"] = self.calibration.to_dict() if self.calibration else None
        data["novelty"] = self.novelty.to_dict() if self.novelty else None
        return {**extra, **data}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        """Reads a card; raises ValueError saying what is missing or malformed."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key in ("level", "classes", "image_size"):
            if key not in data:
                raise ValueError(f"missing {key!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["level"] = int(values["level"])
            values["metrics"] = Metrics.from_dict(values.get("metrics"))
            values["calibration"] = Calibration.from_dict(values.get("calibration"))
            values["novelty"] = NoveltyJudge.from_dict(values.get("novelty"))
            values.setdefault("version", 1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed card ({exc})") from exc
        try:
            return cls(**values, extra={k: v for k, v in data.items() if k not in known})
        except (TypeError, IndexError) as exc:
            raise ValueError(f"malformed card ({exc})") from exc
