"""Curves & comparison: overlay training runs, compare them, look at their mistakes, and compare sweeps.

The page composes three parts, each in `pages/curves_parts/`: the runs (curves and table), where
each chosen model goes wrong (with its export), and the sweeps.
"""

from pages.common import current_summary, ensure_app_shell, page_header
from pages.curves_parts.diagnostics import diagnostics_ui
from pages.curves_parts.runs import runs_ui
from pages.curves_parts.sweeps import sweeps_ui


def main():
    page_header("Curves & comparison", "Pick runs to overlay their training curves. Dashed: training; solid: "
                                       "validation. The gap between them is overfitting.")
    summary, _, error = current_summary()
    chosen = runs_ui()
    if chosen:
        diagnostics_ui(chosen, summary, error)
    sweeps_ui(summary)


ensure_app_shell()
main()
