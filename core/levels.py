"""The levels: one registry entry per way of training, as `core.networks.backbones` is for networks.

A `Level` says everything the app, the CLI, the benchmark and the time estimate need to know about
one way of getting a classifier: its names and the story it tells, the tutorial's figure, its
default hyperparameters, what it needs (a backbone, an earlier level's model), what it costs, and
the function that trains it. Nothing else in the project repeats a level's defaults.

Importing this module is cheap (no Keras, no TensorFlow): pages read it at start-up. The train
function is named as "module:function" and imported only when a run starts.

Adding a level is one `register_level(Level(...))` plus its train function; see docs/architecture.md, "Adding a level".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, NamedTuple

from core.errors import ConfigError

#: Optimizer keys a level may name, and how a model card writes them.
OPTIMIZERS = {"rmsprop": "RMSprop", "sgd": "SGD(momentum=0.9)", "adam": "Adam"}
SCHEDULES = ("cosine", "constant")
#: Level 1's compute precisions -> the Keras dtype policy its network is built under (`core.networks.factories`).
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


class SmallConvnet(NamedTuple):
    """A network level 1 can train from scratch (`--arch`); its factory is in `core.networks.factories`."""

    description: str
    image_size: tuple[int, int]  # its default input size
    gflops: float  # one forward pass at `image_size` (`count_flops`; checked by a test)
    # Time estimate: seconds per GFLOP against level 1's cost model (fitted on the tutorial's net; separable
    # convolutions and batch norm run further from the matmul peak), and the measured speed-up of an
    # epoch in bfloat16 on a CPU with AVX512-BF16 (docs/benchmarks.md, "bfloat16 for level 1").
    cost_scale: float = 1.0
    bfloat16_speedup: float = 1.0


SMALL_CONVNETS = {
    # 725 s in float32 (70 epochs), 446 s in bfloat16.
    "tutorial": SmallConvnet("the tutorial's small convnet (3 conv blocks, 1.2 M weights)", (150, 150), 0.1784,
                             cost_scale=1.0, bfloat16_speedup=1.63),
    # 86 s per epoch in float32 (level 1's model says 50 s), 68 s in bfloat16.
    "xception": SmallConvnet("a small Xception-like residual convnet (Deep Learning with Python, 3rd ed.; "
                             "0.7 M weights)", (180, 180), 0.7661, cost_scale=1.72, bfloat16_speedup=1.27),
}

@dataclass(frozen=True)
class Estimate:
    """A training run's expected wall time, before it starts."""

    seconds: float
    detail: str


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s' or '2 h 10 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 90:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _about(seconds: float) -> str:
    return "under 1 s" if seconds < 1 else f"~{format_duration(seconds)}"


@dataclass(frozen=True)
class EndToEndCost:
    """Cost of a level that runs its network on every image in every epoch (levels 1 and 3).

    Seconds per image per GFLOP of the network's forward pass, on the reference machine
    (`core.training.estimate.REFERENCE_GFLOPS`); `speed` scales them to this machine (2.0: half as fast).

    Attributes:
        train: one training image, forward and backward (and augmentation), per epoch.
        evaluate: one validation image, forward only, per epoch and in the final scoring.
    """

    train: float
    evaluate: float

    def estimate(self, n_train: int, n_val: int, epochs: int, gflops: float, views: int, speed: float) -> Estimate:
        per_epoch = (n_train * self.train + n_val * self.evaluate) * gflops * speed
        scoring = n_val * views * self.evaluate * gflops * speed
        return Estimate(per_epoch * epochs + scoring, f"{_about(per_epoch)} per epoch")


@dataclass(frozen=True)
class FeatureCost:
    """Cost of a level that runs a frozen network once and trains a small head on its features.

    Attributes:
        extract: one image through the frozen network, per GFLOP (once; cached after).
        head_epoch: one epoch of the head, per 100 training images (on features: no GFLOPs).
    """

    extract: float
    head_epoch: float

    def estimate(self, n_train: int, n_val: int, epochs: int, gflops: float, views: int, speed: float,
                 cached: bool = False) -> Estimate:
        """`cached`: every photo's features are already computed (a second run on the same photos)."""
        head = epochs * self.head_epoch * n_train / 100 * speed
        if cached:
            return Estimate(head, f"features cached: {_about(head)} training the classifier")
        # With mirror averaging the validation photos' mirror images are extracted too; they score the
        # saved model without another pass through the network.
        extract = (n_train + n_val * views) * self.extract * gflops * speed
        return Estimate(extract + head, f"{_about(extract)} extracting features (once; cached after), "
                                        f"{_about(head)} training the classifier")


