"""core.serving.novelty: the nearest-neighbour judge and its threshold, on synthetic features."""

import numpy as np
import pytest

from core.serving.novelty import (NoveltyJudge, Verdict, neighbours_for, normalised, novelty_scores,
                                  threshold_for)


def clusters(rng, centres, n, spread=0.3):
    return np.concatenate([c + spread * rng.normal(size=(n, len(c))) for c in centres])


def test_photos_far_from_every_class_score_high_and_are_refused():
    rng = np.random.default_rng(0)
    dims = 64
    centres = [rng.normal(size=dims) for _ in range(2)]
    train, val = clusters(rng, centres, 100), clusters(rng, centres, 50)
    strangers = clusters(rng, [rng.normal(size=dims) for _ in range(3)], 30)
    bank = normalised(train)
    k = neighbours_for(len(bank))
    threshold = threshold_for(novelty_scores(bank, val, k), 0.97)
    accepted = novelty_scores(bank, val, k) <= threshold
    refused = novelty_scores(bank, strangers, k) > threshold
    assert 0.96 <= accepted.mean() <= 1.0 and refused.mean() == 1.0


def test_scores_are_cosine_distances_to_the_kth_neighbour():
    bank = normalised(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert novelty_scores(bank, np.array([[2.0, 0.0]]), 1)[0] == pytest.approx(0.0, abs=1e-6)
    assert novelty_scores(bank, np.array([[2.0, 0.0]]), 2)[0] == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)
    own = novelty_scores(bank, bank, 1, exclude_self=True)
    assert own[0] == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)  # not its own copy


def test_neighbours_shrink_for_tiny_data_sets():
    assert neighbours_for(2000) == 5 and neighbours_for(150) == 5 and neighbours_for(24) == 1 and neighbours_for(3) == 1


def test_threshold_bounds_and_verdicts():
    with pytest.raises(ValueError, match="accept_rate"):
        threshold_for(np.arange(10), 0.3)
    assert Verdict(0.5, 0.4).unknown and not Verdict(0.4, 0.4).unknown
    assert Verdict(0.5, 0.4).describe() == "novelty 0.500 > 0.400"


def test_judge_card_round_trip_and_old_cards():
    judge = NoveltyJudge("efficientnet_lite2", None, "sha256-x", (260, 260), True, 5, 0.2, 0.97, 0.9712, 2000)
    assert NoveltyJudge.from_dict(judge.to_dict()) == judge
    assert NoveltyJudge.from_dict(None) is None and NoveltyJudge.from_dict({"backbone": "x"}) is None
    assert "5th nearest of 2000" in judge.describe() and "own network" in judge.describe()
