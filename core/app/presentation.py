"""The tutorial as a talk: the slides of the Present page, each built from what this machine holds now.

`build_story` reads the model store, the data set and the measured curve and returns one `Slide`
per step of the story, in order: the data, the problem (overfitting), augmentation, levels 1, 2,
3 and 0, how little data is enough, where each level looks, and the audience's photos. A slide
whose result does not exist yet says what is missing and names the job that makes it
(`Slide.action`), so the presenter can start it without leaving the slide. Every figure carries
where it comes from (`Source`: the model id and when it was made).

Nothing here draws: `pages/present.py` does, from these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from core.data.folders import DatasetSummary
from core.data.builder import dataset_name
from core.experiments.curve_statistics import statistics_per_size
from core.experiments.efficiency_curve import backbone_for, load_points
from core.levels import LEVELS, get_level
from core.networks.backbones import BACKBONES
from core.serving.data_match import DataMatch, data_match
from core.serving.model_store import ModelEntry, ModelStore


class SlideKind(Enum):
    DATA = "data"
    PROBLEM = "problem"
    AUGMENTATION = "augmentation"
    LEVEL1 = "level1"
    LEVEL2 = "level2"
    LEVEL3 = "level3"
    LEVEL0 = "level0"
    CURVE = "curve"
    HEATMAPS = "heatmaps"
    AUDIENCE = "audience"


class ActionKind(Enum):
    TRAIN = "train"  # train `Action.level` with its defaults
    MEASURE_CURVE = "curve"  # measure the data-efficiency curve


@dataclass(frozen=True)
class Action:
    """The job that would fill a slide."""

    kind: ActionKind
    level: int | None = None

    @property
    def label(self) -> str:
        if self.kind is ActionKind.TRAIN:
            return f"Train level {self.level} now"
        return "Measure the curve now"


@dataclass(frozen=True)
class Source:
    """Where a slide's figures come from."""

    model_id: str | None = None
    created: str | None = None  # the model card's "created" (ISO time)
    what: str = ""  # e.g. "validation accuracy on 800 photos"

    def describe(self) -> str:
        parts = [self.what] if self.what else []
        if self.model_id:
            parts.append(f"model `{self.model_id}`")
        if self.created:
            parts.append(f"trained {self.created[:16].replace('T', ' ')}")
        return " · ".join(parts)


@dataclass(frozen=True)
class Slide:
    """One slide: its headline from the results, or what is missing and the job that would make it."""

    kind: SlideKind
    title: str
    headline: str  # one sentence, large, from the results (or the story when there are none)
    notes: str  # the presenter's notes (hidden by default)
    level: int | None = None
    model: ModelEntry | None = None  # the model the slide shows, if any
    sources: list[Source] = field(default_factory=list)
    missing: str | None = None  # what does not exist yet
    action: Action | None = None  # the job that makes it

    @property
    def ready(self) -> bool:
        return self.missing is None


def _source(entry: ModelEntry, what: str = "") -> Source:
    return Source(entry.id, entry.card.created or None, what)


def _current(store: ModelStore, summary: DatasetSummary | None) -> dict[int, ModelEntry]:
    """level -> its newest model trained on this data set (any model of these classes, failing that)."""
    latest = store.latest_per_level(summary.classes if summary else None, summary.root if summary else None)
    if summary is None:
        return latest
    return {level: entry for level, entry in latest.items() if data_match(entry, summary) is not DataMatch.OTHER_CLASSES}


def _validation_count(summary: DatasetSummary | None) -> int:
    if summary is None:
        return 0
    return sum(summary.counts().get("validation", {}).values())


def overfitting_gap(entry: ModelEntry) -> float | None:
    """Training accuracy minus validation accuracy at the last epoch of a run's curve, or None without one."""
    history = entry.card.history
    train, val = history.get("accuracy"), history.get("val_accuracy")
    if not train or not val:
        return None
    return float(train[-1] - val[-1])


#: A gap between training and validation accuracy (at the last epoch) that a room can see on the chart.
CLEAR_GAP = 0.05


#: Validation loss this many times its lowest, at the last epoch: overfitting even where accuracy holds.
CLEAR_LOSS_RISE = 1.5


def loss_rise(history: dict) -> tuple[float, int] | None:
    """(last validation loss / its lowest, the epoch of the lowest) when the loss has risen by
    `CLEAR_LOSS_RISE` or more since its lowest; None otherwise or without the curve."""
    losses = [value for value in history.get("val_loss", []) if value is not None]
    if len(losses) < 3 or min(losses) <= 0:
        return None
    lowest = min(losses)
    rise = losses[-1] / lowest
    return (rise, losses.index(lowest) + 1) if rise >= CLEAR_LOSS_RISE else None


