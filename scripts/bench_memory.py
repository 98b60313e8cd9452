"""Peak memory of training on small and big data sets: does it stay bounded?

    python scripts/bench_memory.py                       # 2,000 and 25,000 synthetic photos, level 1, 1 epoch
    python scripts/bench_memory.py --images 2000,25000 --level 1 --epochs 1 --json

For each size it writes a synthetic data set (JPEGs of two shape classes, `tests.helpers`; 200
validation photos per class whatever the size), then runs `python -m core train` on it in a fresh
process with a fresh cache: decoding every photo into the on-disk cache, then training and scoring.
The peak resident memory of that process (`ru_maxrss`) is what is reported, with the seconds taken.
Training streams batches from the cache file, so the peak should barely move with the data size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Runs one command and prints its peak RSS in kB (ru_maxrss of the only child this process has).
_MEASURE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def make_synthetic(root: Path, n_train: int, n_val_per_class: int, size: int) -> Path:
    from tests.helpers import make_dataset

    if (root / "done").exists():
        return root
    make_dataset(root, n_train=n_train // 2, n_val=n_val_per_class, size=size, seed=n_train)
    (root / "done").write_text("ok")
    return root


def measure(data_dir: Path, level: int, epochs: int, work: Path) -> dict:
    command = [sys.executable, "-m", "core", "train", "--level", str(level), "--epochs", str(epochs),
               "--data-dir", str(data_dir), "--models-dir", str(work / "models"), "--json"]
    env = {**os.environ, "LITTLE_DATA_CACHE_DIR": str(work / "cache"), "LITTLE_DATA_HOME": str(work / "home")}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    peak = [line for line in done.stdout.splitlines() if line.startswith("PEAK_KB")]
    if not peak or peak[-1].split()[2] != "0":
        raise SystemExit(f"training failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return {"peak_rss_mb": round(int(peak[-1].split()[1]) / 1024, 1), "seconds": round(seconds, 1),
            "val_accuracy": result.get("val_accuracy")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="2000,25000", help="training photos per run (default 2000,25000)")
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--size", type=int, default=160, help="side of the synthetic JPEGs (default 160)")
    parser.add_argument("--data-root", help="where the synthetic sets are kept between runs (default: a temp folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data_root = Path(args.data_root or tempfile.mkdtemp(prefix="bench-memory-"))
    rows = []
    for n in (int(v) for v in args.images.split(",")):
        data = make_synthetic(data_root / f"synthetic-{n}", n, 200, args.size)
        with tempfile.TemporaryDirectory(prefix="bench-memory-run-") as work:
            row = {"train_images": n, **measure(data, args.level, args.epochs, Path(work))}
        rows.append(row)
        print(f"{n:>7} training photos: peak RSS {row['peak_rss_mb']:.0f} MB, {row['seconds']:.0f} s "
              f"(level {args.level}, {args.epochs} epoch{'s' if args.epochs > 1 else ''}, "
              f"val accuracy {row['val_accuracy']:.3f})", flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS ratio, largest to smallest: {ratio:.2f} (bar: at most 1.5)")
    if args.json:
        print(json.dumps({"level": args.level, "epochs": args.epochs, "runs": rows, "ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
