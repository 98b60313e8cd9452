"""Training any registered level, with progress events, cancellation and reproducible seeds.

`train(config)` is the one entry point used by the CLI, the app's worker and the benchmark. It
checks and decodes the data, hands a `Run` to the level's train function (see `core.levels` and
`core.recipes`), wraps the result for mirror averaging, scores it, and saves it with its card.
Progress goes to `report(TrainEvent)`; `should_cancel()` is polled after every batch.
"""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np

from core.data.augment import AugmentConfig, preset
from core.networks.backbones import DEFAULT_BACKBONE, LARGE_TOP_BLOCK, get_backbone
from core.serving.cards import Metrics, ModelCard
from core.data.folders import DatasetSummary, first_per_class, summarize, training_subset
from core.data.decoded import DecodedSplit, decode_split
from core.data.download import resolve_data_dir
from core.errors import Cancelled, ConfigError, LittleDataError, describe
from core.levels import PRECISIONS, SCHEDULES, SMALL_CONVNETS, Level, all_levels, get_level
from core.serving.model_store import ModelEntry, ModelStore
from core.training.progress import BATCH, DONE, EPOCH, FAILED, PHASE, TRAIN_PHASE, TrainEvent

Report = Callable[[TrainEvent], None]


class TrainingError(LittleDataError):
    """A training run that cannot start or finish; the message says why."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. `None` fields take the level's default (`resolved`)."""

    level: int
    backbone: str | None = None
    weights: str | None = None
    epochs: int | None = None
    batch_size: int = 16
    learning_rate: float | None = None
    augment: AugmentConfig | None = None
    dropout: float = 0.5
    image_size: tuple[int, int] | None = None
    seed: int = 1337
    data_dir: str | None = None
    models_dir: str | None = None
    cache_dir: str | None = None  # decoded images and features (default: settings.cache_dir())
    limit_per_class: int | None = None  # every split cut to its first N images per class (demos, tests)
    train_per_class: int | None = None  # a seeded random N training images per class (the data-efficiency curve)
    subset_seed: int = 0  # which random subset train_per_class takes
    schedule: str | None = None  # "cosine" or "constant"
    flip_average: bool = True  # the saved model averages over the image and its mirror
    imagenet_classes: dict[str, list[int]] | None = None  # level 0: class -> ImageNet indices
    arch: str | None = None  # level 1's network: a key of core.levels.SMALL_CONVNETS (default "tutorial")
    devices: str = "auto"  # where one process trains: auto, cpu, cpu:N or N GPUs (core.training.distribute)
    workers: int = 1  # processes (machines) sharing one training, under MultiWorkerMirroredStrategy
    precision: str = "float32"  # level 1: "bfloat16" computes in bfloat16 (weights stay float32; see PRECISIONS)
    views: int | None = None  # level 3: cached views per training photo; 0 augments on the fly (the tutorial's way)
    top_block: str | None = None  # level 3: "large" (the tutorial's), "medium" or "small" (Backbone.top_block_sizes)

    def __post_init__(self):
        trains = get_level(self.level).trains  # an unknown level fails here, listing the known ones
        if self.epochs is not None and self.epochs < (1 if trains else 0):
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}.")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig.from_dict(self.augment)
        if self.schedule not in (None, *SCHEDULES):
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        if self.arch is not None and self.arch not in self.level_definition.archs:
            offered = [level.key for level in all_levels() if level.archs]
            raise ConfigError(f"Level {self.level} has no network {self.arch!r} to choose"
                              + (f"; level {self.level} offers {', '.join(self.level_definition.archs)}." if self.level_definition.archs else
                                 f" (levels {', '.join(map(str, offered))} do; this one uses --backbone)."))
        from core.training.distribute import check_devices

        check_devices(self.devices)
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.precision != "float32" and not self.level_definition.archs:
            raise ConfigError(f"precision {self.precision} is for networks trained from scratch (level 1): level "
                              f"{self.level}'s pretrained layers load as float32.")
        if self.workers > 1 and not trains:
            raise ConfigError(f"Level {self.level} trains nothing, so there is nothing to share between workers.")
        if (self.views is not None or self.top_block is not None) and self.level_definition.fine_tuning is None:
            raise ConfigError(f"views and top_block are for fine-tuning (level 3); level {self.level} does not "
                              "fine-tune a network.")
        if self.views is not None and self.views < 0:
            raise ConfigError(f"views must be 0 (augment on the fly) or more, got {self.views}.")
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
            if min(self.image_size) < 32:
                raise ConfigError(f"image_size must be at least 32x32, got {self.image_size}.")

    @property
    def level_definition(self) -> Level:
        """The registry entry of this config's level (`core.levels.Level`)."""
        return get_level(self.level)

    def resolved(self) -> "TrainConfig":
        """A copy with every default of the level (and its backbone) filled in."""
        level = self.level_definition
        backbone = (self.backbone or DEFAULT_BACKBONE) if level.needs_backbone else None
        if level.can_augment:
            augment = self.augment if self.augment is not None else preset(level.augment)
        else:
            augment = preset("none")  # cached features see each photo once: nothing to augment
        arch = self.arch or (level.archs[0] if level.archs else None)
        size = (self.image_size or (SMALL_CONVNETS[arch].image_size if arch else None) or level.image_size
                or get_backbone(backbone).image_size)
        epochs, views, top_block, rate = level.epochs, None, None, level.learning_rate
        if level.fine_tuning is not None:
            # Several workers share batches of photos, not a view cache: they fine-tune on the fly.
            views = (level.fine_tuning.views if self.workers == 1 else 0) if self.views is None else self.views
            if views == 0:  # the tutorial's way: the whole network on fresh augmentations, its top stage unfrozen
                epochs, top_block = level.fine_tuning.epochs_on_the_fly, self.top_block or LARGE_TOP_BLOCK
            else:
                network = get_backbone(backbone)  # its own defaults, else the level's (the size where it has it)
                default = network.default_top_block or level.fine_tuning.top_block
                top_block = self.top_block or (default if default in network.top_block_sizes else LARGE_TOP_BLOCK)
                # The network's own rate was measured on its own top block; other blocks keep the level's.
                own = network.fine_tuning_rate if top_block == network.default_top_block else None
                rate = own or level.fine_tuning.learning_rate or rate
            get_backbone(backbone).top_block_prefixes(top_block)  # an unknown size fails here, listing the known ones
        return replace(self, backbone=backbone, epochs=(self.epochs or epochs) if level.trains else 0,
                       learning_rate=self.learning_rate or rate, augment=augment,
                       image_size=tuple(size), schedule=self.schedule or level.schedule, arch=arch,
                       views=views, top_block=top_block)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["augment"] = self.augment.to_dict() if self.augment else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        if data.get("image_size"):
            data["image_size"] = tuple(data["image_size"])
        return cls(**data)


