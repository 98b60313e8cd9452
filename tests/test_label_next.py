"""core.experiments.label_next and label_review: which unlabelled photos to label first, and the reviews as jobs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.data.folders import DatasetError, summarize
from core import settings
from core.experiments.label_next import Strategy, choose, margin_uncertainty, suggest, unlabelled_split
from core.networks.backbones import resolve_weights
from core.networks.features import feature_cache_path
from core.experiments.label_review import LabelsConfig, LabelTask, load_review, run_label_review
from core.serving.model_store import ModelStore
from core.training.loop import TrainConfig, train


def test_margin_uncertainty_is_one_at_a_tie_and_zero_when_certain():
    assert margin_uncertainty(np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])) == pytest.approx([1, 0, 0.7])


def near_duplicates_and_a_rare_class(seed=0):
    """Unlabelled features: 20 near-copies of one confusing photo, and 10 photos of a class the model
    thinks rare; the labelled photos sit elsewhere."""
    rng = np.random.default_rng(seed)
    dim = 16
    confusing = rng.normal(0, 1, dim)
    copies = confusing + rng.normal(0, 0.01, (20, dim))
    rare = rng.normal(0, 1, dim) * 3 + rng.normal(0, 1, (10, dim))
    labelled = rng.normal(0, 1, (6, dim)) * 3
    probabilities = np.concatenate([np.tile([0.5, 0.5, 0.0], (20, 1)), np.tile([0.1, 0.25, 0.65], (10, 1))])
    return probabilities, np.concatenate([copies, rare]), labelled


def test_margin_alone_picks_near_duplicates_and_coverage_spreads_the_picks():
    probabilities, unlabelled, labelled = near_duplicates_and_a_rare_class()
    by_margin, _ = choose(probabilities, unlabelled, labelled, 5, Strategy.MARGIN)
    assert all(i < 20 for i in by_margin)  # five copies of the same photo
    distinct, _ = choose(probabilities, unlabelled, labelled, 5, Strategy.MARGIN_DISTINCT)
    assert distinct[0] == by_margin[0] and sum(i < 20 for i in distinct) == 1  # the most uncertain, then no copy
    for strategy in (Strategy.MARGIN_COVERAGE, Strategy.COVERAGE, Strategy.BADGE, Strategy.REPRESENTATIVE):
        picks, scores = choose(probabilities, unlabelled, labelled, 5, strategy)
        assert len(set(picks)) == 5 and sum(i < 20 for i in picks) <= 2, strategy  # at most two of the copies
    picks, scores = choose(probabilities, unlabelled, labelled, 4, Strategy.MARGIN_COVERAGE)
    assert {i >= 20 for i in picks[:2]} == {True, False}  # the predicted classes take turns
    balanced, _ = choose(probabilities, unlabelled, labelled, 4, Strategy.MARGIN_BALANCED)
    # The classes take turns: a copy, a rare one, then the copies are passed over and the rare class goes on.
    assert balanced[0] == by_margin[0] and [i >= 20 for i in balanced] == [False, True, True, True]
    random_a, _ = choose(probabilities, unlabelled, labelled, 30, Strategy.RANDOM, seed=1)
    assert sorted(random_a) == list(range(30))
    with pytest.raises(ValueError, match="rows of probabilities"):
        choose(probabilities[:3], unlabelled, labelled, 2)


@pytest.fixture
def with_unlabelled(dataset_factory, tmp_path):
    """The synthetic data set with four of its validation photos copied to unlabelled/."""
    data = tmp_path / "data"
    shutil.copytree(dataset_factory(), data)
    (data / "unlabelled").mkdir()
    for photo in sorted((data / "validation").glob("*/*"))[::3][:4]:
        shutil.copy(photo, data / "unlabelled" / f"{photo.parent.name}-{photo.name}")
    return data


def test_suggest_ranks_the_unlabelled_photos_with_a_stored_model(with_unlabelled, tiny_backbone, capsys):
    result = train(TrainConfig(level=2, backbone=tiny_backbone.name, weights="none", epochs=2,
                               data_dir=str(with_unlabelled)))
    summary = summarize(with_unlabelled)
    assert len(summary.unlabelled) == 4 and "unlabelled" not in summary.files
    suggestions = suggest(result.entry, summary, n=3)
    assert len(suggestions) == 3 and len({s.image for s in suggestions}) == 3
    pool = unlabelled_split(summary)  # ranked once: nothing of it stays in the cache
    weights = resolve_weights(tiny_backbone, None).key
    assert not list(settings.cache_dir().glob(f"decoded/{pool.fingerprint}-*"))
    assert not feature_cache_path(None, pool.fingerprint, tiny_backbone.name, weights, tiny_backbone.image_size,
                                  "unlabelled").exists()
    assert all(s.image.startswith(str(with_unlabelled / "unlabelled")) and s.predicted in summary.classes
               for s in suggestions)

    assert main(["suggest", result.entry.id, "--data-dir", str(with_unlabelled), "-n", "2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and lines[0].keys() == {"image", "score", "predicted"}

    steps = []
    review = run_label_review(LabelsConfig(LabelTask.SUGGEST, data_dir=str(with_unlabelled), model_id=result.entry.id),
                              phase=steps.append)
    kept = load_review(LabelTask.SUGGEST, with_unlabelled)
    assert kept.to_dict() == review.to_dict() and len(kept.items) == 4 and kept.model_id == result.entry.id
    # Trained on this folder and its validation photos: the card's figure is the one to compare with.
    assert kept.model_accuracy == result.entry.val_accuracy and not any("Scoring" in step for step in steps)


def test_a_model_of_another_folder_is_scored_on_this_data_sets_validation_photos(dataset_factory, with_unlabelled,
                                                                                 tiny_backbone):
    """Its card's accuracy is on other photos: comparing it with a level 2 retrained here after labelling
    would show a drop that the labels did not cause."""
    elsewhere = train(TrainConfig(level=2, backbone=tiny_backbone.name, weights="none", epochs=2,
                                  data_dir=str(dataset_factory())))
    steps = []
    review = run_label_review(LabelsConfig(LabelTask.SUGGEST, data_dir=str(with_unlabelled), model_id=elsewhere.entry.id),
                              phase=steps.append)
    assert any(step.startswith(f"Scoring {elsewhere.entry.id}") for step in steps)
    # with_unlabelled's validation photos are copies of the other folder's, so the measure must agree with the card
    assert review.model_accuracy == pytest.approx(elsewhere.entry.val_accuracy, abs=1e-6)


def seeded_level2(data, seeded, monkeypatch):
    """A level-2 model on a backbone whose weights are the same at every build, as pretrained ones are,
    and that backbone's weights as the default (those whose features rank the photos)."""
    monkeypatch.setenv("LITTLE_DATA_WEIGHTS_SEEDED_NET", seeded)
    return train(TrainConfig(level=2, backbone="seeded_net", weights=seeded, epochs=1, data_dir=str(data)))


