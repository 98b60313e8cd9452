"""Every page renders with every kind of job in every state it can meet, and says what the job is.

A newcomer's first path crashed the Train page because it only knew training jobs' configs; these
tests draw each page (inside the app shell) with a job of each kind (training, the quick start's
sequence, a data-efficiency curve, a sweep) starting, running, finished, failed, cancelled, or
abandoned by a dead worker.
"""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import settings
from core.data.folders import summarize
from core.app import jobs
from tests.job_states import STATES, WORKER_DIED, worker_for, write_job

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["overview", "data", "augment", "train", "predict", "curves", "efficiency", "present", "join"]
# Every page meets a job that is running and one that failed; the other states (starting, finished,
# cancelled, a dead worker) differ only where a page shows the job itself, so those pages suffice.
JOB_PAGES = ["overview", "train", "predict", "present"]


def pages_for(state: str) -> list[str]:
    return PAGES if state in ("running", "failed") else JOB_PAGES


def page_text(at: AppTest) -> str:
    """Every piece of text the page and its sidebar show."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader"):
        parts += [str(element.value) for element in getattr(at, kind)]
    parts += [str(bar.proto.text) for bar in at.get("progress")]
    return "\n".join(parts).lower()


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", list(jobs.JobKind))
def test_every_page_with_a_job(kind, state, app_env):
    job = write_job(settings.jobs_dir(), kind, state, app_env)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    with worker_for(settings.jobs_dir(), state):
        for name in pages_for(state):
            if name == "overview":
                at.run()
            else:
                at.switch_page(f"pages/{name}.py").run()
            assert not at.exception, (name, [e.value for e in at.exception])
            text = page_text(at)
            if state in ("starting", "running") and name != "join":  # the audience's page has no sidebar
                # The sidebar of every page says what is running.
                assert job.title in text, (name, text[:2000])
            if name == "efficiency" and kind is jobs.JobKind.CURVE and state == "running":
                assert "being measured" in text and "no curve measured yet" not in text, text[:2000]
            if name == "train":  # the Train page shows the last job, whatever its kind
                assert job.title.split(" (")[0] in text or f"level {job.levels[0]}" in text, text[:2000]
                if state == "running" and kind in (jobs.JobKind.TRAIN, jobs.JobKind.SEQUENCE):
                    # the level's own card says so too: its Start button is far below the progress
                    assert "level 2 is training now" in text, text[:3000]
                if state == WORKER_DIED:
                    assert "stopped unexpectedly" in text
                elif state == "failed" and kind in (jobs.JobKind.TRAIN, jobs.JobKind.SEQUENCE):
                    assert "example failure" in text


def test_a_finished_quick_start_shows_each_saved_models_own_figures(app_env):
    """Its card once showed level 0's accuracy beside "Best epoch 0.0%" under level 2's curves."""
    from core.networks.factories import make_level1_model
    from core.serving.cards import Metrics, ModelCard
    from core.serving.model_store import ModelStore

    store, classes = ModelStore(), summarize(app_env).classes
    for model_id, level, metrics, history in (
            ("level2-example", 2, Metrics(val_accuracy=0.925, last_epoch_val_accuracy=0.9, best_val_accuracy=0.95,
                                          best_epoch=2), {"accuracy": [0.6, 0.8], "val_accuracy": [0.7, 0.9],
                                                          "loss": [0.9, 0.5], "val_loss": [0.8, 0.6]}),
            ("level0-example", 0, Metrics(val_accuracy=0.875), {})):
        store.save(make_level1_model(2, (32, 32)), ModelCard(
            id=model_id, level=level, classes=classes, image_size=(32, 32), backbone="mobilenet_v2",
            metrics=metrics, history=history, dataset={"root": str(summarize(app_env).root)}))
    write_job(settings.jobs_dir(), jobs.JobKind.SEQUENCE, "succeeded", app_env)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [(m.label, m.value) for m in at.metric]
    assert shown[:3] == [("Validation accuracy", "92.5%"), ("Last epoch", "90.0%"), ("Best epoch", "95.0%")]
    assert ("Validation accuracy", "87.5%") in shown[3:] and ("Best epoch", "0.0%") not in shown
    assert "The tutorial reported" not in [label for label, _ in shown]  # its figure was on cats vs dogs
    assert any("No epochs" in c.value for c in at.caption)
    assert not any("step 2 of 2" in m.value for m in at.markdown)  # finished: no step is under way
    assert len(at.get("vega_lite_chart")) == 2  # level 2's accuracy and loss; level 0 has no curves
    assert at.selectbox(key="bb3").value == "mobilenet_v2"  # level 3 offers to fine-tune the level 2 just trained


def test_the_pages_use_the_active_folders_own_models_before_newer_ones_of_the_same_classes(app_env, tmp_path):
    """A level 2 retrained in a small data set of the same classes must not stand in for this one's."""
    from core.networks.factories import make_level1_model
    from core.serving.cards import Metrics, ModelCard
    from core.serving.model_store import ModelStore

    summary = summarize(app_env)
    for model_id, root, accuracy, created in (("level2-here", str(summary.root), 0.875, "2026-11-01T10:00:00+00:00"),
                                              ("level2-elsewhere", str(tmp_path), 0.5, "2026-11-02T10:00:00+00:00"),
                                              ("level0-elsewhere", str(tmp_path), 0.625, "2026-11-02T10:00:00+00:00")):
        ModelStore().save(make_level1_model(2, (32, 32)), ModelCard(
            id=model_id, level=int(model_id[5]), classes=summary.classes, image_size=(32, 32), backbone="mobilenet_v2",
            metrics=Metrics(val_accuracy=accuracy), dataset={"root": root}, created=created))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/overview.py").run()
    assert not at.exception, [e.value for e in at.exception]
    sidebar = "\n".join(c.value for c in at.sidebar.caption)
    assert "bottleneck features: **87.5%**" in sidebar and "87.5%** (on" not in sidebar, sidebar
    # A level this folder lacks is served by another folder's model, whose score is on that folder's photos.
    assert f"no training: **62.5%** (on {tmp_path.name})" in sidebar, sidebar
    shown = [(m.label, m.value) for m in at.metric]
    assert ("Validation accuracy", "87.5%") in shown and ("Validation accuracy", "62.5%") in shown
    assert sum(f"Measured on **{tmp_path.name}**" in c.value for c in at.caption) == 1  # level 0's card only


