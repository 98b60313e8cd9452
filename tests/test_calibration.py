"""core.serving.calibration: temperature scaling keeps every answer and makes its confidence honest."""

import numpy as np
import pytest

from core.serving.calibration import (Calibration, calibrate, cross_fitted_ece, ece_floor, expected_calibration_error,
                                      fit_scaling, fit_temperature, reliability, scale)


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
        for exponent in (0.3, 1.0, 2.0):
            scaled = scale(p, t, exponent)
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


def sure_when_unsure(n=1600, seed=0):
    """Two classes; the 'model' reports margin m where the truth is sigmoid(m^0.6 / 1.3): too sure of its
    sure answers, about right on its unsure ones, which no single temperature fixes (as level 1)."""
    rng = np.random.default_rng(seed)
    margin = rng.gamma(1.5, 3.0, n)
    truth = 1 / (1 + np.exp(-(margin ** 0.6) / 1.3))
    answer = rng.integers(0, 2, n)
    labels = np.where(rng.random(n) < truth, answer, 1 - answer)
    top = 1 / (1 + np.exp(-margin))
    reported = np.where(answer[:, None] == np.arange(2), top[:, None], 1 - top[:, None])
    return reported, labels


def test_the_margin_exponent_fixes_what_one_temperature_cannot():
    reported, labels = sure_when_unsure()
    temperature, exponent = fit_scaling(reported, labels)
    assert 0.45 <= exponent <= 0.75 and 0.9 < temperature < 1.8
    fitted = calibrate(reported, labels)
    assert fitted.exponent == exponent and "margin exponent" in fitted.describe()
    assert fitted.ece_cross_fitted < cross_fitted_ece(reported, labels) - 0.01  # better than T alone, on held-out halves
    assert fitted.ece_cross_fitted < 2 * fitted.ece_floor
    assert np.array_equal(fitted.apply(reported).argmax(1), reported.argmax(1))


def test_a_plain_temperature_problem_keeps_the_exponent_at_one_or_near():
    reported, labels, _ = overconfident(classes=2)
    fitted = calibrate(reported, labels)
    assert 0.8 <= fitted.exponent <= 1.2 and fitted.ece_cross_fitted < 0.04


def test_the_ece_floor_is_what_a_perfect_model_measures_and_shrinks_with_more_photos():
    _, labels, true = overconfident(n=4000, seed=2)
    floors = [ece_floor(true[:n]) for n in (200, 800, 3200)]
    assert floors[0] > floors[1] > floors[2] > 0
    measured = [expected_calibration_error(true[:n], labels[:n]) for n in (200, 800, 3200)]
    assert all(m < 2.5 * f for m, f in zip(measured, floors))  # a calibrated model measures about its floor
    assert ece_floor(scale(true, 1 / 3)[:800]) < expected_calibration_error(scale(true, 1 / 3)[:800], labels[:800]) / 3


def test_old_cards_have_no_exponent_and_bad_ones_are_refused():
    old = {"temperature": 2.0, "ece_before": 0.1, "ece_after": 0.05, "ece_cross_fitted": 0.06, "photos": 10}
    calibration = Calibration.from_dict(old)
    assert calibration.exponent == 1.0 and calibration.ece_floor is None and calibration.describe() == "temperature 2.00"
    assert Calibration.from_dict({**old, "exponent": -1}) is None