def test_ranking_again_after_a_label_sends_no_photo_through_the_network(dataset_factory, tmp_path, seeded, monkeypatch):
    from core.networks.feature_bank import FeatureBank
    from core.serving.predictor import Predictor
    from tests.helpers import make_image

    with_unlabelled = tmp_path / "data"
    shutil.copytree(dataset_factory(), with_unlabelled)
    (with_unlabelled / "unlabelled").mkdir()
    rng = np.random.default_rng(7)
    for i, cls in enumerate(["circles", "squares"] * 2):  # photos of neither split
        make_image(cls, rng).save(with_unlabelled / "unlabelled" / f"new-{i}.jpg", quality=90)
    result = seeded_level2(with_unlabelled, seeded, monkeypatch)
    added = []
    keep = FeatureBank.add
    monkeypatch.setattr(FeatureBank, "add", lambda bank, digests, rows: (added.append(len(digests)), keep(bank, digests, rows)))
    first = suggest(result.entry, summarize(with_unlabelled), n=4)
    assert sum(added) == 4 + 4  # the pool, and its mirror images for the level-2 model's answers
    labelled = first[0]
    Path(labelled.image).rename(with_unlabelled / "train" / labelled.predicted / Path(labelled.image).name)
    added.clear()
    monkeypatch.setattr(Predictor, "predict_rows", lambda *a, **k: pytest.fail("the model's full pass ran"))
    again = suggest(result.entry, summarize(with_unlabelled), n=4)  # the model's own pass on two photos checks the head
    assert added == [] and len(again) == 3 and labelled.image not in {s.image for s in again}


