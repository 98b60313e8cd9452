"""The parts of the Curves & comparison page (`pages/curves.py`), one module each.

- `runs`: pick stored runs, overlay their training curves, and compare them in a table;
- `diagnostics`: where each chosen model goes wrong (confusion matrix, mistakes, label fixes), and its export;
- `sweeps`: kept sweeps grouped by setting, and the form that starts a new one.

This folder is not a page: the app's navigation lists its pages explicitly (`pages.common.run_app`),
and Streamlit's fallback scan of `pages/` looks at `pages/*.py` only.
"""
