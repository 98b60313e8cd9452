"""Present: the tutorial told as slides over this machine's live results, ending on the audience's wall.

Next and previous with the buttons or the arrow keys (Page Up/Down for clickers too); the slide
number is in the address (`/present?slide=4`), so a reload stays put. Each slide is drawn from a
`core.app.presentation.Slide`; a slide whose result is missing offers the job that makes it.
"""

import html
import random
import re
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.app import jobs
from core.app.join_link import for_the_room, join_url, network_address, only_this_machine, qr_png, short_url
from core.app.presentation import ActionKind, Slide, SlideKind, build_story
from core.serving.novelty import without_the_check
from core.data.augment import PRESETS, preview_variants
from core.data.folders import sample_paths
from core.data.images import load_array
from core.experiments.efficiency_curve import CurveConfig
from core.levels import all_levels
from core.networks.backbones import BACKBONES
from core.serving.explain import overlay
from core.serving.model_server import ServerBusy
from core.training.loop import TrainConfig
from pages.charts import SPLIT_SCALE, curve_chart, curve_frame
from pages.common import (audience_wall, grid_cells, background_job_ui, current_summary, ensure_app_shell, level_label,
                          loaded_explainers, loaded_predictors, model_server, model_set, start_button_ui,
                          warm_up_serving)

STYLE = """<style>
.block-container {padding-top: 2.2rem; max-width: 1800px;}
.ld-title {font-size: 3.2rem; font-weight: 700; line-height: 1.1; margin: 0 0 0.4rem 0;}
.ld-headline {font-size: 2.0rem; line-height: 1.3; margin: 0 0 1.2rem 0; color: #343a40;}
.ld-big {font-size: 5.5rem; font-weight: 700; line-height: 1; color: #d9480f;}
.ld-big-label {font-size: 1.4rem; color: #495057;}
.ld-source {font-size: 1rem; color: #868e96;}
.ld-join {font-size: 2.4rem; font-weight: 700; word-break: break-all;}
</style>"""

# Arrow keys (and clickers' Page Up/Down) press the slide buttons; typing in a field is left alone.
KEYS = """<script>
const doc = window.parent.document;
if (!doc.__littleDataSlideKeys) {
  doc.__littleDataSlideKeys = true;
  doc.addEventListener('keydown', (event) => {
    if (!window.parent.location.pathname.endsWith('/present')) return;
    const tag = (event.target.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || event.target.isContentEditable) return;
    const key = ['ArrowRight', 'PageDown'].includes(event.key) ? 'slide_next'
              : ['ArrowLeft', 'PageUp'].includes(event.key) ? 'slide_previous' : null;
    if (!key) return;
    const button = doc.querySelector(`.st-key-${key} button`);  // by the buttons' keys, not their labels
    if (button && !button.disabled) { button.click(); event.preventDefault(); }
  });
}
</script>"""


@st.cache_data(max_entries=64, show_spinner=False)
def _thumbnail(path: str, side: int = 220):
    return load_array(path, (side, side))


@st.cache_data(max_entries=8, show_spinner=False)
def _variants(path: str, seed: int):
    return preview_variants(load_array(path, (300, 300)), PRESETS["tutorial_preview"], n=8, seed=seed)


def slide_number(count: int) -> int:
    """The slide in the address (1-based there), clamped to the story. Without one (the sidebar's link),
    the slide this session showed last: a presenter who leaves to show Predict comes back to it."""
    if "slide" not in st.query_params and "present_slide" in st.session_state:
        st.query_params["slide"] = str(st.session_state["present_slide"])
    try:
        number = int(st.query_params.get("slide", 1))
    except ValueError:
        number = 1
    number = min(max(number, 1), count)
    st.session_state["present_slide"] = number
    return number


def go_to(number: int) -> None:
    st.query_params["slide"] = str(number)


def navigation_ui(number: int, count: int, slides: list[Slide]) -> None:
    left, middle, right = st.columns([1, 4, 1], vertical_alignment="center")
    left.button("◀ Previous", key="slide_previous", disabled=number <= 1, on_click=go_to, args=(number - 1,),
                width="stretch")
    right.button("Next ▶", key="slide_next", disabled=number >= count, on_click=go_to, args=(number + 1,),
                 width="stretch", type="primary")
    middle.caption(f"Slide {number} of {count} · " + " · ".join(
        f"**{s.title}**" if i + 1 == number else s.title for i, s in enumerate(slides)))
    st.html(KEYS, unsafe_allow_javascript=True)  # in the page itself: no iframe to reach out of


