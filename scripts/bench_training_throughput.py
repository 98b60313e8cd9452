"""Training throughput of the models in a store, from their cards: images/s and share of matmul peak.

    python scripts/bench_training_throughput.py --models-dir bench-out/models [--every-model]

`python -m core bench` reports the same columns for the runs it makes; this reads them back from
models trained earlier (each card keeps its fit time and epochs), measuring this machine's matmul
rate now. Run it on the machine that trained them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from core.experiments.bench import training_throughput
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.training.estimate import measure_matmul_gflops
    from core.serving.model_store import ModelStore

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--every-model", action="store_true",
                        help="a row per model (network and precision shown), not only each level's newest")
    args = parser.parse_args(argv)
    summary = summarize(resolve_data_dir(args.data_dir)[0])
    gflops = measure_matmul_gflops()
    store = ModelStore(args.models_dir)
    if args.every_model:
        entries = {entry.id: entry for entry in sorted(store.list().models, key=lambda e: (e.level, e.id))}
    else:
        entries = {level: entry for level, entry in sorted(store.latest_per_level(summary.classes).items())}
    rows = {}
    for key, entry in entries.items():
        if entry.card.dataset.get("fingerprint") != summary.fingerprint:
            continue
        row = training_throughput(entry, None, summary, entry.card.timings, gflops)
        if row:
            hyper = entry.card.hyperparameters
            rows[key] = {"model": entry.id, "level": entry.level, "network": hyper.get("arch") or entry.card.backbone or "tutorial",
                         "precision": hyper.get("precision", "float32"), "fit_seconds": entry.card.timings["fit"], **row}
    print(f"matmul: {gflops:.1f} GFLOP/s")
    print("| level | network | precision | training img/s | training GFLOP/img | % of matmul peak |")
    print("|---|---|---|---|---|---|")
    for row in rows.values():
        print(f"| {row['level']} | {row['network']} | {row['precision']} | {row['train_images_per_s']:.1f} | "
              f"{row['train_gflops_per_image']:.3f} | {row['train_fraction_of_matmul']:.1%} |")
    if args.json:
        print(json.dumps({"matmul_gflops": gflops, "levels": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
