"""core.serving.calibration: temperature scaling keeps every answer and makes its confidence honest."""

import numpy as np
import pytest

from core.serving.calibration import (Calibration, calibrate, expected_calibration_error, fit_temperature,
                                      reliability, scale)


def overconfident(n=2000, classes=3, seed=0):
    """Labels drawn from true probabilities; the 'model' reports those probabilities sharpened (T = 1/3)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in true])
    return scale(true, 1 / 3), labels, true


def test_temperature_recovers_the_sharpening_and_lowers_the_error():
    reported, labels, _ = overconfident()
    t = fit_temperature(reported, labels)
    assert 2.5 < t < 3.6  # the model was sharpened by 3
    fitted = calibrate(reported, labels)
    assert fitted.ece_before > 0.1 and fitted.ece_after < 0.03 and fitted.ece_cross_fitted < 0.04


@pytest.mark.parametrize("classes", [2, 5])
def test_scaling_never_changes_the_winner(classes):
    rng = np.random.default_rng(classes)
    p = rng.dirichlet(np.ones(classes) * 0.3, 500)
    p[:10] = np.eye(classes)[rng.integers(0, classes, 10)]  # saturated outputs: exactly 0 and 1, as float32 gives
    for t in (0.2, 1.0, 4.0, 50.0):
        scaled = scale(p, t)
        assert np.all(np.isfinite(scaled)) and np.allclose(scaled.sum(1), 1)
        assert np.array_equal(scaled.argmax(1), p.argmax(1))


def test_ece_of_a_perfectly_calibrated_model_is_small_and_bins_add_up():
    _, labels, true = overconfident(n=4000, seed=1)
    assert expected_calibration_error(true, labels) < 0.03
    bins = reliability(true, labels)
    assert len(bins) == 15 and sum(b.count for b in bins) == 4000
    assert all(b.confidence is None or b.low <= b.confidence <= b.high for b in bins)


def test_card_round_trip_and_old_cards():
    reported, labels, _ = overconfident(n=300)
    fitted = calibrate(reported, labels)
    again = Calibration.from_dict(fitted.to_dict())
    assert again == fitted
    assert Calibration.from_dict(None) is None and Calibration.from_dict({"temperature": "warm"}) is None
    assert np.allclose(again.apply(reported), scale(reported, fitted.temperature))


def test_a_split_without_errors_leaves_the_temperature_at_one():
    """Its likelihood only grows as T shrinks; scaling would make every future answer read ~100%."""
    p = np.random.default_rng(0).uniform(0.6, 0.99, 60)
    fitted = calibrate(np.stack([1 - p, p], 1), np.ones(60, int))
    assert fitted.temperature == 1.0 and fitted.fitted_temperature < 1.0
