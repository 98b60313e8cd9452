"""How long a training run will take on this machine, and how fast this machine is.

Each level's cost model (`core.levels`) is in seconds per image per GFLOP on the reference machine;
the network's GFLOPs come from the level (no backbone) or the backbone registry, scaled with the
number of pixels; and this machine's speed is its measured float32 matmul throughput, except for
level 1, whose small convolutions and augmentation do not follow it: a few training steps of its own
network are timed instead.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

from core import settings
from core.atomic_files import atomic_write_json
from core.data.decoded import is_decoded
from core.levels import LEVELS, Estimate, FeatureCost, NoTrainingCost, format_duration

#: TensorFlow matmul GFLOP/s of the 2-core reference machine the cost models were measured on.
REFERENCE_GFLOPS = 220.0
#: First run only: JPEG decode and resize into the cache.
DECODE_SECONDS_PER_IMAGE = 0.003
#: Every training run, whatever its size, on the reference machine: building the model, calibrating
#: its confidence and saving it (a level-2 retrain on 20 cached photos took 3 s, its per-photo cost 0.1 s).
SETUP_SECONDS = 3.0
#: Building a pretrained network and loading its weights, when a run needs it (level 3; level 2 unless
#: its features are cached): 3.5 s more for level 2 on 20 uncached photos.
LOAD_NETWORK_SECONDS = 3.5


def measure_matmul_gflops(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply throughput through TensorFlow: the best over sizes.

    A single size undershoots: on AVX-512 machines oneDNN's convolutions can outrun one 2048x2048
    matmul, so large-matrix runs are included to approach the real peak.
    """
    import tensorflow as tf

    best_gflops = 0.0
    for n in sizes:
        a = tf.random.normal((n, n))
        b = tf.random.normal((n, n))
        tf.matmul(a, b).numpy()
        best = float("inf")
        for _ in range(repeats if n < 4096 else 2):
            t0 = time.perf_counter()
            tf.matmul(a, b).numpy()
            best = min(best, time.perf_counter() - t0)
        best_gflops = max(best_gflops, 2 * n**3 / best / 1e9)
    return best_gflops


def measure_convnet_images_per_second(batch: int = 32, steps: int = 10) -> float:
    """Training photos a second of level 1's network (the tutorial's small convnet, float32, its
    augmentation in the step) on random pictures: the best of `steps` steps after a first. Batches of
    32 rather than level 1's 16: three runs of 16 spread by 20%, of 32 by 6%.

    Level 1's epochs do not follow the matmul figure: 10.6-11.2 s on the reference box (220 GFLOP/s),
    11.4 s on one at 332 and 9.6 s on one at 438, where the matmul figure said 7.2 s and 5.4 s. Its
    convolutions are small and its augmentation resamples every picture, so a few steps of the
    network itself say more (about 3 s, once per machine).
    """
    import numpy as np

    from core.data.augment import make_augmenter
    from core.networks.factories import make_level1_model
    from core.training.loop import TrainConfig, compile_model, with_augmentation

    config = TrainConfig(level=1, arch="tutorial", precision="float32").resolved()
    model = with_augmentation(make_level1_model(2, config.image_size), make_augmenter(config.augment, seed=0))
    compile_model(model, config, 2, steps_per_epoch=100)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *config.image_size, 3)).astype("float32")
    labels = rng.integers(0, 2, (batch, 1)).astype("float32")
    model.train_on_batch(images, labels)  # traces the step
    best = float("inf")
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(images, labels)
        best = min(best, time.perf_counter() - started)
    return batch / best


#: `measure_convnet_images_per_second` on the reference machine. Not measured there (it is gone): derived
#: from a box at 438-453 GFLOP/s where the probe read 280 (239-329 over eleven processes) and two level-1 runs
#: took 9.6 and 7.9 s an epoch, against the 11.35 s level 1's cost model gives the reference machine.
REFERENCE_CONVNET_IMAGES_PER_SECOND = 215.0


#: A machine's speed figures, measured once each and kept in the cache folder's machine.json.
_MEASURES = {"matmul_gflops": measure_matmul_gflops, "convnet_images_per_second": measure_convnet_images_per_second}


def _machine_path(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir or settings.cache_dir()) / "machine.json"


