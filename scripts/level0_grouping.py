"""Which ImageNet classes should level 0 count as cats and as dogs, and how should a group's classes
add up to one score? Decided on the training photos.

Runs a backbone's ImageNet classifier once over the training split (never the validation split,
which would make level 0's reported accuracy a tuned number) and scores each candidate grouping,
one view and mirror-averaged, with each way of scoring a group (`ClassGroups`' aggregates: the
sum of the group's probabilities, or the mean of their logs), as level 0 would; per class too,
since summing favours the class with more ImageNet classes (118 dog breeds against 13 cats).
`--split validation` is there to check a decision afterwards, not to make it.

Usage: python scripts/level0_grouping.py [--data-dir DIR] [--backbone efficientnet_lite2] [--split train]
       [--out bench-out/level0_grouping.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.networks import imagenet  # noqa: E402

HOUSE_CATS = list(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
WILD_CATS = list(range(286, 294))  # cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah
WOLVES_AND_FOXES = list(range(269, 281))  # timber wolf ... grey fox (wolves, coyote, dingo, dhole, foxes)
CANDIDATES = {
    "house cats vs dog breeds": {"cats": HOUSE_CATS, "dogs": imagenet.DOGS},
    "+ wild cats (built in)": {"cats": HOUSE_CATS + WILD_CATS, "dogs": imagenet.DOGS},
    "+ wolves and foxes": {"cats": HOUSE_CATS, "dogs": imagenet.DOGS + WOLVES_AND_FOXES},
    "+ both": {"cats": HOUSE_CATS + WILD_CATS, "dogs": imagenet.DOGS + WOLVES_AND_FOXES},
}
assert CANDIDATES["+ wild cats (built in)"]["cats"] == imagenet.CATS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--backbone", default="efficientnet_lite2", help="a backbone with its ImageNet classifier")
    parser.add_argument("--split", default="train", choices=["train", "validation"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "level0_grouping.json")
    args = parser.parse_args()

    import tensorflow as tf

    from core.networks.backbones import build_base, get_backbone, resolve_weights
    from core.data.decoded import decode_split
    from core.data.download import resolve_data_dir
    from core.data.folders import summarize
    from core.networks.factories import preprocessing_layer
    from core.networks.layers import ClassGroups

    folder, _ = resolve_data_dir(args.data_dir)
    summary = summarize(folder)
    if sorted(summary.classes) != ["cats", "dogs"]:
        raise SystemExit(f"This compares cat and dog groupings; the data set's classes are {summary.classes}.")
    backbone = get_backbone(args.backbone)
    weights = resolve_weights(backbone, None, with_classifier=True)
    classifier = build_base(backbone, weights, with_classifier=True)
    preprocess = preprocessing_layer(backbone.preprocessing)
    forward = tf.function(lambda x: classifier(preprocess(x), training=False))
    photos = decode_split(summary, args.split, backbone.image_size)
    views = []
    for mirror in (False, True):
        chunks = []
        for start in range(0, len(photos), 32):
            batch = np.asarray(photos.images[start:start + 32], np.float32)
            chunks.append(forward(batch[:, :, ::-1] if mirror else batch).numpy())
        views.append(np.concatenate(chunks))
    labels = np.asarray(photos.labels)
    report = {"backbone": backbone.name, "weights": weights.source, "split": args.split, "n": int(len(labels)),
              "groupings": {}}
    for name, grouping in CANDIDATES.items():
        for aggregate in (ClassGroups.SUM, ClassGroups.MEAN_LOG):
            layer = ClassGroups([grouping[c] for c in summary.classes], aggregate=aggregate)
            scores = {}
            for label, probabilities in (("one view", views[0]), ("mirror-averaged", None)):
                if probabilities is None:  # as the saved model averages: the two views' class probabilities
                    second = (np.asarray(layer(views[0])) + np.asarray(layer(views[1]))) / 2
                else:
                    second = np.asarray(layer(probabilities))
                predicted = (second[:, 0] > 0.5).astype(int)  # one unit: the second class's probability
                scores[label] = float(np.mean(predicted == labels))
                scores[f"{label} per class"] = [float(np.mean(predicted[labels == c] == c))
                                                for c in range(len(summary.classes))]
            report["groupings"][f"{name}, {aggregate}"] = scores
            per_class = ", ".join(f"{c} {a:.1%}" for c, a in zip(summary.classes, scores["mirror-averaged per class"]))
            print(f"{name:<26} {aggregate:<9} one view {scores['one view']:.2%}   "
                  f"mirror-averaged {scores['mirror-averaged']:.2%} ({per_class})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
