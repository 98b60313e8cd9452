"""Predicting with stored models: one model on many inputs, or one photo through every level.

A `Predictor` wraps one loaded model and its card. Inputs are paths or raw bytes; each goes
through `core.data.images`, exactly as the training images did. `predict_photos` is what the
pages call (through `core.serving.model_server`): it decodes each photo once and asks each level's
model once for all of them. Levels built on the
same pretrained network share its frozen lower layers, bit for bit; `SharedTrunk` runs those once
per photo for all of them (levels 0, 2 and 3 then cost about half as much together).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core import settings
from core.data.images import ImageError, load_image, to_array
from core.serving.model_store import ModelEntry, load_model
from core.serving.novelty import LoadedJudge, Verdict


@dataclass
class Prediction:
    """One photo's answer: calibrated probabilities and, where the model has a judge, its verdict."""

    name: str
    probabilities: dict[str, float] | None  # class -> probability (calibrated); None on error
    error: str | None = None
    verdict: Verdict | None = None  # None: the model has no novelty judge

    @property
    def nearest(self) -> str | None:
        """The most probable class, whether or not the photo looks like any class."""
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def unknown(self) -> bool:
        """The model says the photo looks like none of its classes."""
        return self.verdict is not None and self.verdict.unknown

    @property
    def label(self) -> str | None:
        """The answer: the most probable class, or None when the photo looks like none of them."""
        return None if self.unknown else self.nearest


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


class _OnnxSwitch:
    """A network whose traced pass (`_forward`) can move to ONNX Runtime once it gives the same answers.

    `engine` says which runs it now; `engine_error` why it stayed on TensorFlow. See `accelerate`.
    """

    engine = "tensorflow"  # or "onnxruntime", once `accelerate` has checked it
    engine_error: str | None = None
    _onnx = None  # the `OnnxForward` in use; read once per call, so a pass in flight finishes where it began

    def _conversion(self) -> tuple:
        """(what names the network, a test picture, TensorFlow's outputs on it, agree(index, got, expected))."""
        raise NotImplementedError

    def _converted(self, images: np.ndarray) -> list[np.ndarray] | None:
        """The ONNX Runtime pass's outputs, or None for TensorFlow's: not converted, or failed (then for good)."""
        onnx = self._onnx
        if onnx is None:
            return None
        try:
            return onnx(images)
        except Exception as exc:  # noqa: BLE001 - TensorFlow answers this batch and every later one
            self._onnx, self.engine = None, "tensorflow"
            self.engine_error = f"ONNX Runtime failed while answering: {type(exc).__name__}: {exc}"
            return None

    def accelerate(self, folder: Path | None = None) -> None:
        """Runs the pass with ONNX Runtime from now on, if it gives TensorFlow's answers on a test picture."""
        from core.serving.onnx_forward import cache_name, checked

        if settings.serving_engine() != "onnxruntime" or self._onnx is not None:
            return
        try:
            identity, check, expected, agree = self._conversion()
            name = cache_name(type(self).__name__, identity, settings.fold_batch_norm())
            forward = checked(self._forward, _serving_cache(folder) / name, check, expected, agree)
        except Exception as exc:  # noqa: BLE001 - the runtime only saves time: TensorFlow still answers
            self.engine_error = f"{type(exc).__name__}: {exc}"
            return
        self._onnx = forward
        self.engine = "onnxruntime"


