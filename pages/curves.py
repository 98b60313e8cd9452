"""Curves & comparison: overlay training runs, compare them, and look at their mistakes."""

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core import jobs
from core.augment import PRESETS
from core.dataset_builder import editable
from core.datasets import DatasetError, decode_split
from core.evaluation import evaluate
from core.export import FORMATS, export_name
from core.images import ImageError, thumbnail
from core.errors import ConfigError
from core.levels import LEVELS, all_levels
from core.model_store import ModelError, ModelStore
from core.sweep import SweepConfig, list_sweeps, parse_grid
from pages.common import (background_job_ui, current_summary, ensure_app_shell, explainer_for, latest_models, level_label, page_header,
                          predictor_for, start_button_ui)


def run_label(entry) -> str:
    card = entry.card
    return f"L{entry.level} {card.backbone or 'convnet'} {'aug' if card.augmented else 'no-aug'} · {entry.id[-13:-7]}"


def curves_ui(entries):
    rows = []
    for entry in entries:
        for key, values in entry.card.history.items():
            split = "validation" if key.startswith("val_") else "training"
            rows += [{"run": run_label(entry), "epoch": i + 1, "metric": key.removeprefix("val_"), "split": split,
                      "value": v} for i, v in enumerate(values)]
    if not rows:
        st.info("These runs have no recorded history.")
        return
    data = pd.DataFrame(rows)
    for metric, column in zip(("accuracy", "loss"), st.columns(2)):
        chart = alt.Chart(data[data.metric == metric], title=metric) \
            .mark_line().encode(
                x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
                y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
                color=alt.Color("run:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="bottom", columns=1, labelLimit=400)),
                strokeDash=alt.StrokeDash("split:N", scale=alt.Scale(domain=["validation", "training"],
                                                                     range=[[1, 0], [5, 4]])),
                tooltip=["run", "split", "epoch", alt.Tooltip("value:Q", format=".4f")]).properties(height=340)
        column.altair_chart(chart.interactive(), width="stretch")
    st.caption("Overfitting looks like training accuracy climbing to ~100% while validation loss rises: "
               "compare level 2, or level 1 trained without augmentation.")


def table_ui(entries):
    rows = []
    for entry in entries:
        card = entry.card
        rows.append({
            "run": run_label(entry), "level": entry.level, "backbone": card.backbone or "small convnet",
            "val accuracy": card.metrics.val_accuracy, "mirror-averaged": card.flip_average,
            "last epoch": card.metrics.last_epoch_val_accuracy, "best epoch": card.metrics.best_val_accuracy,
            "tutorial": card.tutorial_accuracy, "epochs": card.hyperparameters.get("epochs_run"),
            "training time (s)": card.train_seconds, "trainable params": card.params.get("trainable"),
            "total params": card.params.get("total"), "created": card.created, "id": entry.id})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "val accuracy": st.column_config.NumberColumn(format="percent", help="The saved model's score"),
        "last epoch": st.column_config.NumberColumn(format="percent", help="The curve's last point: one view per photo"),
        "best epoch": st.column_config.NumberColumn(format="percent", help="The curve's best point"),
        "tutorial": st.column_config.NumberColumn(format="percent")})


@st.cache_data(max_entries=16, show_spinner="Evaluating on the validation photos…")
def _evaluation(model_id: str, model_path: str, root: str, fingerprint: str):
    from core.datasets import summarize

    store = ModelStore(Path(model_path).parent)
    entry = store.get(model_id)
    summary = summarize(root)
    result = evaluate(predictor_for(entry), decode_split(summary, "validation", entry.image_size))
    return result.to_dict(), result.mistakes(limit=24)


@st.cache_data(max_entries=256, show_spinner=False)
def _mistake_heatmap(model_id: str, model_path: str, photo: str):
    from core.explain import overlay

    explainer = explainer_for(predictor_for(ModelStore(Path(model_path).parent).get(model_id)))
    explanation = explainer.explain(photo)
    return overlay(explanation.image, explanation.heatmap, max_side=240)


FORMAT_LABELS = {"keras": ".keras", "saved_model": "SavedModel", "tflite": "LiteRT (.tflite)",
                 "tflite-int8": "LiteRT int8", "onnx": "ONNX"}


@st.cache_data(max_entries=8, show_spinner=False)
def _export_zip(model_id: str, model_path: str, fmt: str, data_root: str | None):
    from core.export import calibration_photos, export_zip_bytes

    entry = ModelStore(Path(model_path).parent).get(model_id)
    fmt, _, quantize = fmt.partition("-")
    calibration = calibration_photos(entry, data_root) if quantize else None
    data, info = export_zip_bytes(entry, fmt, quantize=quantize or None, calibration=calibration,
                                  model=predictor_for(entry).model)
    return data, info.bytes


