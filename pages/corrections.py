"""Corrections to the app's own data sets, shared by the pages that offer them: apply one, show it, undo it."""

import streamlit as st

from core.data.folders import DatasetError


def apply_change(change) -> None:
    """Runs one data-set correction; its outcome (or why not) is shown by `undo_ui` after the rerun."""
    try:
        done = change()
        st.session_state["last_correction"] = done.description
    except DatasetError as exc:
        st.session_state["last_correction"] = f"not done: {exc}"
    st.rerun()


def undo_ui(fixer, key: str = "undo_correction") -> None:
    """The last change to the data set, with Undo (`key`: one per place a page shows it)."""
    message = st.session_state.pop("last_correction", "")
    if message.startswith("not done"):
        st.error(message)
    elif message:  # a toast, seen wherever the page is scrolled (on a phone the box below is screens away)
        st.toast(message[0].upper() + message[1:] + ".", icon=":material/undo:" if message.startswith("undone")
                 else ":material/check:")
    last = fixer.last_change()
    if last is None:
        return
    left, right = st.columns([4, 1])
    left.info(f"Last change to the data set: {last.description}.", icon=":material/history:")
    if right.button("Undo", icon=":material/undo:", key=key):
        fixer.undo()
        st.session_state["last_correction"] = f"undone: {last.description}"
        st.rerun()
