"""What a Ray Tune sweep costs over the same training runs made in a row.

    python scripts/bench_sweep.py                   # level 2, learning_rate=1e-4,3e-4, 2 seeds, cats vs dogs
    python scripts/bench_sweep.py --level 1 --grid dropout=0.3,0.5 --seeds 1 --epochs 3 --json

The same trials are timed three ways, each as a fresh process from start to finish, after one
warm-up run has filled the decode and feature caches (so no way pays for them):
  1. `python -m core train` once per trial, one after another (what a user would script);
  2. one Python process calling `core.training.loop.train` for each trial in a loop;
  3. `python -m core sweep` (a local Ray instance; one trial at a time on a small machine).
Accuracies are printed too: the three ways train the same models.
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

_LOOP = """
import json, sys
from core.experiments.sweep import SweepConfig, trial_config
from core.training.loop import train
config = SweepConfig.from_dict(json.loads(sys.argv[1]))
print(json.dumps([train(trial_config(config.level, config.base, p)).entry.val_accuracy for p in config.trial_params()]))
"""


def _run(command: list[str], env: dict) -> tuple[float, str]:
    t0 = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}... failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - t0, done.stdout


def _cli_args(level: int, params: dict, base: dict) -> list[str]:
    args = ["--level", str(level), "--seed", str(params["seed"])]
    for key, value in {**base, **{k: v for k, v in params.items() if k != "seed"}}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def main(argv=None) -> int:
    from core.data.download import resolve_data_dir
    from core.experiments.sweep import SweepConfig, parse_grid

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", type=int, default=2)
    parser.add_argument("--grid", action="append", help="NAME=V1,V2 (default learning_rate=1e-4,3e-4)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--data-dir")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data_dir = str(resolve_data_dir(args.data_dir)[0])
    base = {"data_dir": data_dir, **({"epochs": args.epochs} if args.epochs else {})}
    config = SweepConfig(level=args.level, grid=parse_grid(args.grid or ["learning_rate=1e-4,3e-4"]), seeds=args.seeds,
                         base=base)
    trials = config.trial_params()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as work:
        env = {**os.environ, "LITTLE_DATA_HOME": work, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("LITTLE_DATA_MODELS_DIR", None)
        cli = [sys.executable, "-m", "core", "train"]
        warm, _ = _run(cli + _cli_args(args.level, trials[0], base), env)
        print(f"warm-up run (fills the caches): {warm:.1f} s", flush=True)
        in_row = 0.0
        for params in trials:
            seconds, _ = _run(cli + _cli_args(args.level, params, base) + ["--json"], env)
            in_row += seconds
        print(f"{len(trials)} CLI runs in a row: {in_row:.1f} s", flush=True)
        loop, out = _run([sys.executable, "-c", _LOOP, json.dumps(config.to_dict())], env)
        loop_accuracies = json.loads(out.strip().splitlines()[-1])
        print(f"one process, {len(trials)} runs in a loop: {loop:.1f} s", flush=True)
        sweep_args = ["--level", str(args.level), "--seeds", str(args.seeds), "--json", "--data-dir", data_dir]
        sweep_args += sum((["--grid", g] for g in (args.grid or ["learning_rate=1e-4,3e-4"])), [])
        sweep_args += ["--epochs", str(args.epochs)] if args.epochs else []
        sweep, out = _run([sys.executable, "-m", "core", "sweep", *sweep_args], env)
        record = json.loads(out.strip().splitlines()[-1])
        print(f"python -m core sweep ({len(trials)} trials): {sweep:.1f} s", flush=True)
    report = {"level": args.level, "trials": len(trials), "cli_in_a_row_s": round(in_row, 1),
              "one_process_loop_s": round(loop, 1), "sweep_s": round(sweep, 1),
              "sweep_vs_cli_in_a_row": round(sweep / in_row, 3), "sweep_vs_loop": round(sweep / loop, 3),
              "loop_accuracies": loop_accuracies,
              "sweep_accuracies": [t["val_accuracy"] for t in record["trials"]]}
    print(f"sweep / CLI runs in a row: {report['sweep_vs_cli_in_a_row']:.2f}; sweep / one-process loop: "
          f"{report['sweep_vs_loop']:.2f}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