def _kept_figures(cache_dir: str | Path | None) -> dict:
    try:
        kept = json.loads(_machine_path(cache_dir).read_text())
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def _kept_figure(name: str, cache_dir: str | Path | None) -> float | None:
    """The figure machine.json holds, if it is a usable one (a finite speed above 0)."""
    try:
        value = float(_kept_figures(cache_dir)[name])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _machine_figure(name: str, cache_dir: str | Path | None) -> float:
    value = _kept_figure(name, cache_dir)
    if value is None:
        value = _measured(name)
        # Read again just before writing: another process may have kept its own figure meanwhile.
        atomic_write_json(_machine_path(cache_dir), {**_kept_figures(cache_dir), name: value})
    return value


@functools.cache
def _measured(name: str) -> float:
    """Measured once per process too: the machine does not change between cache folders."""
    return _MEASURES[name]()


def machine_gflops(cache_dir: str | Path | None = None) -> float:
    """This machine's matmul GFLOP/s, measured once and remembered in the cache folder."""
    return _machine_figure("matmul_gflops", cache_dir)


def machine_convnet_speed(cache_dir: str | Path | None = None) -> float:
    """Level 1's network's training photos a second here (`measure_convnet_images_per_second`), measured once."""
    return _machine_figure("convnet_images_per_second", cache_dir)


def convnet_speed_known(cache_dir: str | Path | None = None) -> bool:
    """Whether machine.json holds level 1's network's speed already (measuring it takes a few seconds)."""
    return _kept_figure("convnet_images_per_second", cache_dir) is not None


def convnet_speed_guess(gflops: float) -> float:
    """Level 1's network's speed on a machine known by its matmul speed alone: the reference's, scaled."""
    return REFERENCE_CONVNET_IMAGES_PER_SECOND * gflops / REFERENCE_GFLOPS


@functools.cache
def measured_backbone_flops(name: str) -> int:
    """FLOPs of a backbone at its native size, measured by building it (for backbones that don't say)."""
    from core.networks.backbones import count_flops, get_backbone

    return count_flops(get_backbone(name).build(None))


def network_gflops(config) -> float:
    """GFLOPs of one forward pass of the run's network at its image size (`config` resolved)."""
    from core.levels import SMALL_CONVNETS

    level = config.level_definition
    if getattr(config, "arch", None):
        native, gflops = SMALL_CONVNETS[config.arch].image_size, SMALL_CONVNETS[config.arch].gflops
    elif not level.needs_backbone:
        native, gflops = level.image_size, level.gflops
    else:
        return backbone_gflops(config.backbone, config.image_size)
    return _at_size(gflops, native, config.image_size)


def backbone_gflops(name: str, image_size) -> float:
    """GFLOPs of one forward pass of a registered backbone at `image_size`."""
    from core.networks.backbones import get_backbone

    backbone = get_backbone(name)
    native, gflops = backbone.image_size, (backbone.flops or measured_backbone_flops(backbone.name)) / 1e9
    return _at_size(gflops, native, image_size)


def _at_size(gflops: float, native, image_size) -> float:
    """A convnet's GFLOPs at its native size, scaled to `image_size`: its work grows with the pixels."""
    return gflops * (image_size[0] * image_size[1]) / (native[0] * native[1])


def backbone_cost_scale(backbone_name: str, cost) -> float:
    """The backbone's seconds per GFLOP against MobileNetV2's, for a level with this cost model."""
    from core.networks.backbones import get_backbone
    from core.levels import EndToEndCost

    backbone = get_backbone(backbone_name)
    return backbone.training_cost if isinstance(cost, EndToEndCost) else backbone.forward_cost


