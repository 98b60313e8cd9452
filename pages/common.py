"""Pieces every page shares: cached loaders over `core/`, the sidebar, small drawing helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from core import settings
from core.app import jobs
from core.app import workspace
from core.data.builder import BuiltDataset, dataset_name
from core.data.folders import DatasetError, summarize
from core.data.download import resolve_data_dir
from core.data.images import IMAGE_EXTENSIONS
from core.levels import all_levels, get_level
from core.serving.model_store import ModelStore

# What the photo uploaders accept: the formats core.data.images decodes.
IMAGE_TYPES = [extension.lstrip(".") for extension in IMAGE_EXTENSIONS]


def photo_upload_mb() -> int:
    """The photo uploaders' limit in MB, as the browser states and enforces it: the app's own limit per
    photo (`LITTLE_DATA_MAX_UPLOAD_MB`), not the server's for data-set zips."""
    return max(1, -(-settings.max_upload_bytes() // 2 ** 20))


PAGE_CONFIG = {"page_title": "Little Data", "page_icon": ":material/pets:", "layout": "wide"}


def keep_keras_state_between_reruns() -> None:
    """Stops Streamlit from calling `keras.backend.clear_session()` after every script run.

    Streamlit (`script_runner._clean_problem_modules`) clears Keras' session whenever Keras is
    imported: that empties TensorFlow's kernel caches and runs a full garbage collection after each
    rerun, each widget click and each tick of a progress fragment. Our models are cached across
    reruns (`st.cache_resource`), so the clearing only costs: measured, 40% of the server's CPU
    while a progress bar polls, and a first call per model per rerun several times slower than the
    next. Matplotlib's figures, the other thing it cleans, are still closed.
    """
    from streamlit.runtime.scriptrunner import script_runner

    def clean_problem_modules_but_keras() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")

    script_runner._clean_problem_modules = clean_problem_modules_but_keras


#: Pages an audience opens on their phones: no sidebar, no navigation, nothing but the page.
AUDIENCE_PAGES = {"join"}


def run_app() -> None:
    """The app shell: navigation over the pages, the sidebar, then the chosen page."""
    keep_keras_state_between_reruns()
    pages = [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
        st.Page("pages/augment.py", title="Augmentation lab", icon=":material/auto_awesome:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/curves.py", title="Curves & comparison", icon=":material/monitoring:"),
        st.Page("pages/efficiency.py", title="How little data", icon=":material/show_chart:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
        st.Page("pages/present.py", title="Present", icon=":material/co_present:", url_path="present"),
        st.Page("pages/join.py", title="Join (audience)", icon=":material/qr_code_2:", url_path="join"),
    ]
    page = st.navigation(pages, position="hidden" if current_url_path() in AUDIENCE_PAGES else "sidebar")
    if page.url_path in AUDIENCE_PAGES:
        audience_page_style()
    else:
        sidebar_ui()
    page.run()


def current_url_path() -> str:
    """The page part of the address this session opened ('join' for http://host:8501/join?x=1)."""
    try:
        from urllib.parse import urlparse

        return urlparse(st.context.url or "").path.strip("/").split("/")[-1]
    except Exception:  # noqa: BLE001 - no browser context (AppTest): the page decides
        return ""


def audience_page_style() -> None:
    """No sidebar, no way to open it, no toolbar, little margin: an audience page is the whole app on a phone."""
    st.html("<style>[data-testid='stSidebar'], [data-testid='stSidebarCollapsedControl'], "
            "[data-testid='stExpandSidebarButton'], [data-testid='stHeader'] {display: none !important;} "
            ".block-container {padding-top: 1.2rem !important; padding-bottom: 2rem !important;}</style>")


def ensure_app_shell() -> None:
    """Makes sure a page runs inside the app shell, even on the server's very first request.

    Streamlit treats a `pages/` folder as a legacy multipage app until app.py has called
    `st.navigation` once; if the first request after start-up opens a page URL directly (a bookmark,
    a reload), that page runs alone, without the sidebar and with every file of pages/ listed.
    Here the legacy mode is switched off and the real shell runs in its place, in the same run, so
    nothing the user did (a click, an upload) is lost.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.set_page_config(**PAGE_CONFIG)
        run_app()
        st.stop()


def _dir_stamp(folder: Path) -> float:
    """Changes when a split or class folder changes, so cached summaries refresh."""
    try:
        return max(p.stat().st_mtime for p in [folder, *folder.glob("*"), *folder.glob("*/*")])
    except (OSError, ValueError):
        return 0.0


@st.cache_data(show_spinner="Reading the data set…", max_entries=8)
def _summary_cached(folder: str, source: str, stamp: float):
    return summarize(folder, source=source)


@st.cache_resource(show_spinner=False, max_entries=8)
def _identity_cached(folder: str, source: str, stamp: float) -> tuple[tuple, str]:
    """The data set's classes and root, shared by every session without a copy: `st.cache_data` unpickles
    the whole summary (a Path per photo) at every read, which cost a room of phones more CPU than the models."""
    summary = _summary_cached(folder, source, stamp)
    return tuple(summary.classes), str(summary.root)


def _current_identity() -> tuple[tuple, str] | None:
    """(class names, root) of the active data set, or None when there is no usable data set."""
    try:
        folder, source = resolve_data_dir(workspace.active_data_dir(), download=False)
        return _identity_cached(str(folder), source, _dir_stamp(Path(folder)))
    except DatasetError:
        return None


def current_classes() -> tuple | None:
    """The active data set's class names, or None when there is no usable data set."""
    identity = _current_identity()
    return identity[0] if identity else None


def current_summary():
    """(summary or None, folder or None, error message or None) for the active data set."""
    try:
        folder, source = resolve_data_dir(workspace.active_data_dir(), download=False)
    except DatasetError as exc:
        return None, None, str(exc)
    try:
        return _summary_cached(str(folder), source, _dir_stamp(Path(folder))), folder, None
    except DatasetError as exc:
        return None, folder, str(exc)


@st.cache_resource(max_entries=12, show_spinner="Loading model…")
def load_predictor(model_id: str, model_path: str, mtime: float):
    """One loaded model per file version (model and card): a newer model, or a card that `python -m
    core calibrate` rewrote, is loaded fresh."""
    from core.serving.predictor import Predictor, configure_for_serving

    configure_for_serving()
    return Predictor(ModelStore(Path(model_path).parent).get(model_id))


def _version(entry) -> float:
    """The newest of a stored model's two files: a new model, or a card `calibrate` rewrote, loads afresh."""
    return max(entry.model_path.stat().st_mtime, entry.card_path.stat().st_mtime)


def predictor_for(entry):
    return load_predictor(entry.id, str(entry.model_path), _version(entry))


@st.cache_resource(max_entries=4, show_spinner="Sharing the pretrained layers between levels…")
def _load_trunks(models: tuple):
    from core.serving.predictor import SharedTrunk, accelerate

    predictors = {level: load_predictor(*model) for level, *model in models}
    trunks = SharedTrunk.plan(predictors)
    accelerate(trunks, predictors, background=True)  # ONNX Runtime takes over once checked; TensorFlow answers meanwhile
    return trunks


def shared_trunks(loaded: dict) -> list:
    """`SharedTrunk`s for the loaded predictors (level -> Predictor or error), built once per set of models."""
    # The same keys as `predictor_for`: the trunk is built from, and accelerates, the predictors that answer.
    models = tuple((level, p.entry.id, str(p.entry.model_path), _version(p.entry))
                   for level, p in sorted(loaded.items()) if not isinstance(p, Exception))
    return _load_trunks(models)


@st.cache_resource(max_entries=12, show_spinner="Preparing the heatmaps…")
def _load_explainer(model_id: str, model_path: str, mtime: float):
    from core.serving.explain import Explainer

    predictor = load_predictor(model_id, model_path, mtime)
    return Explainer(predictor.entry, model=predictor.model)


def explainer_for(predictor):
    """Grad-CAM for a loaded predictor's model (built once per model file)."""
    entry = predictor.entry
    return _load_explainer(entry.id, str(entry.model_path), entry.model_path.stat().st_mtime)


@st.cache_data(max_entries=256, show_spinner=False)
def heatmap_overlay(model_id: str, model_path: str, photo: str, max_side: int = 240):
    """A stored model's Grad-CAM heatmap over a photo of the data set (the class it sees), cached per photo."""
    from core.serving.explain import overlay

    explanation = explainer_for(predictor_for(ModelStore(Path(model_path).parent).get(model_id))).explain(photo)
    return overlay(explanation.image, explanation.heatmap, max_side=max_side)


@st.cache_resource(max_entries=8, show_spinner=False)
def _latest_per_level(root: str, stamp: int, classes: tuple | None, data_root: str | None) -> dict:
    return ModelStore(root).latest_per_level(list(classes) if classes is not None else None, data_root)


def trained_elsewhere(entry) -> str | None:
    """The name of the folder `entry` was trained (and scored) on when it is not the active data set's, else
    None: a model of the same classes from another data set stands in for a level this one lacks, and its
    accuracy is on that data set's validation photos, not these."""
    identity = _current_identity()
    if identity is None or entry.trained_root is None or entry.trained_in(identity[1]):
        return None
    return dataset_name(entry.trained_root)


def latest_models():
    """level -> its newest model in the store for the active data set's classes (any, without a data set),
    one trained on the active data set's folder before one trained on another folder of the same classes.

    Read once per change of the store (every write renames a file into its folder, which changes the
    folder's modification time), not at every rerun of every session: a room of phones would
    otherwise parse every model card a few times per photo.
    """
    identity = _current_identity()
    store = ModelStore()
    try:
        stamp = store.root.stat().st_mtime_ns
    except OSError:
        stamp = 0
    classes, data_root = identity if identity else (None, None)
    return _latest_per_level(str(store.root), stamp, classes, data_root)


def sidebar_ui():
    started = st.session_state.pop("job_started", None)
    if started:
        st.toast(f"Started: {started}. It runs in the background; its progress is on this page and in the sidebar.",
                 icon=":material/hourglass_top:")
    with st.sidebar:
        st.markdown("### :material/pets: Little Data")
        summary, folder, error = current_summary()
        if summary:
            counts = summary.counts()
            n_train = sum(counts.get("train", {}).values())
            n_val = sum(counts.get("validation", {}).values())
            st.caption(f"**Data:** {dataset_name(summary.root)} · {len(summary.classes)} classes · "
                       f"{n_train} train / {n_val} validation")
        elif folder is not None and BuiltDataset.is_built(folder):  # built in the app, not trainable yet
            st.caption(f"**Data:** {dataset_name(folder)} — being built: see the Data page")
        else:
            st.caption("**Data:** none yet — see the Data page")
        latest = latest_models()
        lines = []
        for level in all_levels():
            entry = latest.get(level.key)
            if entry and entry.val_accuracy is not None:
                elsewhere = trained_elsewhere(entry)
                lines.append(f":material/check_circle: {level.label}: **{entry.val_accuracy:.1%}**"
                             + (f" (on {elsewhere})" if elsewhere else ""))
            else:
                lines.append(f":material/radio_button_unchecked: {level.label}: not trained")
        st.caption("  \n".join(lines))
        if jobs.active_job() is not None:  # polled only while a job runs
            _sidebar_job_ui()


@st.fragment(run_every=2.0)
def _sidebar_job_ui() -> None:
    """The running job's line, redrawn as it goes (the rest of the page may sit still for minutes); once
    the job ends, the whole page runs again so that the levels above show the new model."""
    job = jobs.active_job()
    if job is not None:
        st.caption(f":material/hourglass_top: {job.title.capitalize()}: {job.status_text}")
    else:
        st.rerun(scope="app")


def session_id() -> str:
    """This browser session's id (a phone on the Join page, for its per-minute photo limit)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


@st.cache_resource(show_spinner=False)
def model_server():
    """The one `ModelServer` every session of this server sends its photos to (batched, bounded)."""
    from core.serving.model_server import ModelServer

    return ModelServer()


@st.cache_resource(show_spinner=False)
def audience_wall():
    """The presentation's wall of audience photos: this process's memory only (`core.app.wall`)."""
    from core.app.wall import Wall

    return Wall()


def model_set(loaded: dict, explainers: dict | None = None):
    """The `ModelSet` of loaded predictors (level -> Predictor or error), with heatmaps if `explainers`."""
    from core.serving.model_server import ModelSet

    return ModelSet(loaded, explainers, shared_trunks(loaded))


@st.cache_resource(max_entries=4, show_spinner=False)
def _warm_up(models: tuple, _loaded: dict, _explainers: dict | None) -> bool:
    """Runs once per `models` key: Streamlit does not hash the arguments whose names start with _."""
    from PIL import Image

    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    try:
        model_server().submit(grey, "warm-up", model_set(_loaded))
        if _explainers:
            model_server().submit(grey, "warm-up", model_set(_loaded, _explainers))
    except Exception:  # noqa: BLE001 - a busy server is already warm
        pass
    return True


def warm_up_serving(loaded: dict, explainers: dict | None = None) -> None:
    """Sends one grey picture through the model server (answers, and heatmaps if `explainers`), once
    per set of models, without waiting: the first real photo then finds every function traced.

    The first Grad-CAM pass of four levels takes ~15 s on two cores (TensorFlow traces each model's
    gradient); without this, the first audience photo's heatmaps would hold up everyone's answers.
    """
    usable = {level: p for level, p in loaded.items() if not isinstance(p, Exception)}
    if usable:
        key = tuple(sorted((level, p.entry.id) for level, p in usable.items())) + (explainers is not None,)
        _warm_up(key, loaded, explainers)


def loaded_predictors() -> dict:
    """level -> the Predictor of its newest model (or the error that keeps it from loading)."""
    from core.serving.model_store import ModelError

    loaded = {}
    for level, entry in latest_models().items():
        try:
            loaded[level] = predictor_for(entry)
        except (ModelError, OSError) as exc:
            loaded[level] = exc
    return loaded


def loaded_explainers(loaded: dict) -> dict:
    """Grad-CAM for each level whose model loaded; a model that cannot be explained gets its error."""
    from core.serving.model_store import ModelError

    found = {}
    for level, predictor in loaded.items():
        if isinstance(predictor, Exception):
            continue
        try:
            found[level] = explainer_for(predictor)
        except ModelError as exc:
            found[level] = exc
    return found


def level_label(key: int) -> str:
    """'Level 2 · bottleneck features', or 'Level 7' for a model of a level no longer registered."""
    try:
        return get_level(key).label
    except ValueError:
        return f"Level {key}"


def start_button_ui(label: str, config, key: str, disabled: bool, state_key: str) -> None:
    """A Start button that launches `config` as a background job, or says which job is in the way."""
    if st.button(label, type="primary", disabled=disabled, key=key):
        try:
            job = jobs.start_job(config)
            st.session_state[state_key] = True  # the page refreshes itself once the job ends
            st.session_state["job_started"] = job.title  # said after the rerun, wherever the page is scrolled
            st.rerun()
        except jobs.JobBusy as exc:
            st.warning(str(exc))


def other_job_notice_ui(kind: jobs.JobKind, what_waits: str) -> bool:
    """Whether a job is running (so nothing new can start); says so when it is not of `kind`."""
    running = jobs.active_job()
    if running is not None and running.kind is not kind:
        st.caption(f"A {running.title} job is running; {what_waits} when it ends.")
    return running is not None


def background_job_ui(kind: jobs.JobKind, what: str, cancel_label: str, cancel_toast: str, starting: str) -> None:
    """The running `kind` job's progress and Cancel button; once it ends, its error or a page refresh.

    Call it from a page's `st.fragment(run_every=...)`. Start buttons set `<kind>_was_active`
    (`start_button_ui`), so the page redraws itself once with the finished job's results.
    """
    job = jobs.current_job()
    if job is None or job.kind is not kind:
        return
    if job.active:
        progress = job.progress
        st.progress(progress.fraction or 0.0, text=progress.message or starting)
        if st.button(cancel_label, icon=":material/stop_circle:", key=f"cancel_{job.id}"):
            jobs.cancel_job(job.id)
            st.toast(cancel_toast)
        st.session_state[f"{kind.value}_was_active"] = True
    else:
        if job.state is jobs.JobState.FAILED:
            st.error(f"The {what} failed: {job.error}")
        if st.session_state.pop(f"{kind.value}_was_active", False):
            st.rerun(scope="app")  # draw the finished job's results


def page_header(title: str, intro: str):
    st.title(title)
    st.markdown(intro)


#: On a phone (Streamlit stacks columns below 640 px), a grid made with `grid_cells(..., phone_columns=N)`
#: keeps N photos a row instead of one a screen; rows wrap, so the reading order stays.
PHONE_GRID_STYLE = "<style>@media (max-width: 640px) {" + "".join(
    f'[class*="st-key-ld-grid{n}-"] [data-testid="stHorizontalBlock"] {{flex-wrap: wrap !important; '
    f'flex-direction: row !important;}} [class*="st-key-ld-grid{n}-"] [data-testid="stColumn"] {{'
    f'min-width: calc({100 / n:.0f}% - 1rem) !important; width: calc({100 / n:.0f}% - 1rem) !important; '
    f'flex: 1 1 calc({100 / n:.0f}% - 1rem) !important;}}' for n in (2, 3)) + "}</style>"


def grid_cells(count: int, width: int, key: str | None = None, phone_columns: int = 1) -> list:
    """`count` cells in rows of `width` columns, in reading order. One `st.columns` per row, because a
    phone stacks columns: with one set of columns for everything, item 5 would follow item 1 there.
    With `phone_columns` 2 or 3 (and a `key` unique on the page), a phone shows that many a row."""
    parent = st.container()
    if phone_columns in (2, 3) and key:
        st.html(PHONE_GRID_STYLE)  # a style alone takes no room
        parent = st.container(key=f"ld-grid{phone_columns}-{key}")
    cells = []
    for start in range(0, count, width):
        cells += parent.columns(width)[:min(width, count - start)]
    return cells
