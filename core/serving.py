"""Predicting one photo with every level's latest model: what the Predict page calls."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.images import ImageError, load_image, to_array


@dataclass
class MultiPrediction:
    name: str
    image: object | None = None  # upright RGB PIL image, for display
    per_level: dict[int, dict[str, float]] = field(default_factory=dict)  # level -> class -> probability
    error: str | None = None
    model_errors: dict[int, str] = field(default_factory=dict)
    server_ms: float = 0.0


def predict_every_level(data: bytes, name: str, predictors: dict) -> MultiPrediction:
    """Decodes once, then runs each level's predictor. A bad image gives `error`, never an exception.

    Args:
        predictors: level -> `core.predict.Predictor` (or an exception instance for unusable models).
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
    arrays = {}
    for level, predictor in predictors.items():
        if isinstance(predictor, Exception):
            result.model_errors[level] = str(predictor)
            continue
        size = predictor.image_size
        if size not in arrays:
            arrays[size] = to_array(image, size)
        probs = predictor.predict_arrays(arrays[size][None])[0]
        result.per_level[level] = {c: float(p) for c, p in zip(predictor.classes, probs)}
    result.server_ms = (time.perf_counter() - start) * 1000
    return result