def estimate(config, n_train: int, n_val: int, gflops: float | None = None,
             native_bfloat16: bool | None = None, fingerprint: str | None = None,
             convnet_speed: float | None = None, judge: bool = True) -> Estimate:
    """Rough wall time of a training run on this machine, before starting it.

    Args:
        gflops: this machine's matmul speed (default: measured once and remembered).
        native_bfloat16: whether it computes bfloat16 in hardware (default: asked of the machine);
            only read for runs in bfloat16.
        fingerprint: the data set's; with it, a level that trains on cached features (level 2) counts no
            extraction and no decoding when both splits' features are cached (a retrain takes seconds).
        convnet_speed: level 1's network's training photos a second here (`measure_convnet_images_per_second`),
            which its epochs follow; default: the one remembered (`machine_convnet_speed`), or, where none
            is or only `gflops` is given (a machine described by its matmul speed alone), the reference
            machine's scaled by matmul's (`convnet_speed_guess`).
        judge: count the novelty judge's features (`judge_seconds`); False for runs that share them, such
            as a curve's points (each point finds the photos' features banked by the first).
    """
    from core.levels import SMALL_CONVNETS

    config = config.resolved()
    speed = REFERENCE_GFLOPS / (gflops or machine_gflops(config.cache_dir))
    level_speed = speed  # the level's own work; fixed costs and the judge's pretrained network follow matmul
    note = ""
    if getattr(config, "arch", None):
        net = SMALL_CONVNETS[config.arch]
        if convnet_speed is None:
            # Measuring takes seconds, best away from a page being drawn: the first level-1 job measures
            # it (`core.app.jobs`), and until then this guesses.
            convnet_speed = None if gflops else _kept_figure("convnet_images_per_second", config.cache_dir)
            if convnet_speed is None:
                convnet_speed = convnet_speed_guess(REFERENCE_GFLOPS / speed)
                if not gflops:
                    note = "; a first guess: the first run of level 1 measures how fast this machine trains it"
        level_speed = REFERENCE_CONVNET_IMAGES_PER_SECOND / convnet_speed * net.cost_scale
        if config.precision == "bfloat16":
            if native_bfloat16 is None:
                from core.training.distribute import native_bfloat16 as has_native

                native_bfloat16 = has_native()
            if native_bfloat16:
                level_speed /= net.bfloat16_speedup
                note += f"; in bfloat16, about {net.bfloat16_speedup:.1f}x as fast as float32"
            else:
                note += "; bfloat16 is emulated on this machine, so expect longer than this"
    network = network_gflops(config)
    kept_features = False  # level 2's features of every photo, kept by an earlier run
    if config.level_definition.needs_backbone:  # the network's work, not a head's on features or a build, scales
        network *= backbone_cost_scale(config.backbone, config.level_definition.cost)
    views = 2 if config.flip_average else 1  # the final scoring pass, with mirror images or not
    fine_tuning = config.level_definition.fine_tuning
    if fine_tuning is not None and config.views:
        from core.data.augment import view_names
        from core.networks.backbones import get_backbone, top_block_share

        guess = fine_tuning.cost.estimate(n_train, n_val, config.epochs, network, views, level_speed,
                                          cached_views=len(view_names(config.augment, config.views)),
                                          top_share=top_block_share(get_backbone(config.backbone), config.top_block))
    elif (isinstance(config.level_definition.cost, NoTrainingCost) and fingerprint
          and features_cached(config, fingerprint, parts=[("validation", False), ("validation", True)],
                              pretrained_only=True)):
        # Level 0 scores with its ImageNet top on level 2's kept features of the photos and their mirror
        # images (`recipes._grouped_outputs_from_features`): it was estimated at 28 s and took 4.
        guess = config.level_definition.cost.estimate(n_train, n_val, config.epochs, network, views, level_speed, cached=True)
    elif isinstance(config.level_definition.cost, FeatureCost) and fingerprint and features_cached(config, fingerprint):
        guess = config.level_definition.cost.estimate(n_train, n_val, config.epochs, network, views, level_speed, cached=True)
        kept_features = True  # the photos were decoded for them, and the network is not needed
    else:
        guess = config.level_definition.cost.estimate(n_train, n_val, config.epochs, network, views, level_speed)
    # Both splits, unless the photos are decoded at this size already (level 0 reads the training photos
    # too: its novelty judge compares new photos with them).
    decode = 0.0 if kept_features else DECODE_SECONDS_PER_IMAGE * sum(
        count for split, count in (("train", n_train), ("validation", n_val))
        if not (fingerprint and is_decoded(fingerprint, split, config.image_size, config.cache_dir)))
    judging_seconds, judge_decode = judge_seconds(config, n_train, n_val, speed, fingerprint) if judge else (0.0, 0.0)
    decode += judge_decode
    # The parts named add up to the total shown ("31 s (~4 s + ~18 s)" once left the decoding out).
    decoding = f", ~{format_duration(decode)} decoding the photos the first time" if decode >= 1 else ""
    judging = (f", ~{format_duration(judging_seconds)} learning what its classes look like (once; cached after)"
               if judging_seconds >= 1 else "")
    setup = ""
    if isinstance(config.level_definition.cost, NoTrainingCost):  # its cost already counts loading the network
        overhead = 0.0
    else:  # a small data set's run is mostly this: 20 photos were estimated at 1 s and took 12
        loads_network = config.level_definition.needs_backbone and not kept_features
        overhead = (SETUP_SECONDS + (LOAD_NETWORK_SECONDS if loads_network else 0)) * speed
        what = "loading the network, building and saving the model" if loads_network else "building and saving the model"
        setup = f", ~{format_duration(max(overhead, 1))} {what}"
    return Estimate(guess.seconds + decode + judging_seconds + overhead, guess.detail + decoding + judging + setup + note)


