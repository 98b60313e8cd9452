"""Honest answers end to end: training calibrates and fits a novelty judge; Predictor, CLI, Predict page
and exports use them; old cards still predict; a model refuses photos of another data set."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.cli import main
from core.serving.calibration import Calibration
from core.serving.model_store import ModelStore
from core.serving.predictor import Predictor, predict_every_level
from core.training.loop import TrainConfig, train
from tests.helpers import jpeg_bytes, make_image
from tests.registry_examples import SEEDED_BACKBONE as SEEDED

ROOT = Path(__file__).resolve().parent.parent


def level2(dataset, weights, **kw):
    return train(TrainConfig(level=2, backbone=SEEDED.name, weights=weights, epochs=2, batch_size=8,
                             data_dir=str(dataset), **kw)).entry


def with_card(entry, **changes):
    """The stored model with its card changed (as an older or edited card would be)."""
    store = ModelStore()
    return store.update_card(entry, replace(entry.card, **changes))


def photo(cls="circles", seed=5) -> bytes:
    return jpeg_bytes(make_image(cls, np.random.default_rng(seed)))


def test_training_calibrates_and_fits_a_judge(app_env, seeded):
    entry = level2(app_env, seeded)
    card = entry.card
    assert card.calibration is not None and card.calibration.photos == 12 and card.calibration.temperature > 0
    judge = card.novelty
    assert judge is not None and judge.own_network and judge.backbone == SEEDED.name and judge.training_photos == 24
    assert entry.novelty_bank_path.is_file() and np.load(entry.novelty_bank_path).shape == (24, 16)
    assert judge.validation_accepted >= judge.accept_rate
    again = ModelStore().get(entry.id).card  # read back from disk
    assert again.calibration == card.calibration and again.novelty == card.novelty
    predictor = Predictor(ModelStore().get(entry.id))
    result = predictor.predict([photo()], names=["circle.jpg"])[0]
    assert result.verdict is not None and result.verdict.threshold == judge.threshold
    assert result.label == (None if result.unknown else result.nearest)


def test_calibration_never_changes_the_answer(app_env, seeded):
    entry = with_card(level2(app_env, seeded), calibration=Calibration(3.0, 0.1, 0.02, 0.03, 12))
    predictor = Predictor(entry)
    images = np.stack([np.asarray(make_image(c, np.random.default_rng(i)).resize((32, 32)))
                       for i, c in enumerate(["circles", "squares"] * 10)])
    raw, calibrated = predictor.predict_arrays(images, calibrated=False), predictor.predict_arrays(images)
    assert np.array_equal(raw.argmax(1), calibrated.argmax(1))
    assert np.allclose(calibrated.sum(1), 1) and np.abs(raw - calibrated).max() > 1e-4  # T = 3 softens them


def test_an_old_card_without_the_new_fields_still_predicts(app_env, seeded, capsys):
    entry = level2(app_env, seeded)
    data = json.loads(entry.card_path.read_text())
    for key in ("calibration", "novelty", "novelty_note"):
        data.pop(key)
    data["version"] = 2
    entry.card_path.write_text(json.dumps(data))
    old = ModelStore().get(entry.id)
    assert old.card.calibration is None and old.card.novelty is None
    result = Predictor(old).predict([photo()], names=["c.jpg"])[0]
    assert result.verdict is None and not result.unknown and result.label in ("circles", "squares")
    assert main(["predict", entry.id, str(app_env / "validation" / "circles" / "circles.0.jpg"), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["unknown"] is False and line["novelty"] is None and line["label"] in ("circles", "squares")


def test_cli_says_none_of_these(app_env, seeded, capsys):
    entry = level2(app_env, seeded)
    with_card(entry, novelty=replace(entry.card.novelty, threshold=-1.0))  # everything is a stranger now
    path = str(app_env / "validation" / "circles" / "circles.0.jpg")
    assert main(["predict", entry.id, path, "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["label"] is None and line["unknown"] is True and line["novelty"] > -1.0
    assert set(line["probabilities"]) == {"circles", "squares"}
    assert main(["predict", entry.id, path]) == 0
    text = capsys.readouterr().out.strip().splitlines()[-1]
    assert text.startswith(f"{path}: none of these (nearest: ") and "novelty" in text and "> -1.000" in text


def test_evaluate_reports_calibration_and_refusals(app_env, seeded, capsys):
    entry = level2(app_env, seeded)
    assert main(["evaluate", entry.id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert 0 <= report["ece"] <= 1 and 0 <= report["ece_uncalibrated"] <= 1
    assert report["unknown_rate"] == pytest.approx(1 - entry.card.novelty.validation_accepted)


def test_calibrate_command_gives_an_old_model_both(app_env, seeded, capsys):
    entry = with_card(level2(app_env, seeded), calibration=None, novelty=None)
    entry.novelty_bank_path.unlink()
    assert main(["calibrate", entry.id, "--weights", seeded]) == 0
    assert "temperature" in capsys.readouterr().out
    card = ModelStore().get(entry.id).card
    assert card.calibration is not None and card.novelty is not None and entry.novelty_bank_path.is_file()


def test_without_a_usable_judge_network_the_model_says_why(app_env, tiny_backbone):
    """Random weights make a new network at every load, so no judge is fitted; the card says so."""
    entry = train(TrainConfig(level=2, backbone=tiny_backbone.name, weights="none", epochs=1, batch_size=8,
                              data_dir=str(app_env))).entry
    assert entry.card.novelty is None and "random weights" in entry.card.novelty_note
    assert entry.card.calibration is not None


def test_level_1_is_judged_by_a_separate_network(app_env, seeded, monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_JUDGE_BACKBONE", SEEDED.name)
    monkeypatch.setenv("LITTLE_DATA_WEIGHTS_SEEDED_NET", seeded)
    entry = train(TrainConfig(level=1, epochs=1, batch_size=8, image_size=(32, 32), data_dir=str(app_env))).entry
    judge = entry.card.novelty
    assert judge is not None and not judge.own_network and judge.backbone == SEEDED.name
    assert "separate judge" in judge.describe()


def test_levels_that_share_a_judge_network_run_it_once_and_disagreements_are_named(app_env, seeded, monkeypatch):
    first = level2(app_env, seeded)
    second = with_card(level2(app_env, seeded, seed=3), novelty=replace(first.card.novelty, threshold=-1.0))
    predictors = {2: Predictor(ModelStore().get(first.id)), 3: Predictor(second)}
    calls = []
    judge = predictors[2].judge
    original = type(judge).features
    monkeypatch.setattr(type(judge), "features", lambda self, images: calls.append(1) or original(self, images))
    result = predict_every_level(photo(), "circle.jpg", predictors)
    assert len(calls) == 1 and set(result.verdicts) == {2, 3}
    assert result.answer(3) is None and result.verdicts[3].unknown
    if result.answer(2) is not None:
        assert result.disagreement() == f"The levels disagree: level 2 says {result.answer(2)}; level 3 says none of these."


def test_predict_page_shows_a_refused_photo(app_env, seeded):
    entry = level2(app_env, seeded)
    with_card(entry, novelty=replace(entry.card.novelty, threshold=-1.0))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/predict.py").run()
    at.file_uploader[0].set_value([("stranger.jpg", photo("triangles"), "image/jpeg")]).run()
    assert not at.exception, [e.value for e in at.exception]
    answers = [m.value for m in at.main.markdown if m.value.startswith("### ")]
    assert answers == ["### Doesn't look like circles or squares"]
    assert any(c.value.startswith("Without the check: ") and "novelty" in c.value for c in at.caption)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "onnx", "tflite"])
def test_exports_return_the_calibrated_probabilities(app_env, seeded, tmp_path, fmt):
    """With a margin exponent, so the exported layer's top-2 margin is checked in every runtime."""
    from core.serving.export import export_model, open_export

    entry = with_card(level2(app_env, seeded), calibration=Calibration(2.5, 0.1, 0.02, 0.03, 12, exponent=0.6))
    predictor = Predictor(entry)
    images = np.stack([np.asarray(make_image(c, np.random.default_rng(i)).resize((32, 32)))
                       for i, c in enumerate(["circles", "squares"] * 4)])
    export_model(entry, fmt, tmp_path / "out")
    info, run = open_export(tmp_path / "out")
    exported = run(images.astype(np.float32))
    assert info.temperature == 2.5 and info.exponent == 0.6
    assert "calibrated (temperature 2.50, margin exponent 0.60" in (tmp_path / "out" / "README.md").read_text()
    assert np.abs(exported - predictor.predict_arrays(images)).max() < 1e-4
    assert np.abs(exported - predictor.predict_arrays(images, calibrated=False)).max() > 1e-3