class Predictor(_OnnxSwitch):
    """A stored model ready to predict."""

    def __init__(self, entry: ModelEntry, model=None):
        import tensorflow as tf

        from core.networks.fold import fold_batch_norm

        self.entry = entry
        self.calibration = entry.card.calibration
        self._judge: LoadedJudge | None | bool = False  # loaded on first use
        self.judge_error: str | None = None
        self.model = model if model is not None else load_model(entry)
        try:  # the file's version as loaded: a converted pass is named after it (`accelerate`)
            self.file_stamp = _file_stamp(entry.model_path)
        except OSError:
            self.file_stamp = (0, 0)
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
            if self.judge is not None:  # its network is built and traced now too, not at the first photo
                self.judge.features(np.zeros((1, *self.judge.judge.image_size, 3), np.uint8))
            self._warm = True

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """The model's probabilities [N, C] with its card's temperature applied (as they are, without one)."""
        return probabilities if self.calibration is None else self.calibration.apply(probabilities)

    def predict_arrays(self, images: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """uint8 [N, H, W, 3] at the model's size -> probabilities [N, C], calibrated unless asked not to be."""
        converted = self._converted(images)
        outputs = converted[0] if converted is not None else self._forward(np.asarray(images, dtype=np.float32)).numpy()
        probabilities = to_probabilities(outputs, len(self.classes))
        return self.calibrate(probabilities) if calibrated else probabilities

    def predict_rows(self, images, calibrated: bool = True, batch_size: int = 64) -> np.ndarray:
        """Probabilities [N, C] for every row of `images` ([N, H, W, 3] uint8 at the model's size, or a
        decoded split's `ImageRows`, read a batch at a time)."""
        return np.concatenate([self.predict_arrays(np.asarray(images[i:i + batch_size]), calibrated)
                               for i in range(0, len(images), batch_size)])

    def _conversion(self) -> tuple:
        check = _check_picture(self.image_size)
        expected = self._forward(check.astype(np.float32)).numpy()
        return ((self.entry.id, *self.file_stamp), check, [expected],
                lambda _, got, want: np.abs(got - want).max() <= SharedTrunk.TOLERANCE)

    @property
    def judge(self) -> LoadedJudge | None:
        """The model's novelty judge, ready (loaded once); None for a model without one, or whose judge
        cannot be loaded (`judge_error` says why: the model still predicts)."""
        if self._judge is False:
            self._judge = None
            judge = self.entry.card.novelty
            if judge is not None:
                try:
                    self._judge = LoadedJudge(judge, self.entry.novelty_bank_path)
                except Exception as exc:  # noqa: BLE001 - a missing bank or weights: answer without a judge
                    self.judge_error = f"{type(exc).__name__}: {exc}"
        return self._judge

    def verdicts(self, images: list) -> list[Verdict] | None:
        """The judge's verdict on each decoded photo (upright PIL images), or None without a judge."""
        if self.judge is None:
            return None
        return self.judge.verdicts(np.stack([to_array(image, self.judge.judge.image_size) for image in images]))

    def predict(self, sources, names=None) -> list[Prediction]:
        """Predicts each path or bytes object; a bad input gets an error, the others a result."""
        names = list(names) if names is not None else [Path(s).name if isinstance(s, (str, Path)) else f"image {i + 1}"
                                                       for i, s in enumerate(sources)]
        images, results = [], []
        for source, name in zip(sources, names):
            try:
                images.append(load_image(source, name=name))
                results.append(Prediction(name, None))
            except ImageError as exc:
                results.append(Prediction(name, None, error=str(exc)))
        good = [r for r in results if r.error is None]
        if good:
            probs = self.predict_arrays(np.stack([to_array(image, self.image_size) for image in images]))
            verdicts = self.verdicts(images) or [None] * len(good)
            for result, row, verdict in zip(good, probs, verdicts):
                result.probabilities = {c: float(p) for c, p in zip(self.classes, row)}
                result.verdict = verdict
        return results


@dataclass
class MultiPrediction:
    """One photo's predictions from several levels' models."""

    name: str
    image: object | None = None  # upright RGB PIL image, for display
    per_level: dict[int, dict[str, float]] = field(default_factory=dict)  # level -> class -> probability
    error: str | None = None
    model_errors: dict[int, str] = field(default_factory=dict)
    verdicts: dict[int, Verdict] = field(default_factory=dict)  # level -> its judge's verdict (levels with one)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)  # level -> Grad-CAM heatmap, 0..1
    explain_errors: dict[int, str] = field(default_factory=dict)
    server_ms: float = 0.0

    def answer(self, level: int) -> str | None:
        """A level's answer: its most probable class, or None when it says the photo is none of its classes."""
        verdict = self.verdicts.get(level)
        if verdict is not None and verdict.unknown:
            return None
        probs = self.per_level[level]
        return max(probs, key=probs.get)

    def disagreement(self) -> str | None:
        """'The levels disagree: level 2 says dogs; levels 0, 3 say none of these.', or None when they agree."""
        by_answer: dict[str, list[int]] = {}
        for level in self.per_level:
            by_answer.setdefault(self.answer(level) or "none of these", []).append(level)
        if len(by_answer) < 2:
            return None
        parts = [f"level{'s' if len(levels) > 1 else ''} {', '.join(map(str, levels))} say{'' if len(levels) > 1 else 's'} "
                 f"{answer}" for answer, levels in by_answer.items()]
        return "The levels disagree: " + "; ".join(parts) + "."


class SharedTrunk(_OnnxSwitch):
    """Several levels' models that share the frozen layers below their backbone's top block.

    Levels 0 and 2 keep the whole pretrained network frozen, and level 3 fine-tunes only its top
    block, so the layers below it hold the same weights in all three. One forward pass of those
    layers (both mirror views at once) then feeds each model's own top block and classifier; a top
    block that two models share bit for bit (levels 0 and 2: both ImageNet's) runs once for both.
    A novelty judge whose network is that same pretrained network (its pooled features, one view)
    reads its features off a shared top block instead of a pass of its own.
    `plan` builds a trunk only for models whose weights it has compared and whose output (and
    judge features) it has checked against their own on a test picture (within `TOLERANCE`); any
    other model or judge is left to its own network.
    """

    TOLERANCE = 1e-5

    def __init__(self, trunk, heads: dict, image_size: tuple[int, int], mirrored: bool, classes: dict,
                 judges: dict | None = None, identity: tuple = ()):
        """`heads`: level -> (index into the distinct top blocks, its top block, its classifier);
        `judges`: judge key -> index of the top block whose pooled output are its features;
        `identity`: what names the models it was built from (their files), for the converted pass's cache."""
        import tensorflow as tf

        from core.networks.fold import fold_batch_norm

        self.identity = identity
        self.levels = list(heads)
        self.image_size, self.mirrored, self.classes = image_size, mirrored, classes
        self.judge_keys = list(judges or {})
        self.top_blocks = len({index for index, _, _ in heads.values()})  # distinct top blocks run per pass
        h, w = image_size
        trunk = fold_batch_norm(trunk, inference=True)
        uppers = {index: fold_batch_norm(upper, inference=True) for index, upper, _ in heads.values()}
        classifiers = {level: fold_batch_norm(classifier, inference=True) for level, (_, _, classifier) in heads.items()}
        judged_by = dict(judges or {})

        def forward(images):
            views = tf.concat([images, tf.reverse(images, axis=[2])], 0) if mirrored else images
            n = tf.shape(images)[0]
            features = trunk(views, training=False)
            maps = {index: upper(features, training=False) for index, upper in uppers.items()}
            outputs = []
            for level, (index, _, _) in heads.items():
                out = classifiers[level](maps[index], training=False)
                if mirrored:  # the saved models' Average of the photo and its mirror image
                    out = (out[:n] + out[n:]) / 2
                outputs.append(out)
            pooled = [tf.reduce_mean(maps[index][:n], axis=[1, 2]) for index in judged_by.values()]
            return outputs, pooled

        self._forward = tf.function(forward, input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)])

    def predict_all(self, images: np.ndarray) -> tuple[dict[int, np.ndarray], dict[tuple, np.ndarray]]:
        """uint8 [N, H, W, 3] -> (level -> probabilities [N, C], judge key -> pooled features [N, D])."""
        flat = self._converted(images)  # the traced function's outputs, flattened: one per level, then the judges'
        if flat is not None:
            outputs, pooled = flat[:len(self.levels)], flat[len(self.levels):]
        else:
            outputs, pooled = self._tensorflow_pass(images)
        return self._named(outputs, pooled)

    def _tensorflow_pass(self, images: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        outputs, pooled = self._forward(np.asarray(images, dtype=np.float32))
        return [out.numpy() for out in outputs], [features.numpy() for features in pooled]

    def _named(self, outputs: list, pooled: list) -> tuple[dict[int, np.ndarray], dict[tuple, np.ndarray]]:
        probabilities = {level: to_probabilities(out, len(self.classes[level])) for level, out in zip(self.levels, outputs)}
        return probabilities, dict(zip(self.judge_keys, pooled))

    def _conversion(self) -> tuple:
        check = _check_picture(self.image_size)
        outputs, pooled = self._tensorflow_pass(check)

        def agree(index: int, got: np.ndarray, expected: np.ndarray) -> bool:
            return (np.abs(got - expected).max() <= self.TOLERANCE) if index < len(outputs) else _close(got, expected)

        return (self.identity, self.levels, self.judge_keys, self.mirrored), check, outputs + pooled, agree

    def predict_arrays(self, images: np.ndarray) -> dict[int, np.ndarray]:
        """uint8 [N, H, W, 3] -> level -> probabilities [N, C]."""
        return self.predict_all(images)[0]

    @classmethod
    def plan(cls, predictors: dict) -> list["SharedTrunk"]:
        """Groups the usable predictors (level -> `Predictor`) into trunks of two or more levels."""
        groups: dict[tuple, dict[int, _TrunkCut]] = {}
        for level, predictor in predictors.items():
            if isinstance(predictor, Predictor) and (cut := _cut_at_top_block(predictor)) is not None:
                groups.setdefault(cut.key, {})[level] = cut
        judges = [p.judge for p in predictors.values() if isinstance(p, Predictor) and p.judge is not None]
        trunks = []
        for members in groups.values():
            try:
                trunk = cls._checked(members, judges)
            except Exception:  # noqa: BLE001 - sharing only saves time: each model still predicts on its own
                trunk = None
            if trunk is not None:
                trunks.append(trunk)
        return trunks

    @classmethod
    def _checked(cls, members: dict, judges: list) -> "SharedTrunk | None":
        first = next(iter(members.values()))
        same = {level: cut for level, cut in members.items() if cut is first or _same_weights(first, cut)}
        if len(same) < 2:
            return None
        distinct: list[_TrunkCut] = []  # one per distinct top block
        heads = {}
        for level, cut in same.items():
            index = next((i for i, other in enumerate(distinct) if _same_layers(other.upper, cut.upper)), None)
            if index is None:
                distinct.append(cut)
                index = len(distinct) - 1
            heads[level] = (index, distinct[index].upper, cut.classifier)
        size = first.predictor.image_size
        classes = {level: cut.predictor.classes for level, cut in same.items()}
        check = np.random.default_rng(0).integers(0, 256, (2, *size, 3), dtype=np.uint8)
        candidates = {}
        for judge in judges:  # a judge on this network at this size may read a shared top block's output
            if (judge.key in candidates or tuple(judge.judge.image_size) != tuple(size)
                    or judge.judge.backbone != first.key[0]):
                continue
            expected = judge.features(check)
            for index, cut in enumerate(distinct):
                pooled = cut.upper(cut.trunk(check.astype(np.float32), training=False), training=False)
                pooled = np.asarray(pooled).mean(axis=(1, 2)) if np.ndim(pooled) == 4 else np.asarray(pooled)
                if pooled.shape == expected.shape and _close(pooled, expected):
                    candidates[judge.key] = index
                    break
        identity = tuple((level, cut.predictor.entry.id, *cut.predictor.file_stamp)
                         for level, cut in sorted(same.items()))
        trunk = cls(first.trunk, heads, size, first.mirrored, classes, candidates, identity)
        shared, features = trunk.predict_all(check)
        agrees = all(np.abs(shared[level] - cut.predictor.predict_arrays(check, calibrated=False)).max() <= cls.TOLERANCE
                     for level, cut in same.items())
        if not agrees:
            return None
        for judge in judges:  # the folded, batched pass must still give the judge's own features
            if judge.key in features and not _close(features[judge.key], judge.features(check)):
                return cls(first.trunk, heads, size, first.mirrored, classes, identity=identity)
        return trunk


def accelerate(trunks: list["SharedTrunk"], predictors: dict, folder: Path | None = None,
               background: bool = False) -> threading.Thread | None:
    """Moves the trunks, and the models no trunk answers for, to ONNX Runtime where it agrees with TensorFlow.

    ONNX Runtime runs these networks in about half of TensorFlow's CPU time for one photo (see
    `core.serving.onnx_forward`). Each conversion is checked on a test picture first: outputs within
    `SharedTrunk.TOLERANCE`, judge features within float32 rounding; whatever fails stays on
    TensorFlow with `engine_error` saying why. Conversions are kept in `folder` (default: the cache
    folder's `serving/`). With `background`, one thread converts them in turn while TensorFlow answers,
    and is returned. `LITTLE_DATA_SERVING_ENGINE=tensorflow` turns this off.
    """
    covered = {level for trunk in trunks for level in trunk.levels}
    work = [*trunks, *(p for level, p in sorted(predictors.items())
                       if level not in covered and isinstance(p, Predictor))]

    def run() -> None:
        for item in work:
            item.accelerate(folder)

    if settings.serving_engine() != "onnxruntime" or not work:
        return None
    if not background:
        run()
        return None
    thread = threading.Thread(target=run, name="little-data-onnx", daemon=True)
    thread.start()
    return thread


def _serving_cache(folder: Path | None) -> Path:
    return Path(folder) if folder is not None else settings.cache_dir() / "serving"


def _check_picture(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, *size, 3), dtype=np.uint8)