def judge_seconds(config, n_train: int, n_val: int, speed: float, fingerprint: str | None) -> tuple[float, float]:
    """(extracting, decoding): what fitting the novelty judge adds to a run (`core.serving.honesty`).

    After scoring, every run extracts its judge network's features of both splits, one view each: level
    0 cold took 50 s more than estimated for them. A level trained on those same features (level 2)
    counts them in its own extraction; a run finding them cached (after level 2) adds nothing. Photos
    decoded at another size than the model's (level 1's judge, at its network's own size) add decoding.
    """
    from core.errors import ConfigError
    from core.networks.backbones import WeightsError, get_backbone, resolve_weights
    from core.serving.honesty import judge_network

    level = config.level_definition
    if isinstance(level.cost, FeatureCost):
        return 0.0, 0.0
    try:
        network = judge_network(config.backbone if level.needs_backbone else None, config.weights, config.image_size)
        if network is None:  # the judge is switched off
            return 0.0, 0.0
        name, weights, size, _ = network
        resolved = resolve_weights(get_backbone(name), weights)
    except (ConfigError, WeightsError):  # a judge that cannot be had is a note on the card, and costs nothing
        return 0.0, 0.0
    if resolved.keras_arg is None:  # random weights: no judge either
        return 0.0, 0.0
    splits = [(split, count) for split, count in (("train", n_train), ("validation", n_val))
              if not (fingerprint and _features_cached(config.cache_dir, fingerprint, name, resolved.key, size,
                                                       [(split, False)]))]
    feature_cost = next(l.cost for l in LEVELS.values() if isinstance(l.cost, FeatureCost))
    per_image = feature_cost.extract * backbone_gflops(name, size) * backbone_cost_scale(name, feature_cost) * speed
    extracting = per_image * sum(count for _, count in splits)
    decoding = 0.0 if tuple(size) == tuple(config.image_size) else DECODE_SECONDS_PER_IMAGE * sum(
        count for split, count in splits if not (fingerprint and is_decoded(fingerprint, split, size, config.cache_dir)))
    return extracting, decoding


def features_cached(config, fingerprint: str, parts: list[tuple[str, bool]] | None = None,
                    pretrained_only: bool = False) -> bool:
    """Whether a run of `config` on the data set `fingerprint` finds every split's features cached (the
    validation photos' mirror images too when it averages them), as a second level-2 run does; with
    `parts`, those (split, mirror) arrays only. `pretrained_only`: never for random weights, which differ
    at every build, so level 0 cannot reuse what level 2 computed with its own (it runs the network)."""
    from core.errors import ConfigError
    from core.networks.backbones import WeightsError, get_backbone, resolve_weights
    from core.networks.features import bottleneck_parts

    config = config.resolved()
    try:
        weights = resolve_weights(get_backbone(config.backbone), config.weights)
    except (ConfigError, WeightsError):  # an unknown network, or weights not at hand: nothing is cached either
        return False
    if pretrained_only and weights.keras_arg is None:
        return False
    parts = parts if parts is not None else [(split, mirror) for _, split, mirror in bottleneck_parts(config.flip_average)]
    return _features_cached(config.cache_dir, fingerprint, config.backbone, weights.key, config.image_size, parts)


def _features_cached(cache_dir, fingerprint: str, backbone: str, weights_key: str, image_size,
                     parts: list[tuple[str, bool]]) -> bool:
    from core.networks.features import feature_cache_path

    return all(feature_cache_path(cache_dir, fingerprint, backbone, weights_key, image_size, split, mirror=mirror).is_file()
               for split, mirror in parts)
