"""A model cut in two where the part that level 3 fine-tunes starts.

Below the cut every layer is frozen, so the same picture always gives the same activations there:
level 3 computes them once per view of each photo (`core.training.view_cache`) and trains only the
part above. Both parts share their layers with the model, so training the top trains the model,
and what is saved is the whole network, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from core.errors import ConfigError
from core.networks.backbones import Backbone


@dataclass
class SplitNetwork:
    """A chain model (image -> resize -> preprocessing -> base -> pooling -> head) cut inside its base.

    Attributes:
        bottom: raw pixels -> the activation map entering the top block (frozen).
        top: that activation map -> the model's output; its top block and head train.
        cut_layer: the base's layer whose output crosses the cut (part of the cache key).
    """

    bottom: keras.Model
    top: keras.Model
    cut_layer: str


def cut_layer(base: keras.Model, prefixes: tuple[str, ...]) -> str:
    """The one layer of `base` below the top block (`prefixes`) whose output the top block reads.

    Raises:
        ConfigError: no layer matches, or the top block reads more than one tensor from below
            (a residual that jumps the cut), so no single activation map could be cached.
    """
    inside = {layer.name for layer in base.layers if layer.name.startswith(prefixes)}
    if not inside:
        raise ConfigError(f"No layer of {base.name} matches the top block {', '.join(prefixes)}.")
    below = set()
    for layer in base.layers:
        if layer.name not in inside:
            continue
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                source = tensor._keras_history.operation.name
                if source not in inside:
                    below.add(source)
    if len(below) != 1:
        raise ConfigError(f"The top block {', '.join(prefixes)} of {base.name} reads {len(below)} tensors from the "
                          f"layers below it ({', '.join(sorted(below))}); a cut needs exactly one.")
    return below.pop()


def split_at_top_block(model: keras.Model, backbone: Backbone, prefixes: tuple[str, ...]) -> SplitNetwork:
    """`model` (one view, as level 2 saves it) as a frozen bottom and a trainable top, layers shared."""
    names = [layer.name for layer in model.layers]
    if backbone.name not in names:
        raise ConfigError(f"The model has no {backbone.name} base to cut.")
    at = names.index(backbone.name)
    base = model.layers[at]
    cut = cut_layer(base, prefixes)
    lower = keras.Model(base.input, base.get_layer(cut).output, name=f"{backbone.name}_below_{cut}")
    upper = keras.Model(base.get_layer(cut).output, base.output, name=f"{backbone.name}_above_{cut}")

    image = keras.Input(shape=model.input_shape[1:], name="image")
    x = image
    for layer in model.layers[1:at]:  # resize, preprocessing: weightless
        x = layer(x)
    bottom = keras.Model(image, lower(x), name="frozen_bottom")

    activations = keras.Input(shape=tuple(lower.output.shape[1:]), name="activations")
    y = upper(activations)
    for layer in model.layers[at + 1:]:  # pooling, the head
        y = layer(y)
    top = keras.Model(activations, y, name="trainable_top")
    return SplitNetwork(bottom, top, cut)