@dataclass
class TrainResult:
    """What `train` returns: the saved model's store entry, its history and how long it took."""

    entry: ModelEntry | None  # None when cancelled
    history: dict[str, list[float]]
    seconds: float
    cancelled: bool = False
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class RecipeResult:
    """What a level's recipe (its train function) returns to `train`, which then scores and saves it.

    Attributes:
        model: raw pixels -> prediction, one view (`train` adds mirror averaging).
        history: per-epoch metrics, Keras names ("loss", "accuracy", "val_loss", "val_accuracy").
        cancelled: the run stopped early because `should_cancel()` turned true.
        card_fields: extra model-card fields (weights, weights_key, started_from, backbone_flops).
        val_outputs: the model's outputs on the validation photos, one array per view (the photo,
            then its mirror image), when the train function has them already (level 2, from cached
            features); `train` then scores the final model from them instead of running it again.
    """

    model: object
    history: dict[str, list[float]]
    cancelled: bool = False
    card_fields: dict = field(default_factory=dict)
    val_outputs: list | None = None


@dataclass
class Run:
    """One training run in progress: what a level's train function works with."""

    config: TrainConfig  # resolved
    summary: DatasetSummary
    train_data: DecodedSplit | None  # None for a level that trains nothing
    val_data: DecodedSplit
    store: ModelStore
    report: Report
    should_cancel: Callable[[], bool]
    timings: dict[str, float] = field(default_factory=dict)
    placement: object = None  # a core.training.distribute.Placement; None: one device

    @property
    def num_classes(self) -> int:
        return len(self.summary.classes)

    def phase(self, phase: str, message: str = "", done: int | None = None, total: int | None = None) -> None:
        self.report(TrainEvent(PHASE, phase=phase, message=message, done=done, total=total))

    @property
    def replicas(self) -> int:
        return self.placement.replicas if self.placement is not None else 1

    @property
    def global_batch_size(self) -> int:
        """The batch of one training step: `batch_size` per replica, times the replicas."""
        return self.config.batch_size * self.replicas

    def steps_per_epoch(self) -> int:
        return -(-len(self.train_data) // self.global_batch_size)

    def compile(self, model) -> None:
        """Compiles `model` with the level's optimizer, the configured rate and schedule, and its loss."""
        compile_model(model, self.config, self.num_classes, self.steps_per_epoch(), replicas=self.replicas)

    def train_dataset(self):
        """The training split as a shuffled `tf.data.Dataset` of (float32 pixels 0-255, labels)."""
        from core.data.decoded import make_tf_dataset

        return self._shardable(make_tf_dataset(self.train_data, self.global_batch_size, shuffle=True,
                                               seed=self.config.seed))

    def val_dataset(self, batch_size: int | None = None):
        """The validation split, in order."""
        from core.data.decoded import make_tf_dataset

        return self._shardable(make_tf_dataset(self.val_data, batch_size or self.global_batch_size))

    def _shardable(self, ds):
        """Workers split each batch between them by element (the data is not in files tf.data could split)."""
        if self.placement is None or self.placement.kind != "multi_worker":
            return ds
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(options)

    def augmenter(self):
        """The configured augmentation as Keras layers, or None."""
        from core.data.augment import make_augmenter

        return make_augmenter(self.config.augment, seed=self.config.seed)

    def fit(self, model, train_ds, val_ds) -> tuple[dict[str, list[float]], bool]:
        """`model.fit` for the configured epochs with progress events; returns (history, cancelled)."""
        callback = _progress_callback(self.report, self.should_cancel, self.config.epochs, self.steps_per_epoch())
        t0 = time.monotonic()
        if self.placement is not None and self.placement.kind == "multi_worker":
            from core.training.distribute import distributed_fit

            distributed_fit(model, self.placement.strategy, train_ds, val_ds, self.config.epochs, callback,
                            self.global_batch_size)
        else:
            model.fit(train_ds, validation_data=val_ds, epochs=self.config.epochs, callbacks=[callback], verbose=0,
                      shuffle=False)  # the tf.data pipeline shuffles
        self.timings["fit"] = time.monotonic() - t0
        return callback.history, callback.cancelled


def compile_model(model, config: TrainConfig, num_classes: int, steps_per_epoch: int, replicas: int = 1) -> None:
    """Compiles `model` as `config`'s level trains: its optimizer, rate and schedule, the loss for the classes."""
    from core.networks.factories import loss_for

    model.compile(optimizer=make_optimizer(config, steps_per_epoch, replicas), loss=loss_for(num_classes),
                  metrics=["accuracy"])


def make_optimizer(config: TrainConfig, steps_per_epoch: int, replicas: int = 1):
    """The level's optimizer at the configured rate, decayed (cosine, to 5%) over the run if asked.

    With several replicas the rate is multiplied by their number, as the global batch is (linear scaling).
    """
    import keras

    rate = config.learning_rate * replicas
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.05)
    name = config.level_definition.optimizer
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9)
    return {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}[name](rate)


