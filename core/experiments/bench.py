"""`python -m core bench`: trains and evaluates levels, and measures how fast this machine is.

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
from typing import Callable

import numpy as np

from core.levels import all_levels, get_level
from core.training.progress import TrainEvent


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_ms(call, repeats: int = 10) -> float:
    """Median milliseconds of `call()`, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def _latency(predictor, image_path) -> dict:
    """Single-image latency: the model alone, and from file bytes (decode + resize + model)."""
    from core.data.images import load_array

    batch = load_array(image_path, predictor.image_size)[None]
    data = Path(image_path).read_bytes()
    return {"model_ms": median_ms(lambda: predictor.predict_arrays(batch), 20),
            "from_bytes_ms": median_ms(lambda: predictor.predict([data]))}


def _explain_ms(entry, predictor, image_path, repeats: int = 10) -> float | None:
    """Median milliseconds for one photo's Grad-CAM heatmap (decoded already, warm), or None if unexplainable."""
    from core.serving.explain import Explainer
    from core.data.images import load_array
    from core.serving.model_store import ModelError

    try:
        explainer = Explainer(entry, model=predictor.model)
    except ModelError:
        return None
    batch = load_array(image_path, entry.image_size)[None]
    return median_ms(lambda: explainer.explain_arrays(batch), repeats)


def run_bench(out: str | Path, levels: list[int] | None = None, data_dir: str | None = None,
              models_dir: str | None = None, backbone: str | None = None, weights: str | None = None,
              epochs: dict[int, int] | None = None, augment: dict[int, str] | None = None, seed: int = 1337,
              random_weights_check: tuple[str, int] | None = None, reuse_cache: bool = False,
              report: Callable[[TrainEvent], None] | None = None, log: Callable[[str], None] = print,
              views: int | None = None, top_block: str | None = None) -> dict:
    """Trains each level with its defaults (or the overrides given), reloads and scores each model.

    Args:
        out: report folder; models go to `out/models` unless `models_dir` is given.
        levels: level keys, in order (default: every registered level).
        backbone, weights: for the levels that need a backbone (default: the registry's default).
        epochs, augment: per-level overrides (level key -> epochs / augmentation preset name).
        views, top_block: for the fine-tuning level: cached views (0: on the fly) and top block size.
        random_weights_check: (backbone, images per class): that backbone's levels end to end with
            random weights on a subset, for plumbing and throughput (e.g. VGG16, whose ImageNet
            weights may not be available). Its models go to their own folder.
        reuse_cache: keep decoded images and features from earlier runs; by default the bench gets
            a fresh cache folder, so decoding and extraction are measured.
        report: progress callback for each training run.

    Returns:
        The report (also written to `out/report.json` and `out/report.md`).
    """
    from core.data.augment import preset
    from core.data.decoded import decode_split
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.training.estimate import estimate, measure_convnet_images_per_second, measure_matmul_gflops
    from core.serving.evaluation import evaluate
    from core.serving.predictor import Predictor
    from core.training.loop import TrainConfig, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = None if reuse_cache else str(out / f"cache-{int(time.time())}")
    models_dir = models_dir or str(out / "models")
    levels = [get_level(key) for key in levels] if levels else all_levels()
    epochs, augment = epochs or {}, augment or {}
    folder, source = resolve_data_dir(data_dir)
    summary = summarize(folder, source=source)
    from core.training.distribute import describe_devices

    gflops = measure_matmul_gflops()
    # Level 1's estimate follows its own network's speed here, not matmul's (`core.training.estimate`).
    convnet_speed = measure_convnet_images_per_second() if any(level.archs for level in levels) else None
    devices = describe_devices()
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "matmul_gflops": gflops,
                          "convnet_images_per_second": convnet_speed, **devices},
              "dataset": {"root": str(summary.root), "counts": summary.counts()}, "levels": {}}
    log(f"device: {devices['device']}; matmul: {gflops:.1f} GFLOP/s on {os.cpu_count()} CPUs")
    sample_image = summary.files["validation"][0][0]
    for level in levels:
        config = TrainConfig(level=level.key, backbone=backbone if level.needs_backbone else None,
                             weights=weights if level.needs_backbone else None, epochs=epochs.get(level.key),
                             augment=preset(augment[level.key]) if level.key in augment else None, seed=seed,
                             data_dir=data_dir, models_dir=models_dir, cache_dir=cache_dir,
                             **({"views": views, "top_block": top_block} if level.fine_tuning else {})).resolved()
        log(f"== {level.label}: {config.epochs} epochs")
        counts = summary.counts()  # what the Train page would have said before the run, to set beside it
        guess = estimate(config, sum(counts["train"].values()), sum(counts["validation"].values()), gflops=gflops,
                         fingerprint=summary.fingerprint, convnet_speed=convnet_speed)
        trained = train(config, report=report)
        entry = trained.entry
        card = entry.card
        predictor = Predictor(entry)  # loaded back from the store, as a user would
        evaluation = evaluate(predictor, decode_split(summary, "validation", entry.image_size, cache_dir=cache_dir))
        row = {
            "model": entry.id, "backbone": card.backbone, "weights": card.weights, "epochs": config.epochs,
            "augment": card.augment, "schedule": card.hyperparameters["schedule"],
            "val_accuracy": card.metrics.val_accuracy, "flip_average": card.flip_average,
            "val_accuracy_last": card.metrics.last_epoch_val_accuracy,
            "val_accuracy_best": card.metrics.best_val_accuracy, "best_epoch": card.metrics.best_epoch,
            "val_accuracy_reloaded": evaluation.accuracy, "tutorial_accuracy": level.tutorial_accuracy,
            "train_seconds": trained.seconds, "estimated_seconds": guess.seconds, "timings": trained.timings, "params": card.params,
            "views": card.hyperparameters.get("views"), "top_block": card.hyperparameters.get("top_block"),
            "latency": _latency(predictor, sample_image), "explain_ms": _explain_ms(entry, predictor, sample_image),
            "peak_memory_mb": peak_memory_mb(),
        }
        if card.backbone_flops:
            row["backbone_gflops_per_image"] = card.backbone_flops / 1e9
            ips = trained.timings.get("extract_images_per_s")
            if ips:
                row["extract_images_per_s"] = ips
                row["extract_fraction_of_matmul"] = ips * card.backbone_flops / 1e9 / gflops
        row.update(training_throughput(entry, config, summary, trained.timings, gflops))
        result["levels"][str(level.key)] = row
        log(json.dumps(row, indent=1, default=str))
    if random_weights_check:
        check_backbone, per_class = random_weights_check
        result["random_weights_check"] = _random_weights_check(
            check_backbone, per_class, data_dir, str(out / f"models-{check_backbone}-random"), cache_dir, seed, gflops)
    result["peak_memory_mb"] = peak_memory_mb()
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(result))
    log(render_markdown(result))
    return result