def _file_stamp(path: Path) -> tuple[int, int]:
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


def _close(a: np.ndarray, b: np.ndarray, relative: float = 1e-4) -> bool:
    """Features equal up to float32 rounding of differently ordered (folded, batched) arithmetic."""
    return bool(np.abs(a - b).max() <= relative * max(1.0, float(np.abs(b).max())))


@dataclass
class _TrunkCut:
    """A model cut in two where its backbone's top block starts: the shareable trunk and its own tail."""

    predictor: Predictor
    key: tuple  # what must match to share: backbone, size, views, preprocessing, cut point
    mirrored: bool  # the model averages the photo and its mirror image
    trunk: object  # photo -> the feature map entering the top block
    upper: object  # that feature map -> the backbone's output map (the top block)
    classifier: object  # the backbone's output -> the model's output for one view
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
    pre_config = [(layer.__class__.__name__, layer.get_config()) for layer in preprocess.layers[1:]]
    for _, config in pre_config:  # weightless layers: only what they compute matters
        config.pop("name", None), config.pop("trainable", None)
    key = (backbone.name, tuple(predictor.image_size), mirrored, top.name, repr(pre_config))
    return _TrunkCut(predictor, key, mirrored, trunk, upper, classifier, [layer for layer in lower.layers if layer.weights])