def sources_ui(slide: Slide) -> None:
    if slide.sources:
        text = html.escape("; ".join(s.describe() for s in slide.sources))
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)  # markdown's code marks are not read inside HTML
        st.markdown(f"<div class='ld-source'>Source: {text}</div>", unsafe_allow_html=True)


def missing_ui(slide: Slide, summary) -> None:
    """What is missing, and the button that makes it, without leaving the slide."""
    st.info(slide.missing, icon=":material/hourglass_empty:")
    action = slide.action
    if action is None or summary is None:
        return
    busy = jobs.is_busy()
    if action.kind is ActionKind.TRAIN:
        config = TrainConfig(level=action.level, data_dir=str(summary.root))
        start_button_ui(action.label, config, f"present_train_{slide.kind.value}", busy, "train_was_active")
    else:
        config = CurveConfig(levels=[2], data_dir=str(summary.root))
        start_button_ui(action.label, config, "present_curve", busy, "curve_was_active")
    progress_ui()


@st.fragment(run_every=1.0)
def progress_ui() -> None:
    job = jobs.current_job()
    if job is not None:
        background_job_ui(job.kind, job.title, "Cancel", "Cancelling…", "Starting…")


def data_ui(summary) -> None:
    # About twelve photos, every class in them (6 each of two classes, 3 each of five), class by class.
    per_class = max(1, -(-12 // len(summary.classes)))
    paths = sample_paths(summary, split="train", per_class=per_class, seed=0)
    for cell, path in zip(grid_cells(len(paths), 6), paths):
        cell.image(_thumbnail(str(path)), caption=path.parent.name, width="stretch")


def problem_ui(slide: Slide) -> None:
    """Training against validation: accuracy, and the loss beside it (where overfitting often shows first)."""
    history = slide.model.card.history
    metrics = [metric for metric in ("accuracy", "loss") if history.get(f"val_{metric}")]
    for metric, column in zip(metrics, st.columns(len(metrics)) if metrics else []):
        rows = [{"epoch": i + 1, "split": split, metric: value}
                for key, split in ((metric, "training"), (f"val_{metric}", "validation"))
                for i, value in enumerate(history.get(key, []))]
        axis = alt.Axis(format="%" if metric == "accuracy" else "", labelFontSize=18, titleFontSize=20)
        chart = alt.Chart(pd.DataFrame(rows)).mark_line(point=True, strokeWidth=4).encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, labelFontSize=18, titleFontSize=20)),
            y=alt.Y(f"{metric}:Q", scale=alt.Scale(zero=metric == "loss"), axis=axis),
            color=alt.Color("split:N", scale=SPLIT_SCALE,
                            legend=alt.Legend(orient="bottom", labelFontSize=20, title=None)))
        column.altair_chart(chart.properties(height=460), width="stretch")
    st.caption(f"{level_label(slide.model.level)}, {slide.model.card.backbone or 'small convnet'}, "
               f"{'with' if slide.model.card.augmented else 'without'} augmentation.")


def augmentation_ui(summary) -> None:
    path = str(summary.files["train"][0][0])
    seed = st.session_state.setdefault("present_aug_seed", 0)
    original, grid = st.columns([1, 3])
    original.image(_thumbnail(path, 300), caption="the photo", width="stretch")
    columns = grid.columns(4)
    for i, variant in enumerate(_variants(path, seed)):
        columns[i % 4].image(variant, width="stretch")
    if original.button("New draws", icon=":material/casino:"):
        st.session_state["present_aug_seed"] = seed + 1
        st.rerun()