def training_throughput(entry, config, summary, timings: dict, gflops: float) -> dict:
    """Images per second while fitting, and what fraction of the machine's matmul rate that work is.

    A training step costs about three forward passes (forward, then gradients for activations and
    weights) of the part that trains on images: the whole network for level 1 and for level 3 on
    the fly (whose frozen lower blocks still run forward on every augmented photo, counted once),
    the top block and head for level 3 on cached views, only the small head for level 2, which
    trains on cached features. For cached views, the build's rate is given too.
    """
    from core.networks.factories import single_view

    fit = timings.get("fit")
    epochs_run = entry.epochs_run
    if not fit or not epochs_run:
        return {}
    images = sum(summary.counts()["train"].values()) * epochs_run
    ips = images / fit
    from core.networks.backbones import count_flops
    from core.serving.model_store import load_model

    model = single_view(load_model(entry))
    forward = count_flops(model)
    if entry.level == 2:  # the head alone trains, on features
        forward -= entry.card.backbone_flops or 0
        step = 3 * forward
    elif entry.card.backbone_flops and entry.card.hyperparameters.get("views"):
        step = 3 * _trainable_flops(model)  # on cached views only the top block and head run, forward and backward
    elif entry.card.backbone_flops and entry.level == 3:
        trained_part = _trainable_flops(model)
        step = forward + 2 * trained_part
    else:
        step = 3 * forward
    result = {"train_images_per_s": ips, "train_gflops_per_image": step / 1e9,
              "train_fraction_of_matmul": ips * step / 1e9 / gflops}
    views_ips = timings.get("views_images_per_s")
    if views_ips and entry.card.backbone_flops:
        frozen = (entry.card.backbone_flops - _trainable_flops(model) + _head_flops(model, entry.card.backbone)) / 1e9
        result.update(views_images_per_s=views_ips, views_gflops_per_image=frozen,
                      views_fraction_of_matmul=views_ips * frozen / gflops)
    return result


def _head_flops(model, backbone: str) -> int:
    """FLOPs of the layers after the backbone (pooling, the head): trainable, but not part of the base."""
    from core.networks.backbones import layer_flops, leaf_layers

    names = [layer.name for layer in model.layers]
    if backbone not in names:
        return 0
    after = [leaf for top in model.layers[names.index(backbone) + 1:]
             for leaf in (leaf_layers(top) if getattr(top, "layers", None) else [top])]
    return sum(layer_flops(layer) for layer in after if layer.trainable and layer.trainable_weights)


def _trainable_flops(model) -> int:
    """FLOPs of the layers with trainable weights (their backward pass is what fine-tuning adds)."""
    from core.networks.backbones import layer_flops, leaf_layers

    return sum(layer_flops(layer) for layer in leaf_layers(model) if layer.trainable and layer.trainable_weights)