def _progress_callback(report: Report, should_cancel, epochs: int, batches: int):
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        """Reports every batch and epoch; stops training when asked to."""

        def __init__(self):
            super().__init__()
            self.history: dict[str, list[float]] = {}
            self.cancelled = False
            self.start = time.monotonic()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            report(TrainEvent(BATCH, phase=TRAIN_PHASE, epoch=self.epoch + 1, epochs=epochs, batch=batch + 1,
                              batches=batches, elapsed=time.monotonic() - self.start,
                              logs={_metric_name(k): float(v) for k, v in (logs or {}).items()}))
            self._maybe_stop()

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(_metric_name(key), []).append(float(value))
            report(TrainEvent(EPOCH, phase=TRAIN_PHASE, epoch=epoch + 1, epochs=epochs,
                              elapsed=time.monotonic() - self.start, history=self.history))
            self._maybe_stop()

        def _maybe_stop(self):
            if should_cancel():
                self.cancelled = True
                self.model.stop_training = True

    return ProgressCallback()


def _metric_name(key: str) -> str:
    # Keras names the binary metric "binary_accuracy" or "accuracy" depending on the loss.
    return key.replace("binary_accuracy", "accuracy").replace("compile_metrics", "accuracy")


def with_augmentation(model, augmenter):
    """The model to fit: `augmenter` (active only when training) in front of `model`.

    Augmenting inside the training step rather than in tf.data keeps the two cores on one job at a
    time and runs on the GPU where there is one. The weights are shared, so fitting this trains
    `model`, which is what gets saved: no augmentation layer ever reaches a saved model.
    """
    import keras

    if augmenter is None:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    return keras.Model(inputs, model(augmenter(inputs)), name=f"augmented_{model.name}")


