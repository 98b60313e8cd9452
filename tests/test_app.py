"""pages/ and app.py: every page through streamlit.testing.v1.AppTest, on a synthetic data set and tiny models.

Also core.serving.predictor's per-file errors, on the same trained models.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from core import settings
from streamlit.testing.v1 import AppTest

from core.app import jobs
from core.app import workspace
from core.levels import all_levels, get_level
from core.serving.model_store import ModelStore
from pages.curves_parts.runs import PERCENT_COLUMNS
from tests.helpers import jpeg_bytes, make_image, train_tiny_store, use_store_copy

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["overview", "data", "augment", "train", "curves", "efficiency", "predict"]


def page(name: str) -> AppTest:
    """A page run inside the real app shell (navigation and sidebar included)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if name != "overview":
        at.switch_page(f"pages/{name}.py")
        at.run()
    return at


def assert_clean(at: AppTest):
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_without_models(app_env, name):
    at = page(name)
    assert_clean(at)
    assert at.title, "every page has a title"
    assert "Little Data" in at.sidebar.markdown[0].value  # every page runs inside the app shell


def test_every_page_says_what_to_do_without_data(monkeypatch, tmp_path):
    for name in PAGES:
        at = page(name)
        assert_clean(at)
    data = page("data")
    assert any("No data set" in i.value for i in data.info)


@pytest.fixture(scope="module")
def trained_store(dataset_factory, tmp_path_factory) -> Path:
    """Tiny models for levels 1 and 2 (random-weight mobilenet_025), trained once for this module."""
    return train_tiny_store(tmp_path_factory.mktemp("trained"), dataset_factory())  # app_env's data set


@pytest.fixture
def trained(app_env, trained_store, monkeypatch, tmp_path):
    """The module's trained models, copied into this test's own store: a test may add or delete models."""
    use_store_copy(trained_store, tmp_path, monkeypatch)
    return app_env


