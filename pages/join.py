"""Join: the audience's page. A phone takes a photo, every level answers, and it goes on the presenter's wall.

Phone first: one column, no sidebar, the answer right under the photo button. Photos are decoded
here (at a reduced scale: a 12-megapixel phone photo would cost the shared models' thread ten
times as much) and answered by the one model server every session shares.
"""

import time

import streamlit as st

from core.app.wall import TooManyPhotos
from core.data.images import ImageError, load_image, to_jpeg
from core.serving.explain import overlay
from core.serving.model_server import ServerBusy
from core.serving.novelty import none_of_these, without_the_check
from pages.common import (IMAGE_TYPES, photo_upload_mb, audience_wall, current_classes, ensure_app_shell, latest_models, level_label, loaded_explainers,
                          loaded_predictors, model_server, model_set, session_id,
                          warm_up_serving)

#: Phone photos are decoded at no less than this on their shorter side (JPEG draft): plenty for 260 px models.
DECODE_SIDE = 1024
PRIVACY = ("Your photo is kept in the server's memory for this talk's wall only: never saved, and gone when "
           "the presenter clears the wall or the server stops.")


def answers_ui(result) -> None:
    """Each level's answer, one line per level, large: the class, or "none of these"."""
    for level in sorted(result.per_level):
        probabilities = result.per_level[level]
        best = max(probabilities, key=probabilities.get)
        verdict = result.verdicts.get(level)
        name = level_label(level).partition(" · ")
        if verdict is not None and verdict.unknown:
            answer = f"Doesn't look like {none_of_these(list(probabilities))}"
            small = without_the_check(best, probabilities[best])
        else:
            answer, small = f"{best} · {probabilities[best]:.0%}", ""
        st.markdown(f"**{name[0]}** <span style='color:#868e96'>{name[2]}</span>  \n"
                    f"<span style='font-size:1.6rem;font-weight:600'>{answer}</span>"
                    + (f"  \n<span style='color:#868e96;font-size:0.85rem'>{small}</span>" if small else ""),
                    unsafe_allow_html=True)
    for level, error in result.model_errors.items():
        st.caption(f"{level_label(level)}: unavailable ({error})")
    if disagreement := result.disagreement():
        st.caption(f":material/info: {disagreement}")


def heatmaps_ui(result) -> None:
    levels = sorted(result.heatmaps)
    if not levels:
        return
    st.markdown("**Where each level looks**")
    for pair in (levels[i:i + 2] for i in range(0, len(levels), 2)):  # rows of two; a phone stacks them in order
        for column, level in zip(st.columns(2), pair):
            probabilities = result.per_level.get(level, {})
            best = max(probabilities, key=probabilities.get) if probabilities else ""
            verdict = result.verdicts.get(level)
            what = f"nearest: {best}" if verdict is not None and verdict.unknown else f"“{best}”"
            column.image(to_jpeg(overlay(result.image, result.heatmaps[level], max_side=360)), width="stretch",
                         caption=f"Level {level}: {what}")


def answer_photo(data: bytes, name: str):
    """The photo through every level via the shared model server, put on the wall; None after a message."""
    arrived = time.perf_counter()
    wall = audience_wall()
    try:
        image = load_image(data, name=name, draft_side=DECODE_SIDE)  # decoded at draft size: cheap to refuse
        wall.admit(session_id())  # only a readable photo counts against the phone's limit
        loaded = loaded_predictors()
        result = model_server().predict(image, name, model_set(loaded), arrived=arrived)
    except TooManyPhotos as exc:
        st.warning(str(exc), icon=":material/timer:")
        return None
    except ImageError as exc:
        st.error(str(exc), icon=":material/broken_image:")
        return None
    except ServerBusy as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
        return None
    photo = wall.add(session_id(), result)
    return result, photo.id, loaded


def main():
    st.markdown("### :material/pets: What do the models see?")
    if not latest_models():
        st.info("The presenter has no trained model yet. Wait a moment, then reload this page.")
        return
    photo_ui()
    loaded = loaded_predictors()  # after the page is drawn: the first phone warms the server up
    warm_up_serving(loaded, loaded_explainers(loaded))


@st.fragment
def photo_ui():
    """The upload and its answers: a new photo reruns only this part, not the app around it."""
    upload = st.file_uploader("Take a photo, or choose one", type=IMAGE_TYPES, key="join_photo",
                              max_upload_size=photo_upload_mb(),
                              help="On a phone this opens the camera or your photos.")
    st.caption(PRIVACY)
    if upload is None:
        classes = current_classes() or ()
        st.caption(f"Try {' or '.join(f'**{c}**' for c in classes) or 'a photo'}, or anything else: the levels say "
                   "when a photo looks like none of their classes.")
        return
    # A rerun (a tap anywhere) must not send the same photo again: answers are kept per upload.
    answered = st.session_state.get("join_answer")
    if answered is None or answered[0] != upload.file_id:
        outcome = answer_photo(upload.getvalue(), upload.name)
        if outcome is None:
            return
        st.session_state["join_answer"] = answered = (upload.file_id, *outcome)
    _, result, photo_id, loaded = answered
    answers_ui(result)  # first, so a phone shows the answers without scrolling
    st.caption(f"Server time: {result.server_ms:.0f} ms")
    st.image(to_jpeg(result.image, 480), width="stretch")
    if not result.heatmaps:
        try:  # heatmaps after the answers are on screen: they queue behind everyone's answers
            mapped = model_server().predict(result.image, result.name, model_set(loaded, loaded_explainers(loaded)))
            result.heatmaps.update(mapped.heatmaps)
            audience_wall().attach_heatmaps(photo_id, mapped.heatmaps)
        except ServerBusy:
            st.caption("Heatmaps skipped: the server is busy.")
            return
    heatmaps_ui(result)


ensure_app_shell()
main()
