"""Where the data set comes from: an explicit folder, the setting, the offline copy, or the tutorial's
download (Keras' `get_file`, unpacked safely by `core.data.archives`).
"""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Callable

from core import settings
from core.data.archives import extract_zip
from core.data.folders import DatasetError


def default_dataset_dir() -> Path:
    """Where the downloaded default data set lives once unpacked."""
    return settings.cache_dir() / "datasets" / "cats_and_dogs_filtered"


def resolve_data_dir(data_dir: str | Path | None = None, download: bool = True,
                     progress: Callable[[int, int | None], None] | None = None) -> tuple[Path, str]:
    """Picks the data set folder and says where it came from.

    Order: the argument, `LITTLE_DATA_DATA_DIR`, the offline copy in `<shared>/datasets`, an
    earlier download, then (if `download`) the tutorial's data set from `settings.dataset_url()`.

    Returns:
        (folder, source description).
    """
    if data_dir:
        return Path(data_dir).expanduser(), f"local folder {data_dir}"
    explicit = settings.data_dir_setting()
    if explicit:
        return explicit, f"LITTLE_DATA_DATA_DIR={explicit}"
    offline = settings.offline_dataset_dir()
    if offline is not None:
        return offline, "offline copy of Kaggle cats vs dogs (1000+1000 / 400+400)"
    target = default_dataset_dir()
    if target.is_dir():
        return target, f"cats vs dogs downloaded from {settings.dataset_url()}"
    if not download:
        raise DatasetError(
            "No data set here yet. Download the default (needs internet), set LITTLE_DATA_DATA_DIR "
            "or pass --data-dir to a folder with train/<class>/ and validation/<class>/, or upload a zip.")
    return download_default_dataset(progress=progress), f"cats vs dogs downloaded from {settings.dataset_url()}"


def download_default_dataset(progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Downloads the tutorial's data set with `keras.utils.get_file` and unpacks it safely.

    Args:
        progress: called with (bytes so far, total bytes or None) while downloading.

    Raises:
        DatasetError: the download failed (offline, say), with what to do instead.
    """
    import keras  # heavy; only needed here

    url = settings.dataset_url()
    downloads = settings.cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    fname = Path(url.split("?")[0]).name or "dataset.zip"
    total = _content_length(url)
    result: dict = {}

    def fetch():
        try:
            result["path"] = keras.utils.get_file(fname=fname, origin=url, cache_dir=str(downloads),
                                                  cache_subdir="")
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.25)
        if progress is not None:
            partial = downloads / fname
            progress(partial.stat().st_size if partial.exists() else 0, total)
    if "error" in result:
        raise DatasetError(
            f"Could not download the default data set from {url} ({result['error']}). Without "
            "internet, point LITTLE_DATA_DATA_DIR (or --data-dir) at a local folder with "
            "train/<class>/ and validation/<class>/, or upload a zip of one.") from result["error"]
    if progress is not None:
        size = Path(result["path"]).stat().st_size
        progress(size, size)
    target = default_dataset_dir()
    extract_zip(result["path"], target)
    return target


def _content_length(url: str) -> int | None:
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http(s) only
            return int(response.headers.get("Content-Length") or 0) or None
    except Exception:  # noqa: BLE001 - the size is a nicety for the progress bar
        return None