def export_ui(entry, summary):
    """Download buttons: the model in each format, with labels.txt and a usage README."""
    with st.expander(":material/download: Take this model away (Keras, SavedModel, LiteRT, ONNX)"):
        st.caption("Each download is a zip: the model, `labels.txt`, and a README with a 10-line snippet for its "
                   "runtime. The model takes raw RGB pixels (0-255) at "
                   f"{entry.image_size[1]}x{entry.image_size[0]} and does its own preprocessing"
                   f"{' and mirror averaging' if entry.card.flip_average else ''}: nothing of Little Data is needed.")
        formats = list(FORMATS) + (["tflite-int8"] if summary is not None and summary.classes == entry.classes else [])
        fmt = st.segmented_control("Format", formats, format_func=FORMAT_LABELS.get, key=f"export_format_{entry.id}")
        if fmt is None:
            return
        base, _, quantize = fmt.partition("-")
        try:
            with st.spinner(f"Converting to {FORMAT_LABELS[fmt]}…"):
                data, size = _export_zip(entry.id, str(entry.model_path), fmt,
                                         str(summary.root) if summary is not None else None)
        except (ModelError, DatasetError) as exc:
            st.error(f"Cannot export: {exc}")
            return
        st.download_button(f"Download {FORMAT_LABELS[fmt]} ({size / 2**20:.1f} MB model, zipped)", data,
                           file_name=export_name(entry, base, quantize or None), mime="application/zip",
                           icon=":material/download:", key=f"export_download_{entry.id}_{fmt}")


def out_of_date_ui(entry, summary) -> None:
    """Says when the data set changed after this model was trained (photos corrected, added or removed)."""
    dataset = entry.card.dataset or {}
    hyper = entry.card.hyperparameters or {}
    if hyper.get("limit_per_class") or hyper.get("train_per_class"):
        return  # trained on a subset: its fingerprint is the subset's
    if dataset.get("root") == str(summary.root) and dataset.get("fingerprint") not in (None, summary.fingerprint):
        st.warning("The data set has changed since this model was trained (photos were moved, removed or added): "
                   "its accuracy and curves describe the old photos. Train it again on the **Train** page to "
                   "bring it up to date.", icon=":material/update:")


def corrections_ui(entry, summary, mistake, container, fixer) -> None:
    """'Move to class X' and 'Remove from the data set' for one mistaken photo."""
    path = Path(mistake["path"])
    with container.popover("Fix the label", icon=":material/edit:", width="stretch"):
        st.caption(f"`{path.name}`, labelled **{mistake['true']}**")
        for other in summary.classes:
            if other != mistake["true"] and st.button(f"Move to {other}", key=f"move_{entry.id}_{path}_{other}",
                                                      icon=":material/drive_file_move:"):
                _apply(lambda: fixer.move(path, other))
        if st.button("Remove from the data set", key=f"remove_{entry.id}_{path}", icon=":material/delete:"):
            _apply(lambda: fixer.remove(path))


def _apply(change) -> None:
    try:
        done = change()
        st.session_state["last_correction"] = done.description
    except DatasetError as exc:
        st.session_state["last_correction"] = f"not done: {exc}"
    st.rerun()


def undo_ui(fixer) -> None:
    message = st.session_state.pop("last_correction", "")
    if message.startswith("not done"):
        st.error(message)
    last = fixer.last_change()
    if last is None:
        return
    left, right = st.columns([4, 1])
    left.info(f"Last change to the data set: {last.description}.", icon=":material/history:")
    if right.button("Undo", icon=":material/undo:", key="undo_correction"):
        fixer.undo()
        st.session_state["last_correction"] = f"undone: {last.description}"
        st.rerun()


