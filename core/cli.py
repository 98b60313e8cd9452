"""`python -m core`: the command-line face of the library.

    python -m core data                       # what is in the data set
    python -m core augment IMAGE --preset tutorial_preview -o grid.png
    python -m core train --level 2            # EfficientNet-Lite2 bottleneck features + classifier
    python -m core evaluate level2 --json     # accuracy on the validation split
    python -m core predict level3 cat.jpg
    python -m core explain level3 cat.jpg -o where.png   # Grad-CAM heatmap
    python -m core export level2 --format onnx -o cats.zip   # to run without Little Data
    python -m core bench                      # every level, Markdown + JSON report

Training jobs started from the app run in `python -m core.worker JOB_DIR`, which is not a command here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import numpy as np

from core.networks.backbones import BACKBONES, DEFAULT_BACKBONE
from core.training.distribute import DEVICES_HELP
from core.errors import LittleDataError
from core.experiments.label_next import DEFAULT_STRATEGY, Strategy
from core.levels import LEVELS, OPTIMIZERS, PRECISIONS, SCHEDULES, SMALL_CONVNETS, all_levels


def _per_level(describe) -> str:
    """'X for level 1, Y for level 2, ...' over the levels that train."""
    return ", ".join(f"{describe(level)} for level {level.key}" for level in all_levels() if level.trains)


def _model_refs() -> str:
    return "model id, .keras path, 'latest' or " + "/".join(f"'level{key}'" for key in sorted(LEVELS))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data set folder (default: LITTLE_DATA_DATA_DIR, the offline "
                                           "copy in ../shared, or the downloaded cats vs dogs)")
    parser.add_argument("--models-dir", help="model store folder (default: LITTLE_DATA_MODELS_DIR or var/models)")
    parser.add_argument("--backbone", help=f"{', '.join(BACKBONES)} (default {DEFAULT_BACKBONE})")
    parser.add_argument("--weights", help='"imagenet" (default), "none", or a weights file path')
    parser.add_argument("--epochs", type=int, help=f"training epochs (default: {_per_level(lambda l: l.epochs)})")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (default 1337)")


def build_parser() -> argparse.ArgumentParser:
    from core.data.augment import PRESETS

    levels = "; ".join(f"level {l.key}, {l.name[0].lower()}{l.name[1:]}" for l in all_levels())
    parser = argparse.ArgumentParser(prog="python -m core", description="Little Data: strong image classifiers from "
                                     f"very little data, {len(LEVELS)} ways: {levels}.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="summarise the data set")
    _common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("augment", help="write a grid of augmented variants of one image")
    _common(p)
    p.add_argument("image", nargs="?", help="image file (default: the first training image)")
    p.add_argument("--preset", default="tutorial_preview", help=", ".join(PRESETS))
    p.add_argument("-n", type=int, default=9, help="number of variants (default 9)")
    p.add_argument("-o", "--output", default="augmented.png", help="output PNG (default augmented.png)")

    p = sub.add_parser("train", help="train one level")
    _common(p)
    p.add_argument("--level", type=int, required=True, choices=sorted(LEVELS),
                   help="; ".join(f"{l.key}: {l.name}" for l in all_levels()))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float,
                   help=f"default: {_per_level(lambda l: f'{l.learning_rate:g} ({OPTIMIZERS[l.optimizer]})')}")
    p.add_argument("--augment", help=f"augmentation preset: {', '.join(PRESETS)} (default: "
                                     f"{_per_level(lambda l: l.augment if l.can_augment else 'none')})")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--arch", choices=sorted({a for l in all_levels() for a in l.archs}),
                   help="; ".join(f"{name}: {net.description}, {net.image_size[0]}px"
                                  for name, net in SMALL_CONVNETS.items())
                        + " (" + ", ".join(f"level {l.key}, default {l.archs[0]}" for l in all_levels() if l.archs) + ")")
    p.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                   help="level 1: bfloat16 computes in bfloat16 with float32 weights, about 1.3-1.8x faster "
                        "where the CPU (AVX512-BF16, AMX) or GPU has it, slower where it does not; "
                        "the saved model is float32")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help=f"learning-rate schedule (default: {_per_level(lambda l: l.schedule)})")
    fine_tuning = next(l for l in all_levels() if l.fine_tuning)
    p.add_argument("--views", type=int,
                   help=f"level {fine_tuning.key}: run the frozen layers once on N views of each photo (the photo, its "
                        f"mirror, random draws of the augmentation) and train the top block on those "
                        f"(default {fine_tuning.fine_tuning.views}); 0 is the tutorial's way: the whole network on a "
                        f"fresh augmentation every epoch, {fine_tuning.fine_tuning.epochs_on_the_fly} epochs, "
                        "the large top block")
    p.add_argument("--top-block", choices=("large", "medium", "small"),
                   help=f"level {fine_tuning.key}: how much of the network to unfreeze: large is the tutorial's (about "
                        f"the last stage), medium and small less (default {fine_tuning.fine_tuning.top_block} with "
                        "cached views, large on the fly)")
    p.add_argument("--image-size", type=int, help="square image side (default: the level's, or the backbone's)")
    p.add_argument("--limit-per-class", type=int, help="use at most this many images per class and split")
    p.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                   help="save the plain model instead of one that averages over each image and its mirror "
                        "(for classes a mirror changes, such as left/right arrows)")
    p.add_argument("--imagenet-classes", action="append", metavar="CLASS=INDICES",
                   help="level " + ", ".join(str(l.key) for l in all_levels() if l.uses_imagenet_classes)
                        + ": the ImageNet classes that make up one of your classes, e.g. cats=281-285 "
                          "(repeat for each class; built in for cats vs dogs; otherwise found from the training photos)")
    p.add_argument("--devices", default="auto", help="where this process trains: " + DEVICES_HELP)
    p.add_argument("--workers", type=int, default=1,
                   help="share one training between N processes or machines (MultiWorkerMirroredStrategy, started "
                        "with Ray Train; a process started with TF_CONFIG joins that cluster instead)")
    p.add_argument("--address", help='with --workers: the Ray cluster, "auto" or "ray://HOST:10001" (default: '
                                     "LITTLE_DATA_RAY_ADDRESS, or a local Ray instance)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object (model_id, val_accuracy, "
                                                       "seconds, timings)")

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a model")
    _common(p)
    p.add_argument("model", help=_model_refs())
    p.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    p.add_argument("--json", action="store_true", help="print one JSON object (accuracy, n, ...)")

    p = sub.add_parser("predict", help="class probabilities for image files")
    _common(p)
    p.add_argument("model", help=_model_refs())
    p.add_argument("images", nargs="+")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("calibrate", help="fit a stored model's calibration and novelty judge (models trained before them)")
    _common(p)
    p.add_argument("model", help=_model_refs())
    p.add_argument("--accept-rate", type=float, default=0.97,
                   help="share of validation photos the novelty threshold accepts (default 0.97)")

    p = sub.add_parser("suspects", help="photos whose given label an out-of-fold model disbelieves, most suspect first")
    _common(p)
    p.add_argument("--split", choices=["train", "validation", "all"], default="train")
    p.add_argument("-n", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: image, given, suggested, score")

    p = sub.add_parser("suggest", help="the data set's unlabelled photos (unlabelled/) in the order to label them (what MODEL would learn most from, varied)")
    _common(p)
    p.add_argument("model", help=_model_refs())
    p.add_argument("-n", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--strategy", choices=[s.value for s in Strategy], default=DEFAULT_STRATEGY.value,
                   help=f"how they are ranked (default {DEFAULT_STRATEGY.value}; see core/experiments/label_next.py)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: image, score, predicted")

    p = sub.add_parser("explain", help="Grad-CAM: where a model looks in each photo, as heatmaps over the photos")
    _common(p)
    p.add_argument("model", help=_model_refs())
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", default="explained.png", help="output PNG (default explained.png)")
    p.add_argument("--class", dest="class_name", help="the class to explain (default: the predicted one)")
    p.add_argument("--json", action="store_true",
                   help="last line: a JSON list, one {file, class, probability, peak: [y, x]} per photo")

    p = sub.add_parser("curve", help="data-efficiency curve: validation accuracy against training images per class")
    p.add_argument("--data-dir", help="data set folder (as for the other commands)")
    p.add_argument("--backbone", help=f"{', '.join(BACKBONES)} (default {DEFAULT_BACKBONE})")
    p.add_argument("--weights", help='"imagenet" (default), "none", or a weights file path')
    p.add_argument("--level", type=int, help="one level (default 2)")
    p.add_argument("--levels", help="several levels, e.g. 1,2,3 (they say how long they will take first)")
    p.add_argument("--sizes", default="5,10,20,50,100,200,500,1000", help="training images per class")
    p.add_argument("--seeds", type=int, default=3, help="random subsets per size (default 3)")
    p.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                   help="score single views instead of averaging each photo with its mirror, as saved models do")
    p.add_argument("--address", help='run the points as Ray Tune trials: "local" (a Ray instance on this machine), '
                                     '"auto" or "ray://HOST:10001" (default: LITTLE_DATA_RAY_ADDRESS, else in this '
                                     "process)")
    p.add_argument("--json", action="store_true", help='last line: {"level": N, "points": [...]} (a list of '
                                                       "them for several levels)")

    p = sub.add_parser("sweep", help="train every combination of some settings, over seeds, as Ray Tune trials")
    _common(p)
    p.add_argument("--level", type=int, required=True, choices=sorted(LEVELS))
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a setting and the values to try (repeat for several): augment, learning_rate, "
                        "batch_size, epochs, dropout, backbone, arch, schedule, image_size, train_per_class, ...")
    p.add_argument("--seeds", type=int, default=1, help="trials per combination, seeds 0..N-1 (default 1)")
    p.add_argument("--limit-per-class", type=int, help="use at most this many images per class and split")
    p.add_argument("--address", help='Ray cluster: "auto", "ray://HOST:10001" (default: LITTLE_DATA_RAY_ADDRESS, '
                                     "or a local Ray instance on this machine)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: a whole machine's, so trials run "
                                                        "one at a time on it)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default 0)")
    p.add_argument("--json", action="store_true", help='last line: {"trials": [...], "best": {...}, ...}')

    from core.serving.export import QUANTIZATIONS, ExportFormat

    p = sub.add_parser("export", help="a model to take away: .keras, SavedModel, LiteRT (tflite) or ONNX, "
                                      "with labels.txt and a usage README")
    _common(p)
    p.add_argument("model", help=_model_refs())
    p.add_argument("--format", required=True, help=", ".join(f.value for f in ExportFormat)
                   + " (tflite-int8 is tflite --quantize int8)")
    p.add_argument("--quantize", help=f"{', '.join(QUANTIZATIONS)}; tflite only: int8 weights and activations, "
                                      "calibrated on training photos of the data set")
    p.add_argument("-o", "--output", help="output folder, or a .zip (default: MODEL_ID-FORMAT.zip)")
    p.add_argument("--json", action="store_true", help="print one JSON object (path, bytes, seconds, ...)")

    p = sub.add_parser("models", help="list the model store")
    _common(p)

    p = sub.add_parser("bench", help="train and evaluate every level; write Markdown and JSON reports")
    _common(p)
    p.add_argument("--levels", default=",".join(map(str, sorted(LEVELS))),
                   help="comma-separated level keys (default: all)")
    for level in all_levels():
        if level.trains:
            p.add_argument(f"--epochs{level.key}", type=int, help=f"level-{level.key} epochs (default {level.epochs})")
        if level.can_augment:
            p.add_argument(f"--augment{level.key}", help=f"level-{level.key} augmentation preset "
                                                          f"(default: {level.augment})")
    p.add_argument("--views", type=int, help="fine-tuning: cached views per photo (0: the tutorial's way, on the fly)")
    p.add_argument("--top-block", choices=("large", "medium", "small"), help="fine-tuning: the top block to unfreeze")
    p.add_argument("--vgg16-subset", type=int, default=40,
                   help="images per class for the VGG16 end-to-end check with random weights (0 skips)")
    p.add_argument("--out", default="bench-out", help="report folder (default bench-out)")
    p.add_argument("--reuse-cache", action="store_true", help="keep decoded images and features from earlier runs")
    return parser


def cmd_data(args) -> int:
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize

    folder, source = resolve_data_dir(args.data_dir)
    summary = summarize(folder, source=source)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    print(f"Data set: {summary.root}\nSource:   {summary.source}\nFingerprint: {summary.fingerprint}")
    counts = summary.counts()
    print(f"{'split':<12}" + "".join(f"{c:>12}" for c in summary.classes) + f"{'total':>10}")
    for split, per_class in counts.items():
        print(f"{split:<12}" + "".join(f"{per_class[c]:>12}" for c in summary.classes) + f"{sum(per_class.values()):>10}")
    for rel, reason in summary.unreadable:
        print(f"unreadable (skipped): {rel}: {reason}")
    if summary.ignored:
        print(f"{len(summary.ignored)} non-image file(s) ignored")
    return 0


def cmd_augment(args) -> int:
    from PIL import Image

    from core.data.augment import augmented_variants, preset
    from core.data.images import load_array

    if args.image:
        source = args.image
    else:
        from core.data.download import resolve_data_dir
        from core.data.folders import summarize

        folder, _ = resolve_data_dir(args.data_dir)
        source = summarize(folder).files["train"][0][0]
    image = load_array(source, (150, 150))
    variants = augmented_variants(image, preset(args.preset), n=args.n, seed=args.seed)
    grid = make_grid(variants)
    Image.fromarray(grid).save(args.output)
    print(f"Wrote {len(variants)} variants of {source} ({args.preset}) to {args.output}")
    return 0


def make_grid(images, columns: int | None = None, gap: int = 4):
    import math

    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    h, w = images[0].shape[:2]
    grid = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    return grid


def found_grouping_text(found) -> str:
    """What level 0 found from the training photos, a line per class (ImageNet's names where they are here)."""
    from core.errors import ConfigError
    from core.networks.imagenet import class_names, describe_group

    try:
        names = class_names(download=False)
    except ConfigError:
        names = None
    return (f"ImageNet classes found from {found.photos} training photos, up to {found.per_class} a class:\n"
            + "\n".join(f"  {name}: {describe_group(group, names)}" for name, group in found.grouping.items()))


def cmd_train(args) -> int:
    from core.data.augment import preset
    from core.networks.imagenet import parse_grouping
    from core.training.progress import ProgressBar
    from core.training.loop import TrainConfig, train

    size = (args.image_size, args.image_size) if args.image_size else None
    config = TrainConfig(level=args.level, backbone=args.backbone, weights=args.weights, epochs=args.epochs,
                         batch_size=args.batch_size, learning_rate=args.learning_rate,
                         augment=preset(args.augment) if args.augment else None, dropout=args.dropout,
                         image_size=size, seed=args.seed, data_dir=args.data_dir, models_dir=args.models_dir,
                         limit_per_class=args.limit_per_class, schedule=args.schedule,
                         flip_average=args.flip_average, arch=args.arch, devices=args.devices, workers=args.workers,
                         precision=args.precision, views=args.views, top_block=args.top_block,
                         imagenet_classes=parse_grouping(args.imagenet_classes) if args.imagenet_classes else None)
    bar = ProgressBar()
    result = train(config, report=bar, address=args.address)
    bar.close()
    if result.cancelled:
        print("Cancelled; nothing saved.")
        return 130
    card = result.entry.card
    m = card.metrics
    view = " (averaged with mirror images)" if card.flip_average else ""
    curve = (f"; last epoch {m.last_epoch_val_accuracy:.4f}, best {m.best_val_accuracy:.4f} at epoch {m.best_epoch}"
             if m.last_epoch_val_accuracy is not None else "")
    print(f"Saved {result.entry.id}: validation accuracy {m.val_accuracy:.4f}{view}{curve}; "
          f"{result.seconds:.0f}s -> {result.entry.model_path}")
    if card.found_grouping is not None:
        print(found_grouping_text(card.found_grouping))
    if args.json:
        print(json.dumps({"model_id": result.entry.id, "val_accuracy": m.val_accuracy, "seconds": round(result.seconds, 2),
                          "timings": card.timings, "model_path": str(result.entry.model_path),
                          "distribution": card.hyperparameters.get("distribution")}))
    return 0


def cmd_evaluate(args) -> int:
    from core.data.folders import DatasetError, summarize
    from core.data.decoded import decode_split
    from core.data.download import resolve_data_dir
    from core.serving.evaluation import evaluate
    from core.serving.model_store import ModelStore
    from core.serving.predictor import Predictor

    entry = ModelStore(args.models_dir).resolve(args.model)
    folder, source = resolve_data_dir(args.data_dir)
    summary = summarize(folder, source=source)
    if summary.classes != entry.classes:
        raise DatasetError(f"The model was trained on classes {entry.classes}; this data set has {summary.classes}.")
    predictor = Predictor(entry)
    judged = (decode_split(summary, args.split, predictor.judge.judge.image_size)
              if predictor.judge is not None else None)
    result = evaluate(predictor, decode_split(summary, args.split, entry.image_size), judged=judged)
    if args.json:
        print(json.dumps({"model": entry.id, "split": args.split, **result.to_dict()}))
        return 0
    print(f"{entry.label()}\n{args.split}: accuracy {result.accuracy:.4f} on {result.n} images")
    print(f"calibration error (ECE, 15 bins): {result.ece:.4f}, {result.ece_uncalibrated:.4f} before calibration")
    if result.unknown_rate is not None:
        print(f"refused as none of these: {result.unknown_rate:.1%} of the split")
    for name, acc in result.per_class_accuracy.items():
        print(f"  {name:<16} {acc:.4f}")
    print("confusion matrix (rows: true, columns: predicted)")
    print(" " * 16 + "".join(f"{c:>10}" for c in result.classes))
    for name, row in zip(result.classes, result.confusion):
        print(f"  {name:<14}" + "".join(f"{v:>10}" for v in row))
    return 0


def cmd_predict(args) -> int:
    from core.serving.model_store import ModelStore
    from core.serving.predictor import Predictor

    entry = ModelStore(args.models_dir).resolve(args.model)
    results = Predictor(entry).predict(args.images, names=args.images)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(json.dumps({"image": r.name, "error": r.error}) if args.json else f"{r.name}: ERROR {r.error}")
        elif args.json:
            print(json.dumps({"image": r.name, "label": r.label, "unknown": r.unknown,
                              "novelty": r.verdict.novelty if r.verdict else None, "probabilities": r.probabilities}))
        elif r.unknown:
            print(f"{r.name}: none of these (nearest: {r.nearest}, {r.verdict.describe()})")
        else:
            probs = "  ".join(f"{c} {p:.3f}" for c, p in r.probabilities.items())
            print(f"{r.name}: {r.label}  ({probs})")
    return 1 if failed else 0


def cmd_calibrate(args) -> int:
    from dataclasses import replace

    from core.data.download import resolve_data_dir
    from core.data.folders import DatasetError, summarize
    from core.serving.honesty import refit_honesty
    from core.serving.model_store import ModelStore

    store = ModelStore(args.models_dir)
    entry = store.resolve(args.model)
    folder, source = resolve_data_dir(args.data_dir or entry.card.dataset.get("root"))
    summary = summarize(folder, source=source)
    if summary.classes != entry.classes:
        raise DatasetError(f"The model was trained on classes {entry.classes}; this data set has {summary.classes}.")
    honesty = refit_honesty(entry, summary, args.weights, args.accept_rate)
    card = replace(entry.card, calibration=honesty.calibration, novelty=honesty.judge, novelty_note=honesty.judge_note)
    store.update_card(entry, card, novelty_bank=honesty.bank)
    calibration = honesty.calibration
    floor = f"; {calibration.ece_floor:.4f} for a perfectly calibrated model" if calibration.ece_floor is not None else ""
    print(f"{entry.id}: {calibration.describe()}, validation ECE {calibration.ece_before:.4f} -> "
          f"{calibration.ece_after:.4f} (cross-fitted {calibration.ece_cross_fitted:.4f}{floor})")
    print(f"  {honesty.judge.describe() if honesty.judge else honesty.judge_note}")
    return 0


def cmd_suspects(args) -> int:
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.experiments.suspects import find_suspects

    folder, source = resolve_data_dir(args.data_dir)
    summary = summarize(folder, source=source)
    suspects = find_suspects(summary, args.split, backbone=args.backbone)[: max(args.n, 0)]
    for suspect in suspects:
        if args.json:
            print(json.dumps(suspect.to_dict()))
        else:
            print(f"{suspect.image}: labelled {suspect.given}, looks like {suspect.suggested} "
                  f"(score {suspect.score:.3f})")
    if not suspects and not args.json:
        print(f"No suspect labels in the {args.split} split.")
    return 0


def cmd_suggest(args) -> int:
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.experiments.label_next import suggest
    from core.serving.model_store import ModelStore

    entry = ModelStore(args.models_dir).resolve(args.model)
    folder, source = resolve_data_dir(args.data_dir)
    summary = summarize(folder, source=source)
    suggestions = suggest(entry, summary, n=max(args.n, 0), strategy=args.strategy)
    for suggestion in suggestions:
        if args.json:
            print(json.dumps(suggestion.to_dict()))
        else:
            print(f"{suggestion.image}: looks like {suggestion.predicted} (score {suggestion.score:.3f})")
    return 0


def cmd_explain(args) -> int:
    from PIL import Image

    from core.serving.explain import ExplainFailure, Explainer, explain_files, legend, overlay
    from core.serving.model_store import ModelStore

    entry = ModelStore(args.models_dir).resolve(args.model)
    # One photo that fails is reported by name and the others still get theirs; exit status 1, as predict.
    results = explain_files(Explainer(entry), args.images, class_name=args.class_name)
    good = [r for r in results if not isinstance(r, ExplainFailure)]
    for result in results:
        if isinstance(result, ExplainFailure):
            print(f"error: {result.message}", file=sys.stderr)
        elif not args.json:
            y, x = result.peak
            where = result.note if result.note else f"looks most at y={y:.2f}, x={x:.2f} of the photo"
            print(f"{result.name}: {result.class_name} {result.probability:.3f}; {where}")
    if good:
        tiles = []
        for result in good:
            tile = Image.new("RGB", (256, 256), "white")
            picture = overlay(result.image, result.heatmap, max_side=256)
            tile.paste(picture, ((256 - picture.width) // 2, (256 - picture.height) // 2))
            tiles.append(np.asarray(tile))
        grid = make_grid(tiles)
        scale = np.full((20, grid.shape[1], 3), 255, np.uint8)
        strip = legend(min(256, grid.shape[1]), 12)
        scale[4:16, :strip.shape[1]] = strip
        Image.fromarray(np.concatenate([grid, scale])).save(args.output)
        if not args.json:
            print(f"Wrote {len(good)} heatmap(s) of {entry.id} to {args.output} (scale: dark = ignored, yellow = "
                  "where the decision comes from)")
    if args.json:
        print(json.dumps([r.to_dict() for r in good]))
    return 0 if len(good) == len(results) else 1


def cmd_curve(args) -> int:
    from core.experiments.curve_statistics import statistics_per_size
    from core.experiments.efficiency_curve import CurveConfig, estimate_seconds, plan, run_curve
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.levels import format_duration
    from core.training.progress import ProgressBar

    levels = [int(x) for x in args.levels.split(",") if x.strip()] if args.levels else [args.level or 2]
    config = CurveConfig(levels=levels, sizes=[int(x) for x in args.sizes.split(",") if x.strip()], seeds=args.seeds,
                         backbone=args.backbone, weights=args.weights, data_dir=args.data_dir,
                         flip_average=args.flip_average, address=args.address)
    folder, source = resolve_data_dir(args.data_dir)
    summary = summarize(folder, source=source)
    points = plan(config, summary)
    for level, seconds in estimate_seconds(config, summary).items():
        count = sum(1 for p in points if p[0] == level)
        print(f"Level {level}: {count} training runs, about {format_duration(seconds)} on this machine", file=sys.stderr)
    results = run_curve(config, report=ProgressBar())
    if not args.json:
        for level, measured in results.items():
            print(f"Level {level}: validation accuracy by training images per class "
                  f"(mean ± spread over {args.seeds} seed(s))")
            for size in statistics_per_size(measured):
                print(f"  {size.images_per_class:>5}  {size.mean:.4f} ± {size.std:.4f}  "
                      f"(min {size.lowest:.4f}, max {size.highest:.4f})")
    if args.json:
        rows = [{"level": level, "points": [asdict(p) for p in measured]} for level, measured in results.items()]
        print(json.dumps(rows[0] if len(rows) == 1 else rows))
    return 0


def cmd_sweep(args) -> int:
    from core.training.progress import ProgressBar
    from core.experiments.sweep import SweepConfig, parse_grid, run_sweep

    base = {key: value for key, value in (("data_dir", args.data_dir), ("models_dir", args.models_dir),
                                          ("backbone", args.backbone), ("weights", args.weights),
                                          ("epochs", args.epochs), ("limit_per_class", args.limit_per_class))
            if value is not None}
    config = SweepConfig(level=args.level, grid=parse_grid(args.grid), seeds=args.seeds, base=base,
                         cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, address=args.address)
    bar = ProgressBar()
    record = run_sweep(config, report=bar)
    bar.close()
    print(f"{len(record.trials)} trials in {record.seconds:.0f}s" + (" (cancelled)" if record.cancelled else ""))
    for group in record.groups:
        setting = ", ".join(f"{k}={v}" for k, v in group.setting.items()) or "(defaults)"
        score = (f"{group.mean:.4f} mean over {group.runs} (range {group.lowest:.4f}-{group.highest:.4f})"
                 if group.mean is not None else "no finished run")
        print(f"  {setting}: {score}" + (f", {group.failed} failed" if group.failed else "")
              + (f", {group.cancelled} cancelled" if group.cancelled else ""))
    for trial in record.failed_trials:
        print(f"  failed: {', '.join(f'{k}={v}' for k, v in trial.setting.items())} seed {trial.seed}: {trial.error}")
    if args.json:
        data = record.to_dict()
        print(json.dumps({key: data[key] for key in ("trials", "best", "groups", "seconds", "id")}))
    return 0 if not record.cancelled else 130


def cmd_export(args) -> int:
    from core.serving.export import ExportFormat, calibration_photos, export_model, export_name
    from core.serving.model_store import ModelStore

    fmt = ExportFormat.from_parts(args.format, args.quantize)
    entry = ModelStore(args.models_dir).resolve(args.model)
    calibration = calibration_photos(entry, args.data_dir) if fmt.needs_calibration else None
    output = args.output or export_name(entry, fmt)
    info = export_model(entry, fmt, output, calibration=calibration)
    if args.json:
        print(json.dumps({"path": str(output), **asdict(info)}))
    else:
        print(f"Wrote {output}: {info.model_file} ({info.bytes / 2**20:.1f} MB, {info.seconds:.1f} s), labels.txt, "
              f"README.md. Input: float32 [N, {info.image_size[0]}, {info.image_size[1]}, 3] pixels 0-255; "
              f"output: probabilities of {', '.join(info.classes)}.")
    return 0


def cmd_models(args) -> int:
    from core.serving.model_store import ModelStore

    listing = ModelStore(args.models_dir).list()
    for entry in listing.models:
        print(entry.label())
    for name, reason in listing.unusable:
        print(f"unusable: {name}: {reason}")
    if not listing.models and not listing.unusable:
        print("No trained models yet.")
    return 0


def cmd_bench(args) -> int:
    from core.experiments.bench import run_bench
    from core.training.progress import ProgressBar

    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    run_bench(args.out, levels=levels, data_dir=args.data_dir, models_dir=args.models_dir, backbone=args.backbone,
              weights=args.weights, seed=args.seed, reuse_cache=args.reuse_cache, report=ProgressBar(),
              epochs={l.key: getattr(args, f"epochs{l.key}") for l in all_levels() if getattr(args, f"epochs{l.key}", None)},
              augment={l.key: getattr(args, f"augment{l.key}") for l in all_levels()
                       if getattr(args, f"augment{l.key}", None)},
              random_weights_check=("vgg16", args.vgg16_subset) if args.vgg16_subset else None,
              views=args.views, top_block=args.top_block)
    return 0


COMMANDS = {"data": cmd_data, "augment": cmd_augment, "train": cmd_train, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "calibrate": cmd_calibrate, "suspects": cmd_suspects, "suggest": cmd_suggest, "explain": cmd_explain, "curve": cmd_curve, "sweep": cmd_sweep, "export": cmd_export,
            "models": cmd_models,
            "bench": cmd_bench}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LittleDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
