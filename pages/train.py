"""Train: one card per level; training runs in a worker process, progress is read from disk."""


import altair as alt
import pandas as pd
import streamlit as st

from core import jobs, workspace
from core.augment import PRESET_LABELS, preset
from core.backbones import BACKBONES, DEFAULT_BACKBONE
from core.store import ModelStore
from core.training import DEFAULT_EPOCHS, TUTORIAL_ACCURACY, TrainConfig, find_level2_head
from pages.common import LEVEL_SHORT, current_summary, ensure_app_shell, page_header, tutorial_note

DESCRIPTIONS = {
    1: "Trains the tutorial's small convnet from random weights, with augmentation and dropout against overfitting.",
    2: "Runs a pretrained network once over every photo, caches what it sees, and trains a small classifier on that.",
    3: "Puts level 2's classifier back on the network and gently trains the network's top block too (SGD, lr 1e-4).",
}


def history_chart(history: dict, height: int = 220):
    rows = []
    for key, values in history.items():
        split = "validation" if key.startswith("val_") else "training"
        metric = key.removeprefix("val_")
        rows += [{"epoch": i + 1, "value": v, "metric": metric, "split": split} for i, v in enumerate(values)]
    if not rows:
        return None
    data = pd.DataFrame(rows)
    charts = []
    for metric in ("accuracy", "loss"):
        subset = data[data.metric == metric]
        charts.append(alt.Chart(subset, title=metric).mark_line(point=True).encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("split:N", scale=alt.Scale(domain=["training", "validation"], range=["#1c7ed6", "#d9480f"])),
            tooltip=["epoch", "split", alt.Tooltip("value:Q", format=".4f")]).properties(height=height))
    return alt.hconcat(*charts)


@st.fragment(run_every=1.0)
def job_ui():
    """Redrawn every second while a job runs; reloads and clicks elsewhere don't touch the worker."""
    job = jobs.current_job()
    if job is None:
        st.caption("No training job has run yet.")
        return
    config = job["config"]
    level = config["level"]
    state = job["state"]
    active = state in jobs.ACTIVE_STATES
    with st.container(border=True):
        title = f"**{LEVEL_SHORT[level]}**" + (f" · {config.get('backbone')}" if config.get("backbone") else "")
        if active:
            st.markdown(f":material/hourglass_top: {title} — training")
            epochs, batches = job.get("epochs"), job.get("batches")
            if job.get("stage") == "train" and epochs and batches:
                done = (job["epoch"] - 1) * batches + job.get("batch", 0)
                eta = jobs.eta_seconds(job)
                st.progress(min(done / (epochs * batches), 1.0),
                            text=f"Epoch {job['epoch']}/{epochs} · batch {job.get('batch', 0)}/{batches}"
                                 + (f" · about {workspace.format_duration(eta)} left" if eta else ""))
            elif job.get("total"):
                st.progress(min(job["done"] / job["total"], 1.0), text=job.get("message", ""))
            else:
                st.progress(0.0, text=job.get("message", "Starting…"))
            if st.button("Cancel training", icon=":material/stop_circle:", key=f"cancel_{job['id']}"):
                jobs.cancel_job(job["id"])
                st.toast("Cancelling after the current batch…")
        elif state == "succeeded":
            metrics = job.get("metrics", {})
            acc = metrics.get("val_accuracy")
            st.markdown(f":material/check_circle: {title} — done in {workspace.format_duration(job.get('seconds', 0))}, saved as "
                        f"`{job.get('model_id')}`")
            last = metrics.get("last_epoch_val_accuracy")
            c1, c2, c3, c4 = st.columns(4)
            c1.metric("Validation accuracy", f"{acc:.1%}" if acc is not None else "–",
                      help="What the saved model scores on the validation photos"
                           + (", averaging each photo with its mirror image." if config.get("flip_average") else "."))
            c2.metric("Last epoch", f"{last:.1%}" if last is not None else "–",
                      help="The curve's last point: one view of each validation photo.")
            c3.metric("Best epoch", f"{metrics.get('best_val_accuracy', 0):.1%}", help=f"epoch {metrics.get('best_epoch')}")
            c4.metric("The tutorial reported", f"{TUTORIAL_ACCURACY[level]:.0%}")
        elif state == "cancelled":
            st.markdown(f":material/stop_circle: {title} — cancelled; nothing was saved.")
        else:
            st.error(f"{title} failed: {job.get('error', 'unknown error')}")
        chart = history_chart(job.get("history") or {})
        if chart is not None:
            st.altair_chart(chart, width="stretch")
    if not active and st.session_state.get("was_active"):
        st.session_state["was_active"] = False
        st.rerun(scope="app")  # refresh the cards and sidebar once a job ends
    st.session_state["was_active"] = active