def train(config: TrainConfig, report: Report | None = None,
          should_cancel: Callable[[], bool] | None = None, address: str | None = None) -> TrainResult:
    """Trains one level end to end and saves the model to the store.

    With `config.workers` above 1 the run is spread over that many Ray Train workers (on the Ray
    cluster at `address`, or a local one; see `core.training.distribute`), unless this process is already
    one of them.

    Raises:
        LittleDataError: (data, weights, a missing prerequisite...) with a message saying what to do;
            a `failed` event carrying the same message is reported first.
    """
    from core.training.distribute import joined_cluster

    report = report or (lambda event: None)
    try:
        if config.workers > 1 and joined_cluster() is None:
            return train_on_workers(config.resolved(), report, should_cancel or (lambda: False), address)
        return _train(config.resolved(), report, should_cancel or (lambda: False))
    except LittleDataError as exc:
        report(TrainEvent(FAILED, error=describe(exc)))
        raise


def _train(config: TrainConfig, report: Report, should_cancel) -> TrainResult:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    started = time.monotonic()
    report(TrainEvent(PHASE, phase="data", message="Checking the data set"))
    folder, source = resolve_data_dir(config.data_dir)
    summary = summarize(folder, source=source)
    if config.limit_per_class:
        summary = first_per_class(summary, config.limit_per_class)
    if config.train_per_class:
        summary = training_subset(summary, config.train_per_class, config.subset_seed)
    timings: dict[str, float] = {}

    def decode(split):
        t0 = time.monotonic()
        decoded = decode_split(summary, split, config.image_size, cache_dir=config.cache_dir,
                               progress=lambda done, total: report(TrainEvent(
                                   PHASE, phase=f"decode-{split}", message=f"Decoding {split} photos",
                                   done=done, total=total)))
        timings[f"decode_{split}"] = time.monotonic() - t0
        return decoded

    train_data = decode("train") if config.level_definition.trains else None  # level 0 trains nothing (it may look at train/ itself)
    from core.training.distribute import detached, place

    placement = place(config.devices) if config.level_definition.trains else None
    run = Run(config, summary, train_data, decode("validation"), ModelStore(config.models_dir), report,
              should_cancel, timings, placement)
    try:
        with placement.strategy.scope() if placement is not None else contextlib.nullcontext():
            trained = config.level_definition.trainer()(run)
    except Cancelled:
        trained = RecipeResult(None, {}, cancelled=True)
    if trained.cancelled:
        return TrainResult(None, trained.history, time.monotonic() - started, cancelled=True, timings=timings)
    model = trained.model
    if placement is not None and placement.kind != "single":
        model = detached(model)  # scored and saved as a plain model, loadable anywhere
        if not placement.is_chief:  # the chief scores and saves; the other workers are done
            return TrainResult(None, trained.history, time.monotonic() - started, timings=timings)
    if config.flip_average:
        from core.networks.factories import with_flip_average

        model = with_flip_average(model)
    run.phase("evaluate", "Scoring the final model on the validation photos"
              + (" and their mirror images" if config.flip_average else ""))
    t0 = time.monotonic()
    from core.serving.evaluation import accuracy_of_outputs, model_outputs
    from core.serving.honesty import fit_honesty
    from core.serving.predictor import to_probabilities

    views = (trained.val_outputs or [])[:2 if config.flip_average else 1]
    if len(views) == (2 if config.flip_average else 1):
        # The same arithmetic as the saved model (the mean of both views), without running the network again.
        val_outputs = np.mean(views, axis=0)
    else:
        val_outputs = model_outputs(model, run.val_data)
    val_accuracy = accuracy_of_outputs(val_outputs, run.val_data.labels, run.num_classes)
    timings["evaluate"] = time.monotonic() - t0
    t0 = time.monotonic()
    run.phase("honesty", "Calibrating, and learning what its classes look like")
    try:
        honesty = fit_honesty(summary, config.backbone, config.weights, config.image_size,
                              to_probabilities(val_outputs, run.num_classes), run.val_data.labels,
                              cache_dir=config.cache_dir, should_cancel=should_cancel,
                              progress=lambda what, done, total: report(TrainEvent(
                                  PHASE, phase=what, message="Extracting the judge's features", done=done, total=total)))
    except Cancelled:  # as a cancel during training: nothing is saved
        return TrainResult(None, trained.history, time.monotonic() - started, cancelled=True, timings=timings)
    timings["honesty"] = time.monotonic() - t0
    seconds = time.monotonic() - started
    run.phase("save", "Saving the model")
    card = make_card(config, summary, model, trained, val_accuracy, seconds, timings, run)
    card = replace(card, calibration=honesty.calibration, novelty=honesty.judge, novelty_note=honesty.judge_note)
    entry = run.store.save(model, card, novelty_bank=honesty.bank)
    report(TrainEvent(DONE, model_id=entry.id, metrics=asdict(card.metrics), seconds=seconds))
    return TrainResult(entry, trained.history, seconds, timings=timings)


