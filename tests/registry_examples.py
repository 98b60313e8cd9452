"""docs/architecture.md's worked examples: a level and a backbone added from outside `core/`.

Tests register them for their own duration (see the `tiny_backbone` and `pixel_level` fixtures).
"""

from core.networks.backbones import Backbone
from core.levels import EndToEndCost, Level


def build_tiny_net(keras, weights, input_shape):
    """Two strided convolutions: a backbone small enough to train in a test (weights are ignored)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="stem_conv")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="top_conv")(x)
    return keras.Model(inputs, x)


TINY_BACKBONE = Backbone(
    name="tiny_net", label="Tiny net (tests)", image_size=(32, 32), preprocessing="unit", top_block=("top_",),
    pooling="avg", local_files=(), builder=build_tiny_net, flops=210_096)


def build_seeded_net(keras, weights, input_shape):
    """A tiny backbone whose weights come from fixed seeds: the same features every time it is built,
    as genuine pretrained weights give (random weights would make a new network at every load)."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init(seed=1), name="stem_conv")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", kernel_initializer=init(seed=2), name="top_conv")(x)
    return keras.Model(inputs, x)


SEEDED_BACKBONE = Backbone(
    name="seeded_net", label="Seeded net (tests)", image_size=(32, 32), preprocessing="unit", top_block=("top_",),
    pooling="avg", local_files=(), builder=build_seeded_net, flops=210_096)


def train_pixel_logistic(run):
    """A logistic regression on 32x32 pixels: the simplest level there is."""
    import keras

    from core.networks.factories import output_layer
    from core.training.loop import RecipeResult

    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Resizing(*run.config.image_size, name="resize")(inputs)  # models take raw pixels
    x = keras.layers.Rescaling(1 / 255)(x)
    model = keras.Model(inputs, output_layer(run.num_classes)(keras.layers.Flatten()(x)), name="pixel_logistic")
    run.compile(model)
    history, cancelled = run.fit(model, run.train_dataset(), run.val_dataset())
    return RecipeResult(model, history, cancelled)


PIXEL_LEVEL = Level(
    key=9, short_name="pixel logistic", name="Logistic regression on pixels",
    story="A straight line through pixel space: the baseline every other level must beat.",
    tutorial_accuracy=None, tutorial_setup="", epochs=5, optimizer="adam", learning_rate=1e-2,
    schedule="constant", augment="none", can_augment=False, image_size=(32, 32), needs_backbone=False,
    requires=None, cost=EndToEndCost(train=0.03, evaluate=0.01), gflops=6.144e-6,
    train=train_pixel_logistic)