def test_a_level_2_model_answers_from_the_features_as_its_own_pass_does(with_unlabelled, seeded, monkeypatch):
    from dataclasses import replace

    from core.data.decoded import decode_split
    from core.experiments.label_next import _head_probabilities
    from core.networks.factories import make_feature_extractor
    from core.networks.features import extract_features
    from core.serving.predictor import Predictor

    from core.networks.backbones import get_backbone

    result = seeded_level2(with_unlabelled, seeded, monkeypatch)
    network = get_backbone("seeded_net")
    decoded = decode_split(unlabelled_split(summarize(with_unlabelled)), "unlabelled", network.image_size)
    extractor = make_feature_extractor(network, resolve_weights(network, seeded))
    views = [extract_features(extractor, decoded, None, mirror=mirror)[0] for mirror in (False, True)]
    predictor = Predictor(result.entry)
    weights_key = result.entry.card.weights_key
    from_features = _head_probabilities(predictor, weights_key, decoded, views[0], lambda: views[1])
    assert from_features is not None
    assert np.allclose(from_features, predictor.predict_rows(decoded.images), atol=1e-5)
    # Features of other weights, or a model that is no head on them, are not used: the model's own pass answers.
    assert _head_probabilities(predictor, weights_key + "-other", decoded, views[0], lambda: views[1]) is None
    other_level = Predictor(replace(result.entry, card=replace(result.entry.card, level=1)), model=predictor.model)
    assert _head_probabilities(other_level, weights_key, decoded, views[0], lambda: views[1]) is None
    # Features that passed those tests but are not the model's own (another network under the same name
    # and key): its own pass on two photos disagrees, or the head cannot take them.
    assert _head_probabilities(predictor, weights_key, decoded, views[0] * 3 + 1, lambda: views[1] * 3 + 1) is None
    assert _head_probabilities(predictor, weights_key, decoded, views[0][:, :4], lambda: views[1][:, :4]) is None


def test_no_unlabelled_photos_no_model_or_one_class_get_clear_messages(dataset_factory, tiny_backbone):
    data = dataset_factory()
    result = train(TrainConfig(level=2, backbone=tiny_backbone.name, weights="none", epochs=1, data_dir=str(data)))
    with pytest.raises(DatasetError, match="no unlabelled photos.*unlabelled/"):
        suggest(result.entry, summarize(data))
    with pytest.raises(DatasetError, match="needs a model"):
        LabelsConfig(LabelTask.SUGGEST, data_dir=str(data))
    with pytest.raises(DatasetError, match="at least two class"):
        run_label_review(LabelsConfig(LabelTask.SUSPECTS, data_dir=str(dataset_factory(classes=("circles",)))))
    assert load_review(LabelTask.SUSPECTS, data) is None


def test_a_suspects_review_is_kept_for_the_page(dataset_factory, tiny_backbone):
    data = dataset_factory()
    review = run_label_review(LabelsConfig(LabelTask.SUSPECTS, data_dir=str(data), split="all", backbone=tiny_backbone.name))
    kept = load_review(LabelTask.SUSPECTS, data)
    assert kept.to_dict() == review.to_dict() and kept.fingerprint == summarize(data).fingerprint
    assert ModelStore().list().models == []  # a review trains nothing that is kept


def test_the_label_job_runner_keeps_the_review_or_stops_when_cancelled(dataset_factory, tiny_backbone):
    from core.app import jobs
    from core.training.progress import TrainProgress

    data = dataset_factory()
    config = LabelsConfig(LabelTask.SUSPECTS, data_dir=str(data), split="all", backbone=tiny_backbone.name)
    progress = TrainProgress()
    job = jobs.Job(id="labels-test", kind=jobs.JobKind.LABELS, state=jobs.JobState.RUNNING, config=config, created=0)
    jobs.RUNNERS[jobs.JobKind.LABELS](job, progress.apply, lambda: False, lambda: None)
    assert job.state is jobs.JobState.SUCCEEDED and job.message.endswith(" s") and "suspect label" in job.message
    assert "out-of-fold" in progress.message and job.title == "suspect labels"
    assert load_review(LabelTask.SUSPECTS, data) is not None

    other = dataset_factory(n_train=10)  # features not cached yet: the cancel is seen while computing them
    cancelled = jobs.Job(id="labels-cancel", kind=jobs.JobKind.LABELS, state=jobs.JobState.RUNNING, created=0,
                         config=LabelsConfig(LabelTask.SUSPECTS, data_dir=str(other), backbone=tiny_backbone.name))
    jobs.RUNNERS[jobs.JobKind.LABELS](cancelled, progress.apply, lambda: True, lambda: None)
    assert cancelled.state is jobs.JobState.CANCELLED and load_review(LabelTask.SUSPECTS, other) is None


def test_balanced_margin_lets_the_predicted_classes_take_turns():
    rng = np.random.default_rng(3)
    unlabelled, labelled = rng.normal(0, 1, (12, 32)), rng.normal(0, 1, (4, 32))
    # The six most uncertain photos are all predicted "a": margin alone would spend every label there.
    p_a = np.linspace(0.5, 0.8, 6)
    probabilities = np.concatenate([np.stack([p_a, 1 - p_a], 1), np.tile([0.1, 0.9], (6, 1))])
    by_margin, _ = choose(probabilities, unlabelled, labelled, 4, Strategy.MARGIN)
    assert by_margin == [0, 1, 2, 3]
    balanced, _ = choose(probabilities, unlabelled, labelled, 4, Strategy.MARGIN_BALANCED)
    assert [i < 6 for i in balanced] == [True, False, True, False] and balanced[::2] == [0, 1]