def _random_weights_check(backbone: str, per_class: int, data_dir, models_dir, cache_dir, seed, gflops) -> dict:
    """Every backbone level end to end with random weights on a subset: plumbing and throughput."""
    from core.training.loop import TrainConfig, train

    from core.networks.backbones import get_backbone

    rows, flops, ips = {}, None, 0.0
    for level in all_levels():
        if not level.needs_backbone or (level.uses_imagenet_classes and get_backbone(backbone).classifier is None):
            continue
        config = TrainConfig(level=level.key, backbone=backbone, weights="none", epochs=2, seed=seed,
                             data_dir=data_dir, models_dir=models_dir, cache_dir=cache_dir, limit_per_class=per_class)
        result = train(config)
        card = result.entry.card
        rows[str(level.key)] = {"val_accuracy": card.metrics.val_accuracy, "train_seconds": result.seconds,
                                "timings": result.timings}
        flops = card.backbone_flops
        ips = ips or result.timings.get("extract_images_per_s", 0.0)
    return {"backbone": backbone, "subset_per_class": per_class, "weights": "none (random)", "levels": rows,
            "backbone_gflops_per_image": flops / 1e9, "extract_images_per_s": ips,
            "extract_fraction_of_matmul": ips * flops / 1e9 / gflops}


def _how(row: dict) -> str:
    """How a level trained, where there is a choice: level 3's cached views and top block."""
    views, block = row.get("views"), row.get("top_block")
    if views is None:
        return "-"
    return f"{block} top block, " + (f"{views} cached views" if views else "on the fly")


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Little Data benchmark", "",
             f"Machine: {m.get('device', 'CPU')}, {m['cpus']} CPUs, {m['platform']}; TensorFlow {m.get('tensorflow', '')} "
             f"float32 matmul **{m['matmul_gflops']:.1f} GFLOP/s**"
             + (f"; level 1's network trains {m['convnet_images_per_second']:.0f} photos/s"
                if m.get("convnet_images_per_second") else "") + ".",
             f"Data: `{report['dataset']['root']}` {json.dumps(report['dataset']['counts'])}", "",
             "| level | backbone | epochs | val acc (saved model) | last epoch | best epoch | tutorial | train s (estimated) | "
             "extract img/s | % of matmul peak | latency ms (model / from bytes) | Grad-CAM ms | "
             "params trainable / total |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for level, r in report["levels"].items():
        ips = r.get("extract_images_per_s")
        frac = r.get("extract_fraction_of_matmul")
        tutorial = f"{r['tutorial_accuracy']:.1%}" if r.get("tutorial_accuracy") is not None else "-"
        last = f"{r['val_accuracy_last']:.2%}" if r.get("val_accuracy_last") is not None else "-"
        best = f"{r['val_accuracy_best']:.2%} ({r['best_epoch']})" if r.get("val_accuracy_best") is not None else "-"
        lines.append(
            f"| {level} | {r['backbone'] or 'small convnet'} | {r['epochs']} | **{r['val_accuracy']:.2%}**"
            f"{' (mirror-averaged)' if r['flip_average'] else ''} | {last} | "
            f"{best} | {tutorial} | {r['train_seconds']:.0f}"
            f"{f' ({estimated:.0f})' if (estimated := r.get('estimated_seconds')) is not None else ''} | "
            f"{f'{ips:.1f}' if ips else '-'} | {f'{frac:.1%}' if frac else '-'} | "
            f"{r['latency']['model_ms']:.1f} / {r['latency']['from_bytes_ms']:.1f} | "
            f"{f'{explain:.1f}' if (explain := r.get('explain_ms')) else '-'} | "
            f"{r['params']['trainable']:,} / {r['params']['total']:,} |")
    if "random_weights_check" in report:
        v = report["random_weights_check"]
        lines += ["", f"{v['backbone']} (random weights, {v['subset_per_class']} images per class, 2 epochs each): "
                      f"levels {', '.join(v['levels'])} ran end to end; extraction {v['extract_images_per_s']:.1f} img/s x "
                      f"{v['backbone_gflops_per_image']:.2f} GFLOP/img = {v['extract_fraction_of_matmul']:.1%} of matmul peak."]
    trained = [(level, r) for level, r in report["levels"].items() if r.get("train_images_per_s")]
    if trained:
        lines += ["", "| level | how | training img/s | training GFLOP/img | % of matmul peak | view cache: views/s, "
                      "% of peak |", "|---|---|---|---|---|---|"]
        lines += [f"| {level} | {_how(r)} | {r['train_images_per_s']:.1f} | {r['train_gflops_per_image']:.3f} | "
                  f"{r['train_fraction_of_matmul']:.1%} | "
                  + (f"{r['views_images_per_s']:.1f}, {r['views_fraction_of_matmul']:.1%}" if r.get("views_images_per_s")
                     else "-") + " |" for level, r in trained]
    lines += ["", "Saved model: what the stored model scores on the validation photos, averaging each photo "
                  "with its mirror image where that is on. Last and best epoch: the training curve (one view per photo).",
              "", f"Peak memory: {report['peak_memory_mb']:.0f} MB.", ""]
    return "\n".join(lines)