@pytest.mark.slow
def test_a_model_of_one_data_set_refuses_photos_of_the_other(shared, tmp_path, monkeypatch):
    """Cats vs dogs and five flowers, on the default backbone's genuine ImageNet features: 30 photos
    per class for the flowers, 150 for the pets (with 40, too few neighbours make the pets' judge
    lenient: it refuses 80% of the flowers). With MobileNetV2 the flowers model refuses only 70% of the
    cats and dogs (scripts/bench_honesty.py --compare-methods --backbone mobilenet_v2)."""
    monkeypatch.setenv("LITTLE_DATA_SHARED_DIR", str(shared))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    common = dict(level=2, backbone="efficientnet_lite2", epochs=2, flip_average=False)  # no mirror features: CI time
    pets = train(TrainConfig(data_dir=str(shared / "datasets" / "cats_vs_dogs"), limit_per_class=150, **common)).entry
    flowers = train(TrainConfig(data_dir=str(shared / "datasets" / "flowers_fewshot"), **common)).entry

    def refused(entry, root: Path, split="validation", per_class=20):
        paths = [p for folder in sorted((root / split).iterdir()) for p in sorted(folder.iterdir())[-per_class:]]
        results = Predictor(entry).predict([str(p) for p in paths])
        return np.mean([r.unknown for r in results])

    assert refused(pets, shared / "datasets" / "flowers_fewshot") >= 0.9
    assert refused(flowers, shared / "datasets" / "cats_vs_dogs") >= 0.9
    # Its own classes, photos it has not seen (the last of each class folder): mostly accepted.
    assert refused(pets, shared / "datasets" / "cats_vs_dogs") <= 0.2


