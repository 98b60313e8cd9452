"""Predict's shared trunk: levels built on one pretrained network run its frozen layers once per photo."""

import numpy as np
import pytest
from PIL import Image

from core.serving.model_store import load_model
from core.serving.predictor import Predictor, SharedTrunk, predict_every_level
from core.training.loop import TrainConfig, train
from tests.helpers import png_bytes


def photo_bytes(seed: int) -> bytes:
    return png_bytes(Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four small models in one store, trained once for the module."""
    from core.networks.backbones import BACKBONES
    from tests.helpers import isolate_environment, make_dataset
    from tests.registry_examples import TINY_BACKBONE

    root = tmp_path_factory.mktemp("shared-trunk")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(BACKBONES, TINY_BACKBONE.name, TINY_BACKBONE)
        isolate_environment(patch, root)  # a module-wide fixture runs before the per-test isolation
        yield _train_four(TINY_BACKBONE, make_dataset(root / "data", n_train=16, n_val=6))


def _train_four(tiny_backbone, data):
    common = dict(backbone=tiny_backbone.name, weights="none", data_dir=str(data), batch_size=8)
    level1 = train(TrainConfig(level=1, epochs=1, image_size=(32, 32), data_dir=str(data), batch_size=8))
    level2 = train(TrainConfig(level=2, epochs=2, **common))
    level3 = train(TrainConfig(level=3, epochs=1, **common))  # fine-tunes the top block of level 2's network
    other = train(TrainConfig(level=2, epochs=1, seed=7, **common))  # random weights of its own
    return {name: Predictor(result.entry) for name, result in
            {"level1": level1, "level2": level2, "level3": level3, "other": other}.items()}


def test_levels_on_one_network_share_its_frozen_layers_and_answer_as_before(trained):
    predictors = {1: trained["level1"], 2: trained["level2"], 3: trained["level3"]}
    trunks = SharedTrunk.plan(predictors)
    assert [trunk.levels for trunk in trunks] == [[2, 3]]  # level 1 has no pretrained network
    assert trunks[0].mirrored and trunks[0].image_size == (32, 32)
    for seed in range(3):
        alone = predict_every_level(photo_bytes(seed), "photo.png", predictors)
        shared = predict_every_level(photo_bytes(seed), "photo.png", predictors, trunks=trunks)
        assert alone.per_level.keys() == shared.per_level.keys() == {1, 2, 3}
        for level in (1, 2, 3):
            for name, probability in alone.per_level[level].items():
                assert abs(shared.per_level[level][name] - probability) < 1e-6


def test_a_top_block_two_levels_share_runs_once(trained):
    """Levels 0 and 2 both keep the pretrained top block: one run of it serves both (here the same model twice)."""
    same = {2: trained["level2"], 0: trained["level2"], 3: trained["level3"]}
    trunks = SharedTrunk.plan(same)
    assert len(trunks) == 1 and sorted(trunks[0].levels) == [0, 2, 3] and trunks[0].top_blocks == 2
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    shared = trunks[0].predict_arrays(images)
    for level, predictor in same.items():
        assert np.abs(shared[level] - predictor.predict_arrays(images, calibrated=False)).max() < 1e-5


def test_different_lower_weights_are_never_shared(trained):
    # Two level-2 models from different random weights: the same architecture, not the same layers.
    assert SharedTrunk.plan({2: trained["other"], 3: trained["level3"]}) == []
    # A broken model, or one that loads no network, is left to its own predictor.
    assert SharedTrunk.plan({1: trained["level1"], 2: ValueError("unreadable"), 3: trained["level3"]}) == []


def test_a_trunk_that_would_answer_differently_is_not_used(trained, monkeypatch):
    model = load_model(trained["level3"].entry)
    changed = Predictor(trained["level3"].entry, model=model)
    head = model.layers[2].get_layer("head")
    head.set_weights([w + 1.0 for w in head.get_weights()])  # after the cut: shared, but checked
    trunks = SharedTrunk.plan({2: trained["level2"], 3: changed})
    assert [trunk.levels for trunk in trunks] == [[2, 3]]  # the tail is the model's own, so it agrees
    monkeypatch.setattr(SharedTrunk, "TOLERANCE", -1.0)  # nothing can pass the check
    assert SharedTrunk.plan({2: trained["level2"], 3: trained["level3"]}) == []
