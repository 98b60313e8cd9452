"""Data-parallel training with `tf.distribute`: several GPUs in one machine, or several machines.

- `--devices auto|cpu|cpu:N|N` places one training process. `auto` mirrors the model over every
  visible GPU when there are two or more (`MirroredStrategy`) and otherwise trains as usual; `cpu`
  ignores GPUs; `N` takes the first N GPUs; `cpu:N` splits the CPU into N logical devices, the same
  arithmetic as N GPUs, to try data parallelism on a laptop (it is not faster).
- `--workers N` runs one training over N processes, on one machine or many, under
  `MultiWorkerMirroredStrategy`. Ray Train's `TensorflowTrainer` starts the workers and gives each
  its `TF_CONFIG` (`core.training.loop.train_on_workers`); a process that finds `TF_CONFIG` already set
  (workers you start yourself, one per machine) joins that cluster directly.

The batch size stays per replica: the global batch is `batch_size x replicas`, and the learning
rate is multiplied by the number of replicas (the linear scaling rule of Goyal et al., 2017, which
TensorFlow's distributed-training guides follow). The model card records both, with the devices.

Keras 3's `fit` cannot run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585: it
reduces scalar metrics along axis 0 and a sample batch it cannot convert), so multi-worker runs use
`distributed_fit`, a plain custom loop with the same progress events, history and cancel.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from core.errors import ConfigError

DEVICES_HELP = ("auto (every GPU when there are 2 or more, else as usual), cpu, cpu:N (N replicas on the CPU), "
                "or N (the first N GPUs)")


def check_devices(devices: str) -> str:
    """`devices` itself if it is one of auto, cpu, cpu:N or N; ConfigError otherwise."""
    if devices in ("auto", "cpu") or re.fullmatch(r"(cpu:)?[1-9][0-9]*", str(devices)):
        return str(devices)
    raise ConfigError(f"devices must be {DEVICES_HELP}; got {devices!r}.")


def describe_devices() -> dict:
    """What this process trains on, for benchmark reports: the GPUs TensorFlow sees, else the CPU."""
    import platform

    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(details.get("device_name", device.name))
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    summary = f"{len(gpus)} x {gpus[0]}" if gpus else f"CPU only ({cpu})"
    return {"device": summary, "gpus": gpus, "cpu": cpu, "tensorflow": tf.__version__,
            "built_with_cuda": tf.test.is_built_with_cuda(), "native_bfloat16": native_bfloat16()}


def native_bfloat16() -> bool:
    """Whether this machine computes bfloat16 in hardware: a CPU with AVX512-BF16 or AMX (read from
    /proc/cpuinfo, without importing TensorFlow), or a GPU TensorFlow sees of compute capability 8+."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    import tensorflow as tf

    return any(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))[0] >= 8
               for gpu in tf.config.list_physical_devices("GPU"))


