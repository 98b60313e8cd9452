"""Spending labels, measured: suspect labels found, and "label these next" against random labelling.

    python scripts/bench_labels.py [--part suspects|next|rerank|all] [--seeds 5] [--first-seed 0] [--rounds 25] [--json labels.json]

Suspects: flip a seeded 5% of a training split's labels and count how many of the flipped photos the
out-of-fold ranking (`suspect_probabilities`: both networks' heads and the neighbours' vote, as the
app and `python -m core suspects` use; `--networks` to try others) puts in its top k (k = the number flipped), on cats vs dogs and on the flowers;
where the two known wrong labels of cats vs dogs' validation split rank; and the time for 2,000
photos with cached features. Flipping labels on the cached features is the same experiment as
copying the data set with those photos moved to another class folder: the features do not depend on
the folder. Flipped photos go to another class chosen at random.

Label these next (the flowers; `--next-dataset cats_vs_dogs` for a large pool): per seed, 5 labelled
photos per class; the other training photos are the unlabelled pool, either all of them (balanced)
or a pool where the commonest class is over ten times the rarest. The current model is level 2's
head trained on the labelled photos; each strategy of
`core.experiments.label_next` picks 25 photos from the pool with it (`--rounds 10`: ten at a time,
the head retrained on the labels so far before each batch, as the app's "retrain level 2" does), level
2's head is trained on the 25 + 25 and scored on the validation photos (mean of 3 head seeds, the
same for every strategy).
Random labelling is the mean of 5 random draws of 25 at that seed, so a seed compares a strategy
with what random labelling gives on average from the same start, not with one lucky or unlucky draw.

The loop's time (`--part rerank`, not part of `all`): a copy of cats vs dogs with 10 labelled photos per
class, 50 validation photos per class and a pool of `--pool` unlabelled ones, in a fresh cache; level 2
trained, then `--loops` times: rank the pool (`suggest`, as the app's job does), label the ten first
(moved to their true class), retrain level 2. The seconds of each step, as the app's jobs spend them;
then, over the pool left, how closely the last level-2 model's answers from banked features (what
`suggest` uses) match its own pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import settings  # noqa: E402

SHARED = settings.PROJECT_ROOT.parent / "shared" / "datasets"
KNOWN_WRONG = ("validation/cats/cat.4085.jpg", "validation/dogs/dog.4334.jpg")  # a beagle, a cat


def recall_at_k(views: list, labels, share: float, seed: int, folds: int | None = None) -> dict:
    """`views`: the training photos' features from each network, rows in the same order."""
    from core.experiments.suspects import rank_suspects, suspect_probabilities

    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    flipped = rng.choice(len(labels), size=max(1, round(share * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    start = time.perf_counter()
    probabilities = suspect_probabilities(views, noisy, **({"folds": folds} if folds else {}))
    suspects = rank_suspects(probabilities, noisy, [str(c) for c in range(classes)], [str(i) for i in range(len(noisy))])
    seconds = time.perf_counter() - start
    top = {int(s.image) for s in suspects[: len(flipped)]}
    suggested_right = sum(1 for s in suspects[: len(flipped)]
                          if int(s.image) in set(flipped.tolist()) and int(s.suggested) == labels[int(s.image)])
    return {"seed": seed, "photos": len(labels), "flipped": len(flipped), "found_in_top_k": len(top & set(flipped.tolist())),
            "recall_at_k": len(top & set(flipped.tolist())) / len(flipped), "suspects": len(suspects),
            "suggested_class_right": suggested_right, "seconds": round(seconds, 2)}


LABELLED_PER_CLASS = 5
ADDED = 25
HEAD_SEEDS = 3
RANDOM_DRAWS = 5


def imbalanced_pool(classes: int, largest: int) -> list[int]:
    """Pool sizes falling geometrically from `largest` to a tenth of it (rounded down, at least 1)."""
    return [max(1, int(largest * 0.1 ** (c / (classes - 1)))) for c in range(classes)]


def label_next_trial(data, pool_sizes: list[int], seed: int, strategies: list, rounds: int = ADDED) -> dict:
    """One seed: each strategy's validation accuracy after labelling its 25 picks, and random's mean.

    With `rounds` < 25 the picks come in batches of that many, level 2's head retrained on the labels
    so far before each batch is chosen (the app's rank, label, retrain, rank again).
    """
    from core.experiments.efficiency_curve import head_accuracy, mean_view_probabilities, train_head
    from core.experiments.label_next import choose

    rng = np.random.default_rng(seed)
    labelled, pool = [], []
    for c in range(data.num_classes):
        members = rng.permutation(np.flatnonzero(data.labels == c))
        labelled += members[:LABELLED_PER_CLASS].tolist()
        pool += members[LABELLED_PER_CLASS:LABELLED_PER_CLASS + pool_sizes[c]].tolist()
    labelled, pool = np.asarray(labelled), np.asarray(pool)

    def accuracy(rows) -> float:
        return float(np.mean([head_accuracy(data.config, data.features[rows], data.labels[rows], data.val_views,
                                            data.val_labels, data.num_classes, 100 * seed + k)
                              for k in range(HEAD_SEEDS)]))

    def picks_of(strategy) -> np.ndarray:
        known, waiting = labelled, pool
        while len(known) < len(labelled) + ADDED:
            size = min(rounds, len(labelled) + ADDED - len(known))
            current = train_head(data.config, data.features[known], data.labels[known], data.num_classes,
                                 seed + len(known))
            probabilities = mean_view_probabilities(current, [data.features[waiting]], data.num_classes)
            chosen, _ = choose(probabilities, data.features[waiting], data.features[known], size, strategy, seed=seed,
                                labelled_labels=data.labels[known])
            known = np.concatenate([known, waiting[chosen]])
            waiting = np.delete(waiting, chosen)
        return known

    row = {"seed": seed, "labelled": len(labelled), "pool": len(pool), "rounds": rounds, "start": accuracy(labelled)}
    for strategy in strategies:
        rows = picks_of(strategy)
        row[strategy.value] = accuracy(rows)
        row[f"{strategy.value}_classes"] = np.bincount(data.labels[rows[len(labelled):]],
                                                       minlength=data.num_classes).tolist()
    draws = [accuracy(np.concatenate([labelled, pool[np.random.default_rng(1000 * seed + draw).permutation(len(pool))[:ADDED]]]))
             for draw in range(RANDOM_DRAWS)]
    row["random"], row["random_draws"] = float(np.mean(draws)), draws
    return row


def bench_label_next(seeds: int, report: dict, rounds: int = ADDED, strategies: list | None = None,
                     dataset: str = "flowers_fewshot", first_seed: int = 0) -> None:
    from core.data.folders import summarize
    from core.experiments.efficiency_curve import CurveConfig, HeadCurve
    from core.experiments.label_next import DEFAULT_STRATEGY, Strategy

    summary = summarize(SHARED / dataset)
    data = HeadCurve(CurveConfig(levels=[2], data_dir=str(summary.root)), 2, summary, lambda event: None, None)
    strategies = strategies or [s for s in Strategy if s is not Strategy.RANDOM]
    largest = int(min(np.bincount(data.labels))) - LABELLED_PER_CLASS
    pools = {"balanced": [largest] * data.num_classes, "imbalanced": imbalanced_pool(data.num_classes, largest)}
    for pool_name, sizes in pools.items():
        rows = []
        for seed in range(first_seed, first_seed + seeds):
            started = time.perf_counter()
            rows.append(label_next_trial(data, sizes, seed, strategies, rounds))
            print(f"label next, {dataset}, {pool_name} pool {sizes}: " + json.dumps(
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()})
                  + f" ({time.perf_counter() - started:.0f} s)", flush=True)
        summary_rows = {}
        for strategy in ["random"] + [s.value for s in strategies]:
            values = np.array([row[strategy] for row in rows])
            gains = values - np.array([row["random"] for row in rows])
            summary_rows[strategy] = {"mean": float(values.mean()), "std": float(values.std()),
                                      "gain_mean": float(gains.mean()), "gain_min": float(gains.min())}
            print(f"label next, {dataset}, {pool_name}: {strategy:16s} {values.mean():.2%} ± {values.std():.2%}   "
                  f"vs random {gains.mean() * 100:+.2f} points (worst seed {gains.min() * 100:+.2f})"
                  + ("   <- the default" if strategy == DEFAULT_STRATEGY.value else ""), flush=True)
        report.setdefault("label_next", {}).setdefault(dataset, {})[pool_name] = {"pool_sizes": sizes, "rounds": rounds, "rows": rows,
                                                          "summary": summary_rows}


def bench_rerank(report: dict, pool: int, loops: int) -> None:
    import shutil
    import tempfile

    from core.data.folders import summarize
    from core.experiments.label_next import suggest
    from core.training.loop import TrainConfig, train

    source = SHARED / "cats_vs_dogs"
    steps = {"first_train": [], "rank": [], "retrain": []}
    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        root, cache, models = Path(tmp) / "data", Path(tmp) / "cache", Path(tmp) / "models"
        for split, first, count in (("train", 0, 10), ("validation", 0, 50)):
            for cls in ("cats", "dogs"):
                (root / split / cls).mkdir(parents=True)
                for photo in sorted((source / split / cls).iterdir())[first:first + count]:
                    shutil.copy(photo, root / split / cls / photo.name)
        (root / "unlabelled").mkdir()
        for cls in ("cats", "dogs"):
            for photo in sorted((source / "train" / cls).iterdir())[10:10 + pool // 2]:
                shutil.copy(photo, root / "unlabelled" / photo.name)

        def timed(step: str, work):
            started = time.perf_counter()
            result = work()
            steps[step].append(round(time.perf_counter() - started, 2))
            print(f"rerank, pool of {pool}: {step} {steps[step][-1]:.1f} s", flush=True)
            return result

        def train_level2():
            return train(TrainConfig(level=2, data_dir=str(root), models_dir=str(models), cache_dir=str(cache))).entry

        entry = timed("first_train", train_level2)
        for _ in range(loops):
            suggestions = timed("rank", lambda: suggest(entry, summarize(root), n=10, cache_dir=cache))
            for suggestion in suggestions:  # labelled with their true class, as a person would
                photo = Path(suggestion.image)
                shutil.move(photo, root / "train" / ("cats" if photo.name.startswith("cat") else "dogs") / photo.name)
            entry = timed("retrain", train_level2)
        report["head_agreement"] = head_agreement(entry, summarize(root), cache)
    report["rerank"] = {"pool": pool, "loops": loops, "seconds": steps}
    later = steps["rank"][1:]
    print(f"rerank, pool of {pool}: first rank {steps['rank'][0]:.1f} s, ranks after ten labels "
          + (f"{np.mean(later):.1f} s (mean of {len(later)})" if later else "(none: --loops 1)")
          + f", retrain level 2 {np.mean(steps['retrain']):.1f} s (mean of {len(steps['retrain'])})", flush=True)


def head_agreement(entry, summary, cache) -> dict:
    """How closely a level-2 model's answers from banked features (what `suggest` uses) match its own pass,
    over the whole pool: the largest difference in a probability, before and after calibration, and the
    share of photos given the same class."""
    from core.data.decoded import decode_split
    from core.experiments.label_next import _head_probabilities, unlabelled_split
    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    from core.networks.features import network_features
    from core.serving.predictor import Predictor

    pool = unlabelled_split(summary)
    spec = get_backbone(entry.card.backbone)
    weights = resolve_weights(spec, None)
    decoded = decode_split(pool, "unlabelled", spec.image_size, cache_dir=cache)
    extractor = make_feature_extractor(spec, weights)
    views = [network_features(extractor, decoded, cache, spec.name, weights.key, spec.image_size, None,
                              "unlabelled", mirror)[0] for mirror in (False, True)]
    predictor = Predictor(entry)
    row = {"photos": len(decoded)}
    for calibrated in (False, True):
        calibration, predictor.calibration = predictor.calibration, (predictor.calibration if calibrated else None)
        head = _head_probabilities(predictor, weights.key, decoded, views[0], lambda: views[1])
        own = predictor.predict_rows(decoded.images)
        predictor.calibration = calibration
        name = "calibrated" if calibrated else "uncalibrated"
        row[f"max_difference_{name}"] = None if head is None else float(np.abs(head - own).max())
        row[f"same_class_{name}"] = None if head is None else float((head.argmax(1) == own.argmax(1)).mean())
    print(f"rerank: level 2's answers from banked features against its own pass: {json.dumps(row)}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["suspects", "next", "rerank", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="label these next: the first seed (seeds 0-4 are the issue's; try changes on others first)")
    parser.add_argument("--share", type=float, default=0.05, help="share of training labels flipped")
    parser.add_argument("--networks", help="suspects: the networks whose heads are averaged, comma-separated "
                                           "(default: the default network and its second opinion)")
    parser.add_argument("--folds", type=int, help="suspects: out-of-fold heads (default: the shipped number)")
    parser.add_argument("--datasets", default="cats_vs_dogs,flowers_fewshot",
                        help="suspects: which of ../shared/datasets (the known wrong labels and the time need cats_vs_dogs)")
    parser.add_argument("--rounds", type=int, default=ADDED,
                        help=f"label these next: photos chosen between retrainings (default {ADDED}: all at once)")
    parser.add_argument("--strategies", help="label these next: comma-separated (default: every one but random)")
    parser.add_argument("--next-dataset", default="flowers_fewshot",
                        help="label these next: which of ../shared/datasets (default flowers_fewshot)")
    parser.add_argument("--pool", type=int, default=1000, help="rerank: unlabelled photos in the pool")
    parser.add_argument("--loops", type=int, default=3, help="rerank: rank, label ten, retrain, this many times")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    report = {}
    if args.part in ("suspects", "all"):
        bench_suspects(args, report)
    if args.part in ("next", "all"):
        from core.experiments.label_next import Strategy

        chosen = [Strategy(name) for name in args.strategies.split(",")] if args.strategies else None
        bench_label_next(args.seeds, report, args.rounds, chosen, args.next_dataset, args.first_seed)
    if args.part == "rerank":
        bench_rerank(report, args.pool, args.loops)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def bench_suspects(args, report: dict) -> None:
    from core.data.folders import summarize
    from core.experiments.suspects import features_of_split, find_suspects, opinion_networks
    from core.networks.backbones import DEFAULT_BACKBONE

    networks = args.networks.split(",") if args.networks else opinion_networks(DEFAULT_BACKBONE)
    report["networks"] = networks
    for name in args.datasets.split(","):
        summary = summarize(SHARED / name)
        trains = [features_of_split(summary, "train", network) for network in networks]
        rows = [recall_at_k([train.features for train in trains], trains[0].labels, args.share, seed, args.folds)
                for seed in range(args.seeds)]
        for row in rows:
            print(f"{name}: {json.dumps(row)}", flush=True)
        recalls = [r["recall_at_k"] for r in rows]
        report[name] = {"rows": rows, "recall_mean": float(np.mean(recalls)), "recall_min": float(np.min(recalls))}
        print(f"{name}: recall at k {np.mean(recalls):.1%} (lowest {np.min(recalls):.1%}) over {args.seeds} seeds")
    if "cats_vs_dogs" not in args.datasets:
        return
    summary = summarize(SHARED / "cats_vs_dogs")
    start = time.perf_counter()
    suspects = find_suspects(summary, "validation")
    ranks = {known: next((i + 1 for i, s in enumerate(suspects) if s.image.endswith(known)), None) for known in KNOWN_WRONG}
    report["known_wrong_validation_labels"] = {"ranks": ranks, "suspects": len(suspects),
                                               "seconds": round(time.perf_counter() - start, 2)}
    print(f"known wrong validation labels: ranks {ranks} of {len(suspects)} suspects")
    start = time.perf_counter()
    find_suspects(summary, "train")
    report["suspects_2000_train_seconds"] = round(time.perf_counter() - start, 2)
    print(f"suspects for the 2,000 training photos (features cached): {report['suspects_2000_train_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
