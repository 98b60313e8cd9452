"""Where a model looks: Grad-CAM heatmaps for any stored model of any level.

The method of the keras-io Grad-CAM example (Selvaraju et al., 2017): the gradient of the class
score with respect to the last convolutional feature map, averaged over the map into one weight
per channel; the weighted sum of the channels; ReLU; upsampled to the picture. The feature map is
the small convnet's last convolution (level 1) or the backbone's last stage (levels 0, 2, 3).

A model that averages the photo with its mirror is explained as a whole: both views' maps are
weighted by the gradient of the averaged score, the mirror's map is flipped back, and the two are
summed, so the heatmap explains what the saved model decides, not one of its halves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.images import ImageError, load_image, to_array
from core.errors import describe
from core.serving.model_store import ModelEntry, ModelError

#: Shown instead of a peak when a heatmap has no hot place (or its gradients were not finite).
FLAT_NOTE = "no heatmap: nothing in the photo raises this class's score, so there is no place to show"


@dataclass
class Explanation:
    """One photo's heatmap.

    Attributes:
        name: the photo's name.
        image: the upright RGB photo (PIL), for overlays.
        heatmap: [H, W] in 0..1 at the model's input size (the photo squashed, as the model sees it).
        class_name, probability: the class explained and the model's probability for it, calibrated as Predict shows it.
        peak: (y, x) of the heatmap's maximum, relative to the upright photo (0..1, top-left origin).
        note: why the heatmap is blank (`FLAT_NOTE`), else None; the peak is then the photo's centre.
    """

    name: str
    image: object
    heatmap: np.ndarray
    class_name: str
    probability: float
    peak: tuple[float, float]
    note: str | None = None

    def to_dict(self) -> dict:
        row = {"file": self.name, "class": self.class_name, "probability": self.probability,
               "peak": [round(self.peak[0], 4), round(self.peak[1], 4)]}
        return row | ({"note": self.note} if self.note else {})


@dataclass
class ExplainFailure:
    """A photo that got no heatmap; `message` names it and says why."""

    name: str
    message: str


def feature_grid(chain, tapped: str, image_size: tuple[int, int]) -> list[tuple[float, float, int]]:
    """Where the tapped feature map's cells sit on the picture: (first centre, spacing, cells) per axis.

    In pixel-index units of the model's input. `chain`: (layer, input shape, output shape) in order.
    Walks it up to `tapped`: "valid" convolutions and poolings shift the grid inwards (the small
    convnet's last map covers pixels 9-53 of 64, not 0-63); "same" ones, and nested networks such as
    a backbone, spread it evenly over their input.
    """
    grid = [[0.0, 1.0, image_size[0]], [0.0, 1.0, image_size[1]]]
    for layer, in_shape, out_shape in chain:
        if len(out_shape) != 4 or len(in_shape) != 4 or None in in_shape[1:3]:  # the raw input's resize sets the grid
            if layer.name == tapped:
                break
            continue
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        strides = getattr(layer, "strides", None)
        for axis in (0, 1):
            size_in, size_out = in_shape[axis + 1], out_shape[axis + 1]
            first, spacing, _ = grid[axis]
            if kernel is not None and strides is not None and getattr(layer, "padding", None) in ("valid", "same"):
                k = (kernel[axis] - 1) * getattr(layer, "dilation_rate", (1, 1))[axis] + 1
                pad = 0
                if layer.padding == "same":
                    pad = max((size_out - 1) * strides[axis] + k - size_in, 0) // 2
                grid[axis] = [first + ((k - 1) / 2 - pad) * spacing, spacing * strides[axis], size_out]
            elif size_in != size_out:  # a nested network or anything else that rescales: evenly spread
                step = size_in / size_out
                grid[axis] = [first + (step - 1) / 2 * spacing, spacing * step, size_out]
        if layer.name == tapped:
            break
    return [tuple(axis) for axis in grid]


def _interpolation(pixels: int, first: float, spacing: float, cells: int) -> np.ndarray:
    """[pixels, cells]: linear interpolation from cell centres to pixels (constant beyond the outer cells)."""
    position = np.clip((np.arange(pixels) - first) / spacing, 0, cells - 1)
    low = np.minimum(np.floor(position).astype(int), max(cells - 2, 0))
    fraction = position - low
    matrix = np.zeros((pixels, cells), np.float32)
    matrix[np.arange(pixels), low] += 1 - fraction
    if cells > 1:
        matrix[np.arange(pixels), low + 1] += fraction
    return matrix


def feature_layer_name(network, backbone: str | None) -> str:
    """The layer whose output Grad-CAM weighs: the backbone, else the last convolution or nested
    convolutional network (level 1's residual trunk) at the top level."""
    import keras

    names = [layer.name for layer in network.layers]
    if backbone and backbone in names:
        return backbone
    convolutions = [layer.name for layer in network.layers if isinstance(layer, keras.layers.Conv2D)
                    or (isinstance(layer, keras.Model) and len(layer.output.shape) == 4)]
    if not convolutions:
        raise ModelError(f"{network.name} has no convolutional layer to explain.")
    return convolutions[-1]


class Explainer:
    """Grad-CAM for one stored model; build once, explain many photos."""

    def __init__(self, entry: ModelEntry, model=None):
        import keras
        import tensorflow as tf

        from core.serving.model_store import load_model
        from core.networks.factories import single_view

        self.entry = entry
        self.classes = entry.classes
        self.image_size = entry.image_size
        model = model if model is not None else load_model(entry)
        network = single_view(model)
        self.mirror_averaged = network is not model
        # A fresh copy of the single-view network: in the saved wrapper its layers are called twice,
        # and a layer with two call sites has no single `.output` to tap.
        clean = keras.Model.from_config(network.get_config())
        clean.set_weights(network.get_weights())
        tapped = clean.get_layer(feature_layer_name(clean, entry.card.backbone))
        self._scores = _ClassScores(clean)  # the final layer's input, before it saturates
        # Re-run the copy's layers (a chain at the top level) on a new input, keeping the feature map
        # and the scores: a nested network's own `.output` may belong to its inner graph, not this one.
        inputs = keras.Input(clean.input_shape[1:], name="image")
        x, outputs, chain = inputs, {}, []
        for layer in clean.layers:
            if not isinstance(layer, keras.layers.InputLayer):
                y = outputs[layer.name] = layer(x)
                chain.append((layer, tuple(x.shape), tuple(y.shape)))
                x = y
        self._maps_and_outputs = keras.Model(inputs, [outputs[tapped.name], outputs[self._scores.tap]])
        h, w = self.image_size
        (first_y, spacing_y, rows), (first_x, spacing_x, columns) = feature_grid(chain, tapped.name, (h, w))
        self._rows = _interpolation(h, first_y, spacing_y, rows)
        self._columns = _interpolation(w, first_x, spacing_x, columns)
        self._cams = tf.function(self._grad_cam, input_signature=[
            tf.TensorSpec([None, h, w, 3], tf.float32), tf.TensorSpec([None], tf.int32)])

    def _grad_cam(self, images, class_index):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            maps, tapped = self._maps_and_outputs(images, training=False)
            views, log_probabilities = [maps], [self._scores.log_probabilities(tapped)]
            if self.mirror_averaged:
                mirrored_maps, mirrored = self._maps_and_outputs(tf.reverse(images, axis=[2]), training=False)
                views.append(mirrored_maps)
                log_probabilities.append(self._scores.log_probabilities(mirrored))
            # log of the views' mean probability, computed without leaving log space
            log_p = tf.reduce_logsumexp(tf.stack(log_probabilities), axis=0) - tf.math.log(float(len(views)))
            probabilities = tf.exp(log_p)
            predicted = tf.argmax(log_p, axis=1, output_type=tf.int32)
            class_index = tf.where(class_index < 0, predicted, class_index)  # -1: explain the predicted class
            chosen = tf.one_hot(class_index, tf.shape(log_p)[1]) > 0
            # The class's log-odds: unlike its probability, its gradient survives confident predictions.
            score = tf.reduce_sum(tf.reduce_logsumexp(tf.where(chosen, log_p, -1e9), axis=1)
                                  - tf.reduce_logsumexp(tf.where(chosen, -1e9, log_p), axis=1))
        gradients = tape.gradient(score, views)
        heat = 0.0
        for i, (view, gradient) in enumerate(zip(views, gradients)):
            weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)  # one weight per channel
            view_cam = tf.reduce_sum(weights * view, axis=-1)
            # Onto the picture's pixels, each cell at the centre of what it sees; the mirror view's
            # map is flipped back on the picture, where mirroring is exact.
            view_heat = tf.einsum("yi,nij,xj->nyx", self._rows, view_cam, self._columns)
            heat = heat + (tf.reverse(view_heat, axis=[2]) if i else view_heat)
        heat = tf.nn.relu(heat)
        heatmaps = heat / tf.maximum(tf.reduce_max(heat, axis=(1, 2), keepdims=True), 1e-12)
        return heatmaps, probabilities

    def explain_arrays(self, images: np.ndarray, class_index=None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, H, W, 3] at the model's size -> (heatmaps [N, H, W] in 0..1, probabilities [N, C]).

        `class_index`: the class to explain per image (default: the predicted one).
        """
        images = np.asarray(images, dtype=np.float32)
        class_index = np.broadcast_to(np.asarray(-1 if class_index is None else class_index, np.int32), (len(images),))
        heatmaps, probabilities = self._cams(images, class_index)
        return np.clip(blank_if_not_finite(np.asarray(heatmaps)), 0, 1), np.asarray(probabilities)

    def class_index(self, class_name: str | None) -> int | None:
        """The index of `class_name` (None: the predicted class). Raises ModelError for an unknown class."""
        if class_name is None:
            return None
        if class_name not in self.classes:
            raise ModelError(f"{class_name!r} is not one of the model's classes ({', '.join(self.classes)}).")
        return self.classes.index(class_name)

    def explain(self, source, name: str | None = None, class_name: str | None = None) -> Explanation:
        """Explains one photo (path or bytes) for `class_name` (default: the predicted class).

        Raises:
            ImageError: the photo cannot be read.
            ModelError: `class_name` is not one of the model's classes.
        """
        from pathlib import Path

        name = name or (Path(source).name if isinstance(source, (str, Path)) else "upload")
        return self.explain_image(load_image(source, name=name), name, class_name)

    def explain_image(self, image, name: str, class_name: str | None = None) -> Explanation:
        """Explains an already decoded upright RGB photo (PIL)."""
        index = self.class_index(class_name)
        heatmaps, probabilities = self.explain_arrays(to_array(image, self.image_size)[None], index)
        heatmap = heatmaps[0]
        # The probability Predict shows: calibrated as the card says (the heatmap explains the model's log-odds,
        # whose order calibration keeps; level 0's raw probabilities are less sure than it is).
        calibration = self.entry.card.calibration
        probs = (calibration.apply(probabilities) if calibration is not None else probabilities)[0]
        chosen = int(probs.argmax()) if index is None else index
        return Explanation(name, image, heatmap, self.classes[chosen], float(probs[chosen]), peak_of(heatmap),
                           heatmap_note(heatmap))


def blank_if_not_finite(heatmaps: np.ndarray) -> np.ndarray:
    """[N, H, W] with each map that has a NaN or infinity replaced by zeros (blank, see `heatmap_note`).

    One bad gradient spoils the whole map through its normalisation, so no part of it is kept.
    """
    finite = np.isfinite(heatmaps).all(axis=tuple(range(1, heatmaps.ndim)), keepdims=True)
    return np.where(finite, heatmaps, 0.0).astype(np.float32)


def heatmap_note(heatmap: np.ndarray) -> str | None:
    """`FLAT_NOTE` for a heatmap with no hot place (all zero, or not finite), else None."""
    heat = np.asarray(heatmap)
    return None if heat.size and np.isfinite(heat).all() and heat.max() > 0 else FLAT_NOTE


def peak_of(heatmap: np.ndarray) -> tuple[float, float]:
    """(y, x) of the heatmap's maximum, 0..1 from the top-left.

    Beyond the outermost feature cells the heatmap is flat; of equally hot pixels the one nearest the
    centre is taken, which is the outer cell's own centre rather than the picture's edge. A blank map
    (`heatmap_note`) has no peak: the centre stands in. NaN counts as cold (a NaN maximum would
    match no pixel at all).
    """
    heatmap = np.nan_to_num(np.asarray(heatmap, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if not heatmap.max() > 0:
        return 0.5, 0.5
    hottest = np.argwhere(heatmap >= heatmap.max() - 1e-6)
    centre = (np.asarray(heatmap.shape) - 1) / 2
    y, x = hottest[np.argmin(((hottest - centre) ** 2).sum(axis=1))]
    return (y + 0.5) / heatmap.shape[0], (x + 0.5) / heatmap.shape[1]


def _output_dense(layer):
    """The layer that makes `layer`'s output: itself, or inside a nested network (level 2 and 3's head)
    its last layer, when that layer's output is the network's."""
    import keras

    while isinstance(layer, keras.Model) and len(layer.outputs) == 1 and layer.layers:
        inner = layer.layers[-1]
        if layer.outputs[0] is not inner.output:
            break
        layer = inner
    return layer


class _ClassScores:
    """Class log-probabilities from the input of a network's last activation, where gradients don't vanish.

    A sigmoid or softmax output saturates (a float32 probability of exactly 1 has zero gradient, and
    the log of 1 - p is -inf), so the network's final Dense layer (in a private copy; inside the head
    network for levels 2 and 3) is made linear and the top-level layer that outputs it is tapped, and
    the log of its activation is computed stably here; for level 0 the ImageNet log-probabilities are
    grouped as its ClassGroups layer groups them. Other final layers are tapped as they are (probabilities).
    """

    def __init__(self, network):
        import keras

        from core.networks.factories import ClassGroups

        owner = network.layers[-1]
        self.groups = None
        if isinstance(owner, ClassGroups):
            self.groups, self.summed = owner.groups, owner.aggregate == ClassGroups.SUM
            owner = network.layers[-2]
        last = _output_dense(owner)
        activation = getattr(getattr(last, "activation", None), "__name__", "")
        if isinstance(last, keras.layers.Dense) and activation in ("sigmoid", "softmax"):
            self.kind = activation
            last.activation = keras.activations.linear  # a private copy: the saved model is untouched
            self.tap = owner.name  # the head network itself now outputs the logits
        else:
            self.kind, self.groups, self.tap = "probabilities", None, network.layers[-1].name
        if self.groups is not None:
            mask = np.full((len(self.groups), 1000), -1e9, np.float32)
            for row, group in enumerate(self.groups):
                mask[row, group] = 0.0
            self.group_mask = mask
            # log of a group's mean probability: the log of its summed probability (logsumexp) less log(size)
            self.group_log_sizes = np.array([0.0 if self.summed else np.log(len(g)) for g in self.groups], np.float32)

    def log_probabilities(self, tapped):
        """[N, C] log-probabilities of the data set's classes."""
        import tensorflow as tf

        if self.groups is not None:  # level 0, as its ClassGroups layer scores the groups, renormalised
            log_imagenet = tf.nn.log_softmax(tapped)
            scores = (tf.reduce_logsumexp(log_imagenet[:, None, :] + self.group_mask[None], axis=2)
                      - self.group_log_sizes[None])
            return scores - tf.reduce_logsumexp(scores, axis=1, keepdims=True)
        if self.kind == "sigmoid":  # one unit, the second class: [log sigmoid(-z), log sigmoid(z)]
            return tf.concat([-tf.nn.softplus(tapped), -tf.nn.softplus(-tapped)], axis=1)
        if self.kind == "softmax":
            return tf.nn.log_softmax(tapped)
        # Probabilities only: clipped away from 0 and 1 (float32 resolves 1 - 1e-7, not 1 - 1e-12) so both
        # logs stay finite; a saturated output then has no gradient and gets a blank map, never NaN.
        eps = 1e-7
        p = tf.clip_by_value(tapped, eps, 1.0 - eps)
        return tf.math.log(tf.concat([1.0 - p, p], axis=1) if p.shape[-1] == 1 else p)


