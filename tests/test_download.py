"""core.data.download: which data set is used, and the default one's real download against a local server."""

import functools
import http.server
import threading

import pytest

from core import settings
from core.data.download import resolve_data_dir
from core.data.folders import DatasetError, summarize
from tests.helpers import zip_folder


@pytest.fixture
def local_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_default_data_set_downloads_with_progress(dataset, local_server, monkeypatch):
    served, base = local_server
    (served / "cats_and_dogs_filtered.zip").write_bytes(zip_folder(dataset, prefix="cats_and_dogs_filtered/"))
    monkeypatch.setenv("LITTLE_DATA_DATASET_URL", f"{base}/cats_and_dogs_filtered.zip")
    seen = []
    folder, source = resolve_data_dir(progress=lambda done, total: seen.append((done, total)))
    assert "downloaded" in source
    summary = summarize(folder)
    assert summary.counts()["validation"] == {"circles": 6, "squares": 6}
    assert seen and seen[-1][0] == seen[-1][1] > 0
    # A second resolve uses the unpacked copy without downloading again.
    (served / "cats_and_dogs_filtered.zip").unlink()
    assert resolve_data_dir()[0] == settings.cache_dir() / "datasets" / "cats_and_dogs_filtered"


def test_failed_download_says_what_to_do(local_server, monkeypatch):
    _, base = local_server
    monkeypatch.setenv("LITTLE_DATA_DATASET_URL", f"{base}/missing.zip")
    with pytest.raises(DatasetError, match="LITTLE_DATA_DATA_DIR"):
        resolve_data_dir()


def test_offline_without_download_explains(monkeypatch):
    with pytest.raises(DatasetError, match="upload a zip"):
        resolve_data_dir(download=False)


def test_explicit_setting_wins(dataset, monkeypatch):
    monkeypatch.setenv("LITTLE_DATA_DATA_DIR", str(dataset))
    assert resolve_data_dir()[0] == dataset
