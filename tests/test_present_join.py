"""Present and Join under AppTest: every slide in every state of the store, and the audience's page."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.app.presentation import ActionKind, SlideKind, build_story, overfitting_gap
from core.data.folders import summarize
from core.serving.model_store import ModelStore
from tests.helpers import jpeg_bytes, make_image, train_tiny_store, use_store_copy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained_store(dataset_factory, tmp_path_factory) -> Path:
    """Levels 1 and 2 (3 epochs each, so their curves exist) on the synthetic data set, trained once."""
    return train_tiny_store(tmp_path_factory.mktemp("present"), dataset_factory(), epochs=3)


@pytest.fixture
def trained(app_env, trained_store, monkeypatch, tmp_path):
    return use_store_copy(trained_store, tmp_path, monkeypatch)


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update(query)
    at.run()
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning", "error")
                     for e in getattr(at, kind))


def test_the_story_without_models_says_what_is_missing_and_offers_the_job(app_env):
    slides = build_story(summarize(app_env), ModelStore())
    kinds = [s.kind for s in slides]
    assert kinds == list(SlideKind)  # every step of the talk, in order
    by_kind = {s.kind: s for s in slides}
    assert by_kind[SlideKind.DATA].ready and "24 training photos" in by_kind[SlideKind.DATA].headline
    for kind, level in ((SlideKind.LEVEL1, 1), (SlideKind.LEVEL2, 2), (SlideKind.LEVEL0, 0)):
        assert not by_kind[kind].ready and by_kind[kind].action.kind is ActionKind.TRAIN
        assert by_kind[kind].action.level == level
    assert by_kind[SlideKind.LEVEL3].action.level == 2  # fine-tuning starts from level 2's model
    assert by_kind[SlideKind.CURVE].action.kind is ActionKind.MEASURE_CURVE


def test_the_story_with_models_cites_them(app_env, trained):
    slides = {s.kind: s for s in build_story(summarize(app_env), ModelStore())}
    level2 = slides[SlideKind.LEVEL2]
    assert level2.ready and level2.model.level == 2 and level2.sources[0].model_id == level2.model.id
    assert f"{level2.model.val_accuracy:.1%}" in level2.headline
    assert "tutorial" not in level2.headline  # its 90.5% was on cats vs dogs, not on circles and squares
    problem = slides[SlideKind.PROBLEM]
    assert problem.ready and problem.model is not None and "Training accuracy" in problem.headline
    assert ("gap of" in problem.headline) == (overfitting_gap(problem.model) >= 0.05)  # claimed only where it shows


@pytest.mark.parametrize("with_models", [False, True], ids=["no models", "levels 1 and 2"])
def test_every_slide_renders(app_env, with_models, request):
    if with_models:
        request.getfixturevalue("trained")
    count = len(build_story(summarize(app_env), ModelStore()))
    for number in range(1, count + 1):
        at = page("present", slide=str(number))
        text = texts(at)
        assert f"Slide {number} of {count}" in text
        for source in (m.value for m in at.markdown if "ld-source" in m.value):  # HTML: markdown's code marks stay raw
            assert "`" not in source and "<code>" in source, source
        if with_models and number in (4, 5):  # a short run beside the tutorial's 50 epochs says how long it ran
            assert any("ours, " in m.value and " epoch" in m.value for m in at.markdown), number
        if not with_models and number in (4, 5, 7):  # levels 1, 2 and 0 have no model yet
            assert any(b.label.startswith("Train level") for b in at.button), number
    assert "Scan, or open" in text  # the last slide: the QR code and the wall
    assert "photos" in text and "on the wall" in text


def test_present_comes_back_to_its_slide_after_another_page(app_env):
    """The sidebar's link to Present has no slide in it: a presenter back from Predict is on their slide."""
    at = page("present", slide="4")
    at.switch_page("pages/predict.py").run()
    at.query_params.clear()  # the sidebar's link
    at.switch_page("pages/present.py").run()
    assert not at.exception
    assert "Slide 4 of" in texts(at)
    assert at.query_params["slide"] in ("4", ["4"])  # and the address says so, so a reload stays there too


def test_a_slide_number_out_of_range_shows_the_nearest(app_env):
    assert "Slide 1 of" in texts(page("present", slide="0"))
    assert "Slide 10 of 10" in texts(page("present", slide="99"))
    assert "Slide 1 of" in texts(page("present", slide="three"))


def test_join_without_models_asks_to_wait(app_env):
    at = page("join")
    assert any("no trained model yet" in i.value for i in at.info)
    assert not at.file_uploader