@dataclass(frozen=True)
class CachedViewsCost:
    """Cost of fine-tuning on cached views (level 3): the frozen layers once per view, then the top alone.

    Seconds per image per GFLOP on the reference machine, the GFLOPs being those of the part each
    phase runs: the layers below the cut for the cache, the top block and head for the epochs.

    Attributes:
        extract: one view through the frozen layers (once; cached after).
        train: one training photo through the top, forward and backward, per epoch.
        evaluate: one validation photo through the top, per epoch and in the final scoring.
    """

    extract: float
    train: float
    evaluate: float

    def estimate(self, n_train: int, n_val: int, epochs: int, gflops: float, views: int, speed: float,
                 cached_views: int = 1, top_share: float = 0.3) -> Estimate:
        bottom, top = gflops * (1 - top_share), gflops * top_share
        build = (n_train * cached_views + n_val * views) * self.extract * bottom * speed
        per_epoch = (n_train * self.train + n_val * self.evaluate) * top * speed
        scoring = n_val * views * self.evaluate * top * speed
        return Estimate(build + per_epoch * epochs + scoring,
                        f"{_about(build)} running the frozen layers on {cached_views} views of each photo (once; "
                        f"reused by later runs with the same augmentation), {_about(per_epoch)} per epoch")


@dataclass(frozen=True)
class FineTuning:
    """How a fine-tuning level trains by default (`core.training.view_cache`).

    Attributes:
        views: cached views per training photo; 0 runs the whole network on a fresh augmentation
            of every photo in every epoch, as the tutorial did.
        top_block: the size of top block unfrozen with cached views ("large", "medium", "small":
            `core.networks.backbones.Backbone.top_block_sizes`) unless the backbone names its own
            (`Backbone.default_top_block`); on the fly it is the tutorial's "large".
        epochs_on_the_fly: the epochs of a run with no cached views (the level's `epochs` otherwise).
        cost: the time estimate of a run on cached views (on the fly: the level's `cost`).
        learning_rate: the rate on cached views, unless the backbone names its own
            (`Backbone.fine_tuning_rate`); None: the level's `learning_rate`, as on the fly.
    """

    views: int
    top_block: str
    epochs_on_the_fly: int
    cost: CachedViewsCost
    learning_rate: float | None = None


@dataclass(frozen=True)
class NoTrainingCost:
    """Cost of a level that only builds a pretrained network and scores it (level 0).

    Attributes:
        build: seconds to build the network and load its weights.
        evaluate: one validation image through the network, per GFLOP (the final scoring).
    """

    build: float
    evaluate: float

    def estimate(self, n_train: int, n_val: int, epochs: int, gflops: float, views: int, speed: float,
                 cached: bool = False) -> Estimate:
        """`cached`: level 2 has kept the validation photos' features, and the ImageNet top scores those."""
        if cached:
            return Estimate(self.build, f"no training: {_about(self.build)} loading the network, then scoring "
                                        f"it on the features level 2 kept")
        scoring = n_val * views * self.evaluate * gflops * speed
        return Estimate(self.build + scoring, f"no training: {_about(self.build)} loading the network, "
                                              f"{_about(scoring)} scoring it")


