"""Predict: your photo through every trained level, side by side."""

import random
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.serving.explain import heatmap_note, legend, overlay
from core.serving.model_server import ServerBusy
from core.serving.novelty import none_of_these, without_the_check
from pages.common import (IMAGE_TYPES, photo_upload_mb, current_summary, ensure_app_shell, latest_models, level_label, loaded_explainers,
                          loaded_predictors, model_server, model_set, page_header)



def probability_chart(probs: dict, greyed: bool = False):
    """The classes' probabilities as bars; greyed when the model says the photo is none of them."""
    data = pd.DataFrame({"class": list(probs), "probability": list(probs.values())})
    top = "#ced4da" if greyed else "#d9480f"
    bars = alt.Chart(data).mark_bar(cornerRadiusEnd=3, opacity=0.5 if greyed else 1.0).encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%", title=None)),
        y=alt.Y("class:N", title=None, sort=list(probs)),  # the classes' own order: the same in every column
        color=alt.condition(alt.datum.probability == max(probs.values()), alt.value(top), alt.value("#dee2e6")),
        tooltip=["class", alt.Tooltip("probability:Q", format=".2%")])
    return bars.properties(height=34 * len(probs) + 10)


def inputs_ui(summary) -> list[tuple[str, bytes]]:
    files = st.file_uploader("Photos", type=IMAGE_TYPES, accept_multiple_files=True, max_upload_size=photo_upload_mb(),
                             help="One or more photos; each is checked on its own.")
    inputs = [(f.name, f.getvalue()) for f in files or []]
    c1, c2 = st.columns([1, 1])
    if summary is not None and c1.button("Try a random validation photo", icon=":material/casino:"):
        split = "validation" if "validation" in summary.files else "train"
        path, _ = random.choice(summary.files[split])
        st.session_state["sample"] = str(path)
    if c2.toggle("Use the camera", key="camera_on"):
        shot = st.camera_input("Take a photo")
        if shot is not None:
            inputs.append(("camera photo", shot.getvalue()))
    sample = st.session_state.get("sample")
    if sample and Path(sample).is_file():
        inputs.insert(0, (f"sample: {Path(sample).parent.name}/{Path(sample).name}", Path(sample).read_bytes()))
        # The sample stays until taken away: without this, only a reload removed it from beside the uploads.
        c1.button("Remove the sample photo", icon=":material/close:", key="sample_remove",
                  on_click=lambda: st.session_state.pop("sample", None))
    return inputs


def result_ui(result, loaded: dict, photos: int = 1):
    """One photo's answers, a column per level (`loaded`: level -> its Predictor, or why it cannot load;
    `photos`: how many were sent together)."""
    levels = list(loaded)
    with st.container(border=True):
        if result.error:
            st.error(result.error, icon=":material/broken_image:")
            return
        columns = st.columns([1] + [1] * max(len(levels), 1))
        columns[0].image(result.image, caption=result.name, width="stretch")
        for column, level in zip(columns[1:], levels):
            with column:
                name = level_label(level).partition(" · ")
                st.markdown(f"**{name[0]}**  \n{name[2]}")
                if level in result.model_errors:
                    st.warning(f"Model unusable: {result.model_errors[level]}")
                    continue
                probs = result.per_level[level]
                best = max(probs, key=probs.get)
                verdict = result.verdicts.get(level)
                if verdict is not None and verdict.unknown:
                    st.markdown(f"### Doesn't look like {none_of_these(list(probs))}")
                    st.caption(f"{without_the_check(best, probs[best]).capitalize()} · {verdict.describe()}")
                else:
                    st.markdown(f"### {best} · {probs[best]:.0%}")
                st.altair_chart(probability_chart(probs, greyed=verdict is not None and verdict.unknown),
                                width="stretch")
                if (error := getattr(loaded[level], "judge_error", None)) is not None:
                    st.caption(f"No \"none of these\" for this level: {error}")
                if level in result.heatmaps:
                    if note := heatmap_note(result.heatmaps[level]):  # a blank map: say why, without an overlay
                        st.caption(f"{note[:1].upper()}{note[1:]}.")  # captioned "where it looks" beside it
                    else:
                        st.image(overlay(result.image, result.heatmaps[level], max_side=360), width="stretch",
                                 caption=f"Where it looks for “{best}”")
                elif level in result.explain_errors:
                    st.caption(f"No heatmap: {result.explain_errors[level]}")
        if disagreement := result.disagreement():
            st.caption(f":material/info: {disagreement}")
        what = f" and heatmap{'s' if len(result.heatmaps) > 1 else ''}" if result.heatmaps else ""
        # Counted from the photo's arrival: with several photos it includes waiting for the others (twelve
        # photos each showed 2.2 s, which read as 2.2 s a photo).
        together = f", waiting for the other {photos - 1} photo(s) sent with it included" if photos > 1 else ""
        st.caption(f"Server time: {result.server_ms:.0f} ms for decoding and {len(result.per_level)} model(s){what}"
                   f"{together}.")


def legend_ui():
    left, right = st.columns([1, 3])
    left.image(legend(256, 14), width="stretch")
    right.caption("**Where it looks** (Grad-CAM): dark = ignored, yellow = where the decision comes from. "
                  "Each heatmap is scaled to its own strongest point, on the same colour scale; with mirror "
                  "averaging, both views count.")


def main():
    page_header("Predict", "Upload photos (or use a validation photo) and see what each level's latest model says.")
    summary, _, _ = current_summary()
    models = latest_models()
    if not models:
        st.info("No trained models yet: train at least one level on the **Train** page.")
        return
    st.caption("Models: " + " · ".join(f"{level_label(l)}: `{e.id}`" for l, e in models.items()))
    loaded = loaded_predictors()
    inputs = inputs_ui(summary)
    show_heatmaps = st.toggle("Where it looks", key="where_it_looks",
                              help="Overlay each level's Grad-CAM heatmap on the photo: the places its answer comes from.")
    if not inputs:
        st.info("Add a photo above to get predictions.")
        return
    if show_heatmaps:
        legend_ui()
    models = model_set(loaded, loaded_explainers(loaded) if show_heatmaps else None)
    try:  # every photo queued at once: the server batches them (and other sessions' photos) together
        pending = [model_server().submit(data, name, models) for name, data in inputs]
    except ServerBusy as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
        return
    for future in pending:
        result_ui(future.result(), loaded, photos=len(pending))


ensure_app_shell()
main()
