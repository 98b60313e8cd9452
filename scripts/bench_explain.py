"""Grad-CAM's time per photo for the newest model of each level in a store (warm, one photo at a time).

`python -m core bench` reports the same figure for the models it trains; this script measures
models already trained, e.g. after the bench: python scripts/bench_explain.py --models-dir bench-out/models

Usage: python scripts/bench_explain.py [--models-dir DIR] [--photo PATH] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir")
    parser.add_argument("--photo", type=Path, help="default: the first validation photo of the data set")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    from core.experiments.bench import _explain_ms
    from core.serving.model_store import ModelStore
    from core.serving.predictor import Predictor

    if args.photo is None:
        from core.data.download import resolve_data_dir
        from core.data.folders import summarize

        folder, _ = resolve_data_dir(download=False)
        args.photo = summarize(folder).files["validation"][0][0]
    rows = {}
    for level, entry in ModelStore(args.models_dir).latest_per_level().items():
        t0 = time.perf_counter()
        predictor = Predictor(entry)
        milliseconds = _explain_ms(entry, predictor, args.photo, args.repeats)
        rows[level] = {"model": entry.id, "explain_ms": milliseconds, "mirror_averaged": entry.card.flip_average,
                       "setup_s": time.perf_counter() - t0}
        print(f"level {level}: Grad-CAM {milliseconds:.1f} ms per photo (median of {args.repeats}, warm; "
              f"{'both views' if entry.card.flip_average else 'one view'}), {entry.id}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
