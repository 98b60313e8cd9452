"""Calibration and refusals: how far a model's confidence can be trusted, and when it says "none of these".

Draws only what the model's card holds (`core.serving.calibration.Calibration`,
`core.serving.novelty.NoveltyJudge`, `ModelCard.novelty_note`); nothing is measured here.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.serving.calibration import Calibration, ReliabilityBin
from core.serving.model_store import ModelEntry

SERIES = ("perfectly calibrated", "before", "after calibration")
COLOURS = ("#9e9e9e", "#e4572e", "#2e86ab")


def calibration_label(entry: ModelEntry) -> str:
    """The expander's title: the headline figures, so a closed expander already says how it went."""
    calibration = entry.card.calibration
    if calibration is None:
        return "Calibration and refusals · not calibrated"
    noise = " (within noise)" if calibration.within_noise else ""
    return (f"Calibration and refusals · expected calibration error {calibration.ece_before:.1%} → "
            f"{calibration.ece_cross_fitted:.1%} on new photos{noise}")


def _bin_rows(series: str, bins: list[ReliabilityBin]) -> list[dict]:
    return [{"series": series, "confidence": b.confidence, "accuracy": b.accuracy, "photos": b.count,
             "bin": f"{b.low:.0%}–{b.high:.0%}"} for b in bins if b.count and b.confidence is not None]


def reliability_chart(calibration: Calibration) -> alt.LayerChart | None:
    """Accuracy against mean confidence per bin, before and after scaling, over the diagonal; None without bins."""
    rows = _bin_rows("before", calibration.bins_before) + _bin_rows("after calibration", calibration.bins_after)
    if not rows:
        return None
    axis = alt.Scale(domain=[0, 1])
    colour = alt.Color("series:N", title=None, scale=alt.Scale(domain=list(SERIES), range=list(COLOURS)),
                       legend=alt.Legend(orient="bottom"))
    diagonal = alt.Chart(pd.DataFrame({"confidence": [0.0, 1.0], "accuracy": [0.0, 1.0],
                                       "series": [SERIES[0]] * 2})) \
        .mark_line(strokeDash=[4, 4]).encode(x=alt.X("confidence:Q", scale=axis), y=alt.Y("accuracy:Q", scale=axis),
                                             color=colour)
    data = alt.Chart(pd.DataFrame(rows)).encode(
        x=alt.X("confidence:Q", scale=axis, title="mean confidence in the bin", axis=alt.Axis(format="%")),
        y=alt.Y("accuracy:Q", scale=axis, title="accuracy in the bin", axis=alt.Axis(format="%")),
        color=colour)
    lines = data.mark_line(opacity=0.5).encode(order="confidence:Q")
    points = data.mark_circle(opacity=0.85).encode(
        size=alt.Size("photos:Q", title="photos", scale=alt.Scale(range=[30, 400]), legend=None),
        tooltip=["series:N", alt.Tooltip("bin:N", title="confidence bin"), alt.Tooltip("photos:Q"),
                 alt.Tooltip("confidence:Q", title="mean confidence", format=".1%"),
                 alt.Tooltip("accuracy:Q", format=".1%")])
    return (diagonal + lines + points).properties(height=300)


def figures_ui(calibration: Calibration) -> None:
    """ECE before and after (cross-fitted as the headline, in-sample in small print) and the temperature."""
    before, after = st.columns(2)
    before.metric("ECE before", f"{calibration.ece_before:.1%}",
                  help="Expected calibration error of the model's own probabilities on the validation photos: "
                       "the average gap between how sure it says it is and how often it is right.")
    after.metric("ECE after", f"{calibration.ece_cross_fitted:.1%}",
                 help="After scaling, on photos it was not fitted on: the temperature is fitted on one half of the "
                      "validation photos and measured on the other (both ways), so this is what to expect on new photos.")
    floor = (f" A perfectly calibrated model would measure about {calibration.ece_floor:.1%} on this many photos: "
             "each bin's accuracy is an average of a few photos, so ECE is never zero."
             if calibration.ece_floor is not None else "")
    if calibration.within_noise:  # 0.7% -> 0.3% beside a 0.6% floor read as a cure, and contradicted "flatters"
        floor += (f" This model's {calibration.ece_before:.1%} before scaling is within twice that, so the figures "
                  "here cannot tell calibrations apart.")
    # Fitted and measured on the same photos, the in-sample figure usually flatters; by chance it may not.
    flatters = ", so it usually flatters" if calibration.ece_after <= calibration.ece_cross_fitted else ""
    st.caption(f"In-sample after scaling: {calibration.ece_after:.1%} (fitted and measured on the same "
               f"{calibration.photos} validation photos{flatters}).{floor}")
    st.metric("Temperature", f"{calibration.temperature:.2f}",
              help="Log-probabilities are divided by it: above 1 softens an over-confident model, below 1 sharpens "
                   "an under-confident one. It never changes which class wins.")
    if calibration.exponent != 1.0:
        st.caption(f"Margin exponent {calibration.exponent:.2f}: the model's over-confidence depends on how sure it "
                   "is, so the gap between its two best classes is raised to this power before the temperature "
                   "(below 1: its surest answers are softened most). The winner never changes.")
    fitted = calibration.fitted_temperature
    if calibration.temperature == 1 and fitted is not None and fitted != 1:
        st.caption(f"Left at 1: scaling did not help on held-out halves (the best fit on all "
                   f"{calibration.photos} photos was {fitted:.2f}).")


def refusals_ui(entry: ModelEntry) -> None:
    """The novelty judge's accept rate and rule, or why the model has none."""
    card = entry.card
    st.markdown("**Refusals** (“none of these”)")
    if card.novelty is not None:
        judge = card.novelty
        st.markdown(f"Accepts {judge.validation_accepted:.0%} of in-class validation photos at its threshold "
                    f"(set to accept {judge.accept_rate:.0%}).")
        st.caption(f"Rule: {judge.describe()}.")
    elif card.novelty_note:
        st.caption(card.novelty_note[:1].upper() + card.novelty_note[1:] + ".")
    else:
        st.caption(f"No judge (trained before judges; `python -m core calibrate {entry.id}` adds one).")


def calibration_ui(entry: ModelEntry) -> None:
    """'Calibration and refusals' for one model: its reliability diagram, its figures and its judge."""
    calibration = entry.card.calibration
    with st.expander(calibration_label(entry), icon=":material/speed:"):
        if calibration is None:
            st.info(f"Not calibrated (trained before calibration; `python -m core calibrate {entry.id}` adds it).",
                    icon=":material/info:")
            refusals_ui(entry)
            return
        chart, figures = st.columns([3, 2], gap="large")
        with chart:
            diagram = reliability_chart(calibration)
            if diagram is None:
                st.caption("No reliability bins are stored for this model.")
            else:
                st.altair_chart(diagram, width="stretch")
                st.caption(f"Reliability diagram of the {calibration.photos} validation photos in 15 confidence bins "
                           f"(dot size: photos in the bin). Both axes run 0–1; with {len(entry.classes)} classes the "
                           f"top probability is never below {1 / len(entry.classes):.0%}, so no dot lies left of it. "
                           "On the dashed diagonal a model is right as often as it says; below it, over-confident.")
        with figures:
            figures_ui(calibration)
            refusals_ui(entry)