@dataclass(frozen=True)
class Level:
    """One way of training a classifier.

    Attributes:
        key: the level's number (`--level`, model cards, `level<key>` model references).
        short_name: a few words, as in "Level 2 · bottleneck features".
        name: the full name, as in model cards.
        story: the paragraph the Overview and Train pages show.
        tutorial_accuracy: the validation accuracy the 2016 tutorial reported, or None.
        tutorial_setup: what the tutorial ran to get it.
        epochs, optimizer, learning_rate, schedule: training defaults (optimizer: a key of `OPTIMIZERS`);
            0 epochs: the level trains nothing (the other three are then unused).
        augment: the default augmentation preset (see `core.data.augment.PRESETS`).
        can_augment: False where augmentation cannot apply (cached features see each image once).
        image_size: the input size, or None for the backbone's native size.
        needs_backbone: whether the level runs a pretrained network from `core.networks.backbones`.
        requires: the level whose trained model this one starts from, if any.
        cost: how long a run takes (`EndToEndCost`, `FeatureCost` or `NoTrainingCost`).
        gflops: the forward pass's GFLOPs at `image_size`, for levels without a backbone (the
            backbone's own figure is used otherwise); checked against `count_flops` in the tests.
        train: the train function, as "module:function" (imported when a run starts) or a callable.
            It takes a `core.training.loop.Run` and returns a `core.training.loop.RecipeResult`.
        epochs_note: why the default epoch count, for help texts.
        uses_imagenet_classes: the level maps ImageNet's classes onto the data set's (see
            `core.networks.imagenet`), and needs a backbone with an ImageNet classifier.
        archs: the networks it can train from scratch (keys of `SMALL_CONVNETS`), the default first;
            empty for levels built on a backbone.
        fine_tuning: for a level that fine-tunes a backbone's top block: cached views, top block
            size, the tutorial's way's epochs (`FineTuning`); None otherwise.
    """

    key: int
    short_name: str
    name: str
    story: str
    tutorial_accuracy: float | None
    tutorial_setup: str
    epochs: int
    optimizer: str
    learning_rate: float
    schedule: str
    augment: str
    can_augment: bool
    image_size: tuple[int, int] | None
    needs_backbone: bool
    requires: int | None
    cost: EndToEndCost | FeatureCost | NoTrainingCost
    train: str | Callable
    gflops: float | None = None
    epochs_note: str = ""
    uses_imagenet_classes: bool = False
    archs: tuple[str, ...] = ()
    fine_tuning: FineTuning | None = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Level {self.key}: optimizer must be one of {', '.join(OPTIMIZERS)}, "
                              f"got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Level {self.key}: schedule must be one of {', '.join(SCHEDULES)}, "
                              f"got {self.schedule!r}.")
        if (self.image_size is None) != self.needs_backbone:
            raise ConfigError(f"Level {self.key}: give an image_size exactly when it needs no backbone.")
        if not self.needs_backbone and self.gflops is None:
            raise ConfigError(f"Level {self.key}: a level without a backbone states its network's gflops.")

    @property
    def label(self) -> str:
        return f"Level {self.key} · {self.short_name}"

    @property
    def trains(self) -> bool:
        """False for a level that only assembles pretrained parts (no epochs, no optimizer)."""
        return self.epochs > 0

    @property
    def optimizer_label(self) -> str:
        return OPTIMIZERS[self.optimizer]

    def tutorial_accuracy_for(self, classes) -> float | None:
        """The tutorial's figure where it compares with a model of `classes`: only on cats against dogs (None:
        no data set to compare with, so the figure itself)."""
        return self.tutorial_accuracy if classes is None or is_tutorial_task(classes) else None

    def tutorial_note(self, classes=None) -> str:
        """What the tutorial reported for this level; said to be on cats vs dogs when `classes` are others."""
        if self.tutorial_accuracy is None:
            return "The tutorial has no such level."
        where = "" if classes is None or is_tutorial_task(classes) else " on cats vs dogs"
        return f"The tutorial reported {self.tutorial_accuracy:.1%}{where} for this level ({self.tutorial_setup}, 2016)."

    def trainer(self) -> Callable:
        """The train function (imports its module on first use)."""
        if callable(self.train):
            return self.train
        module, _, name = self.train.partition(":")
        return getattr(importlib.import_module(module), name)


def is_tutorial_task(classes) -> bool:
    """Whether these classes are the tutorial's task, cats against dogs (its figures compare only there)."""
    return sorted(str(name).strip().lower().removesuffix("s") for name in classes) == ["cat", "dog"]


LEVELS: dict[int, Level] = {}


def register_level(level: Level, replace: bool = False) -> Level:
    """Adds `level` to the registry; refuses to overwrite a key unless `replace`."""
    if level.key in LEVELS and not replace:
        raise ConfigError(f"Level {level.key} is already registered ({LEVELS[level.key].name}).")
    if level.requires is not None and level.requires not in LEVELS:
        raise ConfigError(f"Level {level.key} requires level {level.requires}, which is not registered.")
    LEVELS[level.key] = level
    return level


def get_level(key: int) -> Level:
    """The registered level; raises ConfigError listing the valid keys."""
    try:
        return LEVELS[int(key)]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"Unknown level {key!r}; choose from {', '.join(map(str, sorted(LEVELS)))}.") from None