def diagnostics_ui(entry, summary):
    export_ui(entry, summary)
    if summary.classes != entry.classes:
        st.warning(f"This model was trained on classes {entry.classes}; the active data set has {summary.classes}.")
        return
    out_of_date_ui(entry, summary)
    try:
        result, mistakes = _evaluation(entry.id, str(entry.model_path), str(summary.root), summary.fingerprint)
    except ModelError as exc:
        st.error(str(exc))
        return
    left, right = st.columns([1, 2], gap="large")
    with left:
        st.markdown(f"**Confusion matrix** — {result['accuracy']:.2%} of {result['n']} validation photos right")
        cells = [{"true": t, "predicted": p, "count": result["confusion_matrix"][i][j]}
                 for i, t in enumerate(result["classes"]) for j, p in enumerate(result["classes"])]
        base = alt.Chart(pd.DataFrame(cells)).encode(x="predicted:N", y="true:N")
        heat = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="oranges"), legend=None))
        text = base.mark_text(fontSize=16).encode(text="count:Q")
        st.altair_chart((heat + text).properties(height=260), width="stretch")
    with right:
        st.markdown(f"**Mistakes** ({len(mistakes)} shown, most confident first)")
        fixer = editable(summary.root)
        if fixer is not None:
            st.caption("A wrong label? **Fix the label** moves the photo to its class or out of the data set "
                       "(with undo).")
            undo_ui(fixer)
        elif mistakes:
            st.caption("This data set is not one the app built or unpacked, so its photos are not edited here.")
        heatmaps = mistakes and st.toggle("Where it looks", key=f"mistake_heatmaps_{entry.id}",
                                          help="Overlay the model's Grad-CAM heatmap for the class it wrongly chose.")
        if heatmaps:
            st.caption("Dark = ignored, yellow = where the wrong answer comes from.")
        columns = st.columns(6)
        for i, mistake in enumerate(mistakes):
            p = mistake["probabilities"][mistake["predicted"]]
            caption = f"{mistake['true']} → {mistake['predicted']} ({p:.0%})"
            try:
                picture = (_mistake_heatmap(entry.id, str(entry.model_path), mistake["path"]) if heatmaps
                           else thumbnail(mistake["path"], 160))
                columns[i % 6].image(picture, width="stretch", caption=caption)
                if fixer is not None:
                    corrections_ui(entry, summary, mistake, columns[i % 6], fixer)
            except ImageError:
                columns[i % 6].caption(f"{Path(mistake['path']).name}: unreadable")
        if not mistakes:
            st.success("No mistakes on the validation photos.")


def setting_label(config: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in config.items()) or "defaults"


def sweep_frame(record: dict) -> pd.DataFrame:
    """One row per finished trial: its setting, seed and validation accuracy."""
    return pd.DataFrame([{"setting": setting_label(t["config"]), "seed": t["seed"], "accuracy": t["val_accuracy"],
                          "seconds": t["seconds"], "model": t["model_id"]}
                         for t in record["trials"] if t["error"] is None])


def sweep_chart(frame: pd.DataFrame, order: list[str]):
    """Each trial a dot, each setting's mean a tick and its spread over seeds a bar, best setting on top."""
    y = alt.Y("setting:N", scale=alt.Scale(domain=order), title=None, axis=alt.Axis(labelLimit=360))
    x = alt.X("accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False, nice=True, padding=12),
              axis=alt.Axis(format=".1%", tickCount=6))
    per_setting = frame.groupby("setting", as_index=False)["accuracy"].agg(["mean", "min", "max"])
    spread = alt.Chart(per_setting).mark_rule(strokeWidth=3, opacity=0.35, color="#1c7ed6").encode(
        y=y, x=alt.X("min:Q"), x2="max:Q")
    dots = alt.Chart(frame).mark_circle(size=70, opacity=0.8, color="#1c7ed6").encode(
        y=y, x=x, tooltip=["setting", "seed", alt.Tooltip("accuracy:Q", format=".2%"), "seconds", "model"])
    mean = alt.Chart(per_setting).mark_tick(thickness=3, size=22, color="#e8590c").encode(
        y=y, x="mean:Q", tooltip=["setting", alt.Tooltip("mean:Q", format=".2%")])
    return alt.layer(spread, dots, mean).properties(height=70 + 40 * len(order))  # axes included


@st.fragment(run_every=1.0)
def sweep_job_ui():
    background_job_ui("sweep", "sweep", "Cancel the sweep", "Stopping every trial…", "Starting Ray…")


def sweep_results_ui(record: dict) -> None:
    groups = record["groups"]
    frame = sweep_frame(record)
    level = level_label(record["level"])
    st.caption(f"{level} · {len(record['trials'])} trials in {record['seconds']:.0f} s"
               + (" · cancelled" if record.get("cancelled") else "")
               + f" · {record['resources'].get('cpu', '?'):g} CPU per trial")
    if not frame.empty:
        order = [setting_label(g["config"]) for g in groups if g["mean"] is not None]
        st.altair_chart(sweep_chart(frame, order), width="stretch")
    table = pd.DataFrame([{"setting": setting_label(g["config"]), "mean": g["mean"], "lowest": g["min"],
                           "highest": g["max"], "runs": g["runs"], "failed": g["failed"],
                           "mean seconds": g["mean_seconds"]} for g in groups]).fillna(float("nan"))
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="percent") for c in ("mean", "lowest", "highest")}
                 | {"mean seconds": st.column_config.NumberColumn(format="%.0f")})
    failures = [t for t in record["trials"] if t["error"] not in (None, "cancelled")]
    if failures:
        with st.expander(f":material/error: {len(failures)} trial(s) failed"):
            for trial in failures:
                st.markdown(f"**{setting_label(trial['config'])}, seed {trial['seed']}**: {trial['error']}")
    if record.get("best"):
        best = record["best"]
        st.caption(f"Best single trial: {setting_label(best['config'])}, seed {best['seed']}: "
                   f"{best['val_accuracy']:.2%} (model `{best['model_id']}`, in the runs above).")


