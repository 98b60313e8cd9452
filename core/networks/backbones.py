"""Pretrained convolutional bases: a registry of what each needs and costs.

Each backbone knows its native image size, its preprocessing (as a Keras layer, so it lives inside
saved models), which layers form its "top block" for fine-tuning, where its weights come from, and
its forward pass's FLOPs (as `count_flops` measures them; the tests check the figure). Adding a
backbone is one `register_backbone(Backbone(...))` with a builder function; see docs/architecture.md, "Adding a backbone".
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from core import settings
from core.errors import ConfigError, LittleDataError


class WeightsError(LittleDataError):
    """Pretrained weights that cannot be had; the message says how to supply a file."""


@dataclass(frozen=True)
class ImageNetClassifier:
    """How to build a backbone with its 1000-class ImageNet top (for level 0).

    Attributes:
        builder: `builder(keras, weights, input_shape)` -> the whole classifier, softmax output.
        feature_layer: the name of its last convolutional feature map; the layers after it, in order,
            are the top (pooling and the 1000-class layer; Keras names them anew in each process).
        local_files: weight files (with the top) searched for before Keras downloads.
    """

    builder: Callable
    feature_layer: str
    local_files: tuple[str, ...]


@dataclass(frozen=True)
class Backbone:
    """A registered convolutional base.

    Attributes:
        name: registry key and the base model's layer name.
        label: human-readable name.
        image_size: default (height, width).
        preprocessing: "vgg" (caffe-style BGR mean subtraction), "tf" (scale to [-1, 1]), "lite"
            ((x - 127) / 128, EfficientNet-Lite's), "unit" ([0, 1]) or "raw" (the network scales itself).
        top_block: layer-name prefixes unfrozen by level 3 in the tutorial's way (its "large" top
            block: about the last stage, as the tutorial unfreezes VGG16's last convolutional block).
        smaller_top_blocks: other sizes level 3 may unfreeze ("medium", "small"), same form.
        top_block_shares: each top block's share of a forward pass's FLOPs, for the time estimate
            (checked by a test); measured by building the network where missing.
        default_top_block, fine_tuning_rate: the top block level 3 unfreezes on cached views, and
            its learning rate, where measured best for this network (None: the level's defaults).
        pooling: "flatten" keeps the feature map (small maps), "avg" pools it (large maps).
        local_files: file names searched for in `settings.weights_dirs()` before Keras downloads.
        builder: `builder(keras, weights, input_shape)` -> the Keras base model without its top.
        flops: floating-point operations of one forward pass at `image_size` (`count_flops`), or
            None to have `core.training.estimate` measure them when first needed.
        classifier: its ImageNet classifier, for level 0 (None: level 0 is not offered).
        forward_cost, training_cost: for the time estimate, its seconds per GFLOP against
            MobileNetV2's, on which the levels' cost models were measured: forward passes only
            (extraction, level 0, scoring), and level 3's training steps. Large dense convolutions
            run nearer the matmul peak than depthwise ones; 1.0 where unmeasured.
    """

    name: str
    label: str
    image_size: tuple[int, int]
    preprocessing: str
    top_block: tuple[str, ...]
    pooling: str
    local_files: tuple[str, ...]
    builder: Callable
    flops: int | None = None
    classifier: ImageNetClassifier | None = None
    forward_cost: float = 1.0
    training_cost: float = 1.0
    smaller_top_blocks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    top_block_shares: Mapping[str, float] = field(default_factory=dict)
    default_top_block: str | None = None
    fine_tuning_rate: float | None = None

    def build(self, weights, image_size: tuple[int, int] | None = None):
        """The Keras base model (no top) with `weights` = "imagenet", None, or a file path."""
        import keras

        size = tuple(image_size or self.image_size)
        base = self.builder(keras, weights, (*size, 3))
        base.name = self.name
        return base

    @property
    def top_block_sizes(self) -> tuple[str, ...]:
        """The top blocks level 3 can unfreeze, largest first."""
        return (LARGE_TOP_BLOCK, *self.smaller_top_blocks)

    def top_block_prefixes(self, size: str | None = None) -> tuple[str, ...]:
        """The layer-name prefixes of one top block ("large", the tutorial's, by default)."""
        if size in (None, LARGE_TOP_BLOCK):
            return self.top_block
        try:
            return self.smaller_top_blocks[size]
        except KeyError:
            raise ConfigError(f"{self.label} has top blocks {', '.join(self.top_block_sizes)}; "
                              f"got {size!r}.") from None

    def is_top_block(self, layer_name: str, size: str | None = None) -> bool:
        return layer_name.startswith(self.top_block_prefixes(size))


def _vgg16(keras, weights, shape):
    return keras.applications.VGG16(include_top=False, weights=weights, input_shape=shape)


def _mobilenet_v2(keras, weights, shape):
    return keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=shape, alpha=1.0)


def _mobilenet_v2_classifier(keras, weights, shape):
    return keras.applications.MobileNetV2(include_top=True, weights=weights, input_shape=shape, alpha=1.0)


def _efficientnet_lite2(keras, weights, shape):
    from core.networks.efficientnet_lite import build_efficientnet_lite2

    return build_efficientnet_lite2(keras, weights, shape)


def _efficientnet_lite2_classifier(keras, weights, shape):
    from core.networks.efficientnet_lite import build_efficientnet_lite2

    return build_efficientnet_lite2(keras, weights, shape, include_top=True)


def _efficientnet_v2b0(keras, weights, shape):
    return keras.applications.EfficientNetV2B0(include_top=False, weights=weights, input_shape=shape,
                                               include_preprocessing=True)


def _convnext_tiny(keras, weights, shape):
    return keras.applications.ConvNeXtTiny(include_top=False, weights=weights, input_shape=shape,
                                           include_preprocessing=True)


def _mobilenet_025(keras, weights, shape):
    return keras.applications.MobileNet(include_top=False, weights=weights, input_shape=shape, alpha=0.25)


#: The top block of the tutorial's size: the one `Backbone.top_block` names.
LARGE_TOP_BLOCK = "large"

# EfficientNet-Lite2's layer names (core.networks.efficientnet_lite imports Keras only inside its builder).
LITE2_FEATURE_LAYER = "head_relu"
LITE2_TOP_BLOCK = tuple(f"block{n:02d}_" for n in range(15, 21)) + ("head_",)
# Smaller top blocks, inside the 9x9 stage: its last three blocks, or its last, with the head convolution.
LITE2_SMALLER_TOP_BLOCKS = {"medium": tuple(f"block{n:02d}_" for n in range(18, 21)) + ("head_",),
                            "small": ("block20_", "head_")}

BACKBONES: dict[str, Backbone] = {}
DEFAULT_BACKBONE = "efficientnet_lite2"  # the strongest genuine ImageNet network here (docs/design.md, "Backbones")


def register_backbone(backbone: Backbone, replace: bool = False) -> Backbone:
    """Adds `backbone` to the registry; refuses to overwrite a name unless `replace`."""
    if backbone.name in BACKBONES and not replace:
        raise ConfigError(f"Backbone {backbone.name!r} is already registered.")
    BACKBONES[backbone.name] = backbone
    return backbone


def get_backbone(name: str) -> Backbone:
    """The registered backbone; raises ConfigError listing the valid names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}; choose from {', '.join(BACKBONES)}.") from None


register_backbone(Backbone(
    "vgg16", "VGG16 (the tutorial's)", (150, 150), "vgg", ("block5",), "flatten",
    ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",), _vgg16, flops=13_230_982_656,
    forward_cost=0.3, top_block_shares={"large": 0.0867}))  # 16.2 img/s extracting, at 22x MobileNetV2's GFLOPs
register_backbone(Backbone(  # top block: the 7x7 stage, blocks 14-16 and the final 1x1 convolution
    "mobilenet_v2", "MobileNetV2 (alpha 1.0)", (224, 224), "tf",
    ("block_14_", "block_15_", "block_16_", "Conv_1", "out_relu"), "avg",
    ("mobilenet_v2_1.0_imagenet_torchvision_notop.weights.h5",
     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"), _mobilenet_v2, flops=598_988_544,
    classifier=ImageNetClassifier(_mobilenet_v2_classifier, "out_relu",
                                  ("mobilenet_v2_1.0_imagenet_torchvision.weights.h5",
                                   "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")),
    smaller_top_blocks={"medium": ("block_16_", "Conv_1", "out_relu"), "small": ("Conv_1", "out_relu")},
    top_block_shares={"large": 0.2472, "medium": 0.1438, "small": 0.0670},
    default_top_block="medium"))  # its small block (the last 1x1 convolution alone) fell below level 2; 1e-3 hurt
register_backbone(Backbone(
    "mobilenet_025", "MobileNet v1 (alpha 0.25), quick demo", (224, 224), "tf",
    ("conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"), "avg",
    ("mobilenet_2_5_224_tf_no_top.h5",), _mobilenet_025, flops=81_548_544))
register_backbone(Backbone(  # top block: the 9x9 stage (blocks 15-20) and the head convolution
    "efficientnet_lite2", "EfficientNet-Lite2", (260, 260), "lite", LITE2_TOP_BLOCK, "avg",
    ("efficientnet_lite2_imagenet_torch_layout.npz",), _efficientnet_lite2, flops=1_716_912_544,
    classifier=ImageNetClassifier(_efficientnet_lite2_classifier, LITE2_FEATURE_LAYER,
                                  ("efficientnet_lite2_imagenet_torch_layout.npz",)),
    forward_cost=0.55, training_cost=0.95, smaller_top_blocks=LITE2_SMALLER_TOP_BLOCKS,
    top_block_shares={"large": 0.3622, "medium": 0.2134, "small": 0.1095},
    # Measured on cached views (docs/benchmarks.md, "Fine-tuning in minutes"): the small block as good as the
    # larger ones (3 seeds each) at a third of the time; 1e-3 99.19% over 8 seeds against 99.04% at 1e-4 over 3.
    default_top_block="small", fine_tuning_rate=1e-3))  # 67.9 img/s extracting, 66 s a level-3 epoch (batch norm folded)
register_backbone(Backbone(  # Keras' own; weights="imagenet" downloads them (preprocessing is inside the network)
    "efficientnet_v2b0", "EfficientNetV2-B0", (224, 224), "raw", ("block6", "top_"), "avg",
    ("efficientnetv2-b0_notop.h5",), _efficientnet_v2b0, flops=1_433_612_352))
register_backbone(Backbone(
    "convnext_tiny", "ConvNeXt-Tiny", (224, 224), "raw", ("convnext_tiny_stage_3",), "avg",
    ("convnext_tiny_notop.h5",), _convnext_tiny, flops=8_909_526_528))


@dataclass(frozen=True)
class ResolvedWeights:
    """What to pass to the Keras builder, and how to describe and key it.

    `torch_padding` marks weights trained in PyTorch (torchvision), whose stride-2 convolutions pad
    one pixel on every side; Keras pads only bottom/right, which shifts every downsampling by half
    a pixel and measurably weakens such weights.
    """

    keras_arg: str | None  # "imagenet", None, or a file path
    source: str  # for people and model cards
    key: str  # for the feature cache
    torch_padding: bool = False


def resolve_weights(backbone: Backbone, weights: str | None = None, with_classifier: bool = False) -> ResolvedWeights:
    """Turns a weights setting into something the builder takes.

    Args:
        weights: "imagenet" (a local file if one is found, else Keras' download and cache),
            "none" for random initialisation, or a path to a weights file. None means the
            `LITTLE_DATA_WEIGHTS_<BACKBONE>` setting, else "imagenet".
        with_classifier: weights for the backbone with its ImageNet top (level 0).

    Raises:
        WeightsError: a named file does not exist.
    """
    weights = weights or settings.weights_setting(backbone.name) or "imagenet"
    if weights.lower() == "none":
        return ResolvedWeights(None, "random initialisation", "none")
    if weights.lower() == "imagenet":
        files = backbone.classifier.local_files if with_classifier else backbone.local_files
        for folder in settings.weights_dirs():
            for name in files:
                if (folder / name).is_file():
                    return _file_weights(folder / name)
        return ResolvedWeights("imagenet", "ImageNet (Keras download/cache)", "keras-imagenet")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    return _file_weights(path)


def _file_weights(path: Path) -> ResolvedWeights:
    torch = "torchvision" in path.name
    return ResolvedWeights(str(path), f"file {path.name}" + (" (symmetric padding, as trained)" if torch else ""),
                           f"sha256-{file_digest(path)[:16]}" + ("-torchpad" if torch else ""), torch)


def file_digest(path: Path) -> str:
    """The file's sha256, hashed once per version of the file: pages resolve weights on every run, and
    hashing 25 MB each time cost them ~50 ms. A rewritten or replaced file has a new size, modification
    time, inode or change time (`cp -p` keeps the modification time; the change time it cannot keep)."""
    stat = path.stat()
    return _file_digest(str(path.resolve()), (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns))


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, version: tuple) -> str:  # `version`: the cache key only
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_base(backbone: Backbone, weights: ResolvedWeights, image_size=None, with_classifier: bool = False):
    """Builds the base (or, `with_classifier`, the whole ImageNet classifier) with resolved weights.

    A failed download becomes a WeightsError saying how to supply a file.
    """
    import keras

    try:
        if with_classifier:
            if backbone.classifier is None:
                raise ConfigError(f"{backbone.label} has no ImageNet classifier registered.")
            size = tuple(image_size or backbone.image_size)
            base = backbone.classifier.builder(keras, weights.keras_arg, (*size, 3))
        else:
            base = backbone.build(weights.keras_arg, image_size)
        return with_symmetric_padding(base) if weights.torch_padding else base
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - download, HTTP and file errors all mean the same here
        if weights.keras_arg != "imagenet":
            raise WeightsError(f"Could not load {backbone.label} weights from {weights.source}: {exc}") from exc
        env = f"LITTLE_DATA_WEIGHTS_{backbone.name.upper()}"
        raise WeightsError(
            f"ImageNet weights for {backbone.label} could not be downloaded ({type(exc).__name__}: {exc}). "
            f"Supply a local file instead: --weights /path/to/"
            f"{(backbone.classifier.local_files if with_classifier else backbone.local_files)[0]} on the CLI, "
            f"or {env}=/path/to/file, or put it in a folder named by LITTLE_DATA_WEIGHTS_DIR. "
            "Use --weights none for random weights (for testing only).") from exc


def with_symmetric_padding(base):
    """The same network and weights, with every stride-2 convolution padded 1 pixel on each side.

    That is how PyTorch pads (`padding=1`); Keras' `same` / `correct_pad` pad (0, 1). The output
    shapes are identical (a valid 3x3 stride-2 convolution gives 112 from 225 or 226 pixels), so
    only where the filters sample changes. Built from the model's config, standard layers only.
    """
    import copy

    import keras

    config = copy.deepcopy(base.get_config())
    layers = []
    for layer in config["layers"]:
        cfg = layer["config"]
        if layer["class_name"] == "ZeroPadding2D":
            cfg["padding"] = ((1, 1), (1, 1))
        elif (layer["class_name"] in ("Conv2D", "DepthwiseConv2D") and cfg.get("padding") == "same"
              and tuple(cfg.get("strides", (1, 1))) == (2, 2)):
            pad_name = f"{layer['name']}_pad_symmetric"
            arg = layer["inbound_nodes"][0]["args"][0]
            shape = list(arg["config"]["shape"])
            layers.append({"module": "keras.layers", "class_name": "ZeroPadding2D", "registered_name": None,
                           "name": pad_name, "inbound_nodes": copy.deepcopy(layer["inbound_nodes"]),
                           "config": {"name": pad_name, "padding": ((1, 1), (1, 1)), "data_format": "channels_last",
                                      "trainable": True, "dtype": cfg.get("dtype")}})
            padded = copy.deepcopy(arg)
            padded["config"]["shape"] = [shape[0], shape[1] + 2, shape[2] + 2, shape[3]]
            padded["config"]["keras_history"] = [pad_name, 0, 0]
            layer["inbound_nodes"] = [{"args": (padded,), "kwargs": {}}]
            cfg["padding"] = "valid"
        layers.append(layer)
    config["layers"] = layers
    patched = keras.Model.from_config(config)
    for layer in patched.layers:
        if layer.weights:
            layer.set_weights(base.get_layer(layer.name).get_weights())
    patched.name = base.name
    return patched


def count_flops(model) -> int:
    """Floating-point operations (2 x multiply-adds) of one forward pass of one image.

    Counts convolutions and dense layers, which are nearly all of a convnet's work.
    """
    return int(sum(layer_flops(layer) for layer in leaf_layers(model)))


def layer_flops(layer) -> int:
    """One layer's share of `count_flops` (0 for layers that are not convolutions or dense)."""
    import keras

    if isinstance(layer, keras.layers.SeparableConv2D):  # depthwise k x k, then pointwise 1 x 1
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        c_in = layer.input.shape[-1]
        return 2 * h * w * c_in * layer.depth_multiplier * (kh * kw + c_out)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, h, w, c = layer.output.shape
        kh, kw = layer.kernel_size
        return 2 * h * w * c * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        c_in = layer.input.shape[-1]
        return 2 * h * w * c_out * kh * kw * c_in // layer.groups
    if isinstance(layer, keras.layers.Dense):  # on a feature map (ConvNeXt's 1x1s), once per position
        positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
        return 2 * positions * layer.input.shape[-1] * layer.units
    return 0


def leaf_layers(model):
    """Every layer of `model`, nested networks opened up."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from leaf_layers(layer)
        else:
            yield layer


def top_block_share(backbone: Backbone, size: str | None = None) -> float:
    """The share of a forward pass's FLOPs in one top block: registered, or measured by building the network."""
    size = size or LARGE_TOP_BLOCK
    if size in backbone.top_block_shares:
        return backbone.top_block_shares[size]
    return _measured_top_block_share(backbone.name, size)


@functools.cache
def _measured_top_block_share(name: str, size: str) -> float:
    backbone = get_backbone(name)
    base = backbone.build(None)
    prefixes = backbone.top_block_prefixes(size)
    top = sum(layer_flops(layer) for layer in leaf_layers(base) if layer.name.startswith(prefixes))
    return top / max(count_flops(base), 1)
