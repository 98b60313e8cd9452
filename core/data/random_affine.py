"""`RandomAffine`: the augmentation layer behind `core.data.augment.make_augmenter`.

A module of its own because it imports Keras, which `core.data.augment` (read by the app's pages at
start-up) does not.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from core.data.affine import affine_rows

FILL_MODES = ("nearest", "reflect", "constant", "wrap")


class RandomAffine(keras.layers.Layer):
    """Random flip, rotation, shift, shear and zoom as one affine map about the image centre.

    Like `ImageDataGenerator`, and unlike a chain of Keras' separate random layers, each image is
    resampled once. Each image draws its own transform; in inference mode images pass through.

    Args:
        rotation: maximum rotation in degrees, either way (0-180).
        width_shift, height_shift: maximum shift as a fraction of the width / height (0-1).
        shear: maximum shear intensity, as `ImageDataGenerator`'s `shear_range` (0-1).
        zoom: maximum zoom in or out, as a fraction, drawn for each axis on its own (0-1).
        horizontal_flip: mirror half of the images left to right.
        fill_mode: how pixels from outside the image are filled: "nearest", "reflect",
            "constant" (zeros) or "wrap".
        seed: makes the sequence of transforms reproducible.
    """

    def __init__(self, rotation: float = 0.0, width_shift: float = 0.0, height_shift: float = 0.0,
                 shear: float = 0.0, zoom: float = 0.0, horizontal_flip: bool = False,
                 fill_mode: str = "nearest", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rotation <= 180:
            raise ValueError(f"rotation must be between 0 and 180 degrees, got {rotation}.")
        for name, value in (("width_shift", width_shift), ("height_shift", height_shift), ("shear", shear),
                            ("zoom", zoom)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}.")
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}.")
        self.rotation = float(rotation)
        self.width_shift = float(width_shift)
        self.height_shift = float(height_shift)
        self.shear = float(shear)
        self.zoom = float(zoom)
        self.horizontal_flip = bool(horizontal_flip)
        self.fill_mode = fill_mode
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, limit):
        return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

    def transforms(self, batch, height, width):
        """The (batch, 8) projective transforms mapping output to input pixel coordinates."""
        one, zero = ops.ones((batch,)), ops.zeros((batch,))
        angle = self._uniform(batch, self.rotation * np.pi / 180.0) if self.rotation else zero
        shear = self._uniform(batch, self.shear) if self.shear else zero
        zoom_x = 1.0 + self._uniform(batch, self.zoom) if self.zoom else one
        zoom_y = 1.0 + self._uniform(batch, self.zoom) if self.zoom else one
        shift_x = self._uniform(batch, self.width_shift) * width if self.width_shift else zero
        shift_y = self._uniform(batch, self.height_shift) * height if self.height_shift else zero
        if self.horizontal_flip:
            flip = ops.where(keras.random.uniform((batch,), seed=self.seed_generator) < 0.5, -1.0, 1.0)
        else:
            flip = one
        rows = affine_rows(ops.cos(angle), ops.sin(angle), shear, zoom_x, zoom_y, shift_x, shift_y, flip,
                           height, width)
        return ops.stack([*rows, zero, zero], axis=1)

    def call(self, images, training=None):
        if not training:
            return images
        shape = ops.shape(images)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        transforms = self.transforms(shape[0], height, width)
        return ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode=self.fill_mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "width_shift": self.width_shift,
                "height_shift": self.height_shift, "shear": self.shear, "zoom": self.zoom,
                "horizontal_flip": self.horizontal_flip, "fill_mode": self.fill_mode, "seed": self.seed}
