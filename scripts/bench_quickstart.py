"""Times the quick start in a real browser: from the click on "Train my first model" to the first
prediction painted on Predict, on a fresh home (nothing decoded, no features cached).

    python scripts/bench_quickstart.py                      # cats vs dogs from ../shared (2000 + 800 photos)
    python scripts/bench_quickstart.py --per-class 30       # a data set built in the app: 30 photos per class

Needs Debian's chromium and ../shared (or --data-dir with train/ and validation/ of two classes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import browser_page, streamlit_server, wait_for_app_idle  # noqa: E402


def build_small_dataset(home: Path, source: Path, per_class: int) -> Path:
    """A data set made as the app makes one: two classes, `per_class` photos each, split automatically."""
    os.environ["LITTLE_DATA_HOME"] = str(home)
    from core.app import workspace
    from core.data.builder import BuiltDataset

    built = BuiltDataset.create("pets", ["kittens", "puppies"])
    for name, folder in (("kittens", "cats"), ("puppies", "dogs")):
        paths = sorted((source / "train" / folder).glob("*.jpg"))[:per_class]
        built.add_photos(name, [(p.name, p.read_bytes()) for p in paths])
    workspace.set_active_data_dir(built.root)
    return built.root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets" / "cats_vs_dogs"))
    parser.add_argument("--per-class", type=int, help="build a data set of this many photos per class first")
    parser.add_argument("--screenshot", help="PNG of the Predict page at the end")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="little-data-quickstart-"))
    env = {"LITTLE_DATA_HOME": str(home), "LITTLE_DATA_MODELS_DIR": "", "LITTLE_DATA_CACHE_DIR": "",
           "LITTLE_DATA_JOBS_DIR": "", "LITTLE_DATA_DATA_DIR": ""}
    if args.per_class:
        data = build_small_dataset(home, Path(args.data_dir), args.per_class)
    else:
        env["LITTLE_DATA_DATA_DIR"] = args.data_dir
        data = Path(args.data_dir)
    with streamlit_server(env) as (url, _, _), browser_page() as page:
        page.goto(url)
        button = page.get_by_role("button", name="Train my first model")
        button.wait_for(timeout=60_000)
        wait_for_app_idle(page)
        start = time.perf_counter()
        button.click()
        page.get_by_text("Server time").first.wait_for(timeout=600_000)
        seconds = time.perf_counter() - start
        page.wait_for_timeout(500)
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        body = page.inner_text("body")
    job = max((home / "jobs").glob("*/status.json"), key=lambda p: p.stat().st_mtime)
    status = json.loads(job.read_text())
    result = {"data": str(data), "per_class": args.per_class, "click_to_first_prediction_s": round(seconds, 1),
              "worker_s": round(status.get("seconds", 0), 1), "models": status.get("model_ids"),
              "prediction_shown": "Server time" in body}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