def most_overfitted(store: ModelStore, summary: DatasetSummary | None) -> ModelEntry | None:
    """The stored run of these classes whose training accuracy ran furthest ahead of its validation accuracy,
    among those trained on this data set's folder if there are any (another data set's run, say 40
    validation photos of a small one, does not tell this one's story)."""
    classes = summary.classes if summary else None
    runs = [e for e in store.list().models if (classes is None or e.classes == classes)
            and overfitting_gap(e) is not None and len(e.card.history.get("accuracy", [])) >= 3]
    here = [e for e in runs if summary is not None and e.trained_in(summary.root)]
    return max(here or runs, key=overfitting_gap, default=None)


def _level_slide(kind: SlideKind, level_key: int, entry: ModelEntry | None, n_val: int, story: str,
                 notes: str) -> Slide:
    level = get_level(level_key)
    title = level.label
    if entry is None or entry.val_accuracy is None:
        return Slide(kind, title, story, notes, level=level_key, missing=f"No {level.label.lower()} model yet.",
                     action=Action(ActionKind.TRAIN, level_key))
    tutorial = (f"; the tutorial reported {level.tutorial_accuracy:.1%} ({level.tutorial_setup})"
                if level.tutorial_accuracy_for(entry.classes) is not None else "")
    backbone = BACKBONES.get(entry.card.backbone or "")
    network = f" with {backbone.label}" if backbone else ""
    headline = f"{entry.val_accuracy:.1%} of {n_val or 'the'} validation photos right{network}{tutorial}."
    return Slide(kind, title, headline, notes, level=level_key, model=entry,
                 sources=[_source(entry, "validation accuracy")])


