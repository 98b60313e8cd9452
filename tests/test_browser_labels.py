"""In a real browser, phone-sized: move a suspect label to its class, then label a photo with a key press.

Screenshots land in test-artifacts/ for people to look at.
"""

import time

import numpy as np
import pytest

from core.app import workspace
from core.atomic_files import atomic_write_json
from core.data.builder import BuiltDataset
from core.data.folders import summarize
from core.experiments.label_next import Suggestion
from core.experiments.label_review import LabelReview, LabelTask, review_path
from core.experiments.suspects import Suspect
from core.training.loop import TrainConfig, train
from tests.browser import ARTIFACTS, CHROMIUM, app_home_env, browser_page, streamlit_server, wait_for_app_idle
from tests.helpers import jpeg_bytes, make_image

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")]


def shots(cls: str, n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    return [(f"{cls}-{i}.jpg", jpeg_bytes(make_image(cls, rng, 96))) for i in range(n)]


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the page's click did not reach the data set"
        time.sleep(0.2)


def test_fix_a_suspect_and_label_a_photo_on_a_phone(tmp_path, monkeypatch):
    env = app_home_env(tmp_path, monkeypatch)
    built = BuiltDataset.create("shapes", ["circles", "squares"], validation_fraction=0.25)
    built.add_photos("circles", shots("circles", 8, 1))
    built.add_photos("squares", shots("squares", 8, 2))
    built.add_unlabelled(shots("squares", 2, 3))
    workspace.set_active_data_dir(built.root)
    model = train(TrainConfig(level=1, epochs=1, batch_size=8, image_size=(32, 32), data_dir=str(built.root))).entry
    summary = summarize(built.root)
    wrong = built.photos("circles", "train")[0]
    waiting = built.unlabelled()[0]
    for review in (LabelReview(LabelTask.SUSPECTS, str(built.root), summary.fingerprint,
                               [Suspect(str(wrong), "circles", "squares", 0.97)], created=time.time()),
                   LabelReview(LabelTask.SUGGEST, str(built.root), summary.fingerprint,
                               [Suggestion(str(p), 0.9, "squares") for p in built.unlabelled()], model_id=model.id,
                               model_level=1, created=time.time())):
        atomic_write_json(review_path(review.task, built.root), review.to_dict())
    ARTIFACTS.mkdir(exist_ok=True)

    with streamlit_server(env) as (url, _, _), browser_page(viewport=(412, 915)) as page:
        page.goto(f"{url}/data")
        page.get_by_role("heading", name="Check the labels").first.wait_for(timeout=120_000)
        wait_for_app_idle(page, 120_000)
        page.get_by_text("1 suspect label(s)").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Move to squares").last.click()  # the card's (the grid's are in popovers)
        wait_until(lambda: (built.root / "train" / "squares" / wrong.name).is_file())
        page.get_by_text("No suspect labels left.").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Undo").last.wait_for(timeout=60_000)  # the move can be taken back

        page.locator("button", has_text="Label these next").first.click()
        page.get_by_text("Which class is it?").first.wait_for(timeout=60_000)
        wait_for_app_idle(page)
        page.get_by_text("Which class is it?").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "labels-phone.png"))
        page.keyboard.press("2")  # squares, the second class
        wait_until(lambda: (built.root / "train" / "squares" / waiting.name).is_file())
        assert not waiting.exists()
        page.get_by_text("1 ranked photo(s) to go").first.wait_for(timeout=60_000)
