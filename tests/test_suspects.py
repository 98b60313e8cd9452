"""core.experiments.suspects: out-of-fold heads and confident learning find flipped labels."""

import json

import numpy as np
import pytest

from core.cli import main
from core.data.folders import DatasetError, summarize
from core.experiments.suspects import (confident_learning, find_suspects, out_of_fold_probabilities,
                                       rank_suspects)


def clusters(n_per_class=60, classes=3, dim=32, seed=0):
    """Features in well-separated clusters, as a pretrained network gives for distinct classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim)) * 3
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(0, 1, (len(labels), dim)), labels


def test_flipped_labels_are_the_top_suspects_with_their_true_class():
    features, labels = clusters()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(labels), 9, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 3
    probabilities = out_of_fold_probabilities(features, noisy)
    suspects = rank_suspects(probabilities, noisy, ["a", "b", "c"], [f"{i}.jpg" for i in range(len(noisy))])
    top = suspects[:9]
    assert {int(s.image.split(".")[0]) for s in top} == set(flipped.tolist())
    assert all(s.suggested == "abc"[labels[int(s.image.split(".")[0])]] for s in top)  # the class it belongs to
    assert [s.score for s in suspects] == sorted((s.score for s in suspects), reverse=True)
    assert top[0].to_dict().keys() == {"image", "given", "suggested", "score"}


def test_clean_labels_give_few_suspects_and_confident_learning_flags_only_other_classes():
    features, labels = clusters(seed=3)
    probabilities = out_of_fold_probabilities(features, labels)
    flagged, confident = confident_learning(probabilities, labels)
    assert flagged.sum() <= 2 and np.all(confident[flagged] != labels[flagged])
    assert len(rank_suspects(probabilities, labels, ["a", "b", "c"], list(range(len(labels))))) <= 3


def test_one_class_or_a_bad_split_gets_a_clear_message(dataset_factory):
    with pytest.raises(ValueError, match="at least two classes"):
        out_of_fold_probabilities(np.zeros((10, 4)), np.zeros(10, int))
    one_class = dataset_factory(classes=("circles",))
    with pytest.raises(DatasetError, match="at least two class"):  # the data set itself says so
        find_suspects(summarize(one_class))
    with pytest.raises(DatasetError, match="split must be one of"):
        find_suspects(summarize(dataset_factory()), split="test")


def test_cli_suspects_json(app_env, tiny_backbone, capsys):
    assert main(["suspects", "--data-dir", str(app_env), "--backbone", tiny_backbone.name, "--split", "all",
                 "-n", "5", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) <= 5
    for line in lines:
        assert line.keys() == {"image", "given", "suggested", "score"} and line["given"] != line["suggested"]


def test_a_label_confirmed_in_the_app_is_no_longer_a_suspect(tiny_backbone):
    from core.data.builder import BuiltDataset
    from tests.helpers import jpeg_bytes, make_image

    rng = np.random.default_rng(0)
    built = BuiltDataset.create("shapes", ["circles", "squares"])
    for cls in ("circles", "squares"):
        built.add_photos(cls, [(f"{cls}-{i}.jpg", jpeg_bytes(make_image(cls, rng, 64))) for i in range(10)])
    built.add_photos("circles", [("odd.jpg", jpeg_bytes(make_image("squares", rng, 64)))])  # a square, as a circle
    before = find_suspects(summarize(built.root), "all", backbone=tiny_backbone.name)
    assert before, "random tiny features leave some photos doubtful"
    built.keep_label(before[0].image)
    after = find_suspects(summarize(built.root), "all", backbone=tiny_backbone.name)
    assert before[0].image not in {s.image for s in after}
    assert {s.image for s in after} == {s.image for s in before[1:]}  # nothing else changes
