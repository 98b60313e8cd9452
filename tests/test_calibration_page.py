"""Curves & comparison: each chosen model's "Calibration and refusals" (reliability diagram, ECE, temperature, judge)."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.serving.model_store import ModelStore
from core.serving.novelty import NoveltyJudge
from core.training.loop import TrainConfig, train
from tests.helpers import isolate_environment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def calibrated_store(dataset_factory, tmp_path_factory) -> Path:
    """One level-2 model on the synthetic data set (random-weight tiny net: calibrated, no judge), trained once."""
    from core.networks.backbones import BACKBONES
    from tests.registry_examples import TINY_BACKBONE

    data = dataset_factory()  # the same data set `app_env` makes the app's
    with pytest.MonkeyPatch.context() as mp:
        home = isolate_environment(mp, tmp_path_factory.mktemp("calibrated"))
        mp.setitem(BACKBONES, TINY_BACKBONE.name, TINY_BACKBONE)
        train(TrainConfig(level=2, backbone=TINY_BACKBONE.name, weights="none", epochs=1, batch_size=8,
                          data_dir=str(data)))
    return home / "models"


@pytest.fixture
def store(app_env, tiny_backbone, calibrated_store, monkeypatch, tmp_path) -> ModelStore:
    """The module's model, copied into this test's own store (tests rewrite its card)."""
    models = tmp_path / "models"
    shutil.copytree(calibrated_store, models)
    monkeypatch.setenv("LITTLE_DATA_MODELS_DIR", str(models))
    return ModelStore()


def curves_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/curves.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect[0].value, "the newest model is chosen, so its diagnostics are drawn"
    return at


def section(at: AppTest):
    expanders = [e for e in at.expander if e.label.startswith("Calibration and refusals")]
    assert len(expanders) == 1, [e.label for e in at.expander]
    return expanders[0]


def texts(block) -> list[str]:
    return [e.value for kind in ("markdown", "caption", "info") for e in getattr(block, kind)]


def test_a_trained_model_shows_its_reliability_diagram_figures_and_why_it_has_no_judge(store):
    entry = store.list().models[0]
    calibration = entry.card.calibration
    assert calibration is not None and entry.card.novelty is None and "random weights" in entry.card.novelty_note
    at = curves_page()
    part = section(at)
    assert f"{calibration.ece_before:.1%} → {calibration.ece_cross_fitted:.1%} on new photos" in part.label
    metrics = {m.label: m.value for m in part.metric}
    assert metrics["ECE before"] == f"{calibration.ece_before:.1%}"
    assert metrics["ECE after"] == f"{calibration.ece_cross_fitted:.1%}"  # the headline: cross-fitted
    assert metrics["Temperature"] == f"{calibration.temperature:.2f}"
    assert any(f"In-sample after scaling: {calibration.ece_after:.1%}" in t for t in texts(part))
    assert any(f"A perfectly calibrated model would measure about {calibration.ece_floor:.1%}" in t for t in texts(part))
    assert not any(t.startswith("Margin exponent") for t in texts(part)) or calibration.exponent != 1.0
    assert any("random weights" in t and t.startswith("No judge") for t in texts(part))
    specs = [json.loads(c.proto.spec) for c in part.get("vega_lite_chart")]
    assert len(specs) == 1, "the reliability diagram"
    spec = json.dumps(specs[0])
    assert all(name in spec for name in ("perfectly calibrated", "before", "after calibration"))
    assert any("Both axes run 0–1; with 2 classes the top probability is never below 50%" in t for t in texts(part))


def test_a_model_trained_before_calibration_says_so_and_the_page_still_works(store):
    entry = store.list().models[0]
    card = json.loads(entry.card_path.read_text())
    for key in ("calibration", "novelty", "novelty_note"):
        card.pop(key)
    entry.card_path.write_text(json.dumps(card))
    assert store.list().models[0].card.calibration is None
    at = curves_page()
    part = section(at)
    assert part.label.endswith("not calibrated")
    assert any(t.startswith("Not calibrated (trained before calibration; `python -m core calibrate "
                            f"{entry.id}` adds it)") for t in texts(part))
    assert not part.metric and not part.get("vega_lite_chart")
    assert any("Confusion matrix" in m.value for m in at.markdown), "the rest of the diagnostics is unchanged"


def test_a_model_with_a_judge_says_what_share_of_its_own_photos_it_accepts(store):
    entry = store.list().models[0]
    judge = NoveltyJudge("tiny_net", None, "none", (32, 32), True, 1, 0.25, 0.97, 0.9167, 24)
    # Scaling that did not help on held-out halves leaves the temperature at 1: the page says so.
    calibration = dataclasses.replace(entry.card.calibration, temperature=1.0, fitted_temperature=2.5)
    store.update_card(entry, dataclasses.replace(entry.card, novelty=judge, novelty_note=None,
                                                 calibration=calibration))
    at = curves_page()
    part = section(at)
    assert any("Accepts 92% of in-class validation photos at its threshold (set to accept 97%)" in t
               for t in texts(part))
    assert any(judge.describe() in t for t in texts(part))
    assert any("Left at 1: scaling did not help on held-out halves" in t and "was 2.50" in t for t in texts(part))
    assert {m.label: m.value for m in part.metric}["Temperature"] == "1.00"


def test_a_margin_exponent_is_named_and_explained(store):
    entry = store.list().models[0]
    calibration = dataclasses.replace(entry.card.calibration, temperature=1.3, exponent=0.6)
    store.update_card(entry, dataclasses.replace(entry.card, calibration=calibration))
    part = section(curves_page())
    assert {m.label: m.value for m in part.metric}["Temperature"] == "1.30"
    assert any(t.startswith("Margin exponent 0.60: the model's over-confidence depends on how sure it is")
               for t in texts(part))


@pytest.mark.parametrize("before, in_sample, held_out, floor, says_noise, says_flatters", [
    (0.007, 0.004, 0.003, 0.006, True, False),  # the review's level 2: every figure within the floor's noise
    (0.080, 0.010, 0.020, 0.006, False, True),  # over-confident, cured; in-sample a little better, as usual
])
def test_the_figures_say_when_they_are_within_noise(store, before, in_sample, held_out, floor, says_noise, says_flatters):
    entry = store.list().models[0]
    card = json.loads(entry.card_path.read_text())
    card["calibration"].update(ece_before=before, ece_after=in_sample, ece_cross_fitted=held_out, ece_floor=floor)
    entry.card_path.write_text(json.dumps(card))
    part = section(curves_page())
    caption = next(t for t in texts(part) if t.startswith("In-sample after scaling"))
    assert ("within twice that" in caption) == says_noise and part.label.endswith("(within noise)") == says_noise
    assert ("so it usually flatters" in caption) == says_flatters
