"""Data augmentation: one config, built as Keras 3 layers.

The tutorial's `ImageDataGenerator` parameters (rotation in degrees, width and height shift,
shear, zoom, horizontal flip) become one `RandomAffine` layer that, like `ImageDataGenerator`,
composes them into a single transform about the image centre; brightness and contrast are
Keras' `RandomBrightness` and `RandomContrast`.

`preview_variants` draws the same transforms with NumPy and Pillow, at any resolution, for the
Augmentation lab: no TensorFlow to import, and a grid of 9 in milliseconds. `core.data.affine.affine_rows`
is the one formula both use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from core.data.affine import affine_rows
from core.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Random transformations applied to training images.

    Attributes:
        rotation: maximum rotation in degrees (either way).
        width_shift, height_shift: maximum shift as a fraction of the width / height.
        shear: maximum shear intensity (as `ImageDataGenerator`'s shear_range, a fraction).
        zoom: maximum zoom in or out, as a fraction, drawn for each axis on its own.
        horizontal_flip: flip left-right half of the time.
        brightness: maximum brightness change, as a fraction of the value range.
        contrast: maximum contrast change, as a fraction.
        fill_mode: how pixels outside the image are filled ("nearest", "reflect", "constant", "wrap").
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    fill_mode: str = "nearest"

    def __post_init__(self):
        if not 0 <= self.rotation <= 180:
            raise ConfigError(f"rotation must be between 0 and 180 degrees, got {self.rotation}.")
        for name in ("width_shift", "height_shift", "shear", "zoom", "brightness", "contrast"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value}.")
        if self.fill_mode not in ("nearest", "reflect", "constant", "wrap"):
            raise ConfigError(f"fill_mode must be nearest, reflect, constant or wrap, got {self.fill_mode!r}.")

    @property
    def is_identity(self) -> bool:
        return self == replace(AugmentConfig(), fill_mode=self.fill_mode)

    @property
    def is_geometric(self) -> bool:
        """Whether any of flip, rotation, shifts, shear or zoom is on (pixels move)."""
        return not replace(self, brightness=0.0, contrast=0.0).is_identity

    def geometric(self) -> dict:
        """The settings that move pixels, as `RandomAffine`'s keyword arguments."""
        return {name: getattr(self, name) for name in GEOMETRIC_FIELDS}

    def describe(self) -> str:
        """What is on, in a few words: "rotation 40°, shear 0.2, flip"; "nothing" for no augmentation."""
        parts = [f"rotation {self.rotation:g}°"] if self.rotation else []
        parts += [f"{name.replace('_', ' ')} {getattr(self, name):g}" for name in
                  ("width_shift", "height_shift", "shear", "zoom", "brightness", "contrast") if getattr(self, name)]
        parts += ["flip"] if self.horizontal_flip else []
        return ", ".join(parts) or "nothing"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "AugmentConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


GEOMETRIC_FIELDS = ("rotation", "width_shift", "height_shift", "shear", "zoom", "horizontal_flip", "fill_mode")

PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    # The blog's training generator: rescale, shear 0.2, zoom 0.2, horizontal flip.
    "tutorial_train": AugmentConfig(shear=0.2, zoom=0.2, horizontal_flip=True),
    # The blog's "one cat, many pictures" preview generator.
    "tutorial_preview": AugmentConfig(rotation=40, width_shift=0.2, height_shift=0.2, shear=0.2,
                                      zoom=0.2, horizontal_flip=True),
    # "Beyond 95%": more aggressive augmentation.
    "aggressive": AugmentConfig(rotation=40, width_shift=0.25, height_shift=0.25, shear=0.3, zoom=0.3,
                                horizontal_flip=True, brightness=0.3, contrast=0.3),
}

PRESET_LABELS = {
    "none": "None",
    "tutorial_train": "Tutorial (training)",  # short: the lab's column is narrow; `describe` says what is on
    "tutorial_preview": "Tutorial (preview)",
    "aggressive": "Aggressive",
}