def test_how_little_data_says_a_curve_is_being_measured_only_for_its_own_network(app_env):
    write_job(settings.jobs_dir(), jobs.JobKind.CURVE, "running", app_env)  # the default network's curve
    at = AppTest.from_file(str(ROOT / "pages" / "efficiency.py"), default_timeout=60)
    with worker_for(settings.jobs_dir(), "running"):
        at.run()
        assert any("being measured" in i.value for i in at.info)
        at.selectbox(key="curve_backbone").set_value("mobilenet_v2").run()
    assert not at.exception
    assert not any("being measured" in i.value for i in at.info)
    assert any("No curve measured yet for this data set with MobileNetV2" in i.value for i in at.info)


@pytest.mark.parametrize("class_groups, sizes, shown", [(None, (3, 1), True), ("mean", (3, 1), False),
                                                         (None, (1, 1), False)])
def test_train_page_offers_to_rebuild_a_level0_that_summed_its_groups(app_env, class_groups, sizes, shown):
    """A level 0 built while classes summed their ImageNet probabilities, with groups of different sizes (118 dog
    breeds could outvote 13 cats), is pointed out on its card; one built with the groups' means is not, nor one
    whose groups are all one class each (summing and the mean then agree)."""
    from core.networks.factories import make_level1_model
    from core.serving.cards import Metrics, ModelCard
    from core.serving.model_store import ModelStore

    summary = summarize(app_env)
    hyperparameters = {"epochs": 0} | ({"class_groups": class_groups} if class_groups else {})
    ModelStore().save(make_level1_model(2, (32, 32)), ModelCard(
        id="level0-built", level=0, classes=summary.classes, image_size=(32, 32), backbone="mobilenet_v2",
        imagenet_classes={summary.classes[0]: list(range(1, 1 + sizes[0])), summary.classes[1]: list(range(10, 10 + sizes[1]))},
        hyperparameters=hyperparameters,
        metrics=Metrics(val_accuracy=0.9), dataset={"root": str(summary.root)}, created="2026-11-01T10:00:00+00:00"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    notices = [i.value for i in at.info if "was built when each class added up" in i.value]
    assert len(notices) == shown, [i.value for i in at.info]
    if shown:
        assert f"{summary.classes[0]} (3 ImageNet classes) could outvote {summary.classes[1]} (1)" in notices[0]
        assert "(MobileNetV2" in notices[0]


def _imagenet_names(tmp_path, monkeypatch):
    """ImageNet's class names on this machine (a stand-in file: class i is "name_i", 985 "daisy")."""
    import json

    folder = tmp_path / "keras" / "models"
    folder.mkdir(parents=True)
    index = {str(i): [f"n{i:08d}", "daisy" if i == 985 else f"name_{i}"] for i in range(1000)}
    (folder / "imagenet_class_index.json").write_text(json.dumps(index))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def test_train_page_lets_level0_find_or_take_the_imagenet_classes_of_own_classes(app_env, tmp_path, monkeypatch):
    """Classes with no built-in grouping, ImageNet's class names on the machine: level 0 can start with no
    ImageNet class picked (it finds them) or with every class picked, not with some picked and some not.
    (Without the names: tests/test_app.py.)"""
    _imagenet_names(tmp_path, monkeypatch)
    summary = summarize(app_env)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.button(key="start0").disabled
    assert any("finds them from your training photos" in c.value for c in at.caption)
    at.multiselect(key=f"imagenet_0_{summary.classes[0]}").set_value([985]).run()
    assert at.button(key="start0").disabled
    assert any(f"Pick ImageNet classes for {summary.classes[1]} too, or clear every class" in i.value for i in at.info)
    at.multiselect(key=f"imagenet_0_{summary.classes[1]}").set_value([1, 2]).run()
    assert not at.button(key="start0").disabled


@pytest.mark.parametrize("names", [True, False])
def test_train_page_shows_what_level0_found(app_env, tmp_path, monkeypatch, names):
    """The newest level 0 found its groups from the training photos: the Train page names them (by their
    ImageNet index where the class names are not on this machine)."""
    from core.networks.factories import make_level1_model
    from core.serving.cards import Metrics, ModelCard
    from core.serving.model_store import ModelStore

    if names:
        _imagenet_names(tmp_path, monkeypatch)
    summary = summarize(app_env)
    ModelStore().save(make_level1_model(2, (32, 32)), ModelCard(
        id="level0-found", level=0, classes=summary.classes, image_size=(32, 32), backbone="mobilenet_v2",
        imagenet_classes={summary.classes[0]: [985, 1, 2, 3, 4, 5], summary.classes[1]: [7]},
        hyperparameters={"class_groups": "mean", "found_imagenet_classes": {"photos": 24, "per_class": 10,
                                                                             "held_out_accuracy": 0.875}},
        metrics=Metrics(val_accuracy=0.9), dataset={"root": str(summary.root)}, created="2026-12-02T10:00:00+00:00"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    found = [c.value for c in at.caption if "with MobileNetV2 (alpha 1.0) found its ImageNet classes from 24 training photos" in c.value]
    assert len(found) == 1, [c.value for c in at.caption]
    assert "up to 10 per class" in found[0] and "88%" in found[0]
    if names:
        assert f"**{summary.classes[0]}**: daisy, name 1, name 2, name 3 and 2 more" in found[0]
        assert f"**{summary.classes[1]}**: name 7" in found[0]
    else:
        assert f"**{summary.classes[0]}**: 985, 1, 2, 3 and 2 more" in found[0]
        assert any(b.label.endswith("to pick them yourself") for b in at.button)
