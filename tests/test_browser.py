"""A real browser (Debian's Chromium via Playwright) against `streamlit run app.py` on 127.0.0.1.

Screenshots land in test-artifacts/ for people to look at.
"""

import numpy as np
import pytest

from core.app.join_link import network_address
from core.training.loop import TrainConfig, train
from tests.browser import ARTIFACTS, CHROMIUM, browser_page, streamlit_server, wait_for_app_idle
from tests.helpers import jpeg_bytes, make_image

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")]

PAGES = {"": "Little Data", "data": "Data", "augment": "Augmentation lab", "train": "Train",
         "curves": "Curves & comparison", "efficiency": "How little data is enough", "predict": "Predict",
         "present": None}
# What each page shows once its script has finished, so screenshots are of the finished page.
READY = {"": "How to use it", "data": "Samples", "augment": "augmented variants", "train": "Start level 3",
         "curves": "Where each model goes wrong", "efficiency": "Measure the curve", "predict": "Add a photo above",
         "present": "Presenter notes"}


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, dataset_factory):
    home = tmp_path_factory.mktemp("home")
    data = dataset_factory()
    env = {"LITTLE_DATA_HOME": str(home), "LITTLE_DATA_DATA_DIR": str(data),
           "LITTLE_DATA_SHARED_DIR": str(home / "no-shared"), "LITTLE_DATA_MODELS_DIR": "", "LITTLE_DATA_CACHE_DIR": "",
           "LITTLE_DATA_JOBS_DIR": ""}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    common = dict(epochs=2, batch_size=8, image_size=(32, 32), data_dir=str(data))
    train(TrainConfig(level=1, **common))
    train(TrainConfig(level=2, backbone="mobilenet_025", weights="none", **common))
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(env) as (url, _, _):
        yield url
    mp.undo()


def open_page(page, url, slug):
    page.goto(f"{url}/{slug}")
    if PAGES[slug]:  # Present's slides have no page heading
        page.get_by_role("heading", name=PAGES[slug], exact=True).first.wait_for(timeout=60_000)
    page.get_by_text(READY[slug]).first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)


