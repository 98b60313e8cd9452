"""Every level end to end at a tiny image size, on synthetic shapes."""

import numpy as np
import pytest

from core.data.augment import preset
from core.data.decoded import decode_split
from core.data.folders import summarize
from core.networks.factories import FLIP_AVERAGE, single_view
from core.serving.evaluation import evaluate
from core.serving.predictor import Predictor
from core.serving.model_store import ModelStore, load_model
from core.networks.backbones import get_backbone
from core.errors import ConfigError
from core.levels import all_levels, get_level
from core.training.loop import TrainConfig, TrainingError, train

TINY = (32, 32)


def tiny_config(dataset, level, **overrides):
    defaults = dict(level=level, epochs=6, batch_size=8, image_size=TINY, data_dir=str(dataset),
                    backbone=None if level == 1 else "mobilenet_025", weights=None if level == 1 else "none")
    return TrainConfig(**{**defaults, **overrides})


@pytest.fixture
def shapes(dataset_factory):
    return dataset_factory(n_train=24, n_val=10)


@pytest.mark.slow
def test_three_levels_end_to_end(shapes, tiny_backbone):
    """Level 1, then levels 2 and 3 on a tiny backbone that learns in seconds (a real Keras one with random
    weights gives constant features at 32x32; see test_levels_2_and_3_on_every_backbone for those)."""
    events = []
    level1 = train(tiny_config(shapes, 1, epochs=10, learning_rate=3e-3), report=events.append)
    assert level1.entry is not None and not level1.cancelled
    card = level1.entry.card
    assert card.level == 1 and card.classes == ["circles", "squares"] and card.level_name == get_level(1).name
    assert len(card.history["val_accuracy"]) == 10
    assert set(card.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert card.metrics.val_accuracy >= 0.8  # red circles vs blue squares is easy; chance is 0.5
    assert {e.kind for e in events} == {"phase", "batch", "epoch", "done"}
    assert card.augment == preset("tutorial_train").to_dict()
    assert card.hyperparameters["optimizer"] == "RMSprop" and card.tutorial_accuracy == 0.80
    assert card.image_size == TINY and card.dataset["counts"]["train"] == {"circles": 24, "squares": 24}
    assert card.train_seconds > 0 and card.versions["keras"] and card.created and card.params["total"] > 0

    level2 = train(tiny_config(shapes, 2, epochs=15, learning_rate=3e-3, backbone=tiny_backbone.name))
    assert level2.entry.card.backbone == tiny_backbone.name
    assert level2.entry.card.weights == "random initialisation"
    # Random shallow convolutions keep colour, and the classes differ in colour: well above chance.
    assert level2.entry.card.metrics.val_accuracy >= 0.8

    level3 = train(tiny_config(shapes, 3, epochs=2, backbone=tiny_backbone.name))
    card3 = level3.entry.card
    assert card3.started_from == level2.entry.id
    assert card3.hyperparameters["optimizer"].startswith("SGD")
    assert card3.params["trainable"] < card3.params["total"]
    assert card3.metrics.val_accuracy >= 0.8  # it starts from level 2's classifier and keeps it

    store = ModelStore()
    assert [m.level for m in store.list().models] == [3, 2, 1]
    for entry in (level1.entry, level3.entry):  # augmentation ran in training only, never saved
        layer_names = [layer.__class__.__name__ for layer in _all_layers(load_model(entry))]
        assert not [name for name in layer_names if name.startswith("Random")], layer_names


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def test_with_augmentation_augments_in_training_only():
    from core.data.augment import make_augmenter
    from core.networks.factories import make_level1_model
    from core.training.loop import with_augmentation

    model = make_level1_model(2, TINY)
    trainee = with_augmentation(model, make_augmenter(preset("aggressive"), seed=3))
    images = np.random.default_rng(0).uniform(0, 255, (4, *TINY, 3)).astype("float32")
    np.testing.assert_allclose(trainee(images, training=False), model(images, training=False), atol=1e-6)
    assert not np.allclose(trainee.layers[1](images, training=True), images)
    assert {id(w) for w in trainee.trainable_weights} == {id(w) for w in model.trainable_weights}
    assert with_augmentation(model, None) is model


@pytest.mark.slow
def test_level2_features_are_cached(shapes):
    first = train(tiny_config(shapes, 2, epochs=1))
    second = train(tiny_config(shapes, 2, epochs=1))
    assert "extract_images_per_s" in first.timings
    assert "extract_images_per_s" not in second.timings  # nothing was extracted the second time
    assert second.timings["extract"] < first.timings["extract"]


def test_level3_refuses_without_a_level2_head(shapes):
    events = []
    with pytest.raises(TrainingError, match="Train level 2 first"):
        train(tiny_config(shapes, 3, epochs=1), report=events.append)
    assert events[-1].kind == "failed" and "Train level 2 first" in events[-1].error


def test_same_seed_same_history(shapes):
    a = train(tiny_config(shapes, 1, epochs=2, seed=7))
    b = train(tiny_config(shapes, 1, epochs=2, seed=7))
    assert a.entry.card.history == b.entry.card.history


def test_cancel_stops_and_saves_nothing(shapes):
    calls = {"n": 0}

    def cancel_after_three_batches():
        calls["n"] += 1
        return calls["n"] > 3

    events = []
    result = train(tiny_config(shapes, 1, epochs=20), report=events.append, should_cancel=cancel_after_three_batches)
    assert result.cancelled and result.entry is None
    assert ModelStore().list().models == []
    assert [e.batch for e in events if e.kind == "batch"] == [1, 2, 3, 4]  # stopped after the batch that saw it
    assert not [e for e in events if e.kind == "done"]


def test_saved_model_predicts_what_the_trained_one_did(shapes):
    result = train(tiny_config(shapes, 1, epochs=2))
    summary = summarize(shapes)
    decoded = decode_split(summary, "validation", TINY)
    reloaded = load_model(result.entry)
    images = np.asarray(decoded.images, dtype=np.float32)
    fresh = Predictor(result.entry, model=reloaded).predict_arrays(images)
    again = Predictor(result.entry).predict_arrays(images)
    np.testing.assert_allclose(fresh, again, atol=1e-6)
    evaluation = evaluate(Predictor(result.entry), decoded)
    assert evaluation.n == 20 and abs(evaluation.accuracy - result.entry.card.metrics.val_accuracy) < 1e-6
    assert np.asarray(evaluation.confusion).sum() == 20


def test_flip_average_is_saved_in_the_model_and_scored(shapes):
    """On by default: the stored model averages each image with its mirror, and its card's
    accuracy is that model's; off, the stored model is the plain network."""
    summary = summarize(shapes)
    decoded = decode_split(summary, "validation", TINY)
    images = np.asarray(decoded.images, dtype=np.float32)
    for flip_average in (True, False):
        result = train(tiny_config(shapes, 1, epochs=2, flip_average=flip_average))
        card = result.entry.card
        assert card.flip_average is flip_average
        reloaded = load_model(result.entry)
        assert any(layer.name == FLIP_AVERAGE for layer in reloaded.layers) is flip_average
        network = single_view(reloaded)
        expected = (network(images) + network(images[:, :, ::-1])) / 2 if flip_average else network(images)
        np.testing.assert_allclose(reloaded(images), expected, atol=1e-6)
        evaluation = evaluate(Predictor(result.entry), decoded)
        assert card.metrics.val_accuracy == pytest.approx(evaluation.accuracy)
        assert card.metrics.last_epoch_val_accuracy == card.history["val_accuracy"][-1]


def test_three_classes_use_softmax(dataset_factory):
    data = dataset_factory(classes=("circles", "squares", "triangles"), n_train=6, n_val=3)
    result = train(tiny_config(data, 1, epochs=1))
    probs = Predictor(result.entry).predict_arrays(np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (dict(level=99), "Unknown level 99; choose from 0, 1, 2, 3"), (dict(level=1, epochs=0), "epochs must be at least 1"),
    (dict(level=1, batch_size=0), "batch_size"), (dict(level=1, learning_rate=-1.0), "learning_rate must be positive"),
    (dict(level=1, image_size=(8, 8)), "at least 32x32"), (dict(level=1, dropout=1.0), "dropout"),
    (dict(level=1, schedule="linear"), "schedule must be one of cosine, constant")])
