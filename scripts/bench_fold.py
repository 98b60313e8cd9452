"""What folding batch norm into the convolutions (`core.fold`) buys: forward and level-3 training speed.

For each backbone with batch norm, on random pictures at its native size, batch 16, random weights
(the arithmetic is the same with ImageNet's):
- the frozen network's forward pass (level 2's feature extraction, level 0, Predict), as built and folded;
- a level-3 training step: the level-2 model (network and head) with the top block unfrozen, as
  `core.recipes.train_fine_tuning` builds it, unfolded and with its frozen layers folded.
Each timing is the best of `--repeats` rounds of `--steps` calls, after a warm-up, so a busy moment
on a shared machine does not count; both variants alternate within one process.

    python scripts/bench_fold.py [--backbones efficientnet_lite2,mobilenet_v2] [--steps 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
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

    from core.backbones import get_backbone, resolve_weights
    from core.fold import fold_batch_norm
    from core.models import attach_head, make_feature_extractor, make_head, prepare_fine_tuning

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="efficientnet_lite2,mobilenet_v2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("| backbone | forward img/s, built | folded | speed-up | level-3 step img/s, built | folded | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        r = measure(name.strip(), args.steps, args.repeats)
        print(f"| {name} | {r['forward built']:.1f} | {r['forward folded']:.1f} | "
              f"{r['forward folded'] / r['forward built']:.2f}x | {r['level-3 step built']:.1f} | "
              f"{r['level-3 step folded']:.1f} | {r['level-3 step folded'] / r['level-3 step built']:.2f}x |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
