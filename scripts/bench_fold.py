"""What folding batch norm into the convolutions (`core.networks.fold`) buys: forward and level-3 training speed.

For each backbone with batch norm, on random pictures at its native size, batch 16, random weights
(the arithmetic is the same with ImageNet's):
- the frozen network's forward pass (level 2's feature extraction, level 0, Predict), as built and folded;
- a level-3 training step: the level-2 model (network and head) with the top block unfrozen, as
  `core.training.recipes.train_fine_tuning` builds it, unfolded and with its frozen layers folded.
Each timing is the best of `--repeats` rounds of `--steps` calls, after a warm-up, so a busy moment
on a shared machine does not count; both variants alternate within one process.

With `--models-dir`, also Predict as the app runs it (`predict_every_level` with the shared trunk,
one validation photo through every level's newest model in that store, warm, 20 times), the models
loaded once as built and once folded, answering in turn.

    python scripts/bench_fold.py [--backbones efficientnet_lite2,mobilenet_v2] [--steps 8] [--repeats 3]
                                 [--models-dir <store with levels 0-3>]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_rate(call, images: int, steps: int, repeats: int) -> float:
    """Images per second: the best of `repeats` rounds of `steps` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            call()
        best = min(best, time.perf_counter() - start)
    return images * steps / best


def measure(name: str, steps: int, repeats: int) -> dict[str, float]:
    import keras
    import numpy as np
    import tensorflow as tf

    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.fold import fold_batch_norm
    from core.networks.factories import attach_head, make_feature_extractor, make_head, prepare_fine_tuning

    backbone = get_backbone(name)
    size = backbone.image_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, *size, 3)).astype("float32")
    y = rng.integers(0, 2, (16, 1)).astype("float32")

    extractor = make_feature_extractor(backbone, resolve_weights(backbone, "none"))
    forwards = {}
    for variant, model in (("built", extractor), ("folded", fold_batch_norm(extractor, inference=True))):
        forward = tf.function(lambda images, model=model: model(images, training=False))
        forward(x).numpy()
        forwards[variant] = lambda forward=forward: forward(x).numpy()
    steps_fns = {}
    model = attach_head(extractor, make_head(extractor.output_shape[1:], 2))
    prepare_fine_tuning(model, backbone)
    for variant, trainee in (("built", model), ("folded", fold_batch_norm(model))):  # sharing the trained layers
        trainee.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9), loss="binary_crossentropy")
        for _ in range(3):
            trainee.train_on_batch(x, y)
        steps_fns[variant] = lambda trainee=trainee: trainee.train_on_batch(x, y)
    rates = {}
    for variant in ("built", "folded"):
        rates[f"forward {variant}"] = best_rate(forwards[variant], 16, steps, repeats)
        rates[f"level-3 step {variant}"] = best_rate(steps_fns[variant], 16, steps, repeats)
    return rates


def measure_predict(models_dir: str, uploads: int = 20) -> dict[str, dict]:
    """Server time of one photo through every level (shared trunk included), as the Predict page runs it.

    The models are loaded twice, with `LITTLE_DATA_FOLD_BATCH_NORM` off and on, and the two sets
    answer the photo in turn, so that a busy moment on the machine falls on both alike.
    """
    import numpy as np

    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.serving.model_store import ModelStore
    from core.serving.predictor import Predictor, SharedTrunk, predict_every_level

    summary = summarize(resolve_data_dir(None)[0])
    entries = ModelStore(models_dir).latest_per_level(summary.classes)
    photo = Path(summary.files["validation"][0][0]).read_bytes()
    variants = {}
    for label, setting in (("built", "0"), ("folded", "1")):
        os.environ["LITTLE_DATA_FOLD_BATCH_NORM"] = setting  # read when each model and trunk is prepared
        predictors = {level: Predictor(entry) for level, entry in entries.items()}
        for predictor in predictors.values():
            predictor.warm_up()
        trunks = SharedTrunk.plan(predictors)
        for _ in range(3):
            predict_every_level(photo, "photo", predictors, trunks=trunks)
        variants[label] = (predictors, trunks)
    times = {label: [] for label in variants}
    for _ in range(uploads):
        for label, (predictors, trunks) in variants.items():
            times[label].append(predict_every_level(photo, "photo", predictors, trunks=trunks).server_ms)
    return {label: {"levels": sorted(entries), "shared": [t.levels for t in variants[label][1]],
                    "median_ms": float(np.median(times[label])), "worst_ms": max(times[label])} for label in variants}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="efficientnet_lite2,mobilenet_v2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models-dir", help="also time Predict on this store's models, folded or not")
    args = parser.parse_args(argv)
    names = [name for name in args.backbones.split(",") if name]  # --backbones "": Predict only
    if names:
        print("| backbone | forward img/s, built | folded | speed-up | level-3 step img/s, built | folded | speed-up |")
        print("|---|---|---|---|---|---|---|")
    for name in names:
        r = measure(name.strip(), args.steps, args.repeats)
        print(f"| {name} | {r['forward built']:.1f} | {r['forward folded']:.1f} | "
              f"{r['forward folded'] / r['forward built']:.2f}x | {r['level-3 step built']:.1f} | "
              f"{r['level-3 step folded']:.1f} | {r['level-3 step folded'] / r['level-3 step built']:.2f}x |",
              flush=True)
    if args.models_dir:
        print("\n| Predict, one photo, every level | server ms, median | worst |\n|---|---|---|")
        for label, result in measure_predict(args.models_dir).items():
            print(f"| {label} (levels {result['levels']}, sharing {result['shared']}) | {result['median_ms']:.1f} | "
                  f"{result['worst_ms']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
