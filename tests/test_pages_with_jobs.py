"""Every page renders with every kind of job in every state it can meet, and says what the job is.

A newcomer's first path crashed the Train page because it only knew training jobs' configs; these
tests draw each page (inside the app shell) with a job of each kind (training, the quick start's
sequence, a data-efficiency curve, a sweep) starting, running, finished, failed, cancelled, or
abandoned by a dead worker.
"""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import settings
from core.app import jobs
from tests.job_states import STATES, WORKER_DIED, worker_for, write_job

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["overview", "data", "augment", "train", "predict", "curves", "efficiency", "present", "join"]
# Every page meets a job that is running and one that failed; the other states (starting, finished,
# cancelled, a dead worker) differ only where a page shows the job itself, so those pages suffice.
JOB_PAGES = ["overview", "train", "predict", "present"]


def pages_for(state: str) -> list[str]:
    return PAGES if state in ("running", "failed") else JOB_PAGES


def page_text(at: AppTest) -> str:
    """Every piece of text the page and its sidebar show."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader"):
        parts += [str(element.value) for element in getattr(at, kind)]
    parts += [str(bar.proto.text) for bar in at.get("progress")]
    return "\n".join(parts).lower()


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", list(jobs.JobKind))
def test_every_page_with_a_job(kind, state, app_env):
    job = write_job(settings.jobs_dir(), kind, state, app_env)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    with worker_for(settings.jobs_dir(), state):
        for name in pages_for(state):
            if name == "overview":
                at.run()
            else:
                at.switch_page(f"pages/{name}.py").run()
            assert not at.exception, (name, [e.value for e in at.exception])
            text = page_text(at)
            if state in ("starting", "running") and name != "join":  # the audience's page has no sidebar
                # The sidebar of every page says what is running.
                assert job.title in text, (name, text[:2000])
            if name == "train":  # the Train page shows the last job, whatever its kind
                assert job.title.split(" (")[0] in text or f"level {job.levels[0]}" in text, text[:2000]
                if state == WORKER_DIED:
                    assert "stopped unexpectedly" in text
                elif state == "failed" and kind in (jobs.JobKind.TRAIN, jobs.JobKind.SEQUENCE):
                    assert "example failure" in text
