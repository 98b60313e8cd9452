"""Batch norm folded into convolutions: the same answers on every backbone, and training still trains the original."""

import keras
import numpy as np
import pytest
from keras import layers

from core.networks.backbones import BACKBONES, build_base, get_backbone, resolve_weights
from core.networks.fold import fold_batch_norm


def batch_norms(model) -> list:
    return [layer for layer in model._flatten_layers() if isinstance(layer, layers.BatchNormalization)]


def randomize_statistics(model, seed: int = 0, spread: float = 1.0) -> None:
    """Batch-norm statistics and affine weights away from their defaults, so that folding them matters.

    `spread` below 1 keeps a deep random network's activations from growing layer after layer, where
    float32 rounding (different, not wrong, in the folded order of operations) would grow with them.
    """
    rng = np.random.default_rng(seed)
    for bn in batch_norms(model):
        channels = bn.moving_mean.shape[0]
        bn.moving_mean.assign(rng.normal(0, 0.5 * spread, channels))
        bn.moving_variance.assign(rng.uniform(1 - 0.8 * spread, 1 + spread, channels))
        if bn.scale:
            bn.gamma.assign(rng.normal(1, 0.3 * spread, channels))
        if bn.center:
            bn.beta.assign(rng.normal(0, 0.3 * spread, channels))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_answers_the_same_folded(name):
    backbone = get_backbone(name)
    keras.utils.set_random_seed(0)
    base = build_base(backbone, resolve_weights(backbone, "none"), (32, 32))
    randomize_statistics(base, spread=0.3)
    folded = fold_batch_norm(base, inference=True)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(base(images, training=False))
    got = keras.ops.convert_to_numpy(folded(images, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    if batch_norms(base):  # VGG16 and ConvNeXt have none: nothing to fold, the model comes back as it was
        assert len(batch_norms(folded)) < len(batch_norms(base)) / 4
    else:
        assert folded is base


def test_depthwise_multipliers_biases_and_shared_outputs():
    inner_input = keras.Input((16, 16, 8))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False)(inner_input)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    inner = keras.Model(inner_input, x, name="inner")  # a nested model, as the backbones are
    inputs = keras.Input((16, 16, 3))
    x = layers.BatchNormalization(scale=False)(layers.Conv2D(8, 3, padding="same", use_bias=True)(inputs))
    y = layers.Conv2D(16, 1, name="used_twice")(inner(x))
    outputs = layers.GlobalAveragePooling2D()(layers.Add()([layers.BatchNormalization(name="kept")(y), y]))
    model = keras.Model(inputs, outputs)
    randomize_statistics(model)
    folded = fold_batch_norm(model, inference=True)
    images = np.random.default_rng(2).normal(size=(4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(folded(images), model(images), atol=1e-5)
    # The convolution whose output also skips past its batch norm cannot absorb it.
    assert [bn.name for bn in batch_norms(folded)] == ["kept"]


def test_only_frozen_pairs_fold_and_training_the_copy_trains_the_original():
    inputs = keras.Input((12, 12, 3))
    x = layers.BatchNormalization(name="frozen_bn")(layers.Conv2D(4, 3, use_bias=False, name="frozen_conv")(inputs))
    x = layers.BatchNormalization(name="tuned_bn")(layers.Conv2D(4, 3, use_bias=False, name="tuned_conv")(x))
    outputs = layers.Dense(1, name="out")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    randomize_statistics(model)
    for name in ("frozen_conv", "frozen_bn", "tuned_bn"):  # as level 3 freezes: batch norms stay frozen
        model.get_layer(name).trainable = False
    folded = fold_batch_norm(model)
    assert [bn.name for bn in batch_norms(folded)] == ["tuned_bn"]  # its convolution still trains
    assert folded.get_layer("tuned_conv") is model.get_layer("tuned_conv")

    before = [w.copy() for w in model.get_weights()]
    folded.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(3)
    folded.train_on_batch(rng.normal(size=(8, 12, 12, 3)).astype("float32"), rng.normal(size=(8, 1)))
    changed = {w.path for w, old in zip(model.weights, before) if not np.array_equal(w.numpy(), old)}
    assert changed == {"tuned_conv/kernel", "out/kernel", "out/bias"}  # trained through the copy
    images = rng.normal(size=(2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(folded(images, training=False), model(images, training=False), atol=1e-5)


def test_a_model_with_nothing_frozen_comes_back_as_it_is():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layers.BatchNormalization()(layers.Conv2D(2, 3)(inputs)))
    assert fold_batch_norm(model) is model


def test_the_setting_turns_folding_off(monkeypatch):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layers.BatchNormalization()(layers.Conv2D(2, 3)(inputs)))
    assert fold_batch_norm(model, inference=True) is not model
    monkeypatch.setenv("LITTLE_DATA_FOLD_BATCH_NORM", "0")
    assert fold_batch_norm(model, inference=True) is model