def test_typical_picks_are_typical_photos_of_the_kinds_nothing_labelled_covers():
    rng = np.random.default_rng(5)
    dim = 24
    centres = rng.normal(0, 1, (3, dim)) * 4
    sizes = [10, 20, 20]  # the first kind of photo is labelled already; the other two are not
    unlabelled = np.concatenate([centres[g] + rng.normal(0, 1, (size, dim)) for g, size in enumerate(sizes)])
    group = np.repeat([0, 1, 2], sizes)
    labelled = centres[0] + rng.normal(0, 1, (4, dim))
    probabilities = np.full((len(unlabelled), 2), 0.5)
    picks, _ = choose(probabilities, unlabelled, labelled, 2, Strategy.TYPICAL, seed=0)
    assert sorted(group[picks]) == [1, 2]
    for pick in picks:  # near the middle of its kind, not an outlier
        members = unlabelled[group == group[pick]]
        spread = np.linalg.norm(members - members.mean(0), axis=1)
        assert np.linalg.norm(unlabelled[pick] - members.mean(0)) <= np.median(spread)


def test_representative_picks_the_middle_of_what_no_label_covers_and_lets_a_rare_class_take_its_turn():
    rng = np.random.default_rng(7)
    dim = 24
    centres = rng.normal(0, 1, (4, dim)) * 4
    # Kinds 0-2 are class "a" as the model predicts them, kind 3 is class "b"; kind 0 is labelled already.
    sizes = [20, 30, 30, 4]
    unlabelled = np.concatenate([centres[g] + rng.normal(0, 1, (size, dim)) for g, size in enumerate(sizes)])
    unlabelled = np.concatenate([unlabelled, centres[1] + rng.normal(0, 1, (1, dim)) * 6])  # an outlier of kind 1
    kind = np.concatenate([np.repeat([0, 1, 2, 3], sizes), [1]])
    labelled = centres[0] + rng.normal(0, 1, (3, dim))
    probabilities = np.where((kind == 3)[:, None], [0.2, 0.8], [0.8, 0.2])
    outlier = len(unlabelled) - 1

    # Class "a" is labelled twice and "b" once: "b" (4 photos) goes first, then the classes take turns;
    # "a"'s picks are the middle of its two kinds no label covers, not the labelled kind or the outlier.
    picks, scores = choose(probabilities, unlabelled, labelled, 4, Strategy.REPRESENTATIVE,
                           labelled_labels=np.array([0, 0, 1]))
    assert kind[picks[0]] == kind[picks[2]] == 3 and sorted(kind[[picks[1], picks[3]]]) == [1, 2]
    assert outlier not in picks and all(score > 0 for score in scores)
    for pick in (picks[1], picks[3]):  # near the middle of its kind
        members = unlabelled[kind == kind[pick]]
        spread = np.linalg.norm(members - np.median(members, 0), axis=1)
        assert np.linalg.norm(unlabelled[pick] - np.median(members, 0)) <= np.median(spread)
    # Without the labelled photos' classes every class counts as equally labelled: "a" starts, then the
    # classes take turns.
    picks, _ = choose(probabilities, unlabelled, labelled, 4, Strategy.REPRESENTATIVE)
    assert kind[picks[1]] == kind[picks[3]] == 3 and sorted(kind[[picks[0], picks[2]]]) == [1, 2]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_ranks_a_pool_with_nothing_labelled_yet_or_a_single_photo(strategy):
    rng = np.random.default_rng(11)
    unlabelled, probabilities = rng.normal(0, 1, (9, 8)), rng.dirichlet(np.ones(3), 9)
    picks, scores = choose(probabilities, unlabelled, np.zeros((0, 8)), 4, strategy, labelled_labels=np.zeros(0))
    assert len(picks) == len(set(picks)) == 4 == len(scores) and all(0 <= i < 9 for i in picks)
    picks, _ = choose(probabilities[:1], unlabelled[:1], unlabelled[1:3], 5, strategy, labelled_labels=[0, 2])
    assert picks == [0]
    with pytest.raises(ValueError, match="labels for"):
        choose(probabilities, unlabelled, unlabelled[:2], 2, strategy, labelled_labels=[0])