def level_card_ui(level: int, summary, busy: bool):
    augment, preset_name = workspace.augment_settings()
    with st.container(border=True):
        st.subheader(LEVEL_SHORT[level])
        st.write(DESCRIPTIONS[level])
        c1, c2, c3 = st.columns(3)
        backbone = None
        if level in (2, 3):
            backbone = c1.selectbox("Backbone", list(BACKBONES), index=list(BACKBONES).index(DEFAULT_BACKBONE),
                                    format_func=lambda k: BACKBONES[k].label, key=f"bb{level}")
        epochs = c2.number_input("Epochs", 1, 200, value=DEFAULT_EPOCHS[level], key=f"ep{level}",
                                 help="The tutorial used 50 for every level. Level 1 gets 70 here: its learning "
                                      "rate decays to the end, and it was still improving at 50. Level 3 "
                                      "(MobileNetV2) is on its plateau well before 20.")
        batch = c3.select_slider("Batch size", [8, 16, 32, 64], value=16, key=f"bs{level}")
        default_lr = {1: 1e-3, 2: 1e-3, 3: 1e-4}[level]
        lr = c1.select_slider("Learning rate", [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3], value=default_lr,
                              format_func=lambda v: f"{v:g}", key=f"lr{level}")
        dropout = c2.slider("Dropout", 0.0, 0.8, 0.5, 0.05, key=f"do{level}")
        use_aug = False
        if level in (1, 3):
            use_aug = c3.toggle("Augmentation", value=True, key=f"aug{level}",
                                help="Uses the Augmentation lab's settings.")
            label = PRESET_LABELS.get(preset_name, "custom settings")
            st.caption(f"Augmentation: {label if use_aug else 'off'} — change it in the **Augmentation lab**.")
        else:
            c3.caption("No augmentation: features are computed once, which is what makes this level cheap.")
        flip_average = st.toggle(
            "Average each prediction with the mirror image", value=True, key=f"flip{level}",
            help="The saved model looks at each photo and its left-right mirror and averages the two answers: "
                 "steadier on borderline photos, at twice the prediction cost. Turn it off if mirroring can "
                 "change the class (left/right arrows, text).")
        config = TrainConfig(level=level, backbone=backbone, epochs=int(epochs), batch_size=int(batch),
                             learning_rate=float(lr), dropout=float(dropout),
                             augment=(augment if use_aug else preset("none")) if level != 2 else None,
                             data_dir=str(summary.root), flip_average=flip_average)
        counts = summary.counts()
        n_train, n_val = sum(counts["train"].values()), sum(counts["validation"].values())
        guess = workspace.estimate(config, n_train, n_val)
        st.caption(f":material/timer: Estimated time on this machine: **{workspace.format_duration(guess.seconds)}** "
                   f"({guess.detail}). {tutorial_note(level)}")
        blocked = None
        if level == 3 and find_level2_head(ModelStore(), config.resolved(), summary) is None:
            blocked = f"Train level 2 with {BACKBONES[backbone].label} first: fine-tuning starts from its classifier."
            st.info(blocked)
        if st.button(f"Start level {level}", type="primary", disabled=busy or blocked is not None, key=f"start{level}"):
            try:
                jobs.start_job(config)
                st.session_state["was_active"] = True
                st.rerun()
            except jobs.JobBusy as exc:
                st.warning(str(exc))


def main():
    page_header("Train", "Each level trains in a background process: reload the page, visit other pages, come back — "
                         "it keeps going. One job at a time.")
    summary, _, error = current_summary()
    job_ui()
    if summary is None:
        st.warning(f"No usable data set: {error} Choose one on the **Data** page.")
        return
    current = jobs.current_job()
    busy = bool(current and current.get("state") in jobs.ACTIVE_STATES)
    if busy:
        st.caption("A job is running; the Start buttons are back when it ends.")
    for level in (1, 2, 3):
        level_card_ui(level, summary, busy)


ensure_app_shell()
main()
