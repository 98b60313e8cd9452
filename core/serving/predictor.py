"""Predicting with stored models: one model on many inputs, or one photo through every level.

A `Predictor` wraps one loaded model and its card. Inputs are paths or raw bytes; each goes
through `core.data.images`, exactly as the training images did. `predict_every_level` is what the
Predict page calls: it decodes once and asks each level's predictor in turn. Levels built on the
same pretrained network share its frozen lower layers, bit for bit; `SharedTrunk` runs those once
per photo for all of them (levels 0, 2 and 3 then cost about half as much together).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.images import ImageError, load_array, load_image, to_array
from core.serving.model_store import ModelEntry, load_model


@dataclass
class Prediction:
    name: str
    probabilities: dict[str, float] | None  # class -> probability; None on error
    error: str | None = None

    @property
    def label(self) -> str | None:
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.get)


def to_probabilities(outputs: np.ndarray, num_classes: int) -> np.ndarray:
    """Model outputs to an [N, C] probability matrix (a sigmoid unit becomes two columns)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if num_classes == 2:
        p = outputs.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return outputs


def configure_for_serving() -> None:
    """Process-wide TensorFlow settings for a web server that predicts (the app).

    Streamlit runs every page rerun afresh, and TensorFlow re-instantiates a traced model function
    on the first call of each rerun; Grappler's graph rewriting makes that several times slower,
    while steady-state inference is as fast without it (see docs/benchmarks.md, "Speed"). Training processes keep
    Grappler: they instantiate once and run for minutes.
    """
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


class Predictor:
    """A stored model ready to predict."""

    def __init__(self, entry: ModelEntry, model=None):
        import tensorflow as tf

        from core.networks.fold import fold_batch_norm

        self.entry = entry
        self.model = model if model is not None else load_model(entry)
        self.classes = entry.classes
        self.image_size = entry.image_size
        h, w = self.image_size
        fast = fold_batch_norm(self.model, inference=True)  # the same answers, fewer passes (`core.networks.fold`)
        self._forward = tf.function(lambda x: fast(x, training=False),
                                    input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)])

    def warm_up(self) -> None:
        """Traces the model's function now (once), so the first real prediction is as fast as the next."""
        if not getattr(self, "_warm", False):
            h, w = self.image_size
            self.predict_arrays(np.zeros((1, h, w, 3), np.uint8))
            self._warm = True

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] at the model's size -> probabilities [N, C]."""
        outputs = self._forward(np.asarray(images, dtype=np.float32)).numpy()
        return to_probabilities(outputs, len(self.classes))

    def predict(self, sources, names=None) -> list[Prediction]:
        """Predicts each path or bytes object; a bad input gets an error, the others a result."""
        names = list(names) if names is not None else [Path(s).name if isinstance(s, (str, Path)) else f"image {i + 1}"
                                                       for i, s in enumerate(sources)]
        arrays, results = [], []
        for source, name in zip(sources, names):
            try:
                arrays.append(load_array(source, self.image_size, name=name))
                results.append(Prediction(name, None))
            except ImageError as exc:
                results.append(Prediction(name, None, error=str(exc)))
        good = [r for r in results if r.error is None]
        if good:
            probs = self.predict_arrays(np.stack(arrays))
            for result, row in zip(good, probs):
                result.probabilities = {c: float(p) for c, p in zip(self.classes, row)}
        return results


@dataclass
class MultiPrediction:
    """One photo's predictions from several levels' models."""

    name: str
    image: object | None = None  # upright RGB PIL image, for display
    per_level: dict[int, dict[str, float]] = field(default_factory=dict)  # level -> class -> probability
    error: str | None = None
    model_errors: dict[int, str] = field(default_factory=dict)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)  # level -> Grad-CAM heatmap, 0..1
    explain_errors: dict[int, str] = field(default_factory=dict)
    server_ms: float = 0.0


