"""Overview: what the app shows, and where each level stands."""

import streamlit as st

from core.levels import all_levels
from pages.common import current_summary, ensure_app_shell, latest_models


def levels_ui():
    latest = latest_models()
    levels = all_levels()
    for level, column in zip(levels, st.columns(len(levels))):
        with column.container(border=True):
            st.subheader(f"Level {level.key}")
            st.markdown(f"**{level.short_name.capitalize()}**")
            st.write(level.story)
            entry = latest.get(level.key)
            if entry and entry.val_accuracy is not None:
                delta = (f"{entry.val_accuracy - level.tutorial_accuracy:+.1%} vs tutorial"
                         if level.tutorial_accuracy is not None else None)
                st.metric("Validation accuracy (latest model)", f"{entry.val_accuracy:.1%}", delta=delta)
            else:
                st.metric("Validation accuracy", "not trained yet")
            st.caption(level.tutorial_note())


def main():
    st.title("Little Data")
    st.markdown(
        "**Strong image classifiers from very little data**, three ways, with real photos, real pretrained "
        "networks and real training — after François Chollet's 2016 Keras tutorial, which showed that "
        "2000 pictures of cats and dogs are enough. Level 0 adds the baseline the tutorial skipped: the "
        "pretrained network as it is, with no training at all.")
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
        "5. **How little data** — accuracy against the number of training photos per class, level by level.\n"
        "6. **Predict** — upload your own photo and see every level's answer side by side, and where each "
        "one looks.")


ensure_app_shell()
main()
