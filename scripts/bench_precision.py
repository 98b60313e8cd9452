"""Training steps in float32 and in bfloat16, on random pictures: what `--precision bfloat16` buys here.

For level 1's two networks and for a level-3-like MobileNetV2 (top block trainable, the rest frozen),
times `train_on_batch` (batch 16) after a warm-up, each precision in a fresh process so the Keras
policy and TensorFlow's kernel choices do not leak from one to the other.

    python scripts/bench_precision.py [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(precision: str, steps: int) -> dict[str, float]:
    import keras
    import numpy as np

    from core.networks.backbones import get_backbone
    from core.networks.factories import build_in_precision, make_level1_model, make_small_xception

    def level3_like():
        mobilenet = get_backbone("mobilenet_v2")
        base = mobilenet.build(None)
        for layer in base.layers:
            layer.trainable = mobilenet.is_top_block(layer.name)
        inputs = keras.Input((224, 224, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", dtype="float32")(pooled))

    networks = {"level 1, tutorial's convnet": (lambda: make_level1_model(2, (150, 150)), 150),
                "level 1, Xception-like": (lambda: make_small_xception(2, (180, 180)), 180),
                "level 3-like, MobileNetV2 top block": (level3_like, 224)}
    rates = {}
    for name, (factory, size) in networks.items():
        model = build_in_precision(factory, precision)
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="binary_crossentropy")
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (16, size, size, 3)).astype("float32")
        y = rng.integers(0, 2, (16, 1)).astype("float32")
        for _ in range(3):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        rates[name] = 16 * steps / (time.perf_counter() - start)
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--precision", help=argparse.SUPPRESS)  # one precision, in a child process
    args = parser.parse_args(argv)
    if args.precision:
        print(json.dumps(measure(args.precision, args.steps)))
        return 0
    from core.training.distribute import native_bfloat16

    results = {}
    for precision in ("float32", "bfloat16"):
        out = subprocess.run([sys.executable, __file__, "--precision", precision, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        results[precision] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"bfloat16 in hardware: {native_bfloat16()}")
    print("| network | float32 img/s | bfloat16 img/s | speed-up |")
    print("|---|---|---|---|")
    for name, rate in results["float32"].items():
        faster = results["bfloat16"][name]
        print(f"| {name} | {rate:.1f} | {faster:.1f} | {faster / rate:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