class SharedTrunk:
    """Several levels' models that share the frozen layers below their backbone's top block.

    Levels 0 and 2 keep the whole pretrained network frozen, and level 3 fine-tunes only its top
    block, so the layers below it hold the same weights in all three. One forward pass of those
    layers (both mirror views at once) then feeds each model's own top block and classifier.
    `plan` builds a trunk only for models whose weights it has compared and whose output it has
    checked against the model's own on a test picture (within `TOLERANCE`); any other model is
    left to its `Predictor`.
    """

    TOLERANCE = 1e-5

    def __init__(self, trunk, tails: dict, image_size: tuple[int, int], mirrored: bool, classes: dict):
        import tensorflow as tf

        from core.networks.fold import fold_batch_norm

        self.levels = list(tails)
        self.image_size, self.mirrored, self.classes = image_size, mirrored, classes
        h, w = image_size
        trunk = fold_batch_norm(trunk, inference=True)
        tails = {level: fold_batch_norm(tail, inference=True) for level, tail in tails.items()}

        def forward(images):
            views = tf.concat([images, tf.reverse(images, axis=[2])], 0) if mirrored else images
            features = trunk(views, training=False)
            outputs = []
            for tail in tails.values():
                out = tail(features, training=False)
                if mirrored:  # the saved models' Average of the photo and its mirror image
                    n = tf.shape(images)[0]
                    out = (out[:n] + out[n:]) / 2
                outputs.append(out)
            return outputs

        self._forward = tf.function(forward, input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)])

    def predict_arrays(self, images: np.ndarray) -> dict[int, np.ndarray]:
        """uint8 [N, H, W, 3] -> level -> probabilities [N, C]."""
        outputs = self._forward(np.asarray(images, dtype=np.float32))
        return {level: to_probabilities(out.numpy(), len(self.classes[level])) for level, out in zip(self.levels, outputs)}

    @classmethod
    def plan(cls, predictors: dict) -> list["SharedTrunk"]:
        """Groups the usable predictors (level -> `Predictor`) into trunks of two or more levels."""
        groups: dict[tuple, dict[int, _TrunkCut]] = {}
        for level, predictor in predictors.items():
            if isinstance(predictor, Predictor) and (cut := _cut_at_top_block(predictor)) is not None:
                groups.setdefault(cut.key, {})[level] = cut
        trunks = []
        for members in groups.values():
            try:
                trunk = cls._checked(members)
            except Exception:  # noqa: BLE001 - sharing only saves time: each model still predicts on its own
                trunk = None
            if trunk is not None:
                trunks.append(trunk)
        return trunks

    @classmethod
    def _checked(cls, members: dict) -> "SharedTrunk | None":
        first = next(iter(members.values()))
        same = {level: cut for level, cut in members.items() if cut is first or _same_weights(first, cut)}
        if len(same) < 2:
            return None
        trunk = cls(first.trunk, {level: cut.tail for level, cut in same.items()}, first.predictor.image_size,
                    first.mirrored, {level: cut.predictor.classes for level, cut in same.items()})
        check = np.random.default_rng(0).integers(0, 256, (1, *first.predictor.image_size, 3), dtype=np.uint8)
        shared = trunk.predict_arrays(check)
        agrees = all(np.abs(shared[level] - cut.predictor.predict_arrays(check)).max() <= cls.TOLERANCE
                     for level, cut in same.items())
        return trunk if agrees else None


@dataclass
class _TrunkCut:
    """A model cut in two where its backbone's top block starts: the shareable trunk and its own tail."""

    predictor: Predictor
    key: tuple  # what must match to share: backbone, size, views, preprocessing, cut point
    mirrored: bool  # the model averages the photo and its mirror image
    trunk: object  # photo -> the feature map entering the top block
    tail: object  # that feature map -> the model's output for one view
    trunk_layers: list


