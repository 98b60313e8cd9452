"""`python -m core bench`: trains and evaluates every level, and measures how fast this machine is.

Writes `report.md` and `report.json` to the output folder. Throughput is given next to this CPU's
measured matrix-multiply GFLOP/s, so "images per second" becomes a fraction of what the CPU can do.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np


def measure_matmul_gflops(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply throughput through TensorFlow: the best over sizes.

    A single size undershoots: on AVX-512 machines oneDNN's convolutions can outrun one 2048x2048
    matmul, so large-matrix runs are included to approach the real peak.
    """
    import tensorflow as tf

    best_gflops = 0.0
    for n in sizes:
        a = tf.random.normal((n, n))
        b = tf.random.normal((n, n))
        tf.matmul(a, b).numpy()
        best = float("inf")
        for _ in range(repeats if n < 4096 else 2):
            t0 = time.perf_counter()
            tf.matmul(a, b).numpy()
            best = min(best, time.perf_counter() - t0)
        best_gflops = max(best_gflops, 2 * n**3 / best / 1e9)
    return best_gflops


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _latency(predictor, image_path) -> dict:
    """Single-image latency: the model alone, and from file bytes (decode + resize + model)."""
    from core.images import load_array
    from core.predict import timed_predict

    array = load_array(image_path, predictor.image_size)
    model_s = timed_predict(predictor, array)
    data = Path(image_path).read_bytes()
    predictor.predict([data])
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        predictor.predict([data])
        times.append(time.perf_counter() - t0)
    return {"model_ms": model_s * 1000, "from_bytes_ms": float(np.median(times)) * 1000}


def run_bench(args) -> int:
    from core.augment import preset
    from core.cli import ProgressBar
    from core.datasets import decode_split, resolve_data_dir, summarize
    from core.predict import Predictor, evaluate
    from core.training import TUTORIAL_ACCURACY, TrainConfig, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.reuse_cache:  # measure decoding and extraction, not a warm cache
        os.environ["LITTLE_DATA_CACHE_DIR"] = str(out / f"cache-{int(time.time())}")
    models_dir = args.models_dir or str(out / "models")
    os.environ["LITTLE_DATA_MODELS_DIR"] = models_dir
    backbone = args.backbone or "mobilenet_v2"
    folder, source = resolve_data_dir(args.data_dir)
    summary = summarize(folder, source=source)
    gflops = measure_matmul_gflops()
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "matmul_gflops": gflops},
              "dataset": {"root": str(summary.root), "counts": summary.counts()}, "levels": {}}
    print(f"matmul: {gflops:.1f} GFLOP/s on {os.cpu_count()} CPUs")
    sample_image = summary.files["validation"][0][0]
    epochs = {1: args.epochs1, 2: args.epochs2, 3: args.epochs3}
    for level in [int(x) for x in args.levels.split(",") if x]:
        augment = preset(args.augment1) if level == 1 and args.augment1 else None
        config = TrainConfig(level=level, backbone=None if level == 1 else backbone, weights=args.weights,
                             epochs=epochs[level], seed=args.seed, data_dir=args.data_dir, models_dir=models_dir,
                             augment=augment).resolved()
        print(f"== level {level}: {config.epochs} epochs")
        bar = ProgressBar()
        result = train(config, report=bar)
        bar.close()
        entry = result.entry
        card = entry.card
        predictor = Predictor(entry)  # loaded back from the store, as a user would
        evaluation = evaluate(predictor, decode_split(summary, "validation", entry.image_size))
        row = {
            "model": entry.id, "backbone": card["backbone"], "weights": card.get("weights"),
            "epochs": config.epochs, "augment": card["augment"], "schedule": card["hyperparameters"]["schedule"],
            "val_accuracy": card["metrics"]["val_accuracy"], "flip_average": card["flip_average"],
            "val_accuracy_last": card["metrics"]["last_epoch_val_accuracy"],
            "val_accuracy_best": card["metrics"]["best_val_accuracy"], "best_epoch": card["metrics"]["best_epoch"],
            "val_accuracy_reloaded": evaluation.accuracy, "tutorial_accuracy": TUTORIAL_ACCURACY[level],
            "train_seconds": result.seconds, "timings": result.timings, "params": card["params"],
            "latency": _latency(predictor, sample_image), "peak_memory_mb": peak_memory_mb(),
        }
        if card.get("backbone_flops"):
            row["backbone_gflops_per_image"] = card["backbone_flops"] / 1e9
            ips = result.timings.get("extract_images_per_s")
            if ips:
                row["extract_images_per_s"] = ips
                row["extract_fraction_of_matmul"] = ips * card["backbone_flops"] / 1e9 / gflops
        report["levels"][str(level)] = row
        print(json.dumps(row, indent=1, default=str))
    if args.vgg16_subset:  # its random-weight models must not become the "latest" levels 2 and 3
        report["vgg16"] = _bench_vgg16(args, summary, gflops, str(Path(models_dir).parent / "models-vgg16"))
    report["peak_memory_mb"] = peak_memory_mb()
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 0


