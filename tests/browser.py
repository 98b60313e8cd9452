"""Shared helpers for the real-browser tests: a `streamlit run` server and Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def app_home_env(tmp_path: Path, monkeypatch) -> dict:
    """A fresh app home under `tmp_path`, no shared photos, every folder at its default under it: set here
    (for the test's own setup) and returned for the server."""
    env = {"LITTLE_DATA_HOME": str(tmp_path / "home"), "LITTLE_DATA_SHARED_DIR": str(tmp_path / "no-shared"),
           "LITTLE_DATA_DATA_DIR": "", "LITTLE_DATA_MODELS_DIR": "", "LITTLE_DATA_CACHE_DIR": "",
           "LITTLE_DATA_JOBS_DIR": ""}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict, port: int | None = None, log_path: Path | None = None):
    """Runs `streamlit run app.py` on 127.0.0.1; yields (url, seconds until it answered /healthz, start).

    With `log_path`, the server's output goes to that file (for tests that read it afterwards).
    """
    port = port or free_port()
    start = time.monotonic()
    log = open(log_path, "wb") if log_path is not None else subprocess.PIPE
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else Path(log_path).read_bytes()
                raise RuntimeError(f"streamlit did not start: {output.decode()[-2000:]}")
            time.sleep(0.1)
        yield url, time.monotonic() - start, start
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        if log_path is not None:
            log.close()


# Chromium's built-in fake camera (a moving test pattern), allowed without a prompt.
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@contextmanager
def browser_page(viewport=(1400, 1000), extra_args=(), permissions=None):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(extra_args))
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                      permissions=permissions or [], accept_downloads=True)
        page = context.new_page()
        try:
            yield page
        finally:
            browser.close()


def wait_for_app_idle(page, timeout_ms: int = 60_000) -> None:
    """Waits until Streamlit has finished the script run (no 'Running…' status widget)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    page.wait_for_timeout(300)
