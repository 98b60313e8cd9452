"""`RandomAffine`: the augmentation layer behind `core.augment.make_augmenter`.

A module of its own because it imports Keras, which `core.augment` (used by the app's pages at
start-up) does not.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from core.augment import AugmentConfig


class RandomAffine(keras.layers.Layer):
    """Random flip, rotation, shift, shear and zoom as one affine map about the image centre.

    Each image draws its own transform; in inference mode the layer passes images through.

    Args:
        config: the `AugmentConfig` (its geometric fields are used).
        seed: makes the sequence of transforms reproducible.
    """

    def __init__(self, config: AugmentConfig, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, limit):
        return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

    def transforms(self, batch, height, width):
        """The (batch, 8) projective transforms mapping output to input pixel coordinates."""
        c = self.config
        one, zero = ops.ones((batch,)), ops.zeros((batch,))
        angle = self._uniform(batch, c.rotation * np.pi / 180.0) if c.rotation else zero
        shear = self._uniform(batch, c.shear) if c.shear else zero
        zoom_x = 1.0 + self._uniform(batch, c.zoom) if c.zoom else one
        zoom_y = 1.0 + self._uniform(batch, c.zoom) if c.zoom else one
        shift_x = self._uniform(batch, c.width_shift) * width if c.width_shift else zero
        shift_y = self._uniform(batch, c.height_shift) * height if c.height_shift else zero
        if c.horizontal_flip:
            flip = ops.where(keras.random.uniform((batch,), seed=self.seed_generator) < 0.5, -1.0, 1.0)
        else:
            flip = one
        cos, sin = ops.cos(angle), ops.sin(angle)
        # A = rotation @ shear @ zoom @ flip, acting on (x, y) measured from the centre.
        a00 = cos * zoom_x * flip
        a01 = (cos * shear - sin) * zoom_y
        a10 = sin * zoom_x * flip
        a11 = (sin * shear + cos) * zoom_y
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a02 = cx + shift_x - (a00 * cx + a01 * cy)
        a12 = cy + shift_y - (a10 * cx + a11 * cy)
        return ops.stack([a00, a01, a02, a10, a11, a12, zero, zero], axis=1)

    def call(self, images, training=None):
        if not training:
            return images
        shape = ops.shape(images)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        transforms = self.transforms(shape[0], height, width)
        return ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                          fill_mode=self.config.fill_mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(AugmentConfig.from_dict(config.pop("config")), **config)
