"""Little Data: strong image classifiers from very little data, three ways, in a browser.

Run with `streamlit run app.py`. Pages live in `pages/`; every computation lives in `core/`.
"""

import streamlit as st

from pages.common import PAGE_CONFIG, run_app

st.set_page_config(**PAGE_CONFIG)
run_app()
