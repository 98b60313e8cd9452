"""One training process against several: `python -m core train --workers N` beside `--workers 1`.

    python scripts/bench_workers.py                          # level 1, 5 epochs, cats vs dogs, 1 and 2 workers
    python scripts/bench_workers.py --workers 1,2 --epochs 5 --data-dir PATH --json

Each run is a fresh `python -m core train` process (wall time includes starting Ray and its
workers); accuracy is the saved model's on the validation split. With N workers on one machine,
each worker gets 1/N of its CPUs: the point is that the sharded run learns the same thing, and
what the coordination costs; the speed-up comes from workers on separate machines or GPUs.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as home:
            command = [sys.executable, "-m", "core", "train", "--level", str(args.level), "--epochs", str(args.epochs),
                       "--workers", str(workers), "--json"] + (["--data-dir", args.data_dir] if args.data_dir else [])
            env = {**os.environ, "LITTLE_DATA_HOME": home, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("LITTLE_DATA_MODELS_DIR", None)
            t0 = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.monotonic() - t0
            if done.returncode != 0:
                raise SystemExit(f"--workers {workers} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
        row = {"workers": workers, "val_accuracy": result["val_accuracy"], "wall_seconds": round(seconds, 1),
               "fit_seconds": result["timings"].get("fit"), "global_batch_size":
                   (result.get("distribution") or {}).get("global_batch_size")}
        rows.append(row)
        print(f"{workers} worker(s): validation accuracy {row['val_accuracy']:.4f}, {row['wall_seconds']:.0f} s in all, "
              f"fit {row['fit_seconds']:.0f} s, global batch {row['global_batch_size']}", flush=True)
    if args.json:
        print(json.dumps({"level": args.level, "epochs": args.epochs, "runs": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
