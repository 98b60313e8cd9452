"""Little Data: strong image classifiers from very little data, three ways, in a browser.

Run with `streamlit run app.py`. Pages live in `pages/`; every computation lives in `core/`.
"""

import streamlit as st

st.set_page_config(page_title="Little Data", page_icon=":material/pets:", layout="wide")

from pages.common import sidebar_ui  # noqa: E402 - after set_page_config

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
    st.Page("pages/augment.py", title="Augmentation lab", icon=":material/auto_awesome:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/curves.py", title="Curves & comparison", icon=":material/monitoring:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
]


def main():
    page = st.navigation(PAGES)
    sidebar_ui()
    page.run()


main()
