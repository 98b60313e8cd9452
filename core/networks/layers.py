"""Little Data's own Keras layers, in one file that needs nothing but Keras and NumPy.

Saved models hold these layers by their registered names (`little_data>...`). The file is
self-contained on purpose: a `.keras` export ships a copy of it, so a user can load the model
with `import little_data_layers` and no other code of ours.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


@keras.saving.register_keras_serializable(package="little_data")
class CaffePreprocess(layers.Layer):
    """VGG's preprocessing: RGB to BGR, then subtract the ImageNet channel means (no scaling)."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=inputs.dtype)


@keras.saving.register_keras_serializable(package="little_data")
class HorizontalFlip(layers.Layer):
    """Mirrors images left to right, every time: a fixed view for test-time averaging."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-2)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="little_data")
class ClassGroups(layers.Layer):
    """ImageNet probabilities [N, 1000] -> the data set's classes, each scored from its ImageNet group.

    `aggregate="mean"` (what level 0 builds): each class's score is its group's mean probability, the
    scores renormalised over the groups. That is the group's probability divided by its share of
    ImageNet's classes: the classifier was trained with every class equally likely, so a group of 118
    classes starts with 118 shares of the probability and a group of 13 with 13, and dividing by the
    share compares the groups on the photo's evidence alone (Bayes' rule, a posterior over its prior).
    Summing did not divide: a cat photo's stray probability over 118 dog breeds outweighed 13 cats, and
    level 0 called 15% of the validation cats dogs. The mean of the group's log-probabilities also
    ignores the sizes, but scores a broad group (every animal against every object) by its average
    member, which for any one photo is unrelated to it (`scripts/level0_grouping.py` measures all three).
    `aggregate="sum"` (models saved before `aggregate` existed): each class's summed probability,
    renormalised over the groups.
    Probability spent on other ImageNet classes is ignored. Two classes give one unit, the second
    class's probability, as the other levels do.

    Args:
        groups: for each class of the data set, in order, its ImageNet class indices.
        aggregate: "mean" or "sum".
    """

    MEAN = "mean"  # core.networks.imagenet.GroupScore spells the same for code that cannot import Keras:
    SUM = "sum"  # this file stays self-contained (a .keras export ships it)

    def __init__(self, groups: list[list[int]], aggregate: str = MEAN, **kwargs):
        super().__init__(**kwargs)
        if len(groups) < 2 or not all(groups):
            raise ValueError(f"ClassGroups needs at least two non-empty groups, got {groups}.")
        if aggregate not in (self.MEAN, self.SUM):
            raise ValueError(f"ClassGroups' aggregate is {self.MEAN!r} or {self.SUM!r}, got {aggregate!r}.")
        self.groups = [[int(i) for i in group] for group in groups]
        self.aggregate = aggregate
        membership = np.zeros((1000, len(groups)), "float32")
        for column, group in enumerate(self.groups):
            membership[group, column] = 1.0 if aggregate == self.SUM else 1.0 / len(group)
        self.membership = membership

    def call(self, probabilities):
        scores = keras.ops.matmul(probabilities, keras.ops.convert_to_tensor(self.membership))
        shares = scores / keras.ops.maximum(keras.ops.sum(scores, axis=-1, keepdims=True), 1e-30)
        return shares[:, 1:2] if len(self.groups) == 2 else shares

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1 if len(self.groups) == 2 else len(self.groups))

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "aggregate": self.aggregate}

    @classmethod
    def from_config(cls, config):
        # A model saved before `aggregate` existed summed its groups: it keeps answering as it was calibrated.
        return super().from_config({"aggregate": cls.SUM, **config})


@keras.saving.register_keras_serializable(package="little_data")
class TemperatureScaling(layers.Layer):
    """Calibrated probabilities: [N, C] probabilities with their logs times m^(exponent-1) / `temperature`,
    renormalised (m: the gap between a row's two largest log-probabilities).

    The same arithmetic as `core.serving.calibration.scale` (clipped at 1e-7 so that a saturated 0 stays
    finite, the margin floored at 1e-3), so an exported model answers as the Predictor does. The
    factor is positive, so it never changes which class wins.
    """

    EPSILON = 1e-7
    MARGIN_FLOOR = 1e-3

    def __init__(self, temperature: float = 1.0, exponent: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not exponent > 0:
            raise ValueError(f"exponent must be positive, got {exponent}.")
        self.temperature = float(temperature)
        self.exponent = float(exponent)

    def call(self, probabilities):
        logits = keras.ops.log(keras.ops.clip(probabilities, self.EPSILON, 1.0))
        if self.exponent != 1.0:
            top_two = keras.ops.top_k(logits, k=2)[0]
            margin = keras.ops.maximum(top_two[:, 0:1] - top_two[:, 1:2], self.MARGIN_FLOOR)
            logits = logits * keras.ops.power(margin, self.exponent - 1.0)
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "exponent": self.exponent}


@keras.saving.register_keras_serializable(package="little_data")
class ClassProbabilities(layers.Layer):
    """A classifier's output as one probability per class: one sigmoid unit p becomes [1 - p, p].

    Exported models end with it, so every format answers the same way, in `labels.txt` order.
    """

    def call(self, outputs):
        if outputs.shape[-1] == 1:
            return keras.ops.concatenate([1.0 - outputs, outputs], axis=-1)
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 if input_shape[-1] == 1 else input_shape[-1])