def test_join_answers_a_photo_puts_it_on_the_wall_and_refuses_bad_input(trained):
    from pages.common import audience_wall

    audience_wall().clear()
    at = page("join")
    assert "never saved" in texts(at)
    at.file_uploader[0].set_value([("mine.jpg", jpeg_bytes(make_image("circles", np.random.default_rng(3))),
                                    "image/jpeg")]).run()
    assert not at.exception, [e.value for e in at.exception]
    text = texts(at)
    assert "Level 1" in text and "Level 2" in text and "Server time:" in text
    assert [p.name for p in audience_wall().photos()] == ["mine.jpg"]
    at.run()  # a rerun (any tap) does not send the photo again
    assert len(audience_wall().photos()) == 1
    at.file_uploader[0].set_value([("broken.jpg", b"\xff\xd8\xff not a jpeg", "image/jpeg")]).run()
    assert any("corrupt" in e.value or "not an image" in e.value for e in at.error)
    assert len(audience_wall().photos()) == 1  # nothing of a bad photo reaches the wall


def test_join_limits_photos_per_phone_per_minute(trained):
    from pages.common import audience_wall

    at = page("join")
    for i in range(7):
        at.file_uploader[0].set_value([(f"{i}.jpg", jpeg_bytes(make_image("squares", np.random.default_rng(i))),
                                        "image/jpeg")]).run()
    assert any("photos this minute" in w.value for w in at.warning)
    audience_wall().clear()


def test_an_unreadable_file_does_not_count_against_the_phones_limit(trained, monkeypatch):
    """Six readable photos a minute: a file that is no photo at all is refused without using one up."""
    import pages.common
    from pages.common import audience_wall

    monkeypatch.setattr(pages.common, "session_id", lambda: "a-phone-with-no-photos-this-minute")
    audience_wall().clear()
    at = page("join")
    at.file_uploader[0].set_value([("notes.jpg", b"not a photo", "image/jpeg")]).run()
    assert at.error and not at.warning
    for i in range(6):
        at.file_uploader[0].set_value([(f"{i}.jpg", jpeg_bytes(make_image("squares", np.random.default_rng(i))),
                                        "image/jpeg")]).run()
        assert not any("photos this minute" in w.value for w in at.warning), f"photo {i + 1} of 6 refused"
    assert len(audience_wall().photos()) == 6
    audience_wall().clear()


def test_the_overfitting_slide_tells_this_data_sets_story(app_env, tmp_path):
    """A run of another folder with the same classes overfits more (40 validation photos of a small data
    set), but the slide shows this data set's own run; another folder's only when this one has none."""
    from core.app.presentation import most_overfitted
    from core.networks.factories import make_level1_model
    from core.serving.cards import ModelCard

    summary, store = summarize(app_env), ModelStore()

    def run(model_id, root, validation):
        return store.save(make_level1_model(2, (32, 32)), ModelCard(
            id=model_id, level=1, classes=summary.classes, image_size=(32, 32), dataset={"root": root},
            history={"accuracy": [0.6, 0.8, 1.0], "val_accuracy": [0.6, 0.7, validation]}))

    elsewhere = run("level1-elsewhere", str(tmp_path), 0.5)
    assert most_overfitted(store, summary).id == elsewhere.id  # nothing of this folder yet
    here = run("level1-here", str(summary.root), 0.8)
    assert most_overfitted(store, summary).id == here.id


def test_the_overfitting_slide_claims_a_gap_only_where_there_is_one(app_env):
    from core.networks.factories import make_level1_model
    from core.serving.cards import ModelCard

    summary, store = summarize(app_env), ModelStore()
    store.save(make_level1_model(2, (32, 32)), ModelCard(
        id="level2-close", level=2, classes=summary.classes, image_size=(32, 32), dataset={"root": str(summary.root)},
        history={"accuracy": [0.9, 0.99, 1.0], "val_accuracy": [0.95, 0.98, 0.99]}))
    problem = {s.kind: s for s in build_story(summary, store)}[SlideKind.PROBLEM]
    assert "only 1 point apart" in problem.headline and "barely overfits" in problem.headline
    store.save(make_level1_model(2, (32, 32)), ModelCard(
        id="level1-wide", level=1, classes=summary.classes, image_size=(32, 32), dataset={"root": str(summary.root)},
        history={"accuracy": [0.6, 0.9, 1.0], "val_accuracy": [0.6, 0.7, 0.72]}))
    problem = {s.kind: s for s in build_story(summary, store)}[SlideKind.PROBLEM]
    assert "a gap of 28 points" in problem.headline and " and ".join(summary.classes) in problem.headline


@pytest.mark.parametrize("val_loss, expected", [
    ([0.05, 0.04, 0.06, 0.08, 0.10], (2.5, 2)),  # accuracy may hold while the loss climbs from its lowest
    ([0.5, 0.4, 0.35, 0.3], None),  # still falling
    ([0.3, 0.2, 0.25], None),  # up by a quarter: noise, not a story for a room
    ([0.3, 0.2], None),  # too short a curve to tell
    ([], None),
])
def test_loss_rise_finds_a_validation_loss_that_climbed_from_its_lowest(val_loss, expected):
    from core.app.presentation import loss_rise

    rise = loss_rise({"val_loss": val_loss})
    assert rise == (pytest.approx(expected[0]), expected[1]) if expected else rise is None
