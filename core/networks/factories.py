"""Model factories for the three levels. Every model takes raw RGB pixels (0-255, any size):
resizing and preprocessing are layers inside it, so training and inference cannot disagree.
"""

from __future__ import annotations

import keras
from keras import layers

from core.networks.backbones import Backbone, ResolvedWeights, build_base
from core.errors import ConfigError
from core.levels import PRECISIONS
from core.networks.layers import CaffePreprocess, ClassGroups, HorizontalFlip  # noqa: F401 - registers them for loading


def preprocessing_layer(kind: str) -> layers.Layer:
    """The backbone's input preprocessing as a serialisable layer."""
    if kind == "vgg":
        return CaffePreprocess(name="preprocess")
    if kind == "tf":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")
    if kind == "unit":
        return layers.Rescaling(1 / 255.0, name="preprocess")
    if kind == "lite":  # EfficientNet-Lite's (x - 127) / 128
        return layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="preprocess")
    if kind == "raw":  # the network scales its own input (Keras' EfficientNetV2, ConvNeXt)
        return layers.Identity(name="preprocess")
    raise ConfigError(f"Unknown preprocessing {kind!r}; use vgg, tf, lite, unit or raw.")


def output_layer(num_classes: int, name: str = "predictions") -> layers.Layer:
    """One sigmoid unit for two classes (the tutorial's), softmax otherwise; always in float32.

    Under a bfloat16 policy the probabilities would have 3 significant digits and the loss would
    saturate; Keras' mixed-precision guide keeps the last layer in float32 for that reason.
    """
    if num_classes < 2:
        raise ConfigError(f"A classifier needs at least two classes, got {num_classes}.")
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name=name, dtype="float32")
    return layers.Dense(num_classes, activation="softmax", name=name, dtype="float32")


def build_in_precision(factory, precision: str):
    """`factory()` with every layer it creates computing in `precision` (weights stay float32).

    bfloat16 roughly doubles training speed where the hardware has it (CPUs with AVX512-BF16 or
    AMX, recent GPUs); elsewhere it is emulated and slower. The global policy is restored after.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        return factory()
    finally:
        keras.config.set_dtype_policy(previous)


def as_float32(model: keras.Model) -> keras.Model:
    """The same network and weights with every layer computing in float32: what is saved and served.

    A model trained in bfloat16 keeps float32 weights, so only the layers' compute policy changes;
    the exports, the shared-trunk check and Grad-CAM then see an ordinary float32 model.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers()):
        return model

    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(to_float32(value) for value in node)
        return node

    clone = model.__class__.from_config(to_float32(model.get_config()))
    clone.set_weights(model.get_weights())
    return clone


def loss_for(num_classes: int) -> str:
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def _raw_input(image_size: tuple[int, int]):
    inputs = keras.Input(shape=(None, None, 3), name="image")
    resized = layers.Resizing(*image_size, interpolation="bilinear", name="resize")(inputs)
    return inputs, resized


def make_level1_model(num_classes: int = 2, image_size=(150, 150), dropout: float = 0.5) -> keras.Model:
    """Level 1: the tutorial's small convnet, trained from scratch.

    Three Conv(3x3)-ReLU-MaxPool blocks (32, 32, 64 filters), Flatten, Dense(64), Dropout, output.
    """
    _check_dropout(dropout)
    inputs, x = _raw_input(tuple(image_size))
    x = preprocessing_layer("unit")(x)
    for filters in (32, 32, 64):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = output_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="level1_small_convnet")


def make_small_xception(num_classes: int = 2, image_size=(180, 180), dropout: float = 0.5) -> keras.Model:
    """Level 1's modern option: the small Xception-like convnet of Deep Learning with Python (3rd ed., ch. 9).

    A 5x5 stem, then five residual blocks (32 to 512 filters) of batch normalisation, ReLU and two
    separable 3x3 convolutions, each halving the map with max pooling while a strided 1x1
    convolution carries the residual; global pooling, dropout, output. About 0.7 M weights.
    The blocks form one nested network ("residual_trunk") so the top level stays a chain, which
    Grad-CAM re-runs layer by layer and taps at the trunk's output.
    """
    _check_dropout(dropout)
    trunk_input = keras.Input((*image_size, 3), name="scaled")
    x = layers.Conv2D(32, 5, use_bias=False, name="stem")(trunk_input)
    for size in (32, 64, 128, 256, 512):
        residual = x
        for i in (1, 2):
            x = layers.BatchNormalization(name=f"block{size}_bn{i}")(x)
            x = layers.Activation("relu", name=f"block{size}_relu{i}")(x)
            x = layers.SeparableConv2D(size, 3, padding="same", use_bias=False, name=f"block{size}_sepconv{i}")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{size}_pool")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same", use_bias=False, name=f"block{size}_shortcut")(residual)
        x = layers.Add(name=f"block{size}_add")([x, residual])
    trunk = keras.Model(trunk_input, x, name="residual_trunk")
    inputs, x = _raw_input(tuple(image_size))
    x = preprocessing_layer("unit")(x)
    x = trunk(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout)(x)
    outputs = output_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="level1_small_xception")


#: Level 1's networks: name -> factory (`TrainConfig.arch`; sizes in `core.levels.SMALL_CONVNETS`).
SMALL_CONVNET_FACTORIES = {"tutorial": make_level1_model, "xception": make_small_xception}


