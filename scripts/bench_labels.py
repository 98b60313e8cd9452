"""Suspect labels, measured: flip a seeded 5% of a training split's labels and count how many of the
flipped photos the out-of-fold ranking puts in its top k (k = the number flipped); where the two
known wrong labels of cats vs dogs' validation split rank; and the time for 2,000 photos.

    python scripts/bench_labels.py [--seeds 3] [--json labels.json]

Flipping labels on the cached features is the same experiment as copying the data set with those
photos moved to another class folder: the features do not depend on the folder. Flipped photos go
to another class chosen at random. "Label these next" (issue 23's second half) is not measured yet.
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


def recall_at_k(features, labels, share: float, seed: int) -> dict:
    from core.experiments.suspects import out_of_fold_probabilities, rank_suspects

    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    flipped = rng.choice(len(labels), size=max(1, round(share * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    start = time.perf_counter()
    probabilities = out_of_fold_probabilities(features, noisy)
    suspects = rank_suspects(probabilities, noisy, [str(c) for c in range(classes)], [str(i) for i in range(len(noisy))])
    seconds = time.perf_counter() - start
    top = {int(s.image) for s in suspects[: len(flipped)]}
    suggested_right = sum(1 for s in suspects[: len(flipped)]
                          if int(s.image) in set(flipped.tolist()) and int(s.suggested) == labels[int(s.image)])
    return {"seed": seed, "photos": len(labels), "flipped": len(flipped), "found_in_top_k": len(top & set(flipped.tolist())),
            "recall_at_k": len(top & set(flipped.tolist())) / len(flipped), "suspects": len(suspects),
            "suggested_class_right": suggested_right, "seconds": round(seconds, 2)}


def main() -> int:
    from core.data.folders import summarize
    from core.experiments.suspects import find_suspects, labelled_features

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.05, help="share of training labels flipped")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    report = {}
    for name in ("cats_vs_dogs", "flowers_fewshot"):
        summary = summarize(SHARED / name)
        train = labelled_features(summary, "train")
        rows = [recall_at_k(train.features, train.labels, args.share, seed) for seed in range(args.seeds)]
        for row in rows:
            print(f"{name}: {json.dumps(row)}", flush=True)
        recalls = [r["recall_at_k"] for r in rows]
        report[name] = {"rows": rows, "recall_mean": float(np.mean(recalls)), "recall_min": float(np.min(recalls))}
        print(f"{name}: recall at k {np.mean(recalls):.1%} (lowest {np.min(recalls):.1%}) over {args.seeds} seeds")
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
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
