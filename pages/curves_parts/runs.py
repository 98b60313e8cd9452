"""Runs: pick stored models, overlay their training curves, and compare them in a table."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.data.builder import dataset_name
from core.levels import LEVELS, get_level
from core.serving.model_store import ModelEntry, ModelStore
from pages.common import latest_models


def run_label(entry: ModelEntry) -> str:
    card = entry.card
    return f"L{entry.level} {card.backbone or 'convnet'} {'aug' if card.augmented else 'no-aug'} · {entry.id[-13:-7]}"


def curves_ui(entries: list[ModelEntry]) -> None:
    rows = []
    for entry in entries:
        for key, values in entry.card.history.items():
            split = "validation" if key.startswith("val_") else "training"
            rows += [{"run": run_label(entry), "epoch": i + 1, "metric": key.removeprefix("val_"), "split": split,
                      "value": v} for i, v in enumerate(values)]
    flat = [run_label(e) for e in entries if not e.card.history]
    if flat:  # level 0 trains nothing: said, rather than missing from the chart without a word
        st.caption(f":material/horizontal_rule: No curves for {', '.join(flat)}: "
                   + ("it trains" if len(flat) == 1 else "they train") + " nothing, so there are no epochs.")
    if not rows:
        return
    data = pd.DataFrame(rows)
    for metric, column in zip(("accuracy", "loss"), st.columns(2)):
        chart = alt.Chart(data[data.metric == metric], title=metric) \
            .mark_line(point=alt.OverlayMarkDef(filled=False)).encode(  # points: a run of one epoch is a point,
                # not an invisible line; hollow, since filled ones leave the dash legend's symbols blank
                x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
                y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
                color=alt.Color("run:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="bottom", columns=1, labelLimit=400)),
                strokeDash=alt.StrokeDash("split:N", scale=alt.Scale(domain=["validation", "training"],
                                                                     range=[[1, 0], [5, 4]]),
                                          legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2, symbolSize=300,
                                                            symbolStrokeColor="#495057")),  # dashes in the legend
                tooltip=["run", "split", "epoch", alt.Tooltip("value:Q", format=".4f")]).properties(height=340)
        column.altair_chart(chart.interactive(), width="stretch")
    st.caption("Overfitting looks like training accuracy climbing to ~100% while validation loss rises: "
               "compare level 2, or level 1 trained without augmentation.")


def fine_tuning_label(hyperparameters: dict) -> str | None:
    """How a level-3 run fine-tuned: "small block, 4 cached views" or "large block, on the fly"."""
    views = hyperparameters.get("views")
    if views is None:
        return None
    return f"{hyperparameters.get('top_block') or 'large'} block, " + (f"{views} cached views" if views else "on the fly")


#: Columns that hold fractions, shown as percentages; they stay numbers so that they sort as numbers
#: ("100.0%" after "98.4%", where text put it first).
PERCENT_COLUMNS = ("val accuracy", "last epoch", "best epoch", "tutorial")


def runs_frame(entries: list[ModelEntry]) -> pd.DataFrame:
    """One row per run; figures a run does not have (level 0 trains no epochs, only level 3 fine-tunes)
    are missing values, not text, so every figure column sorts by its numbers."""
    rows = []
    for entry in entries:
        card = entry.card
        rows.append({
            "run": run_label(entry), "level": entry.level, "backbone": card.backbone or "small convnet",
            "trained on": dataset_name(entry.trained_root) if entry.trained_root else "?",
            "val accuracy": card.metrics.val_accuracy, "mirror-averaged": card.flip_average,
            "last epoch": card.metrics.last_epoch_val_accuracy, "best epoch": card.metrics.best_val_accuracy,
            "tutorial": (get_level(entry.level).tutorial_accuracy_for(entry.classes) if entry.level in LEVELS else None),
            "epochs": entry.epochs_run, "fine-tuned": fine_tuning_label(card.hyperparameters),
            "training time (s)": card.train_seconds, "trainable params": card.params.get("trainable"),
            "total params": card.params.get("total"), "created": card.created, "id": entry.id})
    frame = pd.DataFrame(rows)
    for column in (*PERCENT_COLUMNS, "epochs", "training time (s)"):  # None in a column of numbers: NaN, not object
        frame[column] = pd.to_numeric(frame[column])
    return frame


def table_ui(entries: list[ModelEntry]) -> None:
    # Missing figures read "—": the grid's default placeholder, "None", reads as a fault. A pandas Styler's
    # na_rep does not reach the browser's grid, which draws its placeholder for every missing cell.
    percent = lambda help: st.column_config.NumberColumn(format="percent", help=help)
    st.dataframe(runs_frame(entries), hide_index=True, width="stretch", placeholder="—", column_config={
        "val accuracy": percent("The saved model's score"),
        "last epoch": percent("The curve's last point: one view per photo"),
        "best epoch": percent("The curve's best point"),
        "tutorial": percent("What the tutorial reported for this level (cats vs dogs only)"),
        "epochs": st.column_config.NumberColumn(format="%d", help="Epochs trained; none for a level that trains nothing"),
        "training time (s)": st.column_config.NumberColumn(format="%.1f")})


def runs_ui() -> list[ModelEntry]:
    """The run picker, the chosen runs' curves and their table; returns the chosen runs (none: nothing drawn)."""
    listing = ModelStore().list()
    if listing.unusable:
        with st.expander(f":material/warning: {len(listing.unusable)} stored model file(s) cannot be used"):
            for name, reason in listing.unusable:
                st.caption(f"`{name}`: {reason}")
    entries = listing.models
    if not entries:
        st.info("No trained models yet: train one on the **Train** page.")
        return []
    labels = {run_label(e): e for e in entries}
    latest = latest_models().values()
    chosen = st.multiselect("Runs", list(labels), default=[run_label(e) for e in latest])
    chosen_entries = [labels[c] for c in chosen]
    if not chosen_entries:
        st.info("Choose at least one run.")
        return []
    curves_ui(chosen_entries)
    st.subheader("Runs")
    table_ui(chosen_entries)
    return chosen_entries