def make_feature_extractor(backbone: Backbone, weights: ResolvedWeights, image_size=None) -> keras.Model:
    """Raw image -> bottleneck features: the frozen base, pooled when its map is large."""
    image_size = tuple(image_size or backbone.image_size)
    base = build_base(backbone, weights, image_size)
    base.trainable = False
    inputs, x = _raw_input(image_size)
    x = preprocessing_layer(backbone.preprocessing)(x)
    x = base(x, training=False)
    if backbone.pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="feature_extractor")


def make_imagenet_classifier(backbone: Backbone, weights: ResolvedWeights, image_size=None) -> keras.Model:
    """The backbone's own ImageNet classifier on raw pixels: [N, H, W, 3] -> [N, 1000] probabilities.

    Built as the other levels are (raw pixels, resize, preprocessing, the base as one named layer,
    then the top), so that Grad-CAM and fine-tuning find the base under the backbone's name.
    """
    image_size = tuple(image_size or backbone.image_size)
    full = build_base(backbone, weights, image_size, with_classifier=True)
    features = full.get_layer(backbone.classifier.feature_layer)
    base = keras.Model(full.inputs, features.output, name=backbone.name)
    base.trainable = False
    inputs, x = _raw_input(image_size)
    x = preprocessing_layer(backbone.preprocessing)(x)
    x = base(x, training=False)
    for layer in full.layers[full.layers.index(features) + 1:]:  # the top: pooling, the 1000 classes
        x = layer(x)
    model = keras.Model(inputs, x, name="imagenet_classifier")
    model.trainable = False
    return model


def group_classes(imagenet_classifier: keras.Model, groups: list[list[int]]) -> keras.Model:
    """Level 0: an ImageNet classifier (`make_imagenet_classifier`) with its 1000 classes grouped into the
    data set's (each class scored by the mean probability of its ImageNet classes: `ClassGroups`)."""
    outputs = ClassGroups(groups, aggregate=ClassGroups.MEAN, name="class_groups")(imagenet_classifier.output)
    model = keras.Model(imagenet_classifier.inputs, outputs, name="grouped_imagenet_classifier")
    model.trainable = False  # nothing of level 0 is trained, the ImageNet top included
    return model


def make_grouped_classifier(backbone: Backbone, weights: ResolvedWeights, groups: list[list[int]],
                            image_size=None) -> keras.Model:
    """Level 0 in one call: `group_classes(make_imagenet_classifier(...), groups)`."""
    return group_classes(make_imagenet_classifier(backbone, weights, image_size), groups)


def make_head(feature_shape, num_classes: int = 2, dropout: float = 0.5, hidden: int = 256) -> keras.Model:
    """Level 2's small classifier on bottleneck features: [Flatten], Dense(256), Dropout, output."""
    _check_dropout(dropout)
    inputs = keras.Input(shape=tuple(feature_shape), name="features")
    x = layers.Flatten()(inputs) if len(feature_shape) > 1 else inputs
    x = layers.Dense(hidden, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = output_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="head")


def attach_head(extractor: keras.Model, head: keras.Model) -> keras.Model:
    """Raw image -> prediction: the extractor's graph with the head on top (weights shared)."""
    return keras.Model(extractor.inputs, head(extractor.outputs[0]), name="bottleneck_classifier")


def prepare_fine_tuning(model: keras.Model, backbone: Backbone, top_block: str | None = None) -> keras.Model:
    """Level 3: unfreezes the base's top block only (`top_block`: its size, default the tutorial's
    "large"); batch norm stays frozen, in inference mode.

    Frozen batch-norm statistics matter: updating them on small batches of new data wrecks the
    pretrained features (the same reason the tutorial starts from a trained head).
    """
    base = model.get_layer(backbone.name)
    base.trainable = True
    unfrozen = 0
    for layer in base.layers:
        layer.trainable = (backbone.is_top_block(layer.name, top_block)
                           and not isinstance(layer, layers.BatchNormalization))
        unfrozen += bool(layer.trainable and layer.weights)
    if unfrozen == 0:
        raise ConfigError(f"No layer of {backbone.name} matches its top block {backbone.top_block_prefixes(top_block)}.")
    return model


FLIP_AVERAGE = "flip_average"


def with_flip_average(model: keras.Model) -> keras.Model:
    """`model`, predicting the mean of its outputs on the image and on its mirror image.

    A classifier trained on mirrored photos (or on an ImageNet base) sees a photo and its mirror
    as two views of the same thing; averaging both steadies borderline calls at twice the
    inference cost (measured gains: docs/design.md). Wrong for classes that a mirror changes
    (left/right arrows, text), where it should be turned off.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    mirrored = HorizontalFlip(name="mirror")(inputs)
    outputs = layers.Average(name=FLIP_AVERAGE)([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_{FLIP_AVERAGE}")


def single_view(model: keras.Model) -> keras.Model:
    """The model inside a `with_flip_average` wrapper (weights shared), else `model` itself."""
    if not any(layer.name == FLIP_AVERAGE for layer in model.layers):
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def count_params(model: keras.Model) -> dict[str, int]:
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    total = sum(int(w.numpy().size) for w in model.weights)
    return {"trainable": trainable, "total": total}


def _check_dropout(dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