# A perceptual colour scale (dark blue, violet, orange, yellow): 0 is cold, 1 is where the model looks.
_COLOURS = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], np.float64)


def colourize(heatmap: np.ndarray) -> np.ndarray:
    """[H, W] in 0..1 -> [H, W, 3] uint8 on the one colour scale every heatmap uses."""
    positions = np.clip(heatmap, 0, 1) * (len(_COLOURS) - 1)
    low = np.floor(positions).astype(int).clip(0, len(_COLOURS) - 2)
    fraction = (positions - low)[..., None]
    return (_COLOURS[low] * (1 - fraction) + _COLOURS[low + 1] * fraction).round().astype(np.uint8)


def overlay(image, heatmap: np.ndarray, max_side: int = 512, strength: float = 0.6):
    """The photo (upright, at most `max_side`) with the heatmap over it: hotter places more opaque."""
    from PIL import Image

    photo = image.copy()
    photo.thumbnail((max_side, max_side))
    heat = np.asarray(Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).resize(
        photo.size, Image.Resampling.BILINEAR), np.float64) / 255
    alpha = (strength * (0.25 + 0.75 * heat))[..., None]
    blended = np.asarray(photo, np.float64) * (1 - alpha) + colourize(heat) * alpha
    return Image.fromarray(blended.round().astype(np.uint8))


def legend(width: int = 256, height: int = 12) -> np.ndarray:
    """The colour scale as a strip, low (left) to high (right)."""
    return np.repeat(colourize(np.linspace(0, 1, width))[None], height, axis=0)


def explain_files(explainer: Explainer, sources, class_name: str | None = None) -> list[Explanation | ExplainFailure]:
    """Each photo's explanation, or its failure: one photo that cannot be explained does not stop the others.

    Raises:
        ModelError: `class_name` is not one of the model's classes (the call's mistake, not a photo's).
    """
    explainer.class_index(class_name)
    results = []
    for source in sources:
        name = str(source)
        try:
            results.append(explainer.explain(source, name=name, class_name=class_name))
        except ImageError as exc:  # its message names the photo
            results.append(ExplainFailure(name, str(exc)))
        except Exception as exc:  # noqa: BLE001 - whatever breaks on one photo, the others still get theirs
            results.append(ExplainFailure(name, f"{name}: cannot be explained ({describe(exc)})"))
    return results
