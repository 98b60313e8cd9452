"""Where each model goes wrong: its confusion matrix and mistakes on the active data set, with label fixes,
and how far its confidence can be trusted (`pages.curves_parts.calibration`)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.data.builder import editable
from core.data.decoded import decode_split
from core.data.images import ImageError, thumbnail
from core.serving.data_match import DataMatch, data_match
from core.serving.evaluation import Evaluation, Mistake, evaluate
from core.serving.model_store import ModelEntry, ModelError, ModelStore
from pages.common import grid_cells, heatmap_overlay, predictor_for
from pages.corrections import apply_change, undo_ui
from pages.curves_parts.calibration import calibration_ui
from pages.curves_parts.export import export_ui
from pages.curves_parts.runs import run_label


@st.cache_data(max_entries=16, show_spinner="Evaluating on the validation photos…")
def _evaluation(model_id: str, model_path: str, root: str, fingerprint: str) -> tuple[Evaluation, list[Mistake]]:
    from core.data.folders import summarize

    store = ModelStore(Path(model_path).parent)
    entry = store.get(model_id)
    summary = summarize(root)
    result = evaluate(predictor_for(entry), decode_split(summary, "validation", entry.image_size))
    return result, result.mistakes(limit=24)


def out_of_date_ui(entry: ModelEntry, summary) -> None:
    """Says when the data set changed after this model was trained (photos corrected, added or removed)."""
    if data_match(entry, summary) is DataMatch.OUT_OF_DATE:
        st.warning("The data set has changed since this model was trained (photos were moved, removed or added): "
                   "its accuracy and curves describe the old photos. Train it again on the **Train** page to "
                   "bring it up to date.", icon=":material/update:")


def corrections_ui(entry: ModelEntry, summary, mistake: Mistake, container, fixer) -> None:
    """'Move to class X' and 'Remove from the data set' for one mistaken photo."""
    path = Path(mistake.path)
    with container.popover("Fix the label", icon=":material/edit:", width="stretch"):
        st.caption(f"`{path.name}`, labelled **{mistake.true_class}**")
        for other in summary.classes:
            if other != mistake.true_class and st.button(f"Move to {other}", key=f"move_{entry.id}_{path}_{other}",
                                                         icon=":material/drive_file_move:"):
                apply_change(lambda: fixer.move(path, other))
        if st.button("Remove from the data set", key=f"remove_{entry.id}_{path}", icon=":material/delete:"):
            apply_change(lambda: fixer.remove(path))


def confusion_ui(result: Evaluation) -> None:
    st.markdown(f"**Confusion matrix** — {result.accuracy:.2%} of {result.n} validation photos right")
    cells = [{"true": t, "predicted": p, "count": result.confusion[i][j]}
             for i, t in enumerate(result.classes) for j, p in enumerate(result.classes)]
    base = alt.Chart(pd.DataFrame(cells)).encode(x="predicted:N", y="true:N")
    heat = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="oranges"), legend=None))
    text = base.mark_text(fontSize=16).encode(text="count:Q")
    st.altair_chart((heat + text).properties(height=260), width="stretch")


def mistakes_ui(entry: ModelEntry, summary, mistakes: list[Mistake]) -> None:
    """The mistaken photos (or their heatmaps), each with its label fixes where the data set can be edited."""
    st.markdown(f"**Mistakes** ({len(mistakes)} shown, most confident first)")
    fixer = editable(summary.root)
    if fixer is not None:
        st.caption("A wrong label? **Fix the label** moves the photo to its class or out of the data set "
                   "(with undo).")
        undo_ui(fixer, key=f"undo_{entry.id}")  # one per model's tab: the tabs are all drawn
    elif mistakes:
        st.caption("This data set is not one the app built or unpacked, so its photos are not edited here.")
    heatmaps = mistakes and st.toggle("Where it looks", key=f"mistake_heatmaps_{entry.id}",
                                      help="Overlay the model's Grad-CAM heatmap for the class it wrongly chose.")
    if heatmaps:
        st.caption("Dark = ignored, yellow = where the wrong answer comes from.")
    # Four columns: six cut "Fix the label" to "F." at 1280 px. Surest mistakes first, on a phone too.
    for cell, mistake in zip(grid_cells(len(mistakes), 4, key=f"mistakes-{entry.id}", phone_columns=2), mistakes):
        caption = f"{mistake.true_class} → {mistake.predicted_class} ({mistake.confidence:.0%})"
        try:
            picture = (heatmap_overlay(entry.id, str(entry.model_path), mistake.path) if heatmaps
                       else thumbnail(mistake.path, 160))
            cell.image(picture, width="stretch", caption=caption)
            if fixer is not None:
                corrections_ui(entry, summary, mistake, cell, fixer)
        except ImageError:
            cell.caption(f"{Path(mistake.path).name}: unreadable")
    if not mistakes:
        st.success("No mistakes on the validation photos.")


def model_diagnostics_ui(entry: ModelEntry, summary) -> None:
    export_ui(entry, summary)
    if data_match(entry, summary) is DataMatch.OTHER_CLASSES:
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
        confusion_ui(result)
    with right:
        mistakes_ui(entry, summary, mistakes)


def diagnostics_ui(entries: list[ModelEntry], summary, error: str | None) -> None:
    """'Where each model goes wrong': one tab per chosen model, on the active data set, with its calibration.

    The calibration comes from the model's card, so it is shown even without a usable data set.
    """
    st.subheader("Where each model goes wrong")
    if summary is None:
        st.warning(f"No usable data set to evaluate on: {error}")
    tabs = st.tabs([run_label(e) for e in entries])
    for tab, entry in zip(tabs, entries):
        with tab:
            if summary is not None:
                model_diagnostics_ui(entry, summary)
            calibration_ui(entry)