def all_levels() -> list[Level]:
    """Every registered level, by key."""
    return [LEVELS[key] for key in sorted(LEVELS)]


# The tutorial ran 50 epochs per level; see docs/design.md for why levels 1 and 3 differ.
register_level(Level(
    key=0, short_name="no training", name="Pretrained ImageNet classifier, classes grouped",
    story="No training at all: the pretrained network's own ImageNet classifier, its classes grouped into ours "
          "(for cats vs dogs, its 118 dog breeds are dogs and its 5 house cats are cats; for other "
          "classes, the ones it sees most in each class's photos, or yours), each of ours scored by its group's average probability. It shows what the "
          "network knows before anything is trained.",
    tutorial_accuracy=None, tutorial_setup="", epochs=0, optimizer="rmsprop", learning_rate=1e-3,
    schedule="constant", augment="none", can_augment=False, image_size=None, needs_backbone=True, requires=None,
    cost=NoTrainingCost(build=4.0, evaluate=0.0145), train="core.training.recipes:build_grouped_classifier",
    uses_imagenet_classes=True))

register_level(Level(
    key=1, short_name="from scratch", name="Small convnet from scratch",
    story="A small convnet (three convolution blocks, about 1.2 million weights at 150×150) learns from the "
          "photos alone, starting from random weights. Augmentation and dropout are what keep it from "
          "memorising a few thousand pictures.",
    tutorial_accuracy=0.80, tutorial_setup="small convnet, 50 epochs",
    epochs=70, optimizer="rmsprop", learning_rate=1e-3, schedule="cosine", augment="tutorial_train",
    can_augment=True, image_size=(150, 150), needs_backbone=False, requires=None,
    cost=EndToEndCost(train=0.029, evaluate=0.007), gflops=0.1784,
    train="core.training.recipes:train_small_convnet", archs=("tutorial", "xception"),
    epochs_note="70 rather than the tutorial's 50: its learning rate decays to the end, and it was still improving at 50."))

register_level(Level(
    key=2, short_name="bottleneck features", name="Bottleneck features + small classifier",
    story="A network pretrained on ImageNet looks at each photo once; a small classifier learns from what it "
          "saw (the *bottleneck features*). Cheap, because the expensive network runs only once, and strong, "
          "but it cannot use augmentation, and it overfits in a textbook way.",
    tutorial_accuracy=0.905, tutorial_setup="VGG16 bottleneck features",
    epochs=50, optimizer="rmsprop", learning_rate=1e-3, schedule="constant", augment="none",
    can_augment=False, image_size=None, needs_backbone=True, requires=None,
    cost=FeatureCost(extract=0.0154, head_epoch=0.02),  # MobileNetV2, batch norm folded: 107 img/s extracting
    train="core.training.recipes:train_bottleneck_classifier",
    epochs_note="The tutorial's 50, at a constant rate: the head trains in seconds and its curve shows overfitting."))

register_level(Level(
    key=3, short_name="fine-tuning", name="Fine-tuning the top block",
    story="Level 2's classifier goes back on top of the network, the network's top block is unfrozen, and "
          "both are trained gently (SGD, a very low learning rate) with augmentation. It must start from a "
          "trained classifier: random dense weights would wreck the pretrained features.",
    tutorial_accuracy=0.94, tutorial_setup="VGG16, top block fine-tuned",
    epochs=5, optimizer="sgd", learning_rate=1e-4, schedule="cosine", augment="tutorial_train",
    can_augment=True, image_size=None, needs_backbone=True, requires=2,
    cost=EndToEndCost(train=0.0162, evaluate=0.0097),  # on the fly, MobileNetV2, batch norm folded: 24.4 s an epoch
    # Cached views: EfficientNet-Lite2, small top block, 4 views: 130 s building, 10 s an epoch (a top block
    # of 5x5 depthwise convolutions costs more per GFLOP: medium's epochs run 19.5 s estimated, 27.6 s measured).
    fine_tuning=FineTuning(views=4, top_block="small", epochs_on_the_fly=20,
                           cost=CachedViewsCost(extract=0.0095, train=0.0247, evaluate=0.0082)),
    train="core.training.recipes:train_fine_tuning",
    epochs_note="5 on cached views: 3, 5 and 10 epochs measured alike (99.0-99.1%, 3 seeds each, EfficientNet-Lite2 "
                "at 1e-4); 20 on the fly, the tutorial's way (it ran 50; fine-tuning is on its plateau after about 5)."))