def _distribution_fields(config: TrainConfig, run: Run | None) -> dict:
    """What the card records about devices and workers: where it trained, the global batch, the scaled rate."""
    placement = run.placement if run is not None else None
    if placement is None:
        return {"distribution": None}
    return {"distribution": {**placement.describe(), "global_batch_size": run.global_batch_size,
                             "scaled_learning_rate": config.learning_rate * run.replicas}}


def _versions() -> dict[str, str]:
    import keras
    import PIL
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__}


def make_card(config: TrainConfig, summary: DatasetSummary, model, trained: RecipeResult, val_accuracy: float,
              seconds: float, timings: dict[str, float], run: Run | None = None) -> ModelCard:
    """The card of a finished run (the store adds id, file name and creation time)."""
    from core.networks.factories import count_params, single_view

    history = trained.history
    val_acc = history.get("val_accuracy", [])
    level = config.level_definition
    metrics = Metrics(
        val_accuracy=val_accuracy,
        last_epoch_val_accuracy=val_acc[-1] if val_acc else None,
        best_val_accuracy=max(val_acc) if val_acc else None,
        best_epoch=int(np.argmax(val_acc)) + 1 if val_acc else None,
        val_loss=history.get("val_loss", [None])[-1],
        train_accuracy=history.get("accuracy", [None])[-1])
    return ModelCard(
        level=config.level, level_name=level.name, backbone=config.backbone, classes=summary.classes,
        image_size=config.image_size, augment=config.augment.to_dict(), flip_average=config.flip_average,
        hyperparameters={"epochs": config.epochs, "epochs_run": len(val_acc), "batch_size": config.batch_size,
                         "learning_rate": config.learning_rate, "schedule": config.schedule,
                         "dropout": config.dropout, "seed": config.seed,
                         "optimizer": level.optimizer_label if level.trains else None, "arch": config.arch,
                         "precision": config.precision,
                         "limit_per_class": config.limit_per_class, "train_per_class": config.train_per_class,
                         **({"views": config.views, "top_block": config.top_block} if config.views is not None else {}),
                         **trained.card_fields.get("hyperparameters", {}),
                         "subset_seed": config.subset_seed if config.train_per_class else None,
                         **_distribution_fields(config, run)},
        dataset={"fingerprint": summary.fingerprint, "root": str(summary.root), "source": summary.source,
                 "counts": summary.counts()},
        metrics=metrics, tutorial_accuracy=level.tutorial_accuracy, history=history,
        train_seconds=round(seconds, 2), timings={k: round(v, 3) for k, v in timings.items()},
        params=count_params(single_view(model)), versions=_versions(),
        weights=trained.card_fields.get("weights"), weights_key=trained.card_fields.get("weights_key"),
        started_from=trained.card_fields.get("started_from"), backbone_flops=trained.card_fields.get("backbone_flops"),
        imagenet_classes=trained.card_fields.get("imagenet_classes"))


