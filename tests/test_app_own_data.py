"""AppTest: a data set built on the Data page, corrections from the mistakes gallery, the quick start."""

import numpy as np
import pytest

from core.app import jobs
from core.app import workspace
from core.data.builder import BuiltDataset, built_datasets
from core.serving.model_store import ModelStore
from core.training.loop import TrainConfig, train
from tests.helpers import jpeg_bytes, make_image
from tests.test_app import assert_clean, page


def shots(cls: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(f"{cls}-{i}.jpg", jpeg_bytes(make_image(cls, rng, 64)), "image/jpeg") for i in range(n)]


def test_build_a_data_set_on_the_data_page():
    at = page("data")
    assert_clean(at)
    next(t for t in at.text_input if t.label == "Name").input("Garden")
    next(t for t in at.text_area if t.label.startswith("Classes")).input("circles\nsquares\ncircles")
    next(b for b in at.button if b.label == "Create data set").click().run()
    assert any("must differ" in e.value for e in at.error)  # a repeated class is refused, nothing created
    assert built_datasets() == []

    next(t for t in at.text_area if t.label.startswith("Classes")).input("circles\nsquares")
    next(b for b in at.button if b.label == "Create data set").click().run()
    assert_clean(at)
    (built,) = built_datasets()
    assert workspace.active_data_dir() == str(built.root) and built.name == "Garden"
    assert sum("needs at least 2 photos" in w.value for w in at.warning) == 2

    uploads = shots("circles", 5, 0) + [("broken.png", b"\x89PNG not really", "image/png")]
    at.file_uploader[0].set_value(uploads).run()
    next(b for b in at.button if b.label == "Add 6 photo(s) to circles").click().run()
    assert_clean(at)
    assert any("Added 5 photo(s) to circles" in s.value for s in at.success)
    assert any("broken.png" in e.value for e in at.error)
    assert built.counts()["circles"] == {"train": 4, "validation": 1}
    assert sum("needs at least 2 photos" in w.value for w in at.warning) == 1  # squares still empty


@pytest.fixture
def mislabelled(monkeypatch):
    """A built data set whose circles' validation photos are really squares, and a model trained on it."""
    built = BuiltDataset.create("shapes", ["circles", "squares"], validation_fraction=0.25)
    built.add_photos("circles", [(n, d) for n, d, _ in shots("circles", 12, 1)])
    built.add_photos("squares", [(n, d) for n, d, _ in shots("squares", 12, 2)])
    for i, photo in enumerate(built.photos("circles", "validation")):  # wrong labels to correct
        photo.write_bytes(shots("squares", 1, 100 + i)[0][1])
    workspace.set_active_data_dir(built.root)
    train(TrainConfig(level=1, epochs=8, batch_size=8, image_size=(32, 32), data_dir=str(built.root)))
    return built


@pytest.mark.slow
def test_a_mistake_is_moved_to_its_class_and_undone(mislabelled):
    # A second level: each model's tab draws its own Undo, and two under one key once stopped the page.
    train(TrainConfig(level=2, backbone="mobilenet_025", weights="none", epochs=1, batch_size=8,
                      data_dir=str(mislabelled.root)))
    at = page("curves")
    assert_clean(at)
    moves = [b for b in at.button if b.label == "Move to squares"]
    assert moves, "a circle that is really a square shows up as a mistake, with a fix"
    before = mislabelled.counts()
    moves[0].click().run()
    assert_clean(at)
    after = mislabelled.counts()
    assert after["circles"]["validation"] == before["circles"]["validation"] - 1
    assert after["squares"]["validation"] == before["squares"]["validation"] + 1
    assert any("has changed since this model was trained" in w.value for w in at.warning)
    assert any("Last change to the data set: moved" in i.value for i in at.info)
    next(b for b in at.button if b.label == "Undo").click().run()
    assert_clean(at)
    assert mislabelled.counts() == before
    assert not any("has changed since this model was trained" in w.value for w in at.warning)


@pytest.mark.slow
def test_quick_start_trains_in_the_background_and_opens_predict(app_env, monkeypatch):
    from core.app.quickstart import QUICK_BACKBONE

    monkeypatch.setenv(f"LITTLE_DATA_WEIGHTS_{QUICK_BACKBONE.upper()}", "none")  # the worker inherits it: random weights
    at = page("overview")
    assert_clean(at)
    button = next(b for b in at.button if b.label == "Train my first model")
    (plan,) = [m.value for m in at.markdown if m.value.startswith("Trains ")]
    assert plan.startswith("Trains level 2 (bottleneck features) on") and "level 0" not in plan  # circles and squares
    button.click().run()
    assert_clean(at)
    job = jobs.current_job()
    assert job.kind is jobs.JobKind.SEQUENCE and job.levels == [2]
    final = jobs.wait_for(job.id, timeout=300)
    assert final.state is jobs.JobState.SUCCEEDED, final.error
    assert final.model_ids == [ModelStore().latest(2).id]
    at.run()
    assert_clean(at)
    assert at.session_state["sample"].endswith(".jpg")  # Predict will show this validation photo
    assert at.title[0].value == "Predict"
    assert any("Server time" in c.value for c in at.caption)
