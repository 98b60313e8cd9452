"""A newcomer's whole first visit, in a real browser on a fresh home: Overview -> "Train my first model"
-> every page while it trains -> Predict shows a prediction -> Train shows the finished job -> Curves
shows its run. This path crashed the Train page once (a quick-start job is a sequence, not a training).
"""

import pytest

from core.app.quickstart import QUICK_BACKBONE
from tests.browser import ARTIFACTS, CHROMIUM, browser_page, streamlit_server, wait_for_app_idle

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")]

NAV = ["Data", "Augmentation lab", "Train", "Curves & comparison", "How little data", "Predict", "Overview"]


def visit(page, title: str) -> None:
    """Clicks a page in the sidebar's navigation (the same session, as a person moves around)."""
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text=title).first.click()
    wait_for_app_idle(page)


def assert_no_error_shown(page, where: str) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, where
    body = page.inner_text("body")
    assert "Traceback" not in body, (where, body[-2000:])


def test_first_visit_on_a_fresh_home(tmp_path, dataset, shared):
    # The quick start uses the default backbone's genuine ImageNet weights, found in ../shared/weights.
    env = {"LITTLE_DATA_HOME": str(tmp_path / "home"), "LITTLE_DATA_DATA_DIR": str(dataset),
           "LITTLE_DATA_SHARED_DIR": str(shared), "LITTLE_DATA_MODELS_DIR": "", "LITTLE_DATA_CACHE_DIR": "",
           "LITTLE_DATA_JOBS_DIR": ""}
    ARTIFACTS.mkdir(exist_ok=True)
    log = tmp_path / "server.log"
    with streamlit_server(env, log_path=log) as (url, _, _), browser_page() as page:
        page.goto(url)
        start = page.get_by_role("button", name="Train my first model")
        start.wait_for(timeout=120_000)
        wait_for_app_idle(page, 120_000)  # a click during the first script run can be lost
        start.click()
        # The job's progress, or Predict already if it finished first; on two busy cores (CI runs
        # another test process beside this one) the first rerun can take well over a minute.
        page.get_by_text("Step 1 of 1").or_(page.get_by_role("heading", name="Predict", exact=True)).first.wait_for(
            timeout=180_000)
        for title in NAV:  # while it trains
            visit(page, title)
            assert_no_error_shown(page, f"{title}, while the quick start runs")
        page.screenshot(path=str(ARTIFACTS / "first-visit-overview-training.png"), full_page=True)
        # Back on the Overview, the quick start opens Predict on a validation photo once it is done.
        page.get_by_role("heading", name="Predict", exact=True).first.wait_for(timeout=300_000)
        page.get_by_text("Server time").first.wait_for(timeout=120_000)
        wait_for_app_idle(page)
        answer = page.locator("h3").filter(has_text="%").first.inner_text()
        assert "circles" in answer or "squares" in answer, answer
        assert_no_error_shown(page, "Predict after the quick start")
        page.screenshot(path=str(ARTIFACTS / "first-visit-predict.png"), full_page=True)

        visit(page, "Train")
        # The page draws the job's line before the run's metrics: on a busy box it was once read between them.
        page.get_by_text("saved as").first.wait_for(timeout=60_000)
        page.get_by_text("Validation accuracy").first.wait_for(timeout=60_000)
        text = page.inner_text("[data-testid='stMain']")
        assert "First models (level 2)" in text and "Validation accuracy" in text, text[:2000]
        assert_no_error_shown(page, "Train after the quick start")

        visit(page, "Curves & comparison")
        # On a busy box the click's rerun may not have started when visit() sees no status widget: wait
        # for the run's row itself (the main area was once read empty, mid-switch).
        page.get_by_text(f"L2 {QUICK_BACKBONE}").first.wait_for(timeout=60_000)
        text = page.inner_text("[data-testid='stMain']")
        assert f"L2 {QUICK_BACKBONE}" in text, text[-2000:]  # the quick start's level-2 run, listed with its curves
        assert_no_error_shown(page, "Curves after the quick start")
        page.screenshot(path=str(ARTIFACTS / "first-visit-curves.png"), full_page=True)
    server_log = log.read_text(errors="replace")
    assert "Traceback" not in server_log, server_log[-3000:]