# --- One training over several processes (Ray Train) -----------------------------------------

def train_on_workers(config, report, should_cancel, address: str | None = None):
    """Runs `config` as one training over `config.workers` Ray Train workers; returns the chief's `TrainResult`.

    Each worker runs `train` with the `TF_CONFIG` Ray gives it; the chief (rank 0)
    saves the model and its progress comes back through a relay.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from core import settings
    from core.training.ray_support import absolute_paths, connect, make_relay, run_relayed, trial_error

    started = time.monotonic()
    report(TrainEvent(PHASE, phase="workers", message=f"Starting {config.workers} training workers on Ray"))
    ray = connect(address)
    relay = make_relay()
    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = config.devices != "cpu" and gpus >= config.workers
    cpus_each = max(1.0, ray.cluster_resources().get("CPU", 1) // config.workers) if address is None else 1.0
    loop_config = {"config": absolute_paths(config.to_dict()), "relay": relay, "cpus": cpus_each}
    trainer = TensorflowTrainer(
        _worker_loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_each, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name=f"train-level{config.level}-{int(time.time())}",
                             storage_path=str((settings.home_dir() / "ray").resolve())))
    try:
        result, cancelled = run_relayed(trainer.fit, relay, lambda source, event: report(event), should_cancel)
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error; its message is what matters
        raise TrainingError(f"Training on {config.workers} workers failed: {trial_error(exc)}") from exc
    metrics = result.return_value or {}  # what rank 0's loop returned
    seconds = time.monotonic() - started
    if cancelled or metrics.get("cancelled") or not metrics.get("model_id"):
        return TrainResult(None, metrics.get("history", {}), seconds, cancelled=True)
    entry = ModelStore(config.models_dir).get(metrics["model_id"])
    return TrainResult(entry, metrics.get("history", {}), seconds, timings={"workers_total": seconds})


def _worker_loop(loop_config: dict) -> dict:
    """One Ray Train worker: an ordinary `train` under the TF_CONFIG Ray set; rank 0 reports and saves."""
    import ray.train
    import tensorflow as tf

    from core.training.ray_support import RelayClient

    cpus = int(loop_config.get("cpus") or 1)
    tf.config.threading.set_intra_op_parallelism_threads(cpus)
    tf.config.threading.set_inter_op_parallelism_threads(cpus)
    client = RelayClient(loop_config["relay"], source="chief")
    rank = ray.train.get_context().get_world_rank()
    result = train(TrainConfig.from_dict(loop_config["config"]), report=client.report if rank == 0 else None,
                   should_cancel=client.should_cancel)
    return {"model_id": result.entry.id if result.entry else None, "cancelled": result.cancelled,
            "history": result.history, "rank": rank}