def build_story(summary: DatasetSummary | None, store: ModelStore | None = None) -> list[Slide]:
    """The slides, in the order of the talk, from this machine's data set, models and measurements."""
    store = store or ModelStore()
    current = _current(store, summary)
    n_val = _validation_count(summary)
    slides: list[Slide] = []

    if summary is None:
        slides.append(Slide(SlideKind.DATA, "The data", "Start with a data set.",
                            "Open the Data page to download cats vs dogs or build your own classes.",
                            missing="No data set yet: the Data page downloads cats vs dogs or builds one."))
    else:
        counts = summary.counts()
        n_train = sum(counts.get("train", {}).values())
        per_class = ", ".join(f"{n} {c}" for c, n in counts.get("train", {}).items())
        slides.append(Slide(SlideKind.DATA, "Very little data",
                            f"{n_train:,} training photos ({per_class}) and {n_val:,} to check on. "
                            "ImageNet has 1.2 million.",
                            "The tutorial's point: deep learning is said to need huge data sets. Here is a small "
                            "one; by the end, a model gets almost all of its validation photos right.",
                            sources=[Source(what=f"data set `{dataset_name(summary.root)}` · fingerprint {summary.fingerprint}")]))

    run = most_overfitted(store, summary)
    if run is None:
        slides.append(Slide(SlideKind.PROBLEM, "The problem: overfitting",
                            "A network with more weights than photos learns the photos, not the classes.",
                            "Train any level: its curves show training accuracy pulling away from validation.",
                            missing="No training run with a curve yet.", action=Action(ActionKind.TRAIN, 2)))
    else:
        gap = overfitting_gap(run)
        train_acc, val_acc = run.card.history["accuracy"][-1], run.card.history["val_accuracy"][-1]
        points = f"{gap * 100:.0f} point{'' if round(gap * 100) == 1 else 's'}"
        classes = " and ".join(summary.classes) if summary else "the classes"
        if gap >= CLEAR_GAP:
            headline = (f"Training accuracy {train_acc:.0%}, validation {val_acc:.0%}: a gap of {points}. "
                        f"It learned these photos, not {classes}.")
            notes = ("Point at the two curves: training keeps climbing, validation stops. That gap is what every "
                     "technique in this talk fights.")
        elif (rise := loss_rise(run.card.history)) is not None:  # accuracy close, but the loss tells
            headline = (f"Training accuracy {train_acc:.0%}, validation {val_acc:.0%}: only {points} apart, but "
                        f"validation loss has grown {rise[0]:.1f}× since epoch {rise[1]}: it grows surer of its "
                        "answers, not better at them. That is overfitting starting.")
            notes = ("Point at the loss: training loss falls to zero while validation loss climbs. A run trained from "
                     "scratch without augmentation (Train page, level 1) shows the gap in accuracy too.")
        else:  # the most overfitted run here barely overfits, if at all: say so rather than claim it
            headline = (f"Training accuracy {train_acc:.0%}, validation {val_acc:.0%}: "
                        + (f"only {points} apart. This run barely overfits" if gap > 0 else
                           "validation is not behind. This run does not overfit")
                        + "; one trained from scratch without augmentation shows the gap.")
            notes = ("No run here shows a clear gap yet. Train level 1 with augmentation off (Train page) to show "
                     "training accuracy pulling away from validation.")
        slides.append(Slide(SlideKind.PROBLEM, "The problem: overfitting", headline, notes,
                            level=run.level, model=run, sources=[_source(run, "training curves")]))

    slides.append(Slide(SlideKind.AUGMENTATION, "Augmentation: one photo, many pictures",
                        "Random rotations, shifts, zooms and flips: the network never sees the same picture twice.",
                        "The tutorial's figure: one cat, many variants. Augmentation and dropout are the cure "
                        "for a network trained from scratch.",
                        missing=None if summary is not None else "No data set yet."))
    slides.append(_level_slide(SlideKind.LEVEL1, 1, current.get(1), n_val,
                               "A small convnet from scratch, with augmentation and dropout.",
                               "The tutorial got about 80% with 2000 photos and 50 epochs. Compare ours."))
    slides.append(_level_slide(SlideKind.LEVEL2, 2, current.get(2), n_val,
                               "Use a network pretrained on ImageNet: its features, a small classifier on top.",
                               "Bottleneck features: the pretrained network looks at each photo once, and a "
                               "tiny classifier learns from what it sees. Seconds, not hours."))
    level3 = _level_slide(SlideKind.LEVEL3, 3, current.get(3), n_val,
                          "Fine-tune the pretrained network's top block together with the classifier.",
                          "Fine-tuning: level 2's classifier goes back on the network, its top block is "
                          "unfrozen, and both learn slowly (a small learning rate).")
    if not level3.ready and current.get(2) is None:  # it starts from level 2's model
        level3 = replace(level3, missing="No fine-tuned model yet; it starts from level 2's, so train level 2 first.",
                         action=Action(ActionKind.TRAIN, 2))
    slides.append(level3)
    slides.append(_level_slide(SlideKind.LEVEL0, 0, current.get(0), n_val,
                               "What the pretrained network knows before anything is trained.",
                               "No training at all: ImageNet's own classifier, its classes grouped into ours (its dog "
                               "breeds are 'dogs', its house cats 'cats'; for other classes, the ImageNet classes "
                               "their photos look most like). It does well only where ImageNet has our classes."))

    curve_rows = []
    if summary is not None:
        for key in sorted(LEVELS):
            stats = statistics_per_size(load_points(summary.fingerprint, key, backbone_for(key)))
            curve_rows += [(key, s) for s in stats]
    if curve_rows:
        smallest = min(curve_rows, key=lambda row: row[1].images_per_class)
        slides.append(Slide(SlideKind.CURVE, "How little data is enough",
                            f"Level {smallest[0]} with {smallest[1].images_per_class} photos per class: "
                            f"{smallest[1].mean:.0%} (mean of {smallest[1].seeds} seed{'s' if smallest[1].seeds > 1 else ''}).",
                            "Each point retrains on a random subset of the training photos; the band is the "
                            "spread over seeds. The pretrained levels need a few dozen photos per class.",
                            sources=[Source(what="the data-efficiency curve measured on this machine")]))
    else:
        slides.append(Slide(SlideKind.CURVE, "How little data is enough",
                            "Accuracy against the number of training photos per class.",
                            "Measure the curve (a few minutes for level 2): it retrains on subsets of 5 to 1000 "
                            "photos per class.", missing="The curve has not been measured on this data set.",
                            action=Action(ActionKind.MEASURE_CURVE) if summary is not None else None))

    explained = [current[k] for k in sorted(current) if current[k].card.backbone or k == 1]
    slides.append(Slide(SlideKind.HEATMAPS, "Where each level looks",
                        "Grad-CAM: the places each model's answer comes from.",
                        "The small convnet often looks at the background; the pretrained levels at faces and ears.",
                        sources=[_source(e) for e in explained],
                        missing=None if explained and summary is not None else "No trained model to explain yet.",
                        action=None if explained else Action(ActionKind.TRAIN, 2)))
    slides.append(Slide(SlideKind.AUDIENCE, "Your turn",
                        "Scan the code, take a photo of anything: every level answers, here, live.",
                        "Ask for things that are neither cats nor dogs: the honest levels say \"none of these\". "
                        "Photos stay in memory for this talk only.",
                        missing=None if current else "No trained model yet: nothing can answer.",
                        action=None if current else Action(ActionKind.TRAIN, 2)))
    return slides
