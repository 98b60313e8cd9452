"""What runs the models when photos are answered: TensorFlow against ONNX Runtime, on a quiet box.

    LITTLE_DATA_MODELS_DIR=<store> python scripts/bench_serving.py [--photos 16] [--repeats 7] [--json]

Loads the newest model of every level for the data set's classes, plans the shared trunk as the app
does, and times `predict_photos` (what the model server runs for a batch: resizing, every level,
mirror averaging, calibration, the novelty judges) on 1 photo and on `--photos` validation photos,
first with TensorFlow, then after `accelerate` has moved the trunk and the other models to ONNX
Runtime. Reports the best and median time of `--repeats` runs each, the one-off cost of converting
(or loading a conversion kept in the cache), and the largest difference between the two engines'
calibrated probabilities, with whether any answer or "none of these" changed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(run, repeats: int) -> dict:
    run()  # traced or warmed once
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return {"best_ms": round(min(times), 1), "median_ms": round(statistics.median(times), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=16, help="photos in the large batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.serving.model_store import ModelStore
    from core.serving.predictor import Predictor, SharedTrunk, accelerate, configure_for_serving, predict_photos

    configure_for_serving()
    summary = summarize(resolve_data_dir(None)[0])
    entries = ModelStore().latest_per_level(summary.classes)
    if not entries:
        print("No model for this data set's classes in the store (LITTLE_DATA_MODELS_DIR).", file=sys.stderr)
        return 2
    photos = [(Path(path).read_bytes(), Path(path).name) for path, _ in summary.files["validation"][:args.photos]]
    predictors = {level: Predictor(entry) for level, entry in entries.items()}
    for predictor in predictors.values():
        predictor.warm_up()
    trunks = SharedTrunk.plan(predictors)

    def measure() -> dict:
        return {f"{n} photo{'s' if n > 1 else ''}": timed(lambda n=n: predict_photos(photos[:n], predictors, None, trunks),
                                                         args.repeats) for n in (1, len(photos))}

    report = {"levels": sorted(entries), "shared": [trunk.levels for trunk in trunks], "tensorflow": measure()}
    before = predict_photos(photos, predictors, None, trunks)
    start = time.perf_counter()
    accelerate(trunks, predictors)
    report["accelerate_s"] = round(time.perf_counter() - start, 2)
    covered = {level for trunk in trunks for level in trunk.levels}
    networks = {**{f"trunk of levels {t.levels}": t for t in trunks},
                **{f"level {level}": p for level, p in sorted(predictors.items()) if level not in covered}}
    report["engines"] = {name: network.engine + (f" ({network.engine_error})" if network.engine_error else "")
                         for name, network in networks.items()}
    report["onnxruntime"] = measure()
    after = predict_photos(photos, predictors, None, trunks)
    report["largest_difference"] = max(abs(a.per_level[level][c] - b.per_level[level][c])
                                       for a, b in zip(before, after) for level in a.per_level for c in a.per_level[level])
    report["answers_changed"] = sum(a.answer(level) != b.answer(level) for a, b in zip(before, after) for level in a.per_level)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"levels {report['levels']}, sharing {report['shared']}; engines after: {report['engines']}; "
          f"accelerate: {report['accelerate_s']} s")
    print("| photos in the batch | TensorFlow best / median ms | ONNX Runtime best / median ms |\n|---|---|---|")
    for size in report["tensorflow"]:
        tf_, ort = report["tensorflow"][size], report["onnxruntime"][size]
        print(f"| {size} | {tf_['best_ms']} / {tf_['median_ms']} | {ort['best_ms']} / {ort['median_ms']} |")
    print(f"largest difference in a calibrated probability: {report['largest_difference']:.2e}; "
          f"answers changed: {report['answers_changed']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
