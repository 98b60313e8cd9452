"""Probabilities that mean what they say: temperature scaling fitted on the validation split.

A network trained on little data is over-confident: of the photos it calls at 99%, far fewer than
99% are right. Temperature scaling (Guo et al., 2017) divides the log-probabilities by one number T
fitted to minimise the validation split's negative log-likelihood; a positive T never changes
which class wins, only how sure the answer says it is. The same arithmetic runs in the Predictor
(NumPy) and in exported models (`core.networks.layers.TemperatureScaling`).

How well it worked is measured by the expected calibration error (15 equal-width confidence bins,
the share of photos in each bin times the gap between its mean confidence and its accuracy). On
the split T was fitted on, that figure flatters; `Calibration.ece_cross_fitted` fits T on one half
of the split and measures on the other (both ways), which is what to expect on new photos. When
that is no better than the model's own probabilities (a handful of validation photos can make the
best-fitting T sharpen a model that is right by chance), T stays 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

#: Probabilities are clipped here before taking logs: a float32 sigmoid says exactly 1.0 for photos
#: it is sure of, and log(0) would make the scaled probabilities undefined.
EPSILON = 1e-7
ECE_BINS = 15
#: Temperatures searched (log-spaced); far outside this a model's outputs carry no information.
_LOG_T_RANGE = (-1.4, 4.0)  # T from 0.25 to 55


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """[N, C] probabilities with their log-probabilities divided by `temperature`, renormalised."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1.0)
    logits = np.log(p) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.mean(np.log(p)))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` (golden-section on log T)."""
    labels = np.asarray(labels, dtype=np.int64)
    loss = lambda log_t: negative_log_likelihood(scale(probabilities, float(np.exp(log_t))), labels)  # noqa: E731
    # A coarse grid first (the loss can be flat for a perfect split), then golden-section around the best.
    grid = np.linspace(*_LOG_T_RANGE, 57)
    best = int(np.argmin([loss(g) for g in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loss(a) <= loss(b):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2))


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of a reliability diagram: photos whose top probability fell in [low, high)."""

    low: float
    high: float
    count: int
    confidence: float | None  # mean top probability in the bin; None when empty
    accuracy: float | None  # share of its photos the model got right


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The reliability diagram's bins (equal width in confidence)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # The top probability of C classes is at least 1/C; 1.0 goes in the last bin.
    which = np.clip(np.digitize(confidence, edges[1:-1], right=False), 0, bins - 1)
    result = []
    for i in range(bins):
        members = which == i
        count = int(members.sum())
        result.append(ReliabilityBin(float(edges[i]), float(edges[i + 1]), count,
                                     float(confidence[members].mean()) if count else None,
                                     float(correct[members].mean()) if count else None))
    return result


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of photos) x |mean confidence - accuracy|."""
    total = len(labels)
    if total == 0:
        return 0.0
    return float(sum(b.count / total * abs(b.confidence - b.accuracy) for b in reliability(probabilities, labels, bins)
                     if b.count))


def halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices 0..n-1 shuffled (seeded) and cut in two: fit on one, measure on the other, then swap."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2:]


def cross_fitted_ece(probabilities: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """ECE on photos the temperature was not fitted on: two halves, each scaled by the other's T."""
    labels = np.asarray(labels)
    parts = halves(len(labels), seed)
    if min(len(h) for h in parts) < 2:
        return expected_calibration_error(probabilities, labels)
    scaled = np.empty_like(np.asarray(probabilities, dtype=np.float64))
    for fit_on, apply_to in (parts, parts[::-1]):
        t = fit_temperature(probabilities[fit_on], labels[fit_on])
        scaled[apply_to] = scale(probabilities[apply_to], t)
    return expected_calibration_error(scaled, labels)


@dataclass(frozen=True)
class Calibration:
    """A model's temperature and what it did on the validation split (stored in its card).

    Attributes:
        temperature: divide log-probabilities by this (above 1: the model was over-confident); 1 when
            scaling did not help on held-out halves of the split (`fitted_temperature` is what it would be).
        ece_before / ece_after: on the validation split, before and after scaling (after: in-sample).
        ece_cross_fitted: after scaling, with T fitted on the other half of the split each time.
        photos: how many validation photos it was fitted on.
        bins_before / bins_after: the reliability diagram, for the Curves page.
    """

    temperature: float
    ece_before: float
    ece_after: float
    ece_cross_fitted: float
    photos: int
    fitted_temperature: float | None = None
    bins_before: list[ReliabilityBin] = field(default_factory=list)
    bins_after: list[ReliabilityBin] = field(default_factory=list)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return scale(probabilities, self.temperature)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Calibration | None":
        """The card's calibration, or None for a card written before calibration (or a malformed one)."""
        if not data:
            return None
        try:
            bins = {key: [ReliabilityBin(**b) for b in data.get(key, [])] for key in ("bins_before", "bins_after")}
            fitted = data.get("fitted_temperature")
            return cls(temperature=float(data["temperature"]), ece_before=float(data["ece_before"]),
                       ece_after=float(data["ece_after"]), ece_cross_fitted=float(data["ece_cross_fitted"]),
                       photos=int(data["photos"]), fitted_temperature=float(fitted) if fitted is not None else None,
                       **bins)
        except (KeyError, TypeError, ValueError):
            return None


def calibrate(probabilities: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fits the temperature on a validation split's probabilities ([N, C]) and measures the result."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    fitted = fit_temperature(probabilities, labels)
    before = expected_calibration_error(probabilities, labels)
    cross_fitted = cross_fitted_ece(probabilities, labels)
    # A split the model gets entirely right says nothing about how often it is wrong: its likelihood
    # only grows as T shrinks, and every answer, wrong ones to come included, would read ~100%.
    errors = bool(np.any(probabilities.argmax(axis=1) != labels))
    temperature = fitted if errors and cross_fitted < before else 1.0
    scaled = scale(probabilities, temperature)
    return Calibration(temperature, before, expected_calibration_error(scaled, labels),
                       cross_fitted if temperature != 1.0 else before, len(labels), fitted,
                       reliability(probabilities, labels), reliability(scaled, labels))
