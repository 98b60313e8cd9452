"""Where a level-3 training step spends its time, by TensorFlow op type (TensorFlow's own profiler).

Builds the level-3 model as `core.training.recipes.train_fine_tuning` trains it (random weights, the level-2
network and head, top block unfrozen, frozen batch norm folded unless `--unfolded`), runs a few
steps on random pictures (batch 16) under `tf.profiler`, and prints each op type's share of the
threads' busy time.

    python scripts/profile_level3_step.py [--backbone efficientnet_lite2] [--steps 4] [--unfolded] [--top 15]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def op_times(trace_dir: Path) -> collections.Counter:
    """Op type -> picoseconds, summed over TensorFlow's compute threads, from the profiler's XSpace file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    times: collections.Counter = collections.Counter()
    for path in trace_dir.glob("plugins/profile/*/*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    op = names.get(event.metadata_id, "?").split(":")[-1]
                    if op != "Process":  # the thread's own span, not an op
                        times[op.removeprefix("_MklNative").removeprefix("_Mkl")] += event.duration_ps
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--unfolded", action="store_true", help="batch norm as Keras runs it, not folded")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.fold import fold_batch_norm
    from core.networks.factories import attach_head, make_feature_extractor, make_head, prepare_fine_tuning

    backbone = get_backbone(args.backbone)
    extractor = make_feature_extractor(backbone, resolve_weights(backbone, "none"))
    model = prepare_fine_tuning(attach_head(extractor, make_head(extractor.output_shape[1:], 2)), backbone)
    trainee = model if args.unfolded else fold_batch_norm(model)
    trainee.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, *backbone.image_size, 3)).astype("float32")
    y = rng.integers(0, 2, (16, 1)).astype("float32")
    for _ in range(3):
        trainee.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as trace:
        tf.profiler.experimental.start(trace)
        for _ in range(args.steps):
            trainee.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        times = op_times(Path(trace))
    total = sum(times.values())
    print(f"{backbone.label}, level-3 step, batch 16, {'unfolded' if args.unfolded else 'frozen batch norm folded'}: "
          f"{total / args.steps / 1e9:.0f} ms of thread time per step")
    print("| op | ms per step (thread time) | share |")
    print("|---|---|---|")
    for name, ps in times.most_common(args.top):
        print(f"| {name} | {ps / args.steps / 1e9:.1f} | {ps / total:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
