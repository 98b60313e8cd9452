"""Probabilities that mean what they say: temperature scaling fitted on the validation split.

A network trained on little data is over-confident: of the photos it calls at 99%, far fewer than
99% are right. Temperature scaling (Guo et al., 2017) divides the log-probabilities by one number T
fitted to minimise the validation split's negative log-likelihood; a positive T never changes
which class wins, only how sure the answer says it is. The same arithmetic runs in the Predictor
(NumPy) and in exported models (`core.networks.layers.TemperatureScaling`).

One temperature cannot fix a model that is over-confident in a way that depends on how sure it is
(the small convnet of level 1 is too sure at 99% and about right at 60%). So the scaling has a
second number, an exponent b: each photo's log-probabilities are multiplied by m^(b-1) / T, where m
is the gap between its two largest log-probabilities. For two classes that makes the top
probability sigmoid(m^b / T), a monotone map of the model's own margin (Platt scaling of a power
of the margin, without the offset that could change the winner); b = 1 is plain temperature
scaling. The factor is positive, so the winner never changes. The exponent is kept only when it
fits the held-out half of the split better (negative log-likelihood, cross-fitted) than T alone.

How well it worked is measured by the expected calibration error (15 equal-width confidence bins,
the share of photos in each bin times the gap between its mean confidence and its accuracy). On
the split T was fitted on, that figure flatters; `Calibration.ece_cross_fitted` fits on one half
of the split and measures on the other (both ways), which is what to expect on new photos. When
that is no better than the model's own probabilities (a handful of validation photos can make the
best-fitting T sharpen a model that is right by chance), T stays 1.

ECE measured on a few hundred photos is not zero even for a perfectly calibrated model: each bin's
accuracy is a coin-flip average. `Calibration.ece_floor` is what a perfectly calibrated model with
the same confidences would measure on as many photos (mean of simulated draws); a measured ECE near
its floor is as good as that many photos can show.
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
#: Exponents searched: below 0.3 every answer would read about the same; above 2 it sharpens the sure
#: ones beyond anything a validation split can support.
EXPONENTS = tuple(float(b) for b in np.round(np.linspace(0.3, 2.0, 18), 2))
#: The margin is floored here so that a photo with two tied classes keeps a finite factor.
MARGIN_FLOOR = 1e-3
_FLOOR_DRAWS = 200


def margins(log_probabilities: np.ndarray) -> np.ndarray:
    """[N] gap between each row's two largest log-probabilities, floored at MARGIN_FLOOR."""
    top_two = np.sort(log_probabilities, axis=1)[:, -2:]
    return np.maximum(top_two[:, 1] - top_two[:, 0], MARGIN_FLOOR)


def scale(probabilities: np.ndarray, temperature: float, exponent: float = 1.0) -> np.ndarray:
    """[N, C] probabilities with their log-probabilities times m^(exponent-1) / `temperature`, renormalised.

    m is the row's margin (see `margins`); with exponent 1 this is plain temperature scaling.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1.0)
    logits = np.log(p)
    if exponent != 1.0 and logits.shape[1] > 1:
        logits = logits * margins(logits)[:, None] ** (float(exponent) - 1.0)
    logits = logits / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.mean(np.log(p)))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, exponent: float = 1.0) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` (golden-section on log T)."""
    labels = np.asarray(labels, dtype=np.int64)
    loss = lambda log_t: negative_log_likelihood(scale(probabilities, float(np.exp(log_t)), exponent), labels)  # noqa: E731
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


def fit_scaling(probabilities: np.ndarray, labels: np.ndarray, exponents=EXPONENTS) -> tuple[float, float]:
    """(temperature, exponent) minimising the negative log-likelihood, the exponent from `exponents`."""
    labels = np.asarray(labels, dtype=np.int64)
    fits = [(fit_temperature(probabilities, labels, b), float(b)) for b in exponents]
    return min(fits, key=lambda f: negative_log_likelihood(scale(probabilities, *f), labels))


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


def cross_fitted(probabilities: np.ndarray, labels: np.ndarray, exponents=(1.0,), seed: int = 0) -> np.ndarray:
    """Each half of the split scaled by what was fitted on the other half (the split as it is when too small)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    parts = halves(len(labels), seed)
    if min(len(h) for h in parts) < 2:
        return probabilities
    scaled = np.empty_like(probabilities)
    for fit_on, apply_to in (parts, parts[::-1]):
        scaled[apply_to] = scale(probabilities[apply_to], *fit_scaling(probabilities[fit_on], labels[fit_on], exponents))
    return scaled


def cross_fitted_ece(probabilities: np.ndarray, labels: np.ndarray, seed: int = 0, exponents=(1.0,)) -> float:
    """ECE on photos the scaling was not fitted on: two halves, each scaled by the other's fit."""
    return expected_calibration_error(cross_fitted(probabilities, labels, exponents, seed), labels)


