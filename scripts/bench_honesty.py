"""Honest answers, measured: per level, how many in-class photos are accepted, how many photos of
other things are refused, and the calibration error before and after temperature scaling.

    python scripts/bench_honesty.py --models-dir <store with levels 0-3> \
        [--data-dir ../shared/datasets/cats_vs_dogs] [--ood ../shared/datasets/ood_dev] \
        [--other ../shared/datasets/flowers_fewshot] [--json honesty.json]
    python scripts/bench_honesty.py --compare-methods   # the judge's method against the alternatives

For each level's newest model in the store: the share of the validation split it accepts (its
threshold was set there, so this is by construction near the card's accept rate), the share of
`--ood` photos and of `--other`'s photos it refuses, its accuracy, and the expected calibration
error (15 bins) on the validation split before and after scaling (cross-fitted: the scaling
fitted on the other half of the split; this is what to expect on new photos), beside the ECE a
perfectly calibrated model with the same confidences would measure on as many photos (the
measurement's own noise). Models trained
before honest answers are fitted first with `python -m core calibrate MODEL`.

`--compare-methods` extracts the default backbone's features of cats vs dogs, flowers and ood_dev
and reports, at validation accept rates of 95, 97 and 98%, the refusal rate of k-nearest-neighbour
distances (k = 1, 5, 10) against class-conditional Gaussians with a shared covariance
(Mahalanobis distance, shrunk), for a two-class data set of 1000 photos per class and a five-class
one of 30.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import settings  # noqa: E402

SHARED = settings.PROJECT_ROOT.parent / "shared" / "datasets"


def photos_in(folder: Path) -> list[Path]:
    from core.data.images import is_image_name

    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_name(p.name))


def verdict_rate(predictor, paths: list[Path], batch: int = 32) -> float:
    """The share of `paths` the model refuses (says none of these)."""
    from core.data.images import load_array

    judge = predictor.judge
    refused = 0
    for start in range(0, len(paths), batch):
        arrays = np.stack([load_array(p, judge.judge.image_size) for p in paths[start:start + batch]])
        refused += sum(v.unknown for v in judge.verdicts(arrays))
    return refused / max(len(paths), 1)


def cross_fitted_accept_rate(scores: np.ndarray, accept_rate: float, seed: int = 0) -> float:
    """The share of in-class photos accepted by a threshold set on other in-class photos: the threshold
    set on one half of the validation split, measured on the other, both ways (what new photos meet)."""
    from core.serving.calibration import halves
    from core.serving.novelty import threshold_for

    parts = halves(len(scores), seed)
    accepted = [np.mean(scores[other] <= threshold_for(scores[fit], accept_rate)) for fit, other in (parts, parts[::-1])]
    return float(np.mean(accepted))


def measure_level(entry, summary, ood: list[Path], other: list[Path]) -> dict:
    from core.data.decoded import decode_split
    from core.serving.calibration import expected_calibration_error
    from core.serving.predictor import Predictor

    predictor = Predictor(entry)
    card = entry.card
    row = {"level": entry.level, "model": entry.id, "backbone": card.backbone}
    decoded = decode_split(summary, "validation", entry.image_size)
    raw = predictor.predict_rows(decoded.images, calibrated=False)
    labels = np.asarray(decoded.labels)
    row["accuracy"] = float(np.mean(raw.argmax(1) == labels))
    row["ece_uncalibrated"] = expected_calibration_error(raw, labels)
    if predictor.calibration is not None:
        calibrated = predictor.calibration.apply(raw)
        row.update(temperature=predictor.calibration.temperature, exponent=predictor.calibration.exponent,
                   ece_floor=predictor.calibration.ece_floor,
                   ece_calibrated_in_sample=expected_calibration_error(calibrated, labels),
                   ece_calibrated_cross_fitted=predictor.calibration.ece_cross_fitted,
                   argmax_unchanged=bool(np.array_equal(calibrated.argmax(1), raw.argmax(1))))
    if predictor.judge is not None:
        judged = decode_split(summary, "validation", predictor.judge.judge.image_size)
        verdicts = predictor.judge.verdicts(judged.images)
        row["validation_accepted"] = float(np.mean([not v.unknown for v in verdicts]))
        row["validation_accepted_cross_fitted"] = cross_fitted_accept_rate(
            np.array([v.novelty for v in verdicts]), predictor.judge.judge.accept_rate)
        row["judge"] = predictor.judge.judge.describe()
        if ood:
            row["ood_refused"] = verdict_rate(predictor, ood)
        if other:
            row["other_refused"] = verdict_rate(predictor, other)
    else:
        row["judge"] = card.judge_note or "none"
    return row


def table(rows: list[dict]) -> str:
    def pct(value):
        return f"{value:.1%}" if isinstance(value, float) else "-"

    lines = ["| level | backbone | accuracy | validation accepted (cross-fitted) | ood_dev refused | "
             "other data set refused | ECE before | ECE after (cross-fitted) | ECE of a perfect model | "
             "temperature, exponent |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['backbone'] or 'own convnet'} | {pct(r['accuracy'])} | "
                     f"{pct(r.get('validation_accepted'))} ({pct(r.get('validation_accepted_cross_fitted'))}) | "
                     f"{pct(r.get('ood_refused'))} | {pct(r.get('other_refused'))} | "
                     f"{pct(r['ece_uncalibrated'])} | {pct(r.get('ece_calibrated_cross_fitted'))} | "
                     f"{pct(r.get('ece_floor'))} | {r.get('temperature', float('nan')):.2f}, "
                     f"{r.get('exponent', 1.0):.2f} |")
    return "\n".join(lines)


def compare_methods(backbone_name: str, accept_rates=(0.95, 0.97, 0.98)) -> list[dict]:
    """kNN distances against Mahalanobis distances on one backbone's features, for two data sets."""
    from core.data.folders import summarize
    from core.data.images import load_array
    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    from core.networks.features import split_features
    from core.serving.novelty import normalised, novelty_scores, threshold_for

    spec = get_backbone(backbone_name)
    weights = resolve_weights(spec)
    extractor = make_feature_extractor(spec, weights)
    size = spec.image_size

    def labelled(root: Path, split: str):
        features, decoded = split_features(extractor, summarize(root), split, spec.name, weights.key, size)
        return features, np.asarray(decoded.labels)

    def folder_features(paths):
        return np.concatenate([extractor.predict(np.stack([load_array(p, size) for p in paths[i:i + 32]]), verbose=0)
                               for i in range(0, len(paths), 32)])

    def mahalanobis(train, labels, query, shrink=0.1):
        means = np.stack([train[labels == c].mean(0) for c in np.unique(labels)])
        centred = train - means[labels]
        cov = centred.T @ centred / len(train)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        precision = np.linalg.inv(cov)
        return np.sqrt(np.stack([np.einsum("nd,de,ne->n", query - m, precision, query - m) for m in means], 1).min(1))

    data = {name: {split: labelled(SHARED / name, split) for split in ("train", "validation")}
            for name in ("cats_vs_dogs", "flowers_fewshot")}
    ood = folder_features(photos_in(SHARED / "ood_dev"))
    rows = []
    for name, other in (("cats_vs_dogs", "flowers_fewshot"), ("flowers_fewshot", "cats_vs_dogs")):
        (train, labels), (val, _) = data[name]["train"], data[name]["validation"]
        strangers = {"ood_dev": ood, other: data[other]["validation"][0]}
        methods = {f"knn{k}": (lambda q, k=k: novelty_scores(normalised(train), q, k)) for k in (1, 5, 10)}
        methods["mahalanobis"] = lambda q: mahalanobis(train.astype(np.float64), labels, q.astype(np.float64))
        for method, score in methods.items():
            val_scores = score(val)
            for rate in accept_rates:
                threshold = threshold_for(val_scores, rate)
                rows.append({"data": name, "method": method, "accept_rate": rate,
                             **{f"{k}_refused": float(np.mean(score(v) > threshold)) for k, v in strangers.items()}})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", help="model store (default: LITTLE_DATA_MODELS_DIR)")
    parser.add_argument("--levels", default="0,1,2,3")
    parser.add_argument("--data-dir", default=str(SHARED / "cats_vs_dogs"))
    parser.add_argument("--ood", default=str(SHARED / "ood_dev"), help="photos of other things ('' to skip)")
    parser.add_argument("--other", default=str(SHARED / "flowers_fewshot"), help="another data set ('' to skip)")
    parser.add_argument("--compare-methods", action="store_true", help="compare novelty methods instead")
    parser.add_argument("--backbone", default="efficientnet_lite2", help="network for --compare-methods")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.compare_methods:
        rows = compare_methods(args.backbone)
        for r in rows:
            print(f"{r['data']:16s} {r['method']:12s} accept {r['accept_rate']:.0%}: "
                  + ", ".join(f"{k} {v:.1%}" for k, v in r.items() if k.endswith("_refused")))
    else:
        from core.data.folders import summarize
        from core.serving.model_store import ModelStore

        store = ModelStore(args.models_dir)
        summary = summarize(args.data_dir)
        ood = photos_in(Path(args.ood)) if args.ood else []
        other = [p for p in photos_in(Path(args.other)) if "validation" in p.parts] if args.other else []
        rows = []
        for level in (int(k) for k in args.levels.split(",")):
            entry = store.latest(level)
            if entry is None:
                print(f"level {level}: no model in {store.root}", file=sys.stderr)
                continue
            rows.append(measure_level(entry, summary, ood, other))
            print(json.dumps(rows[-1]), flush=True)
        print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
