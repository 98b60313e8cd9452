"""Level 3's measurement table: epochs x top-block size x cached views, over seeds, cold and warm.

Each row trains level 3 from the same level-2 model and reports the saved model's validation
accuracy (mirror-averaged) and the wall time. The first seed of a (top block, views) pair starts
with no view cache ("cold"); later seeds reuse it ("warm"). Views 0 is the tutorial's way: the
whole network on a fresh augmentation of every photo in every epoch (no cache to reuse).

    python scripts/bench_fine_tuning.py --models-dir STORE --grid small:4:5,medium:4:5,large:0:5 --seeds 1,2,3
    python scripts/bench_fine_tuning.py --models-dir STORE --grid small:4:5:1e-3     # top block:views:epochs[:rate]

STORE must hold a level-2 model of the data set and backbone; the level-3 models are saved to a
scratch copy of it, so the store is left as it was. Results go to --out (JSON lines, appended as each
run ends) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_grid(text: str) -> list[tuple[str, int, int, float | None]]:
    """"small:4:5,large:0:20:1e-3" -> [(top block, views, epochs, learning rate or None), ...]."""
    cells = []
    for cell in text.split(","):
        block, views, epochs, *rate = cell.strip().split(":")
        cells.append((block, int(views), int(epochs), float(rate[0]) if rate else None))
    return cells


def run_cell(block: str, views: int, epochs: int, rate: float | None, seed: int, args, models_dir: str) -> dict:
    from core import settings
    from core.training.loop import TrainConfig, train

    config = TrainConfig(level=3, backbone=args.backbone, epochs=epochs, views=views, top_block=block, seed=seed,
                         learning_rate=rate,
                         data_dir=args.data_dir, models_dir=models_dir, cache_dir=args.cache_dir)
    t0 = time.monotonic()
    result = train(config)
    seconds = time.monotonic() - t0
    card = result.entry.card
    views_dir = Path(args.cache_dir or settings.cache_dir()) / "views"
    # Cold: the run built its view cache (or, on the fly, had none to reuse).
    cold = views == 0 or "views_images_per_s" in result.timings
    return {"top_block": block, "views": views, "epochs": epochs, "learning_rate": card.hyperparameters["learning_rate"],
            "seed": seed, "seconds": round(seconds, 1), "cold": cold,
            "val_accuracy": card.metrics.val_accuracy, "last_epoch": card.metrics.last_epoch_val_accuracy,
            "timings": result.timings, "unfrozen_layers": card.hyperparameters.get("unfrozen_layers"),
            "cache_mb": round(sum(p.stat().st_size for p in views_dir.glob("*.npy")) / 2**20, 1)
            if views_dir.exists() else 0.0}


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        row["cold"] = row["views"] == 0 or "views_images_per_s" in row["timings"]
        groups.setdefault((row["top_block"], row["views"], row["epochs"], row.get("learning_rate", 1e-4)),
                          []).append(row)
    lines = ["| top block | views | epochs | learning rate | seeds | val accuracy, mean (min-max) | cold s | warm s (mean) | "
             "views s | fit s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (block, views, epochs, rate), runs in groups.items():
        accuracies = [r["val_accuracy"] for r in runs]
        cold = [r["seconds"] for r in runs if r["cold"]]
        warm = [r["seconds"] for r in runs if not r["cold"]]
        fit = statistics.mean(r["timings"].get("fit", 0) for r in runs)
        built = [r["timings"].get("views", 0) for r in runs if r["cold"]]
        lines.append(f"| {block} | {views or 'on the fly'} | {epochs} | {rate:g} | {len(runs)} | "
                     f"{statistics.mean(accuracies):.2%} ({min(accuracies):.2%}-{max(accuracies):.2%}) | "
                     f"{f'{cold[0]:.0f}' if cold else '-'} | {f'{statistics.mean(warm):.0f}' if warm else '-'} | "
                     f"{f'{built[0]:.0f}' if built else '-'} | {fit:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", help="a store holding the level-2 model to start from (required to run)")
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--data-dir", help="default: the app's data set")
    parser.add_argument("--cache-dir", help="default: the app's cache (decoded photos are reused; view caches "
                                            "are cleared before each cold run)")
    parser.add_argument("--grid", default="small:4:5,medium:4:5", help="top block:views:epochs, comma-separated")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--keep-caches", action="store_true",
                        help="reuse view caches across cells (for cells that differ only in epochs or learning rate)")
    parser.add_argument("--out", default="fine_tuning.jsonl")
    parser.add_argument("--table", nargs="+", metavar="JSONL", help="print the table of earlier runs and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table([json.loads(line) for path in args.table for line in Path(path).read_text().splitlines()
                     if line.strip()]))
        return 0
    if not args.models_dir:
        parser.error("--models-dir is required to run the grid")

    from core import settings

    scratch = Path(tempfile.mkdtemp(prefix="bench-fine-tuning-"))
    models_dir = scratch / "models"
    shutil.copytree(args.models_dir, models_dir, ignore=shutil.ignore_patterns("level3-*"))
    views_dir = Path(args.cache_dir or settings.cache_dir()) / "views"
    rows = []
    try:
        for block, views, epochs, rate in parse_grid(args.grid):
            for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
                if i == 0 and not args.keep_caches:  # each cell's first run builds its cache; its other seeds reuse it
                    shutil.rmtree(views_dir, ignore_errors=True)
                row = run_cell(block, views, epochs, rate, seed, args, str(models_dir))
                rows.append(row)
                with open(args.out, "a") as out:
                    out.write(json.dumps(row, default=str) + "\n")
                print(json.dumps({k: row[k] for k in ("top_block", "views", "epochs", "learning_rate", "seed", "seconds",
                                                       "val_accuracy", "cold")}), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
