"""Exports every level's latest model to every format and measures what a user gets.

For each level and format: the file size, the time to convert, the largest difference from the
`.keras` model's probabilities on real validation photos, and single-image latency in the format's
own runtime (median of repeated calls, warm). For int8 LiteRT: its accuracy on the whole validation
split against the float model's.

    python scripts/bench_export.py --models-dir bench-out/s4/models --out bench-out/export
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data.decoded import decode_split  # noqa: E402
from core.data.download import resolve_data_dir
from core.data.folders import sample_paths, summarize
from core.serving.export import FORMATS, calibration_photos, export_model, open_export  # noqa: E402
from core.data.images import load_array  # noqa: E402
from core.serving.model_store import ModelStore  # noqa: E402
from core.serving.predictor import Predictor  # noqa: E402


def latency_ms(predict, photo: np.ndarray, repeats: int) -> float:
    predict(photo[None])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(photo[None])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", help="model store (default: the app's)")
    parser.add_argument("--data-dir", help="data set (default: as the CLI)")
    parser.add_argument("--out", default="bench-out/export", help="folder for the exports and export.json")
    parser.add_argument("--levels", default="0,1,2,3")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--photos", type=int, default=50, help="validation photos per class for the difference")
    parser.add_argument("--repeats", type=int, default=30, help="timed single-image calls per format")
    parser.add_argument("--no-int8", action="store_true", help="skip int8 LiteRT")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ModelStore(args.models_dir)
    folder, source = resolve_data_dir(args.data_dir, download=False)
    summary = summarize(folder, source=source)
    rows = []
    for level in [int(x) for x in args.levels.split(",")]:
        entry = store.latest(level)
        if entry is None:
            print(f"level {level}: no model in {store.root}, skipped")
            continue
        predictor = Predictor(entry)
        paths = sample_paths(summary, split="validation", per_class=args.photos, seed=0)
        photos = np.stack([load_array(p, entry.image_size) for p in paths])
        reference = predictor.predict_arrays(photos)
        keras_ms = latency_ms(predictor.predict_arrays, photos[0], args.repeats)
        variants = [(fmt, None) for fmt in args.formats.split(",")]
        if not args.no_int8:
            variants.append(("tflite", "int8"))
        for fmt, quantize in variants:
            target = out / f"level{level}-{fmt}{'-' + quantize if quantize else ''}"
            calibration = calibration_photos(entry, args.data_dir) if quantize else None
            info = export_model(entry, fmt, target, quantize=quantize, calibration=calibration, model=predictor.model)
            _, predict = open_export(target)
            probabilities = np.concatenate([predict(photos[i:i + 16]) for i in range(0, len(photos), 16)])
            row = {"level": level, "format": fmt + (f" {quantize}" if quantize else ""), "model": entry.id,
                   "mb": round(info.bytes / 2**20, 2), "convert_s": info.seconds,
                   "max_abs_diff": float(np.abs(probabilities - reference).max()),
                   "latency_ms": round(latency_ms(predict, photos[0], args.repeats), 2),
                   "keras_predictor_ms": round(keras_ms, 2)}
            if quantize:
                decoded = decode_split(summary, "validation", entry.image_size)
                labels = np.asarray(decoded.labels)
                quantized = np.concatenate([predict(decoded.images[i:i + 32]) for i in range(0, len(labels), 32)])
                floats = predictor.predict_rows(decoded.images, batch_size=32)
                row["int8_accuracy"] = float((quantized.argmax(1) == labels).mean())
                row["float_accuracy"] = float((floats.argmax(1) == labels).mean())
                row["accuracy_points_lost"] = round((row["float_accuracy"] - row["int8_accuracy"]) * 100, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "export.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| level | format | size (MB) | convert (s) | max abs diff | 1 photo (ms) | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        accuracy = (f"{row['int8_accuracy']:.2%} (float {row['float_accuracy']:.2%})" if "int8_accuracy" in row else "")
        print(f"| {row['level']} | {row['format']} | {row['mb']} | {row['convert_s']} | {row['max_abs_diff']:.1e} | "
              f"{row['latency_ms']} | {accuracy} |")
    print("\nKeras predictor (Little Data's own, tf.function), 1 photo: "
          + ", ".join(f"level {r['level']} {r['keras_predictor_ms']} ms" for r in rows if r["format"] == "keras"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
