"""core.experiments.suspects: out-of-fold heads and confident learning find flipped labels."""

import json

import numpy as np
import pytest

from core.cli import main
from core.data.folders import DatasetError, summarize
from core.experiments.suspects import (confident_learning, find_suspects, held_out_probabilities,
                                       neighbour_probabilities, out_of_fold_probabilities, rank_suspects,
                                       suspect_probabilities)


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


def test_the_neighbours_vote_leaves_each_photo_out_and_near_copies_count_most():
    features = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.99], [0.2, 0.98]])
    labels = np.array([0, 0, 1, 1, 0])
    votes = neighbour_probabilities(features, labels, 2, k=2)
    assert votes.shape == (5, 2) and np.allclose(votes.sum(axis=1), 1)
    assert votes[0, 0] > 0.99  # its only close neighbour is a 0; itself is not counted
    assert votes[4, 1] > 0.99  # labelled 0, but its neighbours are 1s
    queries = neighbour_probabilities(features, labels, 2, queries=np.array([[1.0, 0.05]]), k=2)
    assert queries.shape == (1, 2) and queries[0, 0] > 0.99


def test_two_networks_and_the_neighbours_together_find_the_flipped_labels():
    first, labels = clusters(seed=5)
    second = first @ np.random.default_rng(6).normal(0, 1, (32, 48))  # another view of the same photos
    rng = np.random.default_rng(7)
    flipped = rng.choice(len(labels), 9, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 3
    probabilities = suspect_probabilities([first, second], noisy)
    assert probabilities.shape == (len(labels), 3) and np.allclose(probabilities.sum(axis=1), 1)
    suspects = rank_suspects(probabilities, noisy, ["a", "b", "c"], [str(i) for i in range(len(noisy))])
    assert {int(s.image) for s in suspects[:9]} == set(flipped.tolist())
    held_out = held_out_probabilities([first[:150], second[:150]], labels[:150], [first[150:], second[150:]], 3)
    assert (held_out.argmax(axis=1) == labels[150:]).all()


def test_without_the_second_networks_weights_suspects_come_from_the_first(dataset_factory, tiny_backbone, monkeypatch):
    from core.experiments import suspects as module

    monkeypatch.setitem(module.SECOND_OPINION, tiny_backbone.name, "mobilenet_v2")
    real = module.features_of_split
    asked = []

    def features_of_split(summary, split, backbone=None, *args, **kwargs):
        asked.append(backbone)
        if backbone == "mobilenet_v2":
            raise OSError("no weights offline")
        return real(summary, split, backbone, *args, **kwargs)

    monkeypatch.setattr(module, "features_of_split", features_of_split)
    summary = summarize(dataset_factory())
    alone = find_suspects(summary, "all", backbone=tiny_backbone.name, second_opinion=False)
    assert asked == [tiny_backbone.name, tiny_backbone.name]  # train and validation, one network
    assert find_suspects(summary, "all", backbone=tiny_backbone.name) == alone
    assert "mobilenet_v2" in asked


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