def _cut_at_top_block(predictor: Predictor) -> _TrunkCut | None:
    """The model cut where its backbone's top block starts, or None for a model not built that way."""
    import keras

    from core.networks.backbones import BACKBONES
    from core.networks.factories import single_view

    backbone = BACKBONES.get(predictor.entry.card.backbone or "")
    if backbone is None:
        return None
    inner = single_view(predictor.model)
    mirrored = inner is not predictor.model
    inner_names = [layer.name for layer in getattr(inner, "layers", [])]
    if backbone.name not in inner_names:
        return None
    at = inner_names.index(backbone.name)
    if at < 1 or at + 1 >= len(inner_names):
        return None
    base = inner.layers[at]
    top = next((layer for layer in base.layers if backbone.is_top_block(layer.name)), None)
    if top is None:
        return None
    try:
        lower = keras.Model(base.input, top.input)
        upper = keras.Model(top.input, base.output)
        preprocess = keras.Model(inner.input, inner.layers[at - 1].output)
        classifier = keras.Model(inner.layers[at + 1].input, inner.output)
    except (ValueError, TypeError, AttributeError):  # a graph that does not cut there
        return None
    trunk = keras.Sequential([preprocess, lower])
    tail = keras.Sequential([upper, classifier])
    pre_config = [(layer.__class__.__name__, layer.get_config()) for layer in preprocess.layers[1:]]
    for _, config in pre_config:  # weightless layers: only what they compute matters
        config.pop("name", None), config.pop("trainable", None)
    key = (backbone.name, tuple(predictor.image_size), mirrored, top.name, repr(pre_config))
    return _TrunkCut(predictor, key, mirrored, trunk, tail, [layer for layer in lower.layers if layer.weights])


def _same_weights(a: _TrunkCut, b: _TrunkCut) -> bool:
    if [layer.name for layer in a.trunk_layers] != [layer.name for layer in b.trunk_layers]:
        return False
    return all(np.array_equal(x, y) for la, lb in zip(a.trunk_layers, b.trunk_layers)
               for x, y in zip(la.get_weights(), lb.get_weights()))


def predict_every_level(data: bytes, name: str, predictors: dict, explainers: dict | None = None,
                        trunks: list[SharedTrunk] | None = None) -> MultiPrediction:
    """Decodes once, then runs each level's predictor. A bad image gives `error`, never an exception.

    Args:
        predictors: level -> `Predictor` (or an exception instance for a model that is unusable).
        explainers: level -> `core.serving.explain.Explainer` (or an exception) to add Grad-CAM heatmaps; one
            gradient pass then gives both the probabilities and the heatmap.
        trunks: `SharedTrunk.plan(predictors)`, to predict the levels they cover in one pass (levels
            with an explainer still use it).
    """
    start = time.perf_counter()
    result = MultiPrediction(name)
    try:
        image = load_image(data, name=name)
    except ImageError as exc:
        result.error = str(exc)
        result.server_ms = (time.perf_counter() - start) * 1000
        return result
    result.image = image
    arrays, shared = {}, {}
    for trunk in trunks or ():
        if any(level in predictors and not (explainers or {}).get(level) for level in trunk.levels):
            arrays.setdefault(trunk.image_size, to_array(image, trunk.image_size))
            shared.update(trunk.predict_arrays(arrays[trunk.image_size][None]))
    for level, predictor in predictors.items():
        if isinstance(predictor, Exception):
            result.model_errors[level] = str(predictor)
            continue
        size = predictor.image_size
        if size not in arrays:
            arrays[size] = to_array(image, size)
        explainer = (explainers or {}).get(level)
        if explainer is not None and not isinstance(explainer, Exception):
            heatmaps, probabilities = explainer.explain_arrays(arrays[size][None])
            result.heatmaps[level], probs = heatmaps[0], probabilities[0]
        else:
            if isinstance(explainer, Exception):
                result.explain_errors[level] = str(explainer)
            probs = shared[level][0] if level in shared else predictor.predict_arrays(arrays[size][None])[0]
        result.per_level[level] = {c: float(p) for c, p in zip(predictor.classes, probs)}
    result.server_ms = (time.perf_counter() - start) * 1000
    return result
