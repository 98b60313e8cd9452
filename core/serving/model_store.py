"""The model store: each trained model as `<id>.keras` plus its `ModelCard` as `<id>.json`.

The card is written last and is the commit marker: a model is listed only when both files exist
and agree. Both are written atomically, so a crash mid-save leaves the previous state intact.
Loading keeps Keras' `safe_mode` on, so a model file can never run code (no `Lambda`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from core import settings
from core.atomic_files import atomic_write, atomic_write_json, atomic_write_npy
from core.serving.cards import ModelCard
from core.errors import LittleDataError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


class ModelError(LittleDataError):
    """A stored model that cannot be used; the message says which and why."""


@dataclass
class ModelEntry:
    """A listed model: its card, and where its files are."""

    id: str
    card: ModelCard
    model_path: Path
    card_path: Path

    @property
    def level(self) -> int:
        return self.card.level

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.card.image_size

    @property
    def val_accuracy(self) -> float | None:
        return self.card.val_accuracy

    @property
    def trained_root(self) -> str | None:
        """The folder of the data set it was trained on, as its card records it (None on a card without one)."""
        return (self.card.dataset or {}).get("root") or None

    @property
    def epochs_run(self) -> int | None:
        """The epochs it trained for; None for a model that trains nothing (level 0) or an older card."""
        return self.card.hyperparameters.get("epochs_run") or None  # level 0's card records 0

    def trained_in(self, folder: str | Path) -> bool:
        """Whether it was trained on the data set in `folder` (its scores are on that folder's photos)."""
        return self.trained_root == str(folder)

    @property
    def novelty_bank_path(self) -> Path:
        """The novelty judge's training features (`core.serving.novelty`), beside the model."""
        return self.model_path.with_name(f"{self.id}.novelty.npy")

    def label(self) -> str:
        return self.card.label()


@dataclass
class Listing:
    models: list[ModelEntry] = field(default_factory=list)
    unusable: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)