def ece_floor(probabilities: np.ndarray, bins: int = ECE_BINS, draws: int = _FLOOR_DRAWS, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these confidences would measure on as many photos.

    Each draw makes every photo right with the probability the model gives its answer; the mean
    over draws is the measurement's own noise, below which no calibration can be shown to be.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    answer = probabilities.argmax(axis=1)
    other = (answer + 1) % probabilities.shape[1]  # any wrong class: ECE only asks whether the answer is right
    values = []
    for _ in range(draws):
        right = rng.random(len(answer)) < probabilities.max(axis=1)
        values.append(expected_calibration_error(probabilities, np.where(right, answer, other), bins))
    return float(np.mean(values))


@dataclass(frozen=True)
class Calibration:
    """A model's temperature and what it did on the validation split (stored in its card).

    Attributes:
        temperature: divide log-probabilities by this (above 1: the model was over-confident); 1 when
            scaling did not help on held-out halves of the split (`fitted_temperature` is what it would be).
        ece_before / ece_after: on the validation split, before and after scaling (after: in-sample).
        ece_cross_fitted: after scaling, with the scaling fitted on the other half of the split each time.
        photos: how many validation photos it was fitted on.
        bins_before / bins_after: the reliability diagram, for the Curves page.
        exponent: the margin's exponent (see the module's docstring); 1 is plain temperature scaling,
            as in cards written before it.
        ece_floor: what a perfectly calibrated model would measure on as many photos (None in older cards).
    """

    temperature: float
    ece_before: float
    ece_after: float
    ece_cross_fitted: float
    photos: int
    fitted_temperature: float | None = None
    bins_before: list[ReliabilityBin] = field(default_factory=list)
    bins_after: list[ReliabilityBin] = field(default_factory=list)
    exponent: float = 1.0
    ece_floor: float | None = None

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return scale(probabilities, self.temperature, self.exponent)

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and self.exponent == 1.0

    @property
    def within_noise(self) -> bool:
        """Whether the model was already as calibrated as this many photos can show: its ECE before scaling
        is within twice what a perfectly calibrated model would measure (False where that is unknown)."""
        return self.ece_floor is not None and self.ece_before <= 2 * self.ece_floor

    def describe(self) -> str:
        """'temperature 2.40' or 'temperature 1.28, margin exponent 0.61'."""
        text = f"temperature {self.temperature:.2f}"
        return text if self.exponent == 1.0 else f"{text}, margin exponent {self.exponent:.2f}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Calibration | None":
        """The card's calibration, or None for a card written before calibration (or a malformed one)."""
        if not data:
            return None
        try:
            bins = {key: [ReliabilityBin(**b) for b in data.get(key, [])] for key in ("bins_before", "bins_after")}
            fitted, floor = data.get("fitted_temperature"), data.get("ece_floor")
            exponent = float(data.get("exponent", 1.0))
            if not exponent > 0:
                return None
            return cls(temperature=float(data["temperature"]), ece_before=float(data["ece_before"]),
                       ece_after=float(data["ece_after"]), ece_cross_fitted=float(data["ece_cross_fitted"]),
                       photos=int(data["photos"]), fitted_temperature=float(fitted) if fitted is not None else None,
                       exponent=exponent, ece_floor=float(floor) if floor is not None else None, **bins)
        except (KeyError, TypeError, ValueError):
            return None


def calibrate(probabilities: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fits the scaling on a validation split's probabilities ([N, C]) and measures the result."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    before = expected_calibration_error(probabilities, labels)
    # Temperature alone, or with the margin's exponent: whichever predicts the held-out half better.
    candidates = {exponents: cross_fitted(probabilities, labels, exponents) for exponents in ((1.0,), EXPONENTS)}
    exponents = min(candidates, key=lambda e: negative_log_likelihood(candidates[e], labels))
    fitted, exponent = fit_scaling(probabilities, labels, exponents)
    cross_fitted_error = expected_calibration_error(candidates[exponents], labels)
    # A split the model gets entirely right says nothing about how often it is wrong: its likelihood
    # only grows as T shrinks, and every answer, wrong ones to come included, would read ~100%.
    errors = bool(np.any(probabilities.argmax(axis=1) != labels))
    temperature, exponent = (fitted, exponent) if errors and cross_fitted_error < before else (1.0, 1.0)
    scaled = scale(probabilities, temperature, exponent)
    return Calibration(temperature, before, expected_calibration_error(scaled, labels),
                       cross_fitted_error if temperature != 1.0 else before, len(labels), fitted,
                       reliability(probabilities, labels), reliability(scaled, labels), exponent, ece_floor(scaled))
