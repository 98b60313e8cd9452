"""How little data is enough: accuracy against training images per class, measured in the background."""

import altair as alt
import pandas as pd
import streamlit as st

from core.app import jobs
from core.experiments.curve_statistics import statistics_per_size
from core.experiments.efficiency_curve import (DEFAULT_SIZES, CurveConfig, backbone_for, estimate_seconds, load_points, plan)
from core.levels import LEVELS, all_levels, format_duration
from core.serving.data_match import DataMatch, data_match
from core.serving.model_store import ModelStore
from pages.common import (background_job_ui, current_summary, ensure_app_shell, other_job_notice_ui, page_header,
                          start_button_ui)


def curve_frame(summary, levels) -> pd.DataFrame:
    """One row per level and size: mean, lowest and highest accuracy over seeds."""
    rows = []
    for level in levels:
        for size in statistics_per_size(load_points(summary.fingerprint, level.key, backbone_for(level.key))):
            rows.append({"level": level.label, "images per class": size.images_per_class, "accuracy": size.mean,
                         "lowest": size.lowest, "highest": size.highest, "seeds": size.seeds})
    return pd.DataFrame(rows)


def curve_chart(frame: pd.DataFrame, summary):
    scale = alt.Scale(type="log", domain=[min(frame["images per class"].min(), 5), 1000])
    x = alt.X("images per class:Q", scale=scale, title="training images per class (log scale)")
    colour = alt.Color("level:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="bottom", labelLimit=400))
    band = alt.Chart(frame).mark_area(opacity=0.18).encode(x=x, y="lowest:Q", y2="highest:Q", color=colour)
    line = alt.Chart(frame).mark_line(point=True).encode(
        x=x, y=alt.Y("accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False), axis=alt.Axis(format="%")),
        color=colour, tooltip=["level", "images per class", alt.Tooltip("accuracy:Q", format=".2%"),
                               alt.Tooltip("lowest:Q", format=".2%"), alt.Tooltip("highest:Q", format=".2%"), "seeds"])
    layers = [band, line]
    tutorial = [{"images per class": 1000, "accuracy": level.tutorial_accuracy,
                 "what": f"tutorial, level {level.key}: {level.tutorial_accuracy:.1%}"}
                for level in all_levels() if level.tutorial_accuracy is not None]
    if tutorial and len(summary.classes) == 2:  # the tutorial's 2000 photos: 1000 per class
        marks = alt.Chart(pd.DataFrame(tutorial))
        layers += [marks.mark_point(shape="diamond", size=110, filled=True, color="#495057").encode(
                       x=x, y="accuracy:Q", tooltip=["what"]),
                   marks.mark_text(align="right", dx=-9, fontSize=11, color="#495057").encode(
                       x=x, y="accuracy:Q", text="what")]
    level0 = ModelStore().latest(0)
    if level0 and data_match(level0, summary) is DataMatch.CURRENT and level0.val_accuracy is not None:
        rule = alt.Chart(pd.DataFrame([{"accuracy": level0.val_accuracy,
                                        "what": f"level 0, no training: {level0.val_accuracy:.1%}"}]))
        layers += [rule.mark_rule(strokeDash=[6, 4], color="#868e96").encode(y="accuracy:Q", tooltip=["what"]),
                   rule.mark_text(align="left", x=6, dy=-7, fontSize=11, color="#868e96").encode(
                       y="accuracy:Q", text="what")]
    return alt.layer(*layers).properties(height=420)


@st.fragment(run_every=1.0)
def job_ui():
    background_job_ui(jobs.JobKind.CURVE, "curve", "Cancel", "Cancelling after the current point…", "Starting…")


def controls_ui(summary, busy: bool):
    trainable = [level for level in all_levels() if level.trains]
    smallest = min(summary.counts()["train"].values())
    c1, c2, c3 = st.columns([2, 3, 1])
    chosen = c1.multiselect("Levels", [l.key for l in trainable], default=[2], key="curve_levels",
                            format_func=lambda k: LEVELS[k].label)
    offered = [s for s in sorted({*DEFAULT_SIZES, smallest}) if s <= smallest]
    sizes = c2.multiselect("Training images per class", offered, default=[s for s in DEFAULT_SIZES if s <= smallest],
                           key="curve_sizes")
    seeds = c3.number_input("Seeds", 1, 10, value=3, key="curve_seeds", help="Random subsets per size.")
    if not chosen or not sizes:
        st.info("Choose at least one level and one size.")
        return
    config = CurveConfig(levels=chosen, sizes=sizes, seeds=int(seeds), data_dir=str(summary.root))
    guess = estimate_seconds(config, summary)
    runs = len(plan(config, summary))
    st.caption(f":material/timer: {runs} point(s), about **{format_duration(sum(guess.values()))}** on this machine ("
               + ", ".join(f"level {k}: {format_duration(v)}" for k, v in guess.items())
               + "). Level 2 computes the features once and trains only its small classifier per point; "
                 "levels 1 and 3 train fully at every point.")
    start_button_ui("Measure the curve", config, "curve_start", busy, "curve_was_active")


def main():
    page_header("How little data is enough",
                "Each point trains a level on a random subset of the training photos (the same subset for every "
                "level at a given size and seed) and scores it on all the validation photos. The band is the "
                "spread over seeds; the diamonds are the tutorial's figures with all 2000 photos.")
    summary, _, error = current_summary()
    if summary is None:
        st.warning(f"No usable data set: {error} Choose one on the **Data** page.")
        return
    job_ui()
    frame = curve_frame(summary, [level for level in all_levels() if level.trains])
    if frame.empty:
        st.info("No curve measured yet for this data set: choose levels and sizes below and measure it.")
    else:
        st.altair_chart(curve_chart(frame, summary), width="stretch")
        with st.expander("The numbers"):
            st.dataframe(frame, hide_index=True, width="stretch", column_config={
                c: st.column_config.NumberColumn(format="percent") for c in ("accuracy", "lowest", "highest")})
    st.subheader("Measure")
    busy = other_job_notice_ui(jobs.JobKind.CURVE, "measuring can start")
    controls_ui(summary, busy)


ensure_app_shell()
main()