def test_config_validation(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**bad)


@pytest.mark.parametrize("level", all_levels(), ids=lambda level: f"level{level.key}")
def test_defaults_come_from_the_level_registry(level):
    config = TrainConfig(level=level.key).resolved()
    rate = level.learning_rate
    if level.fine_tuning is not None:  # on cached views the backbone may name its own (tests/test_fine_tuning.py)
        rate = get_backbone(config.backbone).fine_tuning_rate or level.fine_tuning.learning_rate or rate
    assert (config.epochs, config.learning_rate, config.schedule) == (level.epochs, rate, level.schedule)
    assert config.augment == (preset(level.augment) if level.can_augment else preset("none"))
    assert (config.backbone is not None) == level.needs_backbone
    assert config.image_size == (level.image_size or get_backbone(config.backbone).image_size)
    # An augmentation asked of a level that cannot augment is not silently recorded as used.
    assert TrainConfig(level=level.key, augment=preset("aggressive")).resolved().augment == (
        preset("aggressive") if level.can_augment else preset("none"))


@pytest.mark.slow
def test_level2_on_real_photos_with_genuine_weights(shared, monkeypatch):
    """mobilenet_025's real ImageNet weights on 40 cats and 40 dogs: bottleneck features work."""
    monkeypatch.setenv("LITTLE_DATA_SHARED_DIR", str(shared))
    config = TrainConfig(level=2, backbone="mobilenet_025", weights="imagenet", epochs=10, batch_size=16,
                         limit_per_class=40, data_dir=str(shared / "datasets" / "cats_vs_dogs"))
    result = train(config)
    card = result.entry.card
    assert card.weights.startswith("file mobilenet_2_5_224_tf_no_top.h5")
    assert card.dataset["counts"]["validation"] == {"cats": 40, "dogs": 40}
    assert card.metrics.val_accuracy >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vgg16", "mobilenet_v2", "efficientnet_lite2"])  # mobilenet_025: real photos below
