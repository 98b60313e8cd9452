"""In a real browser: build a data set by uploads and camera shots, train on it, predict, export.

Screenshots land in test-artifacts/ for people to look at.
"""

import zipfile

import numpy as np
import pytest

from core.app import workspace
from core.data.builder import built_datasets
from core.serving.export import open_export
from core.data.images import load_array
from core.serving.predictor import Predictor
from core.training.loop import TrainConfig, train
from tests.browser import (ARTIFACTS, CHROMIUM, FAKE_CAMERA_ARGS, app_home_env, browser_page, streamlit_server,
                           wait_for_app_idle)
from tests.helpers import jpeg_bytes, make_image

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")]


def write_photos(folder, cls, n, seed):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{cls}-{i}.jpg"
        path.write_bytes(jpeg_bytes(make_image(cls, rng, size=96), quality=90))
        paths.append(str(path))
    return paths


def upload_to_class(page, cls, paths, expected_added):
    page.get_by_role("tab", name="Upload").first.click()
    page.locator("[data-testid='stButtonGroup'] button", has_text=cls).first.click()
    # The uploader is drawn again for the new class; files set before that rerun ends are lost
    # (CI on 2 busy cores once lost them), so wait for the uploader that names this class.
    page.get_by_text(f"Photos of {cls}").first.wait_for(timeout=60_000)
    wait_for_app_idle(page)
    page.locator("[data-testid='stFileUploaderDropzone'] input[type='file']").first.set_input_files(paths)
    page.get_by_role("button", name=f"Add {len(paths)} photo(s) to {cls}").click(timeout=60_000)
    page.get_by_text(f"Added {expected_added} photo(s) to {cls}.").first.wait_for(timeout=60_000)
    wait_for_app_idle(page)


def test_build_train_predict_and_export_in_the_browser(tmp_path, monkeypatch):
    env = app_home_env(tmp_path, monkeypatch)
    photos = tmp_path / "photos"
    photos.mkdir()
    circles, squares = write_photos(photos, "circles", 12, 0), write_photos(photos, "squares", 12, 1)
    broken = photos / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(env) as (url, _, _), browser_page(extra_args=FAKE_CAMERA_ARGS, permissions=["camera"]) as page:
        # 1. A new data set, named in the browser.
        page.goto(f"{url}/data")
        page.get_by_role("tab", name="Build your own").click()
        page.get_by_label("Name").fill("Shapes")
        page.get_by_label("Classes, one per line (two or more)").fill("circles\nsquares")
        page.get_by_role("button", name="Create data set").click()
        page.get_by_text("circles needs at least 2 photos").first.wait_for(timeout=60_000)

        # 2. Photos by upload: one bad file gets a message; the others are added.
        upload_to_class(page, "circles", circles + [str(broken)], 12)
        body = page.inner_text("body")
        assert "Added 12 photo(s) to circles" in body and "broken.jpg" in body
        upload_to_class(page, "squares", squares, 12)

        # 3. A camera shot (Chromium's fake camera) goes to the chosen class.
        page.get_by_role("tab", name="Camera").first.click()
        page.get_by_role("button", name="Take Photo").first.click(timeout=60_000)
        page.get_by_text("Added 1 photo(s) to squares").first.wait_for(timeout=60_000)
        wait_for_app_idle(page)
        page.screenshot(path=str(ARTIFACTS / "builder.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0

        (built,) = built_datasets()
        assert built.counts() == {"circles": {"train": 10, "validation": 2}, "squares": {"train": 10, "validation": 3}}

        # 4. Train on it (as the Train page's worker would), then predict in the browser.
        result = train(TrainConfig(level=1, epochs=3, batch_size=8, image_size=(48, 48), data_dir=str(built.root)))
        page.goto(f"{url}/predict")
        page.get_by_text("Add a photo above").first.wait_for(timeout=60_000)
        test_photo = write_photos(tmp_path, "circles", 1, 42)[0]
        page.locator("[data-testid='stFileUploaderDropzone'] input[type='file']").set_input_files(test_photo)
        page.get_by_text("Server time").first.wait_for(timeout=60_000)
        expected = Predictor(result.entry).predict([test_photo])[0].label
        assert f"{expected} ·" in page.inner_text("body")

        # 5. Export from the Curves page, download the zip, and run it with ONNX Runtime.
        page.goto(f"{url}/curves")
        page.get_by_text("Take this model away").first.click(timeout=60_000)
        page.locator("[data-testid='stButtonGroup'] button", has_text="ONNX").first.click()
        button = page.get_by_role("button", name="Download ONNX")
        button.wait_for(timeout=120_000)
        with page.expect_download() as download:
            button.click()
        path = tmp_path / "export.zip"
        download.value.save_as(path)
        page.screenshot(path=str(ARTIFACTS / "curves-export.png"), full_page=True)

        # 6. The data set as a zip, uploaded: unpacked once, said so after the page reloads, and the zip gone
        # from the uploader (the button that would unpack a second copy with it).
        pets = tmp_path / "shapes-copy.zip"
        pets.write_bytes(built.zip_bytes())
        page.goto(f"{url}/data")
        page.get_by_role("tab", name="Upload a zip").click(timeout=60_000)
        page.locator("[data-testid='stFileUploaderDropzone'] input[type='file'][accept*='zip']").set_input_files(str(pets))
        page.get_by_role("button", name="Unpack and use it").click(timeout=60_000)
        page.get_by_text("Unpacked shapes-copy.zip").first.wait_for(timeout=60_000)
        wait_for_app_idle(page)
        assert page.get_by_role("button", name="Unpack and use it").count() == 0
        (copy,) = workspace.uploads_dir().glob("shapes-copy-*")  # unpacked once, and active
        assert workspace.active_data_dir().startswith(str(copy))
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path / "export")
    info, predict = open_export(tmp_path / "export")
    assert info.format == "onnx" and info.classes == ["circles", "squares"]
    pixels = load_array(test_photo, info.image_size)[None]
    np.testing.assert_allclose(predict(pixels), Predictor(result.entry).predict_arrays(pixels), atol=1e-4)