class ModelStore:
    """A folder of trained models, and the questions asked of it."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else settings.models_dir()

    def new_id(self, level: int, backbone: str | None) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        return f"level{level}-{backbone or 'scratch'}-{stamp}"

    def save(self, model, card: ModelCard, novelty_bank=None) -> ModelEntry:
        """Saves atomically: model file (and the judge's bank) first, then its card. Returns the new entry."""
        model_id = card.id or self.new_id(card.level, card.backbone)
        if not ID_PATTERN.match(model_id):
            raise ModelError(f"Invalid model id {model_id!r}.")
        card = replace(card, id=model_id, model_file=f"{model_id}.keras",
                       created=card.created or datetime.now(timezone.utc).isoformat(timespec="seconds"))
        model_path = self.root / f"{model_id}.keras"
        card_path = self.root / f"{model_id}.json"
        atomic_write(model_path, lambda tmp: model.save(tmp))
        entry = ModelEntry(model_id, card, model_path, card_path)
        if novelty_bank is not None:
            atomic_write_npy(entry.novelty_bank_path, novelty_bank)
        atomic_write_json(card_path, card.to_dict())
        return entry

    def update_card(self, entry: ModelEntry, card: ModelCard, novelty_bank=None) -> ModelEntry:
        """Rewrites a stored model's card (and its judge's bank), the model file untouched."""
        card = replace(card, id=entry.id, model_file=entry.model_path.name)
        if novelty_bank is not None:
            atomic_write_npy(entry.novelty_bank_path, novelty_bank)
        atomic_write_json(entry.card_path, card.to_dict())
        return ModelEntry(entry.id, card, entry.model_path, entry.card_path)

    def list(self) -> Listing:
        """Every complete model, newest first, and the files that cannot be used (with why)."""
        listing = Listing()
        if not self.root.is_dir():
            return listing
        for card_path in sorted(self.root.glob("*.json")):
            if card_path.name.startswith("."):
                continue
            try:
                card = ModelCard.from_dict(json.loads(card_path.read_text()))
                if card.id != card_path.stem:
                    raise ValueError(f"names model {card.id!r}")
            except (OSError, ValueError) as exc:
                listing.unusable.append((card_path.name, f"card is unreadable ({exc})"))
                continue
            model_path = self.root / f"{card_path.stem}.keras"
            if not model_path.is_file():
                listing.unusable.append((card_path.name, "its .keras file is missing"))
                continue
            listing.models.append(ModelEntry(card.id, card, model_path, card_path))
        listing.models.sort(key=lambda e: (e.card.created, e.id), reverse=True)
        return listing

    def latest(self, level: int) -> ModelEntry | None:
        """The newest model of a level, or None."""
        return self.latest_per_level().get(level)

    def latest_per_level(self, classes: list[str] | None = None, data_root: str | Path | None = None) -> dict[int, ModelEntry]:
        """level -> its newest model, by level (cards only; nothing is loaded); only of `classes` if given.

        With `data_root`, a model trained on that folder comes before a newer one trained on another folder
        of the same classes: ten photos labelled in a small data set of cats and dogs retrain a level 2 that
        must not stand in for the tutorial's when the tutorial's data set is active again.
        """
        latest: dict[int, ModelEntry] = {}
        for entry in _own_first(self.list().models, data_root):
            if classes is None or entry.classes == list(classes):
                latest.setdefault(entry.level, entry)
        return dict(sorted(latest.items()))

    def start_for(self, level: int, backbone: str | None, classes: list[str],
                  image_size: tuple[int, int], data_root: str | Path | None = None) -> ModelEntry | None:
        """The newest model of `level` another run can build on: same backbone, classes and input size
        (one trained on `data_root`, if given, before any other).

        Level 3 asks this for the level-2 classifier it fine-tunes.
        """
        for entry in _own_first(self.list().models, data_root):
            if (entry.level == level and entry.card.backbone == backbone and entry.classes == list(classes)
                    and entry.image_size == tuple(image_size)):
                return entry
        return None

    def get(self, model_id: str) -> ModelEntry:
        for entry in self.list().models:
            if entry.id == model_id:
                return entry
        raise ModelError(f"No usable model with id {model_id!r} in {self.root}.")

    def resolve(self, ref: str) -> ModelEntry:
        """A model by id, by path to its .keras or .json, or 'latest' / 'level<N>'."""
        if ref in ("latest", "newest"):
            models = self.list().models
            if not models:
                raise ModelError(f"No trained models in {self.root}.")
            return models[0]
        if match := re.fullmatch(r"level(\d+)", ref):
            entry = self.latest(int(match.group(1)))
            if entry is None:
                raise ModelError(f"No trained level-{match.group(1)} model in {self.root}.")
            return entry
        path = Path(ref)
        if path.suffix in (".keras", ".json") and path.exists():
            return ModelStore(path.parent).get(path.stem)
        return self.get(ref)

    def delete(self, model_id: str) -> None:
        for suffix in (".json", ".keras", ".novelty.npy"):  # card first: the model stops being listed at once
            (self.root / f"{model_id}{suffix}").unlink(missing_ok=True)


def _own_first(models: list[ModelEntry], data_root: str | Path | None) -> list[ModelEntry]:
    """`models` (newest first) with those trained on the folder `data_root` first, each group still newest first."""
    if data_root is None:
        return models
    return sorted(models, key=lambda entry: not entry.trained_in(data_root))  # stable


def load_model(entry: ModelEntry):
    """Loads a listed model in safe mode and checks it against its card.

    Raises:
        ModelError: the file is damaged, runs code (Lambda), or disagrees with its card
            (number of classes, input size).
    """
    import keras

    from core.networks.factories import single_view  # importing core.networks.factories also registers its custom layers

    try:
        model = keras.saving.load_model(entry.model_path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "unusable", with the reason
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if "Lambda" in str(exc) or "safe_mode" in str(exc):
            reason = "it contains a Lambda layer (arbitrary code), which safe mode refuses to load"
        raise ModelError(f"{entry.id}: cannot be loaded: {reason}") from exc
    num_classes = len(entry.classes)
    units = model.outputs[0].shape[-1]
    if (1 if num_classes == 2 else num_classes) != units:
        raise ModelError(f"{entry.id}: its card lists {num_classes} classes but the model outputs {units}.")
    try:
        resize = single_view(model).get_layer("resize")
        size = (resize.height, resize.width)
    except ValueError:
        size = tuple(model.inputs[0].shape[1:3])
    if tuple(size) != tuple(entry.image_size):
        raise ModelError(f"{entry.id}: its card says {tuple(entry.image_size)} but the model takes {tuple(size)}.")
    return model
