"""AppTest: the Data page's "Check the labels" panels, on a data set built in the app and on one outside it.

The reviews are written as a finished job leaves them (`core.experiments.label_review`), so the
panels are tested without running a worker; tests/test_label_next.py runs the reviews themselves.
"""

import time
from pathlib import Path

import numpy as np
import pytest

from core.app import jobs, workspace
from core.data.builder import BuiltDataset
from core.data.folders import summarize
from core.experiments.label_next import Suggestion
from core.experiments.label_review import LabelReview, LabelTask, review_path
from core.experiments.suspects import Suspect
from core.atomic_files import atomic_write_json
from core.serving.model_store import ModelStore
from core.training.loop import TrainConfig, train
from tests.helpers import jpeg_bytes, make_image
from tests.test_app import assert_clean, page


def shots(cls: str, n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    return [(f"{cls}-{i}.jpg", jpeg_bytes(make_image(cls, rng, 64))) for i in range(n)]


def keep(review: LabelReview) -> None:
    atomic_write_json(review_path(review.task, review.data_dir), review.to_dict())


@pytest.fixture
def built():
    """An app data set with two classes and three photos waiting for a class; the active data set."""
    built = BuiltDataset.create("shapes", ["circles", "squares"], validation_fraction=0.25)
    built.add_photos("circles", shots("circles", 8, 1))
    built.add_photos("squares", shots("squares", 8, 2))
    built.add_unlabelled(shots("squares", 3, 3))
    workspace.set_active_data_dir(built.root)
    return built


def suspects_review(built, photos) -> LabelReview:
    summary = summarize(built.root)
    items = [Suspect(str(p), p.parent.name, "squares" if p.parent.name == "circles" else "circles", 0.9 - i / 10)
             for i, p in enumerate(photos)]
    return LabelReview(LabelTask.SUSPECTS, str(summary.root), summary.fingerprint, items, created=time.time(), seconds=1.5)


def button(at, label: str, index: int = 0):
    return [b for b in at.button if b.label == label][index]


def card_button(at, action: str, photo: Path, root: Path):
    """A suspect card's button (the builder above shows its own "Move to" buttons too)."""
    return at.button(key=f"s_{action}_{photo.relative_to(root).as_posix()}")


def test_no_check_yet_and_no_unlabelled_photos_say_what_to_do(app_env):
    at = page("data")
    assert_clean(at)
    assert any("No check yet" in i.value for i in at.info)
    assert any(b.label == "Find suspect labels" for b in at.button)
    at.segmented_control(key="labels_panel").set_value("Label these next").run()
    text = " ".join(i.value for i in at.info)
    assert "no unlabelled photos" in text and "unlabelled/" in text  # a folder outside the app: where to put them


def test_a_suspect_is_moved_undone_and_kept_as_right_across_a_restart(built):
    circle = built.photos("circles", "train")[0]
    square = built.photos("squares", "train")[0]
    keep(suspects_review(built, [circle, square]))
    at = page("data")
    assert_clean(at)
    assert any("2 suspect label(s)" in m.value for m in at.markdown)
    card_button(at, "move", circle, built.root).click().run()
    assert_clean(at)
    assert not circle.exists() and (built.root / "train" / "squares" / circle.name).is_file()
    assert any("1 suspect label(s)" in m.value for m in at.markdown)
    assert any(t.value.startswith("Moved") and circle.name in t.value for t in at.toast)  # seen wherever scrolled
    at.button(key="undo_labels").click().run()
    assert circle.is_file() and any("2 suspect label(s)" in m.value for m in at.markdown)
    assert any(t.value.startswith("Undone: moved") for t in at.toast)  # the box now shows the change before

    card_button(at, "keep", square, built.root).click().run()  # the square: its label is right
    assert any("1 suspect label(s)" in m.value for m in at.markdown)
    restarted = page("data")  # a new session: only what is on disk
    assert_clean(restarted)
    assert any("1 suspect label(s)" in m.value for m in restarted.markdown)
    assert not any(b.key and b.key.startswith("s_") and square.name in b.key for b in restarted.button)


def test_suspects_of_a_folder_outside_the_app_are_listed_with_how_to_fix_them(app_env):
    summary = summarize(app_env)
    photo = summary.files["train"][0][0]
    keep(LabelReview(LabelTask.SUSPECTS, str(summary.root), summary.fingerprint,
                     [Suspect(str(photo), "circles", "squares", 0.8)], created=time.time()))
    at = page("data")
    assert_clean(at)
    assert any("does not change it" in i.value and "mv train/circles/" in i.value for i in at.info)
    assert not any(b.label == "Move to squares" for b in at.button)
    assert at.dataframe  # the list
    assert at.get("image") and any("**circles** → looks like **squares**" in m.value for m in at.markdown)  # and the photo


def test_label_these_next_needs_a_model_then_labels_into_train(built):
    at = page("data")
    at.segmented_control(key="labels_panel").set_value("Label these next").run()
    assert any("train level 2" in i.value for i in at.info)  # no model yet
    train(TrainConfig(level=1, epochs=1, batch_size=8, image_size=(32, 32), data_dir=str(built.root)))
    (model,) = ModelStore().latest_per_level(["circles", "squares"]).values()
    summary = summarize(built.root)
    waiting = built.unlabelled()
    keep(LabelReview(LabelTask.SUGGEST, str(summary.root), summary.fingerprint,
                     [Suggestion(str(p), 1.0 - i / 10, "circles") for i, p in enumerate(waiting)],
                     model_id=model.id, model_accuracy=0.5, created=time.time()))
    at = page("data")
    assert_clean(at)
    at.segmented_control(key="labels_panel").set_value("Label these next").run()
    button(at, "squares").click().run()  # the first suggestion is a square
    assert_clean(at)
    assert (built.root / "train" / "squares" / waiting[0].name).is_file() and not waiting[0].exists()
    button(at, "Skip").click().run()
    button(at, "None of these").click().run()  # the third photo fits no class: removed
    assert_clean(at)
    assert built.unlabelled() == [waiting[1]]
    assert any("1 of 10 labels" in str(p.proto.text) for p in at.get("progress"))
    restarted = page("data")  # a reload: the skipped photo stays skipped (it used to come back)
    restarted.segmented_control(key="labels_panel").set_value("Label these next").run()
    assert_clean(restarted)
    assert any("Every ranked photo is labelled, skipped or removed" in s.value for s in restarted.success)
    assert not any(b.label == "Skip" for b in restarted.button)
    at.button(key="undo_labels").click().run()
    assert waiting[2].is_file()


def test_a_new_ranking_puts_the_skipped_photos_back(tmp_path, monkeypatch):
    from core.experiments.label_review import skip_photo, skipped_photos

    monkeypatch.setenv("LITTLE_DATA_HOME", str(tmp_path / "home"))
    first = LabelReview(LabelTask.SUGGEST, str(tmp_path), "f", [], created=1.0)
    assert skipped_photos(first) == set()
    skip_photo(first, "a.jpg")
    assert skip_photo(first, "b.jpg") == {"a.jpg", "b.jpg"} == skipped_photos(first)
    assert skipped_photos(LabelReview(LabelTask.SUGGEST, str(tmp_path), "f", [], created=2.0)) == set()


def test_a_label_review_job_running_shows_its_progress(built):
    from tests.job_states import worker_for, write_job
    from core import settings

    job = write_job(settings.jobs_dir(), jobs.JobKind.LABELS, "running", built.root)
    with worker_for(settings.jobs_dir(), "running"):
        at = page("data")
        assert_clean(at)
        assert button(at, "Find suspect labels").disabled
        assert [p for p in at.get("progress") if p.proto.text], job.title  # the job's progress bar, with its line
        assert any(b.label == "Cancel" for b in at.button)


def test_ten_labels_offer_a_retrain_and_its_accuracy_is_shown_against_the_ranking_model(tiny_backbone, monkeypatch):
    built = BuiltDataset.create("shapes", ["circles", "squares"], validation_fraction=0.25)
    built.add_photos("circles", shots("circles", 8, 1))
    built.add_photos("squares", shots("squares", 8, 2))
    built.add_unlabelled(shots("circles", 6, 5) + shots("squares", 6, 6))
    workspace.set_active_data_dir(built.root)
    ranking = train(TrainConfig(level=2, backbone=tiny_backbone.name, weights="none", epochs=1, data_dir=str(built.root)))
    summary = summarize(built.root)
    keep(LabelReview(LabelTask.SUGGEST, str(summary.root), summary.fingerprint,
                     [Suggestion(str(p), 1.0, "circles") for p in built.unlabelled()], model_id=ranking.entry.id,
                     model_accuracy=0.125, model_level=2, created=time.time() - 1))  # no score of 4 photos is 0.125
    for photo in built.unlabelled()[:9]:  # nine labels given earlier (the class does not matter here)
        built.label(photo, "squares")
    at = page("data")
    at.segmented_control(key="labels_panel").set_value("Label these next").run()
    assert_clean(at)
    assert any("9 of 10 labels" in str(p.proto.text) for p in at.get("progress"))
    assert not any(b.label == "Retrain level 2" for b in at.button)
    button(at, "circles").click().run()  # the tenth, from the page
    assert any("10 new labels" in m.value for m in at.markdown)
    retrain = button(at, "Retrain level 2")
    assert not retrain.disabled

    time.sleep(1.1)  # the retrained model's card is stamped to the second
    after = train(TrainConfig(level=2, backbone=tiny_backbone.name, weights="none", epochs=1, data_dir=str(built.root)))
    at = page("data")
    at.segmented_control(key="labels_panel").set_value("Label these next").run()
    assert_clean(at)
    (metric,) = at.metric
    assert metric.value == f"{after.entry.val_accuracy:.1%}"
    assert metric.delta == f"{(after.entry.val_accuracy - 0.125) * 100:+.1f} points"
    assert not any("new labels" in m.value for m in at.markdown)  # the count starts again after the retrain
    started = []  # the retrained model ranks the waiting photos from beside its accuracy
    monkeypatch.setattr(jobs, "start_job", lambda config, **kwargs: started.append(config) or jobs.Job(
        id="rank-test", kind=jobs.JobKind.LABELS, state=jobs.JobState.STARTING, config=config, created=0))
    at.button(key="suggest_again").click().run()
    assert [(config.task, config.model_id) for config in started] == [(LabelTask.SUGGEST, after.entry.id)]


def test_the_panel_in_use_survives_a_reload(built):
    """The panel is in the address: a reload (a new session with that address) opens it again."""
    from streamlit.testing.v1 import AppTest

    from tests.test_app import ROOT

    at = page("data")
    at.segmented_control(key="labels_panel").set_value("Label these next").run()
    assert at.query_params["labels"] in ("next", ["next"])
    reloaded = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    reloaded.run()
    reloaded.switch_page("pages/data.py")
    reloaded.query_params["labels"] = "next"
    reloaded.run()
    assert_clean(reloaded)
    assert reloaded.segmented_control(key="labels_panel").value == "Label these next"
    reloaded.segmented_control(key="labels_panel").set_value("Suspect labels").run()
    assert "labels" not in reloaded.query_params