def level_ui(slide: Slide) -> None:
    entry = slide.model
    level = next(l for l in all_levels() if l.key == slide.level)
    ours, tutorial, cost = st.columns(3)
    epochs = entry.epochs_run
    ours.markdown(f"<div class='ld-big'>{entry.val_accuracy:.1%}</div><div class='ld-big-label'>ours, "
                  f"{network_label(entry)}" + (f", {epochs} epoch{'' if epochs == 1 else 's'}" if epochs else "")
                  + "</div>", unsafe_allow_html=True)  # a short run beside the tutorial's long one says so
    if level.tutorial_accuracy_for(entry.classes) is not None:
        tutorial.markdown(f"<div class='ld-big' style='color:#868e96'>{level.tutorial_accuracy:.1%}</div>"
                          f"<div class='ld-big-label'>the tutorial ({level.tutorial_setup})</div>",
                          unsafe_allow_html=True)
    seconds = entry.card.train_seconds
    if seconds is not None:
        what = "training on this machine" if level.trains else "to load and score it: no training"
        cost.markdown(f"<div class='ld-big' style='color:#495057'>{seconds / 60:.0f} min</div>"
                      f"<div class='ld-big-label'>{what}</div>" if seconds >= 90 else
                      f"<div class='ld-big' style='color:#495057'>{seconds:.0f} s</div>"
                      f"<div class='ld-big-label'>{what}</div>", unsafe_allow_html=True)
    story = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", level.story)  # the stories' markdown emphasis
    st.markdown(f"<div class='ld-headline' style='margin-top:1.5rem'>{story}</div>", unsafe_allow_html=True)


def network_label(entry) -> str:
    backbone = BACKBONES.get(entry.card.backbone or "")
    return backbone.label if backbone else (entry.card.backbone or "small convnet")


def curve_ui(summary) -> None:
    frame = curve_frame(summary, all_levels())
    chart = curve_chart(frame, summary, text_size=17).properties(height=560)  # read from the back of a room
    st.altair_chart(chart.configure_axis(labelFontSize=16, titleFontSize=18).configure_legend(labelFontSize=18)
                    .configure_line(strokeWidth=4).configure_point(size=90), width="stretch")


def heatmaps_ui(summary) -> None:
    paths = [p for p, _ in summary.files.get("validation") or summary.files["train"]]
    if "present_heatmap_photo" not in st.session_state:
        st.session_state["present_heatmap_photo"] = str(paths[0])
    if st.button("Another photo", icon=":material/casino:"):
        st.session_state["present_heatmap_photo"] = str(random.choice(paths))
    path = st.session_state["present_heatmap_photo"]
    loaded = loaded_predictors()
    # Kept per photo and models: toggling the notes or a rerun must not send the photo through Grad-CAM again.
    key = (path, tuple(sorted((level, str(p) if isinstance(p, Exception) else p.entry.id)
                              for level, p in loaded.items())))
    kept = st.session_state.get("present_heatmaps")
    if kept is not None and kept[0] == key:
        result = kept[1]
    else:
        try:
            with st.spinner("Working out where each level looks…"):
                result = model_server().predict(Path(path).read_bytes(), path,
                                                model_set(loaded, loaded_explainers(loaded)))
        except ServerBusy as exc:
            st.warning(str(exc))
            return
        st.session_state["present_heatmaps"] = (key, result)
    levels = sorted(result.heatmaps)
    columns = st.columns(len(levels) + 1)
    columns[0].image(result.image, caption="the photo", width="stretch")
    for column, level in zip(columns[1:], levels):
        probabilities = result.per_level[level]
        best = max(probabilities, key=probabilities.get)
        column.image(overlay(result.image, result.heatmaps[level], max_side=480), width="stretch",
                     caption=f"{level_label(level)}: “{best}” {probabilities[best]:.0%}")


def answer_text(answer) -> str:
    return (f"{answer.nearest} {answer.probability:.0%}" if not answer.unknown
            else f"none of these ({without_the_check(answer.nearest, answer.probability)})")


@st.dialog("Audience photo", width="large")
def enlarged_ui(photo_id: int) -> None:
    photo = audience_wall().get(photo_id)
    if photo is None:
        st.caption("This photo has left the wall.")
        return
    image = photo.image()
    st.image(image, width="stretch")
    for level, answer in photo.answers.items():
        st.markdown(f"**{level_label(level)}**: {answer_text(answer)}")
    if photo.heatmaps:
        columns = st.columns(len(photo.heatmaps))
        for column, (level, heatmap) in zip(columns, sorted(photo.heatmaps.items())):
            column.image(overlay(image, heatmap, max_side=360), caption=f"Level {level}", width="stretch")
    if photo.disagreement:
        st.caption(photo.disagreement)


