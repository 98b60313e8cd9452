"""Batch normalisation folded into the convolution before it, where its statistics are fixed.

In inference mode (or frozen) a batch-norm layer is a per-channel affine map, `x * scale + shift`.
Keras runs it as two passes over the activations after the convolution; folded into the
convolution's kernel and bias it costs nothing, and TensorFlow then fuses convolution, bias and
activation into one oneDNN kernel. That is most of the frozen layers' work in MobileNet-style
networks, whose depthwise convolutions are cheap and whose activation maps are large.

The folded copy shares every other layer with the original (same objects, same weights), so
training the copy trains the original, which is what gets saved: Grad-CAM, export and the model
files never see a folded network.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import layers

_CONVOLUTIONS = (layers.Conv2D, layers.DepthwiseConv2D)


def fold_batch_norm(model: keras.Model, inference: bool = False) -> keras.Model:
    """A copy of `model` with each fixed convolution + batch-norm pair as one convolution with a bias.

    Args:
        model: a functional model (nested functional models are folded too).
        inference: fold every pair, for a copy used only with `training=False` (prediction,
            feature extraction). By default only pairs whose convolution and batch norm are both
            frozen are folded, so the copy trains exactly as `model` does.

    Returns:
        The folded copy; `model` itself when there is nothing to fold (or it is not functional), or
        when the `LITTLE_DATA_FOLD_BATCH_NORM` setting is off.
    """
    from core.settings import fold_batch_norm as folding_on

    if not folding_on():
        return model
    pairs = _foldable_pairs(model, inference)
    if not pairs:
        return model
    folded_bn = {id(bn) for bn in pairs.values()}

    def clone(layer):
        if id(layer) in folded_bn:
            return _PassThrough(name=layer.name)
        if id(layer) in pairs:
            return _folded_convolution(layer, pairs[id(layer)])
        return layer  # shared: the same weights, trained through either model

    try:
        return keras.models.clone_model(model, clone_function=clone, recursive=True)
    except (ValueError, TypeError, NotImplementedError):
        return model  # a graph clone_model cannot rebuild runs unfolded: slower, never wrong


class _PassThrough(layers.Layer):
    """Where a folded batch norm was: its input, unchanged (it takes the batch norm's call arguments)."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def _foldable_pairs(model: keras.Model, inference: bool) -> dict[int, layers.BatchNormalization]:
    """id(convolution) -> the batch norm that is its only consumer, for every pair that may be folded."""
    fixed: Callable[[keras.layers.Layer], bool] = (lambda layer: True) if inference else (
        lambda layer: not layer.trainable)
    pairs = {}
    for layer in _functional_layers(model):
        if not isinstance(layer, layers.BatchNormalization) or not fixed(layer) or len(layer._inbound_nodes) != 1:
            continue
        if layer.axis not in (-1, 3, [3], [-1]) or layer.renorm:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        producer = parents[0].operation if len(parents) == 1 else None
        if (isinstance(producer, _CONVOLUTIONS) and fixed(producer) and producer.data_format == "channels_last"
                and len(producer._inbound_nodes) == 1 and len(producer._outbound_nodes) == 1
                and getattr(producer, "activation", None) in (None, keras.activations.linear)
                and producer.dtype_policy.name == "float32"):
            pairs[id(producer)] = layer
    return pairs


def _functional_layers(model: keras.Model):
    """Every layer of `model` and of the functional models nested in it."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model) and hasattr(layer, "_inbound_nodes") and hasattr(layer, "layers"):
            yield from _functional_layers(layer)


def _folded_convolution(conv, bn: layers.BatchNormalization):
    """`conv` followed by `bn` (with its moving statistics) as one frozen convolution with a bias."""
    kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)
    channels = kernel.shape[2] * kernel.shape[3] if isinstance(conv, layers.DepthwiseConv2D) else kernel.shape[3]
    gamma = keras.ops.convert_to_numpy(bn.gamma).astype(np.float64) if bn.scale else np.ones(channels)
    beta = keras.ops.convert_to_numpy(bn.beta).astype(np.float64) if bn.center else np.zeros(channels)
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    variance = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    bias = keras.ops.convert_to_numpy(conv.bias).astype(np.float64) if conv.use_bias else np.zeros(channels)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    if isinstance(conv, layers.DepthwiseConv2D):  # kernel (h, w, in, multiplier); output channel = in * m + k
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:  # kernel (h, w, in, out)
        kernel = kernel * scale
    config = conv.get_config()
    config.update(use_bias=True, bias_initializer="zeros", bias_regularizer=None, bias_constraint=None,
                  name=f"{conv.name}_folded", trainable=False)
    folded = conv.__class__.from_config(config)
    folded.build(conv.input.shape)
    folded.set_weights([kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)])
    return folded