@pytest.mark.parametrize("slug", list(PAGES))
def test_each_page_renders_without_exception(app_server, slug):
    with browser_page() as page:
        open_page(page, app_server, slug)
        page.screenshot(path=str(ARTIFACTS / f"page-{slug or 'overview'}.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0
        body = page.inner_text("body")
        assert "Traceback" not in body and "Error:" not in body
        assert "Little Data" in page.locator("[data-testid='stSidebar']").inner_text()


def test_the_presenter_moves_through_the_slides_with_the_arrow_keys_and_a_clicker(app_server):
    """Right arrow and Page Down (what a clicker sends) go forward, left arrow and Page Up back."""
    with browser_page() as page:
        open_page(page, app_server, "present")

        def press_and_expect(key, number):
            page.keyboard.press(key)
            page.get_by_text(f"Slide {number} of").first.wait_for(timeout=30_000)
            assert page.url.endswith(f"slide={number}")

        press_and_expect("ArrowRight", 2)
        press_and_expect("PageDown", 3)
        press_and_expect("ArrowLeft", 2)
        press_and_expect("PageUp", 1)
        assert page.locator("[data-testid='stException']").count() == 0


def test_upload_a_photo_and_get_predictions(app_server, tmp_path):
    good = tmp_path / "my_circle.jpg"
    good.write_bytes(jpeg_bytes(make_image("circles", np.random.default_rng(5), size=300)))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with browser_page() as page:
        open_page(page, app_server, "predict")
        page.locator("[data-testid='stFileUploaderDropzone'] input[type='file']").set_input_files([str(good), str(corrupt)])
        page.get_by_text("Server time").first.wait_for(timeout=60_000)
        page.get_by_text("corrupt.jpg:").first.wait_for(timeout=60_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "predict-upload.png"), full_page=True)
        body = page.inner_text("body")
        assert "Level 1\nfrom scratch" in body and "Level 2\nbottleneck features" in body
        assert "corrupt.jpg: " in body and "Traceback" not in body
        assert body.count("Server time") == 1  # the good photo got its predictions; the bad one a message
        assert "circles ·" in body or "squares ·" in body


def test_a_page_url_opened_first_on_a_fresh_server_gets_the_app(tmp_path, dataset):
    """A bookmark to /predict as the server's first request still gets the app's navigation and sidebar."""
    env = {"LITTLE_DATA_HOME": str(tmp_path / "home"), "LITTLE_DATA_DATA_DIR": str(dataset),
           "LITTLE_DATA_SHARED_DIR": str(tmp_path / "no-shared")}
    with streamlit_server(env) as (url, _, _), browser_page() as page:
        page.goto(f"{url}/predict")
        page.get_by_role("heading", name="Predict", exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("No trained models yet").first.wait_for(timeout=60_000)
        sidebar = page.locator("[data-testid='stSidebar']").inner_text()
        assert "Little Data" in sidebar and "Augmentation lab" in sidebar
        assert "common" not in sidebar.split()


def test_where_it_looks_shows_a_heatmap_per_level(app_server, tmp_path):
    photo = tmp_path / "my_square.jpg"
    photo.write_bytes(jpeg_bytes(make_image("squares", np.random.default_rng(7), size=200)))
    with browser_page() as page:
        open_page(page, app_server, "predict")
        page.get_by_text("Where it looks", exact=True).first.click()
        page.wait_for_timeout(1000)
        page.locator("[data-testid='stFileUploaderDropzone'] input[type='file']").set_input_files(str(photo))
        page.get_by_text("and heatmaps.").first.wait_for(timeout=60_000)
        page.get_by_text("yellow = where the decision comes from").first.wait_for(timeout=10_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "predict-heatmaps.png"), full_page=True)
        assert page.get_by_text("Where it looks for").count() == 2  # levels 1 and 2
        assert page.locator("[data-testid='stException']").count() == 0


def test_four_phones_join_and_the_presenter_sees_their_photos_on_the_wall(app_server, tmp_path):
    """A presenter on the last slide; four phones (Pixel 7 and iPhone 13: viewport, touch, user agent)
    open /join, each sends a photo, gets every level's answer and no horizontal scrolling; the
    presenter's wall shows the four photos without a click, then hides one and clears it."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS

    photos = []
    for i, shape in enumerate(["circles", "squares", "circles", "squares"]):
        photos.append(tmp_path / f"phone{i}.jpg")
        photos[-1].write_bytes(jpeg_bytes(make_image(shape, np.random.default_rng(20 + i), size=400)))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            presenter = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            presenter.goto(f"{app_server}/present?slide=10")
            presenter.get_by_text("Scan, or open").first.wait_for(timeout=60_000)
            join_address = presenter.locator(".ld-join").inner_text()
            # The server's own address, or (opened at 127.0.0.1, which a phone takes for itself) this machine's
            # network address on the same port.
            host, port = join_address.split("/")[0], app_server.rsplit(":", 1)[1]
            assert join_address.endswith("/join") and host in (app_server.split("//")[1], f"{network_address()}:{port}")
            presenter.get_by_role("button", name="Clear the wall").first.wait_for(timeout=30_000)
            devices = ["Pixel 7", "iPhone 13", "Pixel 7", "iPhone 13"]
            phones = [browser.new_context(**playwright.devices[d]).new_page() for d in devices]
            for phone in phones:
                phone.goto(f"{app_server}/join")
                phone.get_by_text("What do the models see?").first.wait_for(timeout=60_000)
                assert phone.locator("[data-testid='stSidebar']").count() == 0 or \
                    not phone.locator("[data-testid='stSidebar']").is_visible()
            for phone, photo in zip(phones, photos):
                phone.locator("input[type='file']").first.set_input_files(str(photo))
            for i, phone in enumerate(phones):
                phone.get_by_text("Server time:").first.wait_for(timeout=90_000)
                phone.get_by_text("Where each level looks").first.wait_for(timeout=90_000)  # heatmaps: the run is done
                # ...and drawn: on a busy box the text was once read while the fragment's elements were being replaced
                wait_for_app_idle(phone, 90_000)
                body = phone.inner_text("body")
                assert "Level 1" in body and "Level 2" in body and "Traceback" not in body
                assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), devices[i]
            phones[0].screenshot(path=str(ARTIFACTS / "join-pixel7.png"))
            presenter.get_by_text("4 photos").first.wait_for(timeout=30_000)  # arrived by themselves
            presenter.screenshot(path=str(ARTIFACTS / "present-wall.png"), full_page=True)
            assert presenter.locator("[data-testid='stException']").count() == 0
            presenter.get_by_role("button", name="Hide").first.click()
            presenter.get_by_text("3 photos").first.wait_for(timeout=30_000)
            presenter.get_by_role("button", name="Clear the wall").first.click()
            presenter.get_by_text("0 photos").first.wait_for(timeout=30_000)
        finally:
            browser.close()
