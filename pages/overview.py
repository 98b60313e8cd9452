"""Overview: what the app shows, and where each level stands."""

import streamlit as st

from pages.common import LEVEL_SHORT, current_summary, ensure_app_shell, latest_models, tutorial_note


def levels_ui():
    latest = latest_models()
    blurbs = {
        1: "A small convnet (three conv blocks, ~1.2M weights at 150×150) learns from the photos alone. "
           "Augmentation and dropout are what keep it from memorising 2000 pictures.",
        2: "A network pretrained on ImageNet looks at each photo once; a small classifier learns on what it saw "
           "(the *bottleneck features*). Cheap and strong — and it overfits in a textbook way.",
        3: "Level 2's classifier goes back on top of the network and the network's top block is unfrozen and "
           "trained gently (SGD, learning rate 1e-4) with augmentation.",
    }
    for level, column in zip((1, 2, 3), st.columns(3)):
        with column.container(border=True):
            st.subheader(LEVEL_SHORT[level])
            st.write(blurbs[level])
            entry = latest.get(level)
            if entry and entry.val_accuracy is not None:
                st.metric("Validation accuracy (latest model)", f"{entry.val_accuracy:.1%}",
                          delta=f"{entry.val_accuracy - entry.card.get('tutorial_accuracy', 0):+.1%} vs tutorial")
            else:
                st.metric("Validation accuracy", "not trained yet")
            st.caption(tutorial_note(level))


def main():
    st.title("Little Data")
    st.markdown(
        "**Strong image classifiers from very little data**, three ways, with real photos, real pretrained "
        "networks and real training — after François Chollet's 2016 Keras tutorial, which showed that "
        "2000 pictures of cats and dogs are enough.")
    summary, _, error = current_summary()
    if summary is None:
        st.warning(f"No data set yet. {error} Open the **Data** page to choose one.")
    levels_ui()
    st.markdown("#### How to use it")
    st.markdown(
        "1. **Data** — check the photos (or bring your own: a folder or a zip of `train/<class>/`, "
        "`validation/<class>/`).\n"
        "2. **Augmentation lab** — one picture, many variants: the random transformations that fight overfitting.\n"
        "3. **Train** — each level in the background; reload or leave the page, training goes on.\n"
        "4. **Curves & comparison** — watch overfitting appear (level 2, level 1 without augmentation) and "
        "be cured; see the mistakes each model makes.\n"
        "5. **Predict** — upload your own photo and see every level's answer side by side.")


ensure_app_shell()
main()
