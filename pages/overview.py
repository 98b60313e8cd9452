"""Overview: what the app shows, and where each level stands."""

import streamlit as st

from core.app import jobs
from core.app import workspace
from core.networks.backbones import DEFAULT_BACKBONE, get_backbone
from core.data.builder import BuiltDataset
from core.levels import all_levels, get_level
from core.app.quickstart import QUICK_BACKBONE, QUICK_LEVEL, first_models, sample_photo
from pages.common import current_summary, ensure_app_shell, latest_models, predictor_for, trained_elsewhere


def levels_ui(classes) -> None:
    latest = latest_models()
    levels = all_levels()
    for level, column in zip(levels, st.columns(len(levels))):
        with column.container(border=True):
            st.subheader(f"Level {level.key}")
            st.markdown(f"**{level.short_name.capitalize()}**")
            st.write(level.story)
            entry = latest.get(level.key)
            tutorial = level.tutorial_accuracy_for(classes)  # None on classes other than cats and dogs
            if entry and entry.val_accuracy is not None:
                elsewhere = trained_elsewhere(entry)
                delta = f"{(entry.val_accuracy - tutorial) * 100:+.1f} points" if tutorial is not None else None
                where = (f"of {elsewhere}, the data set it was trained on (this one has no model of this level yet)"
                         if elsewhere else "of this data set")
                epochs = entry.epochs_run
                against = ((f", after {epochs} epoch(s)" if epochs else "")
                           + (f"; the delta is against the tutorial's {tutorial:.1%} "
                              f"({level.tutorial_setup})." if tutorial is not None else "."))
                st.metric("Validation accuracy", f"{entry.val_accuracy:.1%}", delta=delta,
                          help=f"Of the newest model of this level, {entry.id}, on the validation photos {where}{against}")
                if elsewhere:  # under the figure: a metric's label is cut short in these narrow columns
                    st.caption(f":material/swap_horiz: Measured on **{elsewhere}**, another data set of these "
                               "classes: this one has no model of this level yet.")
            else:
                st.metric("Validation accuracy", "—", help="Not trained yet.")
            st.caption(level.tutorial_note(classes))


def quick_start_ui(summary):
    """One button: level 2 (and level 0) in the background, then Predict on a validation photo."""
    job_id = st.session_state.get("quick_start_job")
    if job_id is None and QUICK_LEVEL in latest_models():
        return
    configs = first_models(summary, workspace.active_data_dir())
    names = " and ".join(f"level {c.level} ({get_level(c.level).short_name})" for c in configs)
    with st.container(border=True):
        st.markdown("#### :material/bolt: A first model in about a minute")
        if job_id is None:
            st.markdown(f"Trains {names} on **{len(summary.classes)} classes** in the background, then opens "
                        "**Predict** on one of the validation photos. "
                        f"{get_level(QUICK_LEVEL).short_name.capitalize()}: the network has already seen "
                        "ImageNet's 1.2 million photos; only a small classifier on top learns your classes. "
                        + (f"It uses {get_backbone(QUICK_BACKBONE).label}, the default network." if QUICK_BACKBONE ==
                           DEFAULT_BACKBONE else f"It uses {get_backbone(QUICK_BACKBONE).label}, the quicker "
                                                 "network; **Train** offers the stronger default."))
            if st.button("Train my first model", type="primary", icon=":material/rocket_launch:"):
                try:
                    st.session_state["quick_start_job"] = jobs.start_job(configs).id
                    warm_up_in_background()
                    st.rerun()
                except jobs.JobBusy as exc:
                    st.warning(str(exc))
        else:
            quick_start_progress_ui(job_id, summary)


def warm_up_in_background():
    """Imports TensorFlow in this server process while the worker trains, so Predict opens warm."""
    import threading

    threading.Thread(target=lambda: __import__("keras"), daemon=True, name="warm-up").start()


@st.fragment(run_every=1.0)
def quick_start_progress_ui(job_id: str, summary):
    job = jobs.read_job(job_id)
    if job is None:
        st.session_state.pop("quick_start_job", None)
        return
    if job.active:
        step = f"Step {job.step or 1} of {job.steps or len(job.train_configs)}: "
        st.progress(job.progress.fraction or 0.0, text=step + job.status_text)
        if st.button("Cancel", key="quick_start_cancel"):
            jobs.cancel_job(job_id)
        for model_id in job.model_ids:  # load each finished model now, not when Predict opens
            load_finished_model(model_id)
    elif job.state is jobs.JobState.SUCCEEDED:
        st.session_state.pop("quick_start_job", None)
        st.session_state["sample"] = str(sample_photo(summary))
        st.switch_page("pages/predict.py")
    elif job.state is jobs.JobState.CANCELLED:
        st.session_state.pop("quick_start_job", None)
        st.info(job.message or "The quick start was cancelled.")
    else:
        st.session_state.pop("quick_start_job", None)
        st.error(job.error or f"The quick start ended: {job.state.value}.")


def load_finished_model(model_id: str) -> None:
    from core.serving.model_store import ModelError, ModelStore

    try:
        predictor_for(ModelStore().get(model_id)).warm_up()
    except (ModelError, OSError):
        pass  # Predict will say what is wrong with it


def main():
    st.title("Little Data")
    st.markdown(
        "**Strong image classifiers from very little data**, three ways, with real photos, real pretrained "
        "networks and real training — after François Chollet's 2016 Keras tutorial, which showed that "
        "2000 pictures of cats and dogs are enough. Level 0 adds the baseline the tutorial skipped: the "
        "pretrained network as it is, with no training at all.")
    summary, folder, error = current_summary()
    if summary is None and folder is not None and BuiltDataset.is_built(folder):
        problems = BuiltDataset(folder).problems()
        st.info(f"Your data set is still being built: {' '.join(problems) or error} Add photos on the **Data** page.",
                icon=":material/construction:")
    elif summary is None:
        st.warning(f"No data set yet. {error} Open the **Data** page to choose one.")
    else:
        quick_start_ui(summary)
    levels_ui(summary.classes if summary is not None else None)
    st.markdown("#### How to use it")
    st.markdown(
        "1. **Data** — check the photos, or bring your own: build a data set from uploads and camera shots, "
        "or use a folder or a zip of `train/<class>/`, `validation/<class>/`.\n"
        "2. **Augmentation lab** — one picture, many variants: the random transformations that fight overfitting.\n"
        "3. **Train** — each level in the background; reload or leave the page, training goes on.\n"
        "4. **Curves & comparison** — watch overfitting appear (level 2, level 1 without augmentation) and "
        "be cured; see the mistakes each model makes.\n"
        "5. **How little data** — accuracy against the number of training photos per class, level by level.\n"
        "6. **Predict** — upload your own photo and see every level's answer side by side, and where each "
        "one looks.\n"
        "7. **Present** — the tutorial's story for a room, slide by slide, told with your own results.\n"
        "8. **Join (audience)** — a QR code on the last slide: the room's phones send photos, get every "
        "level's answer, and fill a wall on the screen.")


ensure_app_shell()
main()
