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


# ONNX Runtime: the same passes, converted once, checked against TensorFlow, kept in the cache.

def _answers(predictors, trunks, seeds=range(3)):
    return [predict_every_level(photo_bytes(seed), "photo.png", predictors, trunks=trunks) for seed in seeds]


def test_accelerated_trunk_and_models_give_tensorflows_answers(trained, tmp_path):
    from core.serving.predictor import accelerate

    predictors = {1: Predictor(trained["level1"].entry), 2: Predictor(trained["level2"].entry),
                  3: Predictor(trained["level3"].entry)}
    trunks = SharedTrunk.plan(predictors)
    before = _answers(predictors, trunks)
    accelerate(trunks, predictors, folder=tmp_path)
    assert trunks[0].engine == "onnxruntime" and trunks[0].engine_error is None
    assert predictors[1].engine == "onnxruntime"  # no trunk answers for level 1
    assert predictors[2].engine == predictors[3].engine == "tensorflow"  # the trunk answers for them
    assert len(list(tmp_path.glob("*.onnx"))) == 2
    for old, new in zip(before, _answers(predictors, trunks)):
        for level in (1, 2, 3):
            for name, probability in old.per_level[level].items():
                assert abs(new.per_level[level][name] - probability) < 1e-5


def test_a_kept_conversion_is_loaded_not_converted_again(trained, tmp_path, monkeypatch):
    from core.serving.onnx_forward import OnnxForward

    first = Predictor(trained["level1"].entry)
    first.accelerate(tmp_path)
    assert first.engine == "onnxruntime"

    def no_conversion(function):
        raise AssertionError("converted again")

    monkeypatch.setattr(OnnxForward, "convert", staticmethod(no_conversion))
    again = Predictor(trained["level1"].entry)  # as after a restart
    again.accelerate(tmp_path)
    assert again.engine == "onnxruntime", again.engine_error
    (kept,) = tmp_path.glob("*.onnx")
    kept.write_bytes(b"half a file")  # truncated: converted again, over it
    monkeypatch.undo()
    third = Predictor(trained["level1"].entry)
    third.accelerate(tmp_path)
    assert third.engine == "onnxruntime" and kept.stat().st_size > 1000


def test_a_conversion_that_fails_or_disagrees_leaves_tensorflow_answering(trained, tmp_path, monkeypatch):
    from core.serving.onnx_forward import OnnxForward

    def broken(function):
        raise RuntimeError("unsupported operator")

    with monkeypatch.context() as patch:
        patch.setattr(OnnxForward, "convert", staticmethod(broken))
        predictor = Predictor(trained["level1"].entry)
        predictor.accelerate(tmp_path)
    assert predictor.engine == "tensorflow" and "unsupported operator" in predictor.engine_error
    assert not list(tmp_path.glob("*.onnx"))
    assert predictor.predict([photo_bytes(0)])[0].probabilities  # still answers

    real_call = OnnxForward.__call__
    monkeypatch.setattr(OnnxForward, "__call__", lambda self, images: [out + 0.01 for out in real_call(self, images)])
    predictors = {2: Predictor(trained["level2"].entry), 3: Predictor(trained["level3"].entry)}
    trunk, = SharedTrunk.plan(predictors)
    trunk.accelerate(tmp_path)
    assert trunk.engine == "tensorflow" and "differs from TensorFlow" in trunk.engine_error


def test_the_setting_keeps_tensorflow_and_a_background_conversion_takes_over_when_ready(trained, tmp_path, monkeypatch):
    from core.serving.predictor import accelerate

    monkeypatch.setenv("LITTLE_DATA_SERVING_ENGINE", "tensorflow")
    predictor = Predictor(trained["level1"].entry)
    assert accelerate([], {1: predictor}, folder=tmp_path, background=True) is None
    assert predictor.engine == "tensorflow" and not list(tmp_path.glob("*.onnx"))
    monkeypatch.setenv("LITTLE_DATA_SERVING_ENGINE", "tpu")
    with pytest.raises(ValueError, match="LITTLE_DATA_SERVING_ENGINE='tpu' is not valid: use onnxruntime or tensorflow"):
        predictor.accelerate(tmp_path)
    monkeypatch.setenv("LITTLE_DATA_SERVING_ENGINE", "onnxruntime")
    thread = accelerate([], {1: predictor}, folder=tmp_path, background=True)
    thread.join(timeout=120)
    assert predictor.engine == "onnxruntime"


def test_only_the_newest_conversions_are_kept(tmp_path):
    import os

    from core.serving.onnx_forward import KEEP_CONVERTED, _prune

    for age in range(KEEP_CONVERTED + 2):
        path = tmp_path / f"{age}.onnx"
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    _prune(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [f"{age}.onnx" for age in range(KEEP_CONVERTED)]


def test_a_kept_conversion_that_no_longer_agrees_is_converted_again(trained, tmp_path, monkeypatch):
    from core.serving import onnx_forward

    monkeypatch.setattr(onnx_forward, "cache_name", lambda *parts: "same-name.onnx")  # as if two models collided
    level1 = Predictor(trained["level1"].entry)
    level1.accelerate(tmp_path)
    kept = tmp_path / "same-name.onnx"
    assert level1.engine == "onnxruntime" and kept.exists()
    before = kept.read_bytes()
    level2 = Predictor(trained["level2"].entry)  # finds level 1's pass under its name: refused, converted over it
    level2.accelerate(tmp_path)
    assert level2.engine == "onnxruntime", level2.engine_error
    assert kept.read_bytes() != before
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert np.abs(level2.predict_arrays(images) - Predictor(trained["level2"].entry).predict_arrays(images)).max() < 1e-5


def test_a_runtime_that_fails_while_answering_hands_back_to_tensorflow(trained, tmp_path, monkeypatch):
    from core.serving.onnx_forward import OnnxForward

    predictor = Predictor(trained["level1"].entry)
    expected = predictor.predict([photo_bytes(4)])[0].probabilities
    predictor.accelerate(tmp_path)
    assert predictor.engine == "onnxruntime"

    def out_of_memory(self, images):
        raise MemoryError("arena full")

    monkeypatch.setattr(OnnxForward, "__call__", out_of_memory)
    answer = predictor.predict([photo_bytes(4)])[0]
    assert answer.error is None and all(abs(answer.probabilities[c] - p) < 1e-6 for c, p in expected.items())
    assert predictor.engine == "tensorflow" and "arena full" in predictor.engine_error