def joined_cluster() -> dict | None:
    """The `TF_CONFIG` this process was started with (one worker of a multi-worker run), or None."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
        return config if config.get("cluster") else None
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}).") from exc


@dataclass
class Placement:
    """Where one training process runs: its strategy and what the model card records."""

    strategy: object
    kind: str  # "single", "mirrored" or "multi_worker"
    replicas: int = 1
    devices: list[str] = field(default_factory=list)
    workers: int = 1
    is_chief: bool = True

    def describe(self) -> dict:
        return {"strategy": self.kind, "replicas": self.replicas, "devices": self.devices, "workers": self.workers}


def place(devices: str = "auto") -> Placement:
    """The strategy for this process, from `devices` and any `TF_CONFIG` (see the module docstring).

    Raises:
        ConfigError: more GPUs asked for than are visible, or CPU replicas asked for after
            TensorFlow has started (logical devices are fixed then: use a fresh process).
    """
    import tensorflow as tf

    devices = check_devices(devices)
    cluster = joined_cluster()
    if cluster is not None:
        if devices == "cpu":
            _hide_gpus()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = cluster.get("task", {})
        workers = sum(len(hosts) for name, hosts in cluster["cluster"].items() if name in ("chief", "worker"))
        is_chief = task.get("type") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                   and "chief" not in cluster["cluster"])
        local = [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU:0"]
        return Placement(strategy, "multi_worker", strategy.num_replicas_in_sync, local, workers, is_chief)
    if devices == "cpu":
        _hide_gpus()
        return Placement(tf.distribute.get_strategy(), "single", 1, ["CPU:0"])
    if devices.startswith("cpu:"):
        count = int(devices[4:])
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) != count:
                raise ConfigError(f"--devices {devices} must be chosen before TensorFlow starts: run it in a fresh "
                                  "process (the CLI does).") from None
        names = [f"/cpu:{i}" for i in range(count)]
        if count == 1:
            return Placement(tf.distribute.get_strategy(), "single", 1, ["CPU:0"])
        return Placement(tf.distribute.MirroredStrategy(names), "mirrored", count, names)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if devices == "auto":
        count = len(gpus) if len(gpus) >= 2 else 1
    else:
        count = int(devices)
        if count > max(len(gpus), 1):  # --devices 1 on a machine without GPUs trains on its CPU
            raise ConfigError(f"--devices {devices} asks for {count} GPUs; this machine shows {len(gpus)}. "
                              "Use --devices auto, or see docs/scaling.md, 'GPUs'.")
    if count == 1:
        return Placement(tf.distribute.get_strategy(), "single", 1, gpus[:1] or ["CPU:0"])
    names = gpus[:count]
    return Placement(tf.distribute.MirroredStrategy(names), "mirrored", count, names)


def _hide_gpus() -> None:
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already started with its GPUs, which then stay visible
        pass


def detached(model):
    """A copy of `model` with plain (not mirrored) variables and the trained weights, to score and save.

    Call it outside the strategy's scope.
    """
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def distributed_fit(model, strategy, train_ds, val_ds, epochs: int, callback, global_batch: int):
    """`model.fit` for `MultiWorkerMirroredStrategy`: the compiled optimizer and loss, in a custom loop.

    Each replica's loss is summed over its examples and divided by the global batch, so the
    gradients summed across replicas are those of the global batch's mean loss, as one process
    would compute them. Loss and accuracy are summed across workers for the logs. `callback` is
    `core.training.loop`'s progress callback; a cancel on any worker stops every worker after the same
    step, so none is left waiting in a collective.
    """
    import keras
    import tensorflow as tf

    binary = model.loss == "binary_crossentropy"
    loss_fn = keras.losses.get(model.loss)
    optimizer = model.optimizer
    with strategy.scope():
        optimizer.build(model.trainable_variables)

    def stats(logits, labels):
        if binary:
            truth = tf.reshape(tf.cast(labels, tf.float32), (-1, 1))
            per_example = loss_fn(truth, logits)
            correct = tf.cast(tf.equal(tf.cast(logits[:, 0] > 0.5, tf.int32), tf.cast(labels, tf.int32)), tf.float32)
        else:
            per_example = loss_fn(labels, logits)
            correct = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), tf.cast(labels, tf.int32)),
                              tf.float32)
        return per_example, correct

    @tf.function
    def train_step(batch, stop):
        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                per_example, correct = stats(outputs, labels)
                loss = tf.reduce_sum(per_example) / global_batch
                if model.losses:
                    loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(correct),
                             tf.cast(tf.size(labels), tf.float32), stop])

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=batch), axis=None)

    predict = tf.function(lambda images: model(images, training=False))
    callback.set_model(model)
    model.stop_training = False
    for epoch in range(epochs):
        callback.on_epoch_begin(epoch)
        totals = None
        for step, batch in enumerate(strategy.experimental_distribute_dataset(train_ds)):
            stop = 1.0 if model.stop_training else 0.0
            totals_step = train_step(batch, tf.constant(stop)).numpy()
            if totals_step[3] > 0:  # some worker was asked to stop: all stop here, together
                model.stop_training = True
                break
            totals = totals_step if totals is None else totals + totals_step
            callback.on_train_batch_end(step, {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]})
        if model.stop_training:
            break
        val_loss = val_correct = val_count = 0.0
        for images, labels in val_ds:  # every worker scores the whole validation split: same weights, same result
            per_example, correct = stats(predict(images), labels)
            val_loss += float(tf.reduce_sum(per_example))
            val_correct += float(tf.reduce_sum(correct))
            val_count += float(tf.size(labels))
        callback.on_epoch_end(epoch, {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2],
                                      "val_loss": val_loss / val_count, "val_accuracy": val_correct / val_count})
        if model.stop_training:
            break