def join_ui() -> None:
    seen = join_url(st.context.url or "http://localhost:8501/present")
    url = for_the_room(seen, network_address())
    code, text = st.columns([1, 2], vertical_alignment="center")
    code.image(qr_png(url), width=260)
    text.markdown(f"<div class='ld-big-label'>Scan, or open</div><div class='ld-join'>{short_url(url)}</div>",
                  unsafe_allow_html=True)
    if url != seen:
        text.caption(f"This browser opened the app as {short_url(seen)}, which a phone would take for itself: the "
                     "code uses this machine's network address. Phones must be on the same network.")
    elif only_this_machine(url):
        text.warning("Phones cannot open this address: it names this computer, which has no network address to "
                     "use instead. Connect it to the room's network, then open the app by its network address.",
                     icon=":material/wifi_off:")


@st.fragment(run_every=2.0)
def wall_ui() -> None:
    """The audience's photos, newest first; redrawn every 2 s, so new ones appear without a click."""
    wall = audience_wall()
    photos = wall.photos()
    head, clear = st.columns([4, 1], vertical_alignment="center")
    head.markdown(f"**{len(photos)} photo{'s' if len(photos) != 1 else ''}** on the wall "
                  f"(the last {wall.max_photos} are kept, in memory only)")
    if clear.button("Clear the wall", icon=":material/delete_sweep:", disabled=not len(wall)):
        wall.clear()
        st.rerun(scope="fragment")
    if not photos:
        st.caption("Photos appear here as they arrive.")
        return
    for cell, photo in zip(grid_cells(len(photos[:24]), 4), photos[:24]):  # newest first, row by row
        with cell.container(border=True):
            st.image(photo.jpeg, width="stretch")
            if photo.flagged:
                why = "levels disagree" if photo.disagreement else "none of these"
                st.markdown(f":red-badge[:material/flag: {why}]")
            # The answers in body text, read from the back of a room; the buttons one above the other, since two
            # side by side in a quarter of 1280 px were cut to "E…" and "H…".
            st.markdown("  \n".join(f"L{level}: {answer_text(answer)}" for level, answer in photo.answers.items()))
            if st.button("Enlarge", key=f"enlarge_{photo.id}", icon=":material/zoom_in:", width="stretch"):
                enlarged_ui(photo.id)
            if st.button("Hide", key=f"hide_{photo.id}", icon=":material/visibility_off:", width="stretch"):
                wall.hide(photo.id)
                st.rerun(scope="fragment")
    if len(photos) > 24:
        st.caption(f"…and {len(photos) - 24} older.")


def audience_ui() -> None:
    join_ui()
    wall_ui()


def slide_ui(slide: Slide, summary) -> None:
    st.markdown(f"<div class='ld-title'>{slide.title}</div><div class='ld-headline'>{slide.headline}</div>",
                unsafe_allow_html=True)
    if slide.kind is SlideKind.AUDIENCE:  # the QR code works before any model exists
        if slide.missing:
            missing_ui(slide, summary)
        audience_ui()
        return
    if not slide.ready:
        missing_ui(slide, summary)
        return
    if slide.kind is SlideKind.DATA:
        data_ui(summary)
    elif slide.kind is SlideKind.PROBLEM:
        problem_ui(slide)
    elif slide.kind is SlideKind.AUGMENTATION:
        augmentation_ui(summary)
    elif slide.kind in (SlideKind.LEVEL0, SlideKind.LEVEL1, SlideKind.LEVEL2, SlideKind.LEVEL3):
        level_ui(slide)
    elif slide.kind is SlideKind.CURVE:
        curve_ui(summary)
    elif slide.kind is SlideKind.HEATMAPS:
        heatmaps_ui(summary)
    sources_ui(slide)


def main():
    st.html(STYLE)
    summary, _, _ = current_summary()
    slides = build_story(summary)
    number = slide_number(len(slides))
    slide = slides[number - 1]
    navigation_ui(number, len(slides), slides)
    slide_ui(slide, summary)
    if st.toggle("Presenter notes", key="present_notes"):
        st.caption(slide.notes)
    if slide.ready or slide.kind is SlideKind.AUDIENCE:  # the slide is drawn; now get the server ready for the room
        loaded = loaded_predictors()
        warm_up_serving(loaded, loaded_explainers(loaded))


ensure_app_shell()
main()
