"""Measures the app as a person meets it, in headless Chromium against `streamlit run app.py`.

1. Start-up: seconds from launching `streamlit run app.py` to the first page being usable in the
   browser (the Overview's content drawn), over several cold starts.
2. Predict: one uploaded photo through every trained level, warm. Reports the server time the
   page measures (decoding + every model) and the browser's time from upload to the drawn result;
   with --heatmaps, with "Where it looks" on (each level's Grad-CAM heatmap as well).

Usage: python scripts/bench_app.py [--photo PATH] [--starts 3] [--uploads 5] [--heatmaps] [--out bench-out/app.json]
Uses the app's normal settings (LITTLE_DATA_HOME etc.), so train the levels first to time them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import browser_page, streamlit_server  # noqa: E402


def measure_startups(n: int) -> list[float]:
    times = []
    with browser_page() as page:  # the browser is already open, as a user's would be
        for _ in range(n):
            with streamlit_server({}) as (url, _, started):
                page.goto(url)
                page.get_by_text("How to use it").first.wait_for(timeout=60_000)
                times.append(time.monotonic() - started)
    return times


def measure_predict(photo: Path, uploads: int, heatmaps: bool = False) -> dict:
    server_ms, browser_ms, levels = [], [], None
    with streamlit_server({}) as (url, _, _), browser_page() as page:
        for i in range(uploads + 1):  # the first upload warms the models up
            page.goto(f"{url}/predict")  # a fresh session; the server keeps the models loaded
            page.get_by_text("Add a photo above").first.wait_for(timeout=60_000)
            if heatmaps:
                page.get_by_text("Where it looks").first.click()
                page.wait_for_timeout(1500)
            uploader = page.locator("[data-testid='stFileUploaderDropzone'] input[type='file']")
            start = time.monotonic()
            uploader.set_input_files(str(photo))
            caption = page.get_by_text(re.compile(r"Server time: \d+ ms")).first
            caption.wait_for(timeout=120_000)
            elapsed = (time.monotonic() - start) * 1000
            match = re.search(r"Server time: (\d+) ms for decoding and (\d+) model", caption.inner_text())
            if i:
                server_ms.append(int(match.group(1)))
                browser_ms.append(elapsed)
            levels = int(match.group(2))
    return {"models": levels, "heatmaps": heatmaps, "server_ms": server_ms,
            "server_ms_median": statistics.median(server_ms), "server_ms_worst": max(server_ms),
            "browser_ms_median": statistics.median(browser_ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, help="photo to upload (default: a validation photo of the data set)")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--heatmaps", action="store_true", help='turn on "Where it looks" (Grad-CAM) first')
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "app.json")
    args = parser.parse_args()
    if args.photo is None:
        from core.data.download import resolve_data_dir
        from core.data.folders import summarize

        folder, _ = resolve_data_dir(download=False)
        args.photo = summarize(folder).files["validation"][0][0]
    startups = measure_startups(args.starts)
    print(f"start-up to first usable page: {', '.join(f'{t:.2f}s' for t in startups)} "
          f"(median {statistics.median(startups):.2f}s)")
    predict = measure_predict(args.photo, args.uploads, args.heatmaps)
    print(f"predict, {predict['models']} model(s){' with heatmaps' if args.heatmaps else ''}, warm: server "
          f"{predict['server_ms_median']:.0f} ms median, worst {predict['server_ms_worst']:.0f} "
          f"({predict['server_ms']}), browser upload-to-result {predict['browser_ms_median']:.0f} ms median")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"startup_s": startups, "predict": predict, "photo": str(args.photo)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