def test_a_judge_whose_weights_changed_is_dropped_with_a_reason(app_env, seeded):
    entry = level2(app_env, seeded)
    changed = with_card(entry, novelty=replace(entry.card.novelty, weights_key="sha256-other"))
    predictor = Predictor(changed)
    assert predictor.judge is None and "not the ones its training photos were seen with" in predictor.judge_error
    assert predictor.predict([photo()], names=["c.jpg"])[0].label in ("circles", "squares")  # it still answers


def test_cancelling_while_the_judge_is_fitted_saves_nothing(app_env, seeded, monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_JUDGE_BACKBONE", SEEDED.name)
    monkeypatch.setenv("LITTLE_DATA_WEIGHTS_SEEDED_NET", seeded)
    phases = []
    result = train(TrainConfig(level=1, epochs=1, batch_size=8, image_size=(32, 32), data_dir=str(app_env)),
                   report=lambda event: phases.append(event.phase), should_cancel=lambda: "honesty" in phases)
    assert result.cancelled and result.entry is None and ModelStore().list().models == []


def test_an_unknown_judge_network_is_a_note_not_a_failure(app_env, monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_JUDGE_BACKBONE", "no_such_net")
    entry = train(TrainConfig(level=1, epochs=1, batch_size=8, image_size=(32, 32), data_dir=str(app_env))).entry
    assert entry is not None and entry.card.novelty is None and "no_such_net" in entry.card.novelty_note


def test_a_judge_on_the_shared_network_reads_its_features_off_the_shared_trunk(app_env, seeded):
    """Levels 2 and 3 on one pretrained network: the trunk's pass gives the judges' features too
    (level 2's top block is the pretrained one), and every verdict is what the judge alone says."""
    from core.serving.predictor import SharedTrunk

    level2(app_env, seeded)
    level3 = train(TrainConfig(level=3, backbone=SEEDED.name, weights=seeded, epochs=1, batch_size=8,
                               data_dir=str(app_env))).entry
    predictors = {2: Predictor(ModelStore().latest(2)), 3: Predictor(level3)}
    assert all(p.judge is not None for p in predictors.values())
    trunks = SharedTrunk.plan(predictors)
    assert len(trunks) == 1 and trunks[0].judge_keys == [predictors[2].judge.key]
    photos = [photo("circles", seed) for seed in range(3)] + [photo("triangles", 9)]
    alone = [predict_every_level(p, f"{i}.jpg", predictors) for i, p in enumerate(photos)]
    judge = predictors[2].judge
    calls = []
    original = judge.features
    judge.features = lambda images: calls.append(len(images)) or original(images)
    try:
        shared = [predict_every_level(p, f"{i}.jpg", predictors, trunks=trunks) for i, p in enumerate(photos)]
    finally:
        judge.features = original
    assert calls == []  # no pass of the judge's own network
    for a, b in zip(alone, shared):
        for level in (2, 3):
            assert abs(a.verdicts[level].novelty - b.verdicts[level].novelty) < 1e-4
            assert a.verdicts[level].unknown == b.verdicts[level].unknown
