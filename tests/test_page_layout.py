"""Layout helpers of the pages (pages/common.py) that carry meaning: order kept on a phone."""

from streamlit.testing.v1 import AppTest


def _grid_of_six():
    from pages.common import grid_cells

    for number, cell in enumerate(grid_cells(6, 4)):
        cell.markdown(f"item {number}")


def test_grid_cells_keep_reading_order_when_a_phone_stacks_the_columns():
    """A phone shows columns one under the other, in document order: the items must come out in their
    order there (most suspect first, surest mistake first), not column by column."""
    at = AppTest.from_function(_grid_of_six).run()
    assert not at.exception
    stacked = [markdown.value for column in at.columns for markdown in column.markdown]
    assert stacked == [f"item {n}" for n in range(6)]
    assert len(at.columns) == 8  # two rows of four: the last row's cells keep the same width
