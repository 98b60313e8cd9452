"""How little data is enough: accuracy against training images per class, measured in the background."""

import streamlit as st

from core.app import jobs
from core.experiments.efficiency_curve import DEFAULT_SIZES, CurveConfig, backbone_for, estimate_seconds, plan
from core.networks.backbones import BACKBONES, DEFAULT_BACKBONE, get_backbone
from core.levels import LEVELS, all_levels, format_duration
from pages.charts import curve_chart, curve_frame
from pages.common import (background_job_ui, current_summary, ensure_app_shell, other_job_notice_ui, page_header,
                          start_button_ui)


@st.fragment(run_every=1.0)
def job_ui():
    background_job_ui(jobs.JobKind.CURVE, "curve", "Cancel", "Cancelling after the current point…", "Starting…")


def network_ui() -> str:
    """The network levels 2 and 3 run on, for the curve shown and the one measured."""
    offered = list(BACKBONES)
    return st.selectbox("Network (levels 2 and 3)", offered, index=offered.index(DEFAULT_BACKBONE), key="curve_backbone",
                        format_func=lambda k: BACKBONES[k].label,
                        help="Each network's curve is measured and kept on its own; level 1 has no pretrained network.")


def controls_ui(summary, busy: bool, backbone: str):
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
    config = CurveConfig(levels=chosen, sizes=sizes, seeds=int(seeds), data_dir=str(summary.root), backbone=backbone)
    guess = estimate_seconds(config, summary)
    runs = len(plan(config, summary))
    st.caption(f":material/timer: {runs} point(s), about **{format_duration(sum(guess.values()))}** on this machine ("
               + ", ".join(f"level {k}: {format_duration(v)}" for k, v in guess.items())
               + "). Level 2 computes the features once and trains only its small classifier per point; "
                 "levels 1 and 3 train fully at every point. Levels 2 and 3 use "
               + f"{get_backbone(backbone_for(2, backbone)).label}"
               + (", the default network" if backbone == DEFAULT_BACKBONE else "")
               + ("; the dashed line is that network's level 0 (no training), where one has been built for these photos." if get_backbone(backbone).classifier
                  else "; it has no ImageNet classifier here, so there is no level 0 to draw."))
    start_button_ui("Measure the curve", config, "curve_start", busy, "curve_was_active")


def main():
    page_header("How little data is enough",
                "Each point trains a level on a random subset of the training photos (the same subset for every "
                "level at a given size and seed) and scores it on all the validation photos. The band is the "
                "spread over seeds; on cats vs dogs, the diamonds are the tutorial's figures with all 2000 photos.")
    summary, _, error = current_summary()
    if summary is None:
        st.warning(f"No usable data set: {error} Choose one on the **Data** page.")
        return
    job_ui()
    backbone = network_ui()
    frame = curve_frame(summary, [level for level in all_levels() if level.trains], backbone)
    running = jobs.active_job()
    measuring = (running is not None and running.kind is jobs.JobKind.CURVE and running.config is not None
                 and backbone_for(2, running.config.backbone) == backbone_for(2, backbone))  # this network's curve
    if frame.empty and measuring:
        st.info("The curve is being measured (progress above); it is drawn here when the job ends.",
                icon=":material/hourglass_top:")
    elif frame.empty:
        st.info(f"No curve measured yet for this data set with {get_backbone(backbone).label}: choose levels and sizes "
                "below and measure it.")
    else:
        st.altair_chart(curve_chart(frame, summary, backbone=backbone), width="stretch")
        with st.expander("The numbers"):
            st.dataframe(frame, hide_index=True, width="stretch", column_config={
                c: st.column_config.NumberColumn(format="percent") for c in ("accuracy", "lowest", "highest")})
    st.subheader("Measure")
    busy = other_job_notice_ui(jobs.JobKind.CURVE, "measuring can start")
    controls_ui(summary, busy, backbone)


ensure_app_shell()
main()
