"""Which ImageNet classes should level 0 count as cats and as dogs, and how should a group's classes
add up to one score? Decided on the training photos.

Runs a backbone's ImageNet classifier once over the training split (never the validation split,
which would make level 0's reported accuracy a tuned number) and scores each candidate grouping,
one view and mirror-averaged, with each way of scoring a group, as level 0 would; per class too,
since summing favours the class with more ImageNet classes (118 dog breeds against 5 or 13 cats):
- "sum": the group's summed probability (`ClassGroups`' aggregate for models saved before it had one);
- "mean": its mean probability, the sum over the group's share of ImageNet's classes (level 0's now);
- "mean of logs": the mean of its log-probabilities (tried, not kept; computed here).
With `--other-data-dir DIR` (a data set of things that are not animals, e.g. the flowers), also a
broad grouping: every ImageNet animal (0-397) against every object (398-999), scored on the
split's cats and dogs (animals) and DIR's same split (objects): a rule that only works for groups
of like classes fails there.
Also the grouping level 0 finds by itself from the training photos (`find_grouping`, what it does for
classes with no built-in grouping), with its accuracy on the training photos it was not found from.
`--split validation` is there to check a decision afterwards, not to make it.

Usage: python scripts/level0_grouping.py [--data-dir DIR] [--backbone efficientnet_lite2] [--split train]
       [--other-data-dir ../shared/datasets/flowers_fewshot] [--out bench-out/level0_grouping.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.errors import ConfigError  # noqa: E402
from core.networks import imagenet  # noqa: E402

MEAN_OF_LOGS = "mean of logs"
FLOOR = 1e-30  # a float32 softmax's zeros, before their logs

HOUSE_CATS = list(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
WILD_CATS = list(range(286, 294))  # cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah
WOLVES_AND_FOXES = list(range(269, 281))  # timber wolf ... grey fox (wolves, coyote, dingo, dhole, foxes)
CANDIDATES = {
    "house cats vs dog breeds (built in)": {"cats": HOUSE_CATS, "dogs": imagenet.DOGS},
    "+ wild cats": {"cats": HOUSE_CATS + WILD_CATS, "dogs": imagenet.DOGS},
    "+ wolves and foxes": {"cats": HOUSE_CATS, "dogs": imagenet.DOGS + WOLVES_AND_FOXES},
    "+ both": {"cats": HOUSE_CATS + WILD_CATS, "dogs": imagenet.DOGS + WOLVES_AND_FOXES},
}
assert CANDIDATES["house cats vs dog breeds (built in)"]["cats"] == imagenet.CATS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--backbone", default="efficientnet_lite2", help="a backbone with its ImageNet classifier")
    parser.add_argument("--split", default="train", choices=["train", "validation"])
    parser.add_argument("--other-data-dir", help="photos of things that are not animals, for the broad grouping")
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

    def imagenet_views(split_summary, split=args.split):
        photos = decode_split(split_summary, split, backbone.image_size)
        views = []
        for mirror in (False, True):
            chunks = []
            for start in range(0, len(photos), 32):
                batch = np.asarray(photos.images[start:start + 32], np.float32)
                chunks.append(forward(batch[:, :, ::-1] if mirror else batch).numpy())
            views.append(np.concatenate(chunks))
        return views, np.asarray(photos.labels)

    def second_class(groups, aggregate, probabilities):
        """[N] the second group's probability, as level 0's one unit gives it."""
        if aggregate == MEAN_OF_LOGS:
            scores = np.stack([np.log(np.clip(probabilities[:, g], FLOOR, 1)).mean(axis=1) for g in groups], axis=1)
            shares = np.exp(scores - scores.max(axis=1, keepdims=True))
            return shares[:, 1] / shares.sum(axis=1)
        return np.asarray(ClassGroups(groups, aggregate=aggregate)(probabilities))[:, 0]

    def accuracy(groups, aggregate, views, labels):
        """(one view, mirror-averaged as the saved model averages, mirror-averaged per class)"""
        first = second_class(groups, aggregate, views[0])
        one, both = first > 0.5, (first + second_class(groups, aggregate, views[1])) / 2 > 0.5
        return (float(np.mean(one == labels)), float(np.mean(both == labels)),
                [float(np.mean(both[labels == c] == c)) for c in range(2)])

    views, labels = imagenet_views(summary)
    report = {"backbone": backbone.name, "weights": weights.source, "split": args.split, "n": int(len(labels)),
              "groupings": {}}
    aggregates = (ClassGroups.SUM, ClassGroups.MEAN, MEAN_OF_LOGS)
    for name, grouping in CANDIDATES.items():
        for aggregate in aggregates:
            one, both, per_class = accuracy([grouping[c] for c in summary.classes], aggregate, views, labels)
            report["groupings"][f"{name}, {aggregate}"] = {"one view": one, "mirror-averaged": both,
                                                           "mirror-averaged per class": per_class}
            classes = ", ".join(f"{c} {a:.1%}" for c, a in zip(summary.classes, per_class))
            print(f"{name:<36} {aggregate:<12} one view {one:.2%}   mirror-averaged {both:.2%} ({classes})")
    train_views, train_labels = (views, labels) if args.split == "train" else imagenet_views(summary, "train")
    found = imagenet.find_grouping(train_views[0], train_labels, summary.classes)
    one, both, per_class = accuracy([found.grouping[c] for c in summary.classes], ClassGroups.MEAN, views, labels)
    report["found"] = {"per_class": found.per_class, "held_out_accuracy": found.held_out_accuracy,
                       "one view": one, "mirror-averaged": both, "grouping": found.grouping}
    try:
        names = imagenet.class_names(download=False)
    except ConfigError:  # the groups by index
        names = None
    held_out = "not tried" if found.held_out_accuracy is None else f"{found.held_out_accuracy:.2%}"
    print(f"found from the training photos (up to {found.per_class} ImageNet classes a class; on training photos "
          f"they were not found from {held_out}): mirror-averaged on {args.split} {both:.2%} "
          + "; ".join(f"{c}: {imagenet.describe_group(found.grouping[c], names)}" for c in summary.classes))
    if args.other_data_dir:
        other_views, other_labels = imagenet_views(summarize(Path(args.other_data_dir)))
        broad = [list(range(398, 1000)), list(range(0, 398))]  # objects, animals: the second is "animals"
        both_views = [np.concatenate([a, b]) for a, b in zip(views, other_views)]
        is_animal = np.concatenate([np.ones(len(labels), int), np.zeros(len(other_labels), int)])
        report["broad"] = {}
        for aggregate in aggregates:
            one, both, (objects, animals) = accuracy(broad, aggregate, both_views, is_animal)
            report["broad"][aggregate] = {"one view": one, "mirror-averaged": both, "animals": animals, "objects": objects}
            print(f"every animal against every object, {aggregate:<12} mirror-averaged {both:.2%} "
                  f"(cats and dogs called animals {animals:.1%}, {Path(args.other_data_dir).name} called objects "
                  f"{objects:.1%})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