@pytest.mark.parametrize("name", ["predict", "join"])
def test_photo_uploaders_state_the_apps_own_limit_per_photo(trained, name):
    """The browser states and enforces the limit: Streamlit's default (the server's 200 MB, for data-set
    zips) promised photos eight times larger than the app takes."""
    at = page(name)
    assert_clean(at)
    uploaders = at.get("file_uploader")
    assert uploaders
    assert all(u.proto.max_upload_size_mb == settings.max_upload_bytes() // 2 ** 20 for u in uploaders)


def test_predict_upload_and_bad_files(trained):
    at = page("predict")
    assert_clean(at)
    good = jpeg_bytes(make_image("circles", np.random.default_rng(0), size=120))
    at.file_uploader[0].set_value([("my_circle.jpg", good, "image/jpeg"), ("corrupt.jpg", b"\xff\xd8 not a jpeg", "image/jpeg"),
                                   ("empty.png", b"", "image/png")]).run()
    assert_clean(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and errors[0].startswith("corrupt.jpg: ") and errors[1] == "empty.png: the file is empty."
    headings = [m.value for m in at.markdown]
    assert "**Level 1**  \nfrom scratch" in headings and "**Level 2**  \nbottleneck features" in headings
    answers = [m.value for m in at.main.markdown if m.value.startswith("### ")]
    assert len(answers) == 2 and all(("circles" in a or "squares" in a) and "%" in a for a in answers)
    assert [c.value for c in at.caption if "Server time" in c.value][0].endswith(  # the batch's time, said so
        "for decoding and 2 model(s), waiting for the other 2 photo(s) sent with it included.")
    # The server process skips Grappler (see core.serving.predictor.configure_for_serving).
    import tensorflow as tf

    assert tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer") is True


def test_predict_a_random_validation_photo(trained):
    at = page("predict")
    at.button[0].click().run()
    assert_clean(at)
    assert any(img.proto.imgs[0].caption.startswith("sample: ") for img in at.get("image"))
    assert len([m for m in at.main.markdown if m.value.startswith("### ")]) == 2
    at.button(key="sample_remove").click().run()  # and it goes away again, without a reload
    assert_clean(at)
    assert not any(img.proto.imgs[0].caption.startswith("sample: ") for img in at.get("image"))
    assert not [b for b in at.button if b.key == "sample_remove"]


def test_serving_per_file_errors(trained):
    from core.serving.predictor import Predictor, predict_every_level

    predictors = {level: Predictor(e) for level, e in ModelStore().latest_per_level().items()}
    good = jpeg_bytes(make_image("circles", np.random.default_rng(0)))
    results = [predict_every_level(data, name, predictors) for name, data in
               [("good.jpg", good), ("broken.jpg", b"garbage"), ("empty.png", b""), ("good2.jpg", good)]]
    assert [r.error is None for r in results] == [True, False, False, True]
    assert "broken.jpg" in results[1].error and "empty.png" in results[2].error
    assert set(results[0].per_level) == {1, 2} and results[0].per_level == results[3].per_level


def test_augmentation_change_redraws_the_grid(app_env):
    at = page("augment")
    assert_clean(at)
    def urls():
        return [str(img.proto.imgs[0].url) for img in at.get("image")]

    before = urls()
    assert len(before) == 1 + 9  # the original and the grid of variants
    assert len(set(before[1:])) == 9  # every variant differs
    at.selectbox(key="aug_preset").set_value("none").run()
    assert_clean(at)
    assert any("all identical" in m.value for m in at.markdown)
    assert len(set(urls()[1:])) == 1 and urls()[1:] != before[1:]
    at.slider(key="aug_rotation").set_value(90).run()
    assert_clean(at)
    config, preset_name = workspace.augment_settings()
    assert config.rotation == 90 and preset_name == "custom"  # the training page will use this
    assert at.selectbox(key="aug_preset").value == "custom"  # the menu no longer names the preset left behind
    at.selectbox(key="aug_preset").set_value("none").run()  # so picking it again applies it again
    assert at.slider(key="aug_rotation").value == 0 and workspace.augment_settings()[1] == "none"
    at.slider(key="aug_rotation").set_value(45).run()
    assert at.selectbox(key="aug_preset").value == "custom"
    at.slider(key="aug_rotation").set_value(0).run()  # back on the preset's settings: named again
    assert at.selectbox(key="aug_preset").value == "none"
    at.radio[0].set_value("Upload one").run()
    at.file_uploader(key="aug_upload").set_value(("notes.jpg", b"not a picture", "image/jpeg")).run()
    assert [e.value for e in at.error] == [
        "notes.jpg: is not an image we can read (JPEG, PNG, WebP, BMP or GIF)."]  # named, as Predict names it


def test_train_page_fine_tunes_on_cached_views_or_the_tutorials_way(app_env):
    at = page("train")
    assert_clean(at)
    defaults = get_level(3).fine_tuning
    assert at.radio(key="way3").value == "cached"
    assert at.select_slider(key="views3").value == defaults.views
    assert at.selectbox(key="top3-efficientnet_lite2").value == defaults.top_block
    assert at.number_input(key=f"ep3-{defaults.views}").value == get_level(3).epochs
    estimate = next(c.value for c in at.caption if "Estimated time" in c.value and "views of each photo" in c.value)
    assert f"on {defaults.views} views of each photo" in estimate
    at.radio(key="way3").set_value("tutorial").run()
    assert_clean(at)
    assert at.number_input(key="ep3-0").value == defaults.epochs_on_the_fly  # the tutorial's way keeps its epochs
    assert any("As the tutorial did" in c.value for c in at.caption)
    assert not [s for s in at.select_slider if s.key == "views3"]
    assert not any("Estimated time" in c.value and "views of each photo" in c.value for c in at.caption)


@pytest.mark.slow
def test_training_job_starts_reports_and_lands_a_model(app_env):
    at = page("train")
    assert_clean(at)
    assert [b.label for b in at.button if b.label.startswith("Start")] == [f"Start level {level.key}"
                                                                            for level in all_levels()]
    assert [s.value for s in at.subheader] == [level.label for level in all_levels()]
    assert at.number_input(key="ep1").value == get_level(1).epochs  # the registry's defaults, not the page's
    assert any("Train level 2" in i.value for i in at.info)  # level 3 needs a level-2 head
    at.number_input(key="ep1").set_value(1).run()
    assert any("Estimated time" in c.value for c in at.caption)
    assert not at.toggle(key="bf16_1").value and "bfloat16" in at.toggle(key="bf16_1").help
    at.toggle(key="bf16_1").set_value(True).run()  # only level 1 trains from scratch: only it offers bfloat16
    assert [t.key for t in at.toggle if t.key.startswith("bf16")] == ["bf16_1"]
    assert sum("Estimated time" in c.value and "bfloat16" in c.value for c in at.caption) == 1  # level 1's estimate
    at.button(key="start1").click().run()
    assert_clean(at)
    assert any(t.value.startswith("Started: ") for t in at.toast)  # said wherever the page is scrolled
    job = jobs.current_job()
    assert job is not None and job.config.level == 1 and job.config.precision == "bfloat16"
    final = jobs.wait_for(job.id, timeout=300)
    assert final.state is jobs.JobState.SUCCEEDED, final.error
    at = page("train")
    assert_clean(at)
    assert any("done in" in m.value for m in at.markdown)
    assert ModelStore().latest(1).id == final.model_id
    assert ModelStore().latest(1).card.hyperparameters["precision"] == "bfloat16"


def test_curves_page_compares_runs(trained):
    at = page("curves")
    assert_clean(at)
    assert len(at.multiselect[0].value) == 2
    table = at.dataframe[0].value
    assert len(table) == 2
    # Figures stay numbers, so the grid sorts them as numbers ("100.0%" after "98.4%", not before) ...
    assert table["val accuracy"].dtype.kind == "f" and table["val accuracy"].between(0, 1).all()
    assert table["tutorial"].isna().all()  # circles and squares: the tutorial measured cats vs dogs
    # ... shown as percentages, and absent ones as "—" rather than "None", which reads as a fault.
    assert at.dataframe[0].proto.placeholder == "—"
    columns = json.loads(at.dataframe[0].proto.columns)
    assert all(columns[name]["type_config"]["format"] == "percent" for name in PERCENT_COLUMNS)
    assert any("Confusion matrix" in m.value for m in at.markdown)


def test_predict_where_it_looks_overlays_every_levels_heatmap(trained):
    at = page("predict")
    good = jpeg_bytes(make_image("squares", np.random.default_rng(3), size=96))
    at.file_uploader[0].set_value(("square.jpg", good, "image/jpeg")).run()
    assert len(at.get("image")) == 1  # the photo alone
    at.toggle(key="where_it_looks").set_value(True).run()
    assert_clean(at)
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert sum(c.startswith("Where it looks for") for c in captions) == 2  # one heatmap per level
    assert any("yellow = where the decision comes from" in c.value for c in at.caption)
    assert [c.value for c in at.caption if "Server time" in c.value][0].endswith("2 model(s) and heatmaps.")


def test_level0_card_without_a_built_in_grouping_finds_one(app_env):
    """Circles and squares: no ImageNet grouping is built in and ImageNet's class names are not on this
    machine; level 0 can still start (it finds the groups from the training photos), and the names can
    be downloaded to pick them by hand."""
    at = page("train")
    assert_clean(at)
    assert not at.button(key="start0").disabled
    assert any("finds them from your training photos" in c.value for c in at.caption)
    assert any(b.label == "Download ImageNet's class names (35 kB) to pick them yourself" for b in at.button)
    assert not [n for n in at.number_input if n.key == "ep0"]  # nothing to train: no epochs


def test_level0_card_with_cats_and_dogs_uses_the_built_in_grouping(tmp_path, monkeypatch):
    from tests.helpers import make_dataset

    data = make_dataset(tmp_path / "pets", classes=("circles", "squares"))
    for split in ("train", "validation"):
        (data / split / "circles").rename(data / split / "cats")
        (data / split / "squares").rename(data / split / "dogs")
    monkeypatch.setenv("LITTLE_DATA_DATA_DIR", str(data))
    at = page("train")
    assert_clean(at)
    assert not at.button(key="start0").disabled
    assert any("built-in grouping for cats and dogs" in c.value for c in at.caption)


@pytest.mark.slow
def test_efficiency_page_measures_a_curve_in_the_background(app_env, monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_WEIGHTS_MOBILENET_V2", "none")  # the worker inherits it: random weights
    at = page("efficiency")
    assert_clean(at)
    assert any("No curve measured yet" in i.value for i in at.info)
    at.multiselect(key="curve_sizes").set_value([5, 10]).run()
    at.number_input(key="curve_seeds").set_value(1).run()
    assert any("2 point(s), about" in c.value for c in at.caption)
    at.button(key="curve_start").click().run()
    assert_clean(at)
    job = jobs.current_job()
    assert job.kind is jobs.JobKind.CURVE and job.config.sizes == [5, 10]
    final = jobs.wait_for(job.id, timeout=300)
    assert final.state is jobs.JobState.SUCCEEDED, final.error
    at = page("efficiency")
    assert_clean(at)
    assert at.get("vega_lite_chart") and at.dataframe  # the chart and its numbers
    assert list(at.dataframe[0].value["images per class"]) == [5, 10]


def test_efficiency_page_shows_and_measures_the_chosen_networks_curve(app_env, monkeypatch):
    """Each network's curve is kept on its own: the page shows the one chosen and measures with it."""
    from core.data.folders import summarize
    from core.experiments.efficiency_curve import CurvePoint, _save_point

    summary = summarize(app_env)
    for seed, accuracy in ((0, 0.70), (1, 0.80)):
        _save_point(CurvePoint(2, 5, seed, accuracy, 1.0), summary.fingerprint, "mobilenet_v2")
    at = page("efficiency")
    assert_clean(at)
    assert at.selectbox(key="curve_backbone").value == "efficientnet_lite2"
    assert any("No curve measured yet for this data set with EfficientNet-Lite2" in i.value for i in at.info)
    at.selectbox(key="curve_backbone").set_value("mobilenet_v2").run()
    assert_clean(at)
    assert at.get("vega_lite_chart") and list(at.dataframe[0].value["accuracy"]) == [pytest.approx(0.75)]
    assert any("Levels 2 and 3 use MobileNetV2" in c.value for c in at.caption)
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, **kwargs: started.append(config) or jobs.Job(
        id="curve-test", kind=jobs.JobKind.CURVE, state=jobs.JobState.STARTING, config=config, created=0))
    at.button(key="curve_start").click().run()
    assert [config.backbone for config in started] == ["mobilenet_v2"]
    at.selectbox(key="curve_backbone").set_value("vgg16").run()  # no ImageNet classifier: said, not a missing line
    assert any("no level 0 to draw" in c.value for c in at.caption)


def test_mistakes_gallery_shows_heatmaps_on_request(trained):
    at = page("curves")
    toggles = [t for t in at.toggle if t.key and t.key.startswith("mistake_heatmaps_")]
    assert toggles, "a model with mistakes offers their heatmaps"
    before = len(at.get("image"))
    toggles[0].set_value(True).run()
    assert_clean(at)
    assert len(at.get("image")) == before  # the same photos, now with their heatmaps
    assert any("where the wrong answer comes from" in c.value for c in at.caption)


def test_the_app_keeps_keras_state_between_reruns(app_env, monkeypatch):
    """Streamlit clears Keras' session after every script run unless the app stops it (see pages.common)."""
    import keras
    from streamlit.runtime.scriptrunner import script_runner

    page("overview")
    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: cleared.append(1))
    script_runner._clean_problem_modules()  # what Streamlit calls after each run, as the app left it
    assert cleared == []
    import streamlit.config

    assert streamlit.config.get_option("runner.postScriptGC") is False  # .streamlit/config.toml


def test_curves_page_shows_sweeps_grouped_by_setting_and_starts_new_ones(app_env, monkeypatch):
    from core.atomic_files import atomic_write_json
    from core.experiments.sweep import SweepConfig, summarize, sweeps_dir

    trials = [{"config": {"learning_rate": lr}, "seed": seed, "val_accuracy": acc, "seconds": 3.0,
               "model_id": f"m{lr}{seed}", "error": None}
              for lr, seed, acc in [(1e-4, 0, 0.9), (1e-4, 1, 0.92), (3e-4, 0, 0.95), (3e-4, 1, 0.97)]]
    trials.append({"config": {"learning_rate": 1e-2}, "seed": 0, "val_accuracy": None, "seconds": None,
                   "model_id": None, "error": "Training diverged (loss is NaN)."})
    record = summarize(trials) | {"id": "sweep-test", "level": 2, "seconds": 12.0, "cancelled": False,
                                  "resources": {"cpu": 2.0}, "created": 1.0}
    atomic_write_json(sweeps_dir() / "sweep-test.json", record)
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, **kwargs: started.append(config) or jobs.Job(
        id="sweep-test", kind=jobs.JobKind.SWEEP, state=jobs.JobState.STARTING, config=config, created=0))
    at = page("curves")
    assert_clean(at)
    table = [d.value for d in at.dataframe][-1]
    assert list(table["setting"]) == ["learning_rate=0.0003", "learning_rate=0.0001", "learning_rate=0.01"]
    assert table["mean"].iloc[0] == pytest.approx(0.96) and list(table["failed"]) == [0, 0, 1]
    assert any("Training diverged" in m.value for m in at.markdown), "failed trials say why"
    assert any(c.value.startswith("Level 2") and "5 trials" in c.value for c in at.caption)
    at.text_input(key="sweep_rates").set_value("1e-3, 3e-3").run()
    at.number_input(key="sweep_seeds").set_value(3).run()
    assert any("6 trial(s)" in c.value for c in at.caption)
    from core.levels import LEVELS
    assert at.number_input(key="sweep_epochs_2").value == LEVELS[2].epochs  # the level's own, not a bare 0
    at.button(key="sweep_start").click().run()
    assert_clean(at)
    assert isinstance(started[0], SweepConfig) and started[0].grid == {"learning_rate": [1e-3, 3e-3]}
    assert started[0].seeds == 3 and started[0].base["data_dir"] == str(app_env)
    assert "epochs" not in started[0].base  # left at the level's own, so the trials keep its default
    at.text_input(key="sweep_rates").set_value("fast").run()
    assert any("takes numbers" in e.value for e in at.error)