def _bench_vgg16(args, summary, gflops, models_dir) -> dict:
    """VGG16 levels 2 and 3 end to end with random weights on a subset: plumbing and throughput."""
    from core.training import TrainConfig, train

    rows = {}
    for level in (2, 3):
        config = TrainConfig(level=level, backbone="vgg16", weights="none", epochs=2, seed=args.seed,
                             data_dir=args.data_dir, models_dir=models_dir, limit_per_class=args.vgg16_subset)
        result = train(config)
        card = result.entry.card
        rows[str(level)] = {"val_accuracy": card["metrics"]["val_accuracy"], "train_seconds": result.seconds,
                            "timings": result.timings}
    flops = card["backbone_flops"]
    ips = rows["2"]["timings"].get("extract_images_per_s", 0)
    return {"subset_per_class": args.vgg16_subset, "weights": "none (random)", "levels": rows,
            "backbone_gflops_per_image": flops / 1e9, "extract_images_per_s": ips,
            "extract_fraction_of_matmul": ips * flops / 1e9 / gflops}


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Little Data benchmark", "",
             f"Machine: {m['cpus']} CPUs, {m['platform']}; TensorFlow float32 matmul **{m['matmul_gflops']:.1f} GFLOP/s**.",
             f"Data: `{report['dataset']['root']}` {json.dumps(report['dataset']['counts'])}", "",
             "| level | backbone | epochs | val acc (saved model) | last epoch | best epoch | tutorial | train s | "
             "extract img/s | % of matmul peak | latency ms (model / from bytes) | params trainable / total |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for level, r in report["levels"].items():
        ips = r.get("extract_images_per_s")
        frac = r.get("extract_fraction_of_matmul")
        lines.append(
            f"| {level} | {r['backbone'] or 'small convnet'} | {r['epochs']} | **{r['val_accuracy']:.2%}**"
            f"{' (mirror-averaged)' if r['flip_average'] else ''} | {r['val_accuracy_last']:.2%} | "
            f"{r['val_accuracy_best']:.2%} ({r['best_epoch']}) | {r['tutorial_accuracy']:.1%} | {r['train_seconds']:.0f} | "
            f"{f'{ips:.1f}' if ips else '-'} | {f'{frac:.1%}' if frac else '-'} | "
            f"{r['latency']['model_ms']:.1f} / {r['latency']['from_bytes_ms']:.1f} | "
            f"{r['params']['trainable']:,} / {r['params']['total']:,} |")
    if "vgg16" in report:
        v = report["vgg16"]
        lines += ["", f"VGG16 (random weights, {v['subset_per_class']} images per class, 2 epochs each): "
                      f"levels 2 and 3 ran end to end; extraction {v['extract_images_per_s']:.1f} img/s x "
                      f"{v['backbone_gflops_per_image']:.2f} GFLOP/img = {v['extract_fraction_of_matmul']:.1%} of matmul peak."]
    lines += ["", "Saved model: what the stored model scores on the validation photos, averaging each photo "
                  "with its mirror image where that is on. Last and best epoch: the training curve (one view per photo).",
              "", f"Peak memory: {report['peak_memory_mb']:.0f} MB.", ""]
    return "\n".join(lines)
