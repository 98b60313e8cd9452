"""Sweeps: which settings win. Kept sweeps grouped by setting, and the form that starts a new one."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.app import jobs
from core.data.augment import PRESETS
from core.errors import ConfigError
from core.experiments.sweep import SettingGroup, SweepConfig, SweepRecord, list_sweeps, parse_grid
from core.levels import LEVELS, all_levels
from pages.common import background_job_ui, level_label, other_job_notice_ui, start_button_ui


def setting_label(setting: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in setting.items()) or "defaults"


def sweep_frame(record: SweepRecord) -> pd.DataFrame:
    """One row per finished trial: its setting, seed and validation accuracy."""
    return pd.DataFrame([{"setting": setting_label(t.setting), "seed": t.seed, "accuracy": t.val_accuracy,
                          "seconds": t.seconds, "model": t.model_id} for t in record.finished_trials])


def sweep_chart(frame: pd.DataFrame, scored: list[SettingGroup]):
    """Each trial a dot, each setting's mean a tick and its spread over seeds a bar, best setting on top."""
    order = [setting_label(group.setting) for group in scored]
    y = alt.Y("setting:N", scale=alt.Scale(domain=order), title=None, axis=alt.Axis(labelLimit=360))
    x = alt.X("accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False, nice=True, padding=12),
              axis=alt.Axis(format=".1%", tickCount=6))
    per_setting = pd.DataFrame([{"setting": setting_label(group.setting), "mean": group.mean, "min": group.lowest,
                                 "max": group.highest} for group in scored])
    spread = alt.Chart(per_setting).mark_rule(strokeWidth=3, opacity=0.35, color="#1c7ed6").encode(
        y=y, x=alt.X("min:Q"), x2="max:Q")
    dots = alt.Chart(frame).mark_circle(size=70, opacity=0.8, color="#1c7ed6").encode(
        y=y, x=x, tooltip=["setting", "seed", alt.Tooltip("accuracy:Q", format=".2%"), "seconds", "model"])
    mean = alt.Chart(per_setting).mark_tick(thickness=3, size=22, color="#e8590c").encode(
        y=y, x="mean:Q", tooltip=["setting", alt.Tooltip("mean:Q", format=".2%")])
    return alt.layer(spread, dots, mean).properties(height=70 + 40 * len(order))  # axes included


@st.fragment(run_every=1.0)
def sweep_job_ui():
    background_job_ui(jobs.JobKind.SWEEP, "sweep", "Cancel the sweep", "Stopping every trial…", "Starting Ray…")


def sweep_results_ui(record: SweepRecord) -> None:
    groups = record.groups
    frame = sweep_frame(record)
    cpu = record.resources.cpu
    st.caption(f"{level_label(record.level)} · {len(record.trials)} trials in {record.seconds:.0f} s"
               + (" · cancelled" if record.cancelled else "")
               + f" · {f'{cpu:g}' if cpu is not None else '?'} CPU per trial")
    if not frame.empty:
        st.altair_chart(sweep_chart(frame, [g for g in groups if g.mean is not None]), width="stretch")
    rows = []
    for group in groups:
        row = {"setting": setting_label(group.setting), "mean": group.mean, "lowest": group.lowest,
               "highest": group.highest, "runs": group.runs, "failed": group.failed}
        if any(g.cancelled for g in groups):  # only a cancelled sweep has them: no empty column otherwise
            row["cancelled"] = group.cancelled
        rows.append(row | {"mean seconds": group.mean_seconds})
    st.dataframe(pd.DataFrame(rows).fillna(float("nan")), hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="percent") for c in ("mean", "lowest", "highest")}
                 | {"mean seconds": st.column_config.NumberColumn(format="%.0f")})
    failures = record.failed_trials
    if failures:
        with st.expander(f":material/error: {len(failures)} trial(s) failed"):
            for trial in failures:
                st.markdown(f"**{setting_label(trial.setting)}, seed {trial.seed}**: {trial.error}")
    best = record.best
    if best is not None:
        st.caption(f"Best single trial: {setting_label(best.setting)}, seed {best.seed}: "
                   f"{best.val_accuracy:.2%} (model `{best.model_id}`, in the runs above).")


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
    own_epochs = LEVELS[level].epochs
    epochs = c5.number_input("Epochs", 1, 500, value=own_epochs, key=f"sweep_epochs_{level}",
                             help=f"Level {level} trains for {own_epochs} by default.")
    items = ([f"augment={','.join(augments)}"] if augments and LEVELS[level].can_augment else []) + (
        [f"learning_rate={rates}"] if rates.strip() else [])
    try:
        config = SweepConfig(level=level, grid=parse_grid(items), seeds=int(seeds),
                             base={"data_dir": str(summary.root), **({"epochs": int(epochs)} if epochs != own_epochs else {})})
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
        names = {f"{r.id} · {level_label(r.level)} · {len(r.trials)} trials": r for r in records}
        chosen = st.selectbox("Sweep", list(names), key="sweep_pick", help="Newest first; kept in "
                                                                              "$LITTLE_DATA_HOME/sweeps.")
        sweep_results_ui(names[chosen])
    else:
        st.info("No sweep yet. Run one below, or from the command line: `python -m core sweep --level 2 "
                "--grid learning_rate=1e-4,3e-4 --seeds 3`.")
    if summary is not None:
        with st.expander("Run a sweep", icon=":material/tune:", expanded=not records):
            busy = other_job_notice_ui(jobs.JobKind.SWEEP, "a sweep can start")
            sweep_form_ui(summary, busy)