def _same_weights(a: _TrunkCut, b: _TrunkCut) -> bool:
    return _same_layer_weights(a.trunk_layers, b.trunk_layers)


def _same_layers(a, b) -> bool:
    """Two models (a top block each) with the same layers holding the same weights."""
    return _same_layer_weights([layer for layer in a.layers if layer.weights], [layer for layer in b.layers if layer.weights])


def _same_layer_weights(a: list, b: list) -> bool:
    if [layer.name for layer in a] != [layer.name for layer in b]:
        return False
    return all(np.array_equal(x, y) for la, lb in zip(a, b) for x, y in zip(la.get_weights(), lb.get_weights()))


def predict_every_level(data: bytes, name: str, predictors: dict, explainers: dict | None = None,
                        trunks: list[SharedTrunk] | None = None) -> MultiPrediction:
    """One photo through every level (see `predict_photos`). A bad image gives `error`, never an exception."""
    return predict_photos([(data, name)], predictors, explainers, trunks)[0]


def predict_photos(photos: list[tuple[bytes | Image.Image, str]], predictors: dict, explainers: dict | None = None,
                   trunks: list[SharedTrunk] | None = None) -> list[MultiPrediction]:
    """Decodes each photo once, then runs each level's model once on all of them (one batch).

    Args:
        photos: (bytes, name) pairs (or an already decoded upright RGB image instead of the bytes); a photo
            that does not decode gets `error`, never an exception.
        predictors: level -> `Predictor` (or an exception instance for a model that is unusable).
        explainers: level -> `core.serving.explain.Explainer` (or an exception) to add Grad-CAM heatmaps; one
            gradient pass then gives both the probabilities and the heatmap.
        trunks: `SharedTrunk.plan(predictors)`, to predict the levels they cover in one pass (levels
            with an explainer still use it).

    `server_ms` of each result is the whole batch's time (a caller that queues adds its wait).
    """
    start = time.perf_counter()
    results = [MultiPrediction(name) for _, name in photos]
    images = []
    for (data, name), result in zip(photos, results):
        try:
            result.image = data if isinstance(data, Image.Image) else load_image(data, name=name)
            images.append(result.image)
        except ImageError as exc:
            result.error = str(exc)
    good = [r for r in results if r.error is None]
    arrays: dict[tuple[int, int], np.ndarray] = {}

    def batch(size) -> np.ndarray:
        if size not in arrays:
            arrays[size] = np.stack([to_array(image, size) for image in images])
        return arrays[size]

    explainers = explainers or {}
    shared, features = {}, {}
    if good:
        for trunk in trunks or ():
            if any(level in predictors and not explainers.get(level) for level in trunk.levels):
                probabilities, pooled = trunk.predict_all(batch(trunk.image_size))
                shared.update(probabilities)
                features.update(pooled)  # judges on the trunk's network need no pass of their own
    for level, predictor in predictors.items() if good else ():
        if isinstance(predictor, Exception):
            for result in good:
                result.model_errors[level] = str(predictor)
            continue
        explainer = explainers.get(level)
        if explainer is not None and not isinstance(explainer, Exception):
            heatmaps, probabilities = explainer.explain_arrays(batch(predictor.image_size))
            for result, heatmap in zip(good, heatmaps):
                result.heatmaps[level] = heatmap
        else:
            if isinstance(explainer, Exception):
                for result in good:
                    result.explain_errors[level] = str(explainer)
            probabilities = (shared[level] if level in shared
                             else predictor.predict_arrays(batch(predictor.image_size), calibrated=False))
        probabilities = predictor.calibrate(np.asarray(probabilities))
        for result, row in zip(good, probabilities):
            result.per_level[level] = {c: float(p) for c, p in zip(predictor.classes, row)}
        judge = predictor.judge
        if judge is not None:  # levels judged by the same network share one pass of it
            if judge.key not in features:
                features[judge.key] = judge.features(batch(judge.judge.image_size))
            for result, verdict in zip(good, judge.verdicts_from_features(features[judge.key])):
                result.verdicts[level] = verdict
    elapsed = (time.perf_counter() - start) * 1000
    for result in results:
        result.server_ms = elapsed
    return results