def test_levels_2_and_3_on_every_backbone(shapes, backbone):
    """Random weights at 32x32: the whole path (features, cache, head, fine-tuning, save) per backbone."""
    common = dict(backbone=backbone, weights="none", epochs=1, batch_size=8, image_size=TINY, data_dir=str(shapes))
    level2 = train(TrainConfig(level=2, **common))
    level3 = train(TrainConfig(level=3, **common))
    assert level3.entry.card.started_from == level2.entry.id
    assert level3.entry.card.backbone_flops > 0
    reloaded = load_model(level3.entry)
    assert single_view(reloaded).get_layer(backbone) is not None
    probs = Predictor(level3.entry, model=reloaded).predict_arrays(np.zeros((1, 50, 40, 3), np.uint8)[:, :32, :32])
    assert probs.shape == (1, 2) and abs(probs.sum() - 1) < 1e-5


@pytest.mark.parametrize("arch", ["tutorial", "xception"])
def test_bfloat16_training_saves_an_ordinary_float32_model(shapes, arch):
    import keras

    result = train(tiny_config(shapes, 1, epochs=1, arch=arch, precision="bfloat16"))
    assert keras.config.dtype_policy().name == "float32"  # the process's policy is left as it was
    assert result.entry.card.hyperparameters["precision"] == "bfloat16"
    model = load_model(result.entry)
    assert {layer.dtype_policy.name for layer in model._flatten_layers()} == {"float32"}
    probs = Predictor(result.entry, model=model).predict_arrays(np.zeros((2, 32, 32, 3), np.uint8))
    assert probs.dtype == np.float64 and np.allclose(probs.sum(1), 1)


def test_as_float32_keeps_the_weights_and_answers_within_bfloat16_rounding():
    from core.networks.factories import as_float32, build_in_precision, make_small_xception

    mixed = build_in_precision(lambda: make_small_xception(2, (48, 48)), "bfloat16")
    assert mixed.get_layer("predictions").dtype_policy.name == "float32"  # the output stays float32
    assert mixed.get_layer("residual_trunk").get_layer("stem").dtype_policy.name == "mixed_bfloat16"
    plain = as_float32(mixed)
    assert {layer.dtype_policy.name for layer in plain._flatten_layers()} == {"float32"}
    for a, b in zip(mixed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(plain.predict(x, verbose=0), mixed.predict(x, verbose=0), atol=0.05)


def test_precision_is_checked():
    with pytest.raises(ConfigError, match="precision must be one of float32, bfloat16"):
        TrainConfig(level=1, precision="float8")
    with pytest.raises(ConfigError, match="level 2's pretrained layers load as float32"):
        TrainConfig(level=2, precision="bfloat16")