def preset(name: str) -> AugmentConfig:
    """The named preset; raises ConfigError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"Unknown augmentation preset {name!r}; choose from {', '.join(PRESETS)}.") from None


def make_augmenter(config: AugmentConfig, seed: int | None = None):
    """A `keras.Sequential` of random layers for float images in [0, 255], or None if identity.

    The geometric part (flip, rotation, shifts, shear, zoom) is one `RandomAffine` layer: one
    resampling per image, about the image centre, as `ImageDataGenerator` does. Chaining Keras'
    separate layers would resample (and blur) the image once per layer, and `RandomShear`
    shears about the top-left corner, shifting the bottom of the picture by up to 30 pixels.
    """
    import keras

    if config.is_identity:
        return None
    layers = []
    seeds = iter(range(1_000)) if seed is None else iter(range(seed, seed + 1_000))

    def next_seed():
        return None if seed is None else next(seeds)

    if config.is_geometric:
        from core.data.random_affine import (
            RandomAffine,  # imports Keras: only when augmenting
        )

        layers.append(RandomAffine(**config.geometric(), seed=next_seed(), name="random_affine"))
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=next_seed()))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=next_seed()))
    return keras.Sequential(layers, name="augmentation")


def view_names(augment: AugmentConfig, views: int) -> list[str]:
    """What each cached view is: "photo", "mirror", then "draw 1", "draw 2"...

    An augmentation that changes nothing has one distinct view, and one that never flips has no
    mirror view; asking for more views than that gives random draws (or the photo alone).
    """
    if views < 1:
        raise ConfigError(f"views must be at least 1, got {views}.")
    if augment.is_identity:
        return ["photo"]
    names = ["photo"] + (["mirror"] if augment.horizontal_flip else [])
    names += [f"draw {k}" for k in range(1, views - len(names) + 1)]
    return names[:views]


def augmented_variants(image: np.ndarray, config: AugmentConfig, n: int = 9, seed: int = 0) -> list[np.ndarray]:
    """N random variants of one HxWx3 uint8 image; the same seed gives the same pictures.

    The first variant is not special: all N are drawn from the augmentation distribution.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ConfigError(f"Expected an HxWx3 image, got shape {image.shape}.")
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}.")
    augmenter = make_augmenter(config, seed=seed)
    if augmenter is None:
        return [image.copy() for _ in range(n)]
    batch = np.repeat(image[None].astype("float32"), n, axis=0)
    out = np.asarray(augmenter(batch, training=True))
    return [np.clip(v, 0, 255).round().astype(np.uint8) for v in out]


# TensorFlow's fill modes as NumPy padding: its "reflect" repeats the edge pixel (d c b a | a b c d).
_PAD_MODES = {"nearest": "edge", "reflect": "symmetric", "wrap": "wrap", "constant": "constant"}


def render_affine(image: np.ndarray, coefficients, fill_mode: str = "nearest") -> np.ndarray:
    """One uint8 HxWx3 image through an affine map (output -> input pixel indices), bilinear, with Pillow.

    Matches `keras.ops.image.affine_transform` (a test checks it): the picture is padded by its
    own size with the fill mode first, as Pillow only fills with a constant.
    """
    return _Canvas(image, fill_mode).render(coefficients)


class _Canvas:
    """A picture padded by its own size in a fill mode (Pillow only fills with a constant), ready to warp."""

    def __init__(self, image: np.ndarray, fill_mode: str):
        from PIL import Image

        self.height, self.width = image.shape[:2]
        self.pad = max(self.height, self.width)
        pad = self.pad
        self.source = Image.fromarray(np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode=_PAD_MODES[fill_mode]))

    def render(self, coefficients) -> np.ndarray:
        from PIL import Image

        a00, a01, a02, a10, a11, a12 = (float(c) for c in coefficients)
        # Pillow samples at pixel centres (index + 0.5): shift the map into its coordinates and the padding.
        data = (a00, a01, a02 + self.pad + 0.5 - 0.5 * (a00 + a01),
                a10, a11, a12 + self.pad + 0.5 - 0.5 * (a10 + a11))
        out = self.source.transform((self.width, self.height), Image.Transform.AFFINE, data,
                                    resample=Image.Resampling.BILINEAR)
        return np.asarray(out)


def preview_variants(image: np.ndarray, config: AugmentConfig, n: int = 9, seed: int = 0) -> list[np.ndarray]:
    """N variants drawn from the same distributions as `make_augmenter`, in NumPy and Pillow.

    For showing augmentation at the resolution it is displayed at, without TensorFlow. The same
    seed gives the same pictures (not the same as training's draws, which use Keras' generator).
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ConfigError(f"Expected an HxWx3 image, got shape {image.shape}.")
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}.")
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    canvas = _Canvas(image, config.fill_mode) if config.is_geometric else None
    variants = []
    for _ in range(n):
        def uniform(limit):
            return float(rng.uniform(-limit, limit)) if limit else 0.0

        out = image
        if config.is_geometric:
            angle = uniform(config.rotation * np.pi / 180.0)
            flip = -1.0 if config.horizontal_flip and rng.uniform() < 0.5 else 1.0
            rows = affine_rows(np.cos(angle), np.sin(angle), uniform(config.shear), 1.0 + uniform(config.zoom),
                               1.0 + uniform(config.zoom), uniform(config.width_shift) * width,
                               uniform(config.height_shift) * height, flip, height, width)
            out = canvas.render(rows)
        if config.brightness or config.contrast:
            pixels = out.astype(np.float32)
            if config.brightness:  # as RandomBrightness: one shift for the whole picture
                pixels = np.clip(pixels + uniform(config.brightness) * 255.0, 0, 255)
            if config.contrast:  # as RandomContrast: about each channel's mean
                mean = pixels.mean(axis=(0, 1), keepdims=True)
                pixels = np.clip((pixels - mean) * (1.0 + uniform(config.contrast)) + mean, 0, 255)
            out = pixels.round().astype(np.uint8)
        variants.append(out.copy() if out is image else out)
    return variants