def sweep_form_ui(summary, busy: bool) -> None:
    trainable = [level.key for level in all_levels() if level.trains]
    c1, c2, c3 = st.columns([2, 2, 1])
    level = c1.selectbox("Level", trainable, index=trainable.index(2) if 2 in trainable else 0,
                         format_func=level_label, key="sweep_level")
    augments = c2.multiselect("Augmentations", list(PRESETS), key="sweep_augment",
                              disabled=not LEVELS[level].can_augment,
                              help="Leave empty to keep the level's own." if LEVELS[level].can_augment else
                              "This level trains on cached features: nothing to augment.")
    seeds = c3.number_input("Seeds", 1, 10, value=2, key="sweep_seeds", help="Trials per combination.")
    c4, c5 = st.columns([3, 1])
    rates = c4.text_input("Learning rates", placeholder=f"e.g. {LEVELS[level].learning_rate:g}, "
                                                        f"{LEVELS[level].learning_rate * 3:g}", key="sweep_rates",
                          help="Comma-separated; empty keeps the level's own.")
    epochs = c5.number_input("Epochs", 0, 500, value=0, key="sweep_epochs", help="0 keeps the level's own.")
    items = ([f"augment={','.join(augments)}"] if augments and LEVELS[level].can_augment else []) + (
        [f"learning_rate={rates}"] if rates.strip() else [])
    try:
        config = SweepConfig(level=level, grid=parse_grid(items), seeds=int(seeds),
                             base={"data_dir": str(summary.root), **({"epochs": int(epochs)} if epochs else {})})
    except ConfigError as exc:
        st.error(str(exc))
        return
    st.caption(f":material/science: {len(config.trial_params())} trial(s), each an ordinary level-{level} run saved "
               "with its card. They run on Ray Tune, one at a time on this machine (set LITTLE_DATA_RAY_ADDRESS for a "
               "cluster).")
    start_button_ui("Run the sweep", config, "sweep_start", busy, "sweep_was_active")


def sweeps_ui(summary) -> None:
    st.subheader("Sweeps: which settings win")
    st.markdown("Every combination of a few settings, trained over several seeds: the dots are single runs, the "
                "orange tick their mean and the bar their spread. A difference smaller than the spread is noise.")
    sweep_job_ui()
    records = list_sweeps()
    if records:
        names = {f"{r['id']} · {level_label(r['level'])} · {len(r['trials'])} trials": r for r in records}
        chosen = st.selectbox("Sweep", list(names), key="sweep_pick", help="Newest first; kept in "
                                                                              "$LITTLE_DATA_HOME/sweeps.")
        sweep_results_ui(names[chosen])
    else:
        st.info("No sweep yet. Run one below, or from the command line: `python -m core sweep --level 2 "
                "--grid learning_rate=1e-4,3e-4 --seeds 3`.")
    if summary is not None:
        current = jobs.current_job()
        busy = bool(current and current.get("state") in jobs.ACTIVE_STATES)
        with st.expander("Run a sweep", icon=":material/tune:", expanded=not records):
            if busy and current.get("kind") != "sweep":
                st.caption(f"A {jobs.job_title(current)} job is running; a sweep can start when it ends.")
            sweep_form_ui(summary, busy)


def runs_ui(summary, error) -> None:
    listing = ModelStore().list()
    if listing.unusable:
        with st.expander(f":material/warning: {len(listing.unusable)} stored model file(s) cannot be used"):
            for name, reason in listing.unusable:
                st.caption(f"`{name}`: {reason}")
    entries = listing.models
    if not entries:
        st.info("No trained models yet: train one on the **Train** page.")
        return
    labels = {run_label(e): e for e in entries}
    latest = latest_models().values()
    chosen = st.multiselect("Runs", list(labels), default=[run_label(e) for e in latest])
    chosen_entries = [labels[c] for c in chosen]
    if not chosen_entries:
        st.info("Choose at least one run.")
        return
    curves_ui(chosen_entries)
    st.subheader("Runs")
    table_ui(chosen_entries)
    st.subheader("Where each model goes wrong")
    if summary is None:
        st.warning(f"No usable data set to evaluate on: {error}")
        return
    tabs = st.tabs([run_label(e) for e in chosen_entries])
    for tab, entry in zip(tabs, chosen_entries):
        with tab:
            diagnostics_ui(entry, summary)


def main():
    page_header("Curves & comparison", "Pick runs to overlay their training curves. Dashed: training; solid: "
                                       "validation. The gap between them is overfitting.")
    summary, _, error = current_summary()
    runs_ui(summary, error)
    sweeps_ui(summary)


ensure_app_shell()
main()
