"""Many people at once: N browser sessions upload a photo to Predict (or Join) at the same moment.

    LITTLE_DATA_MODELS_DIR=bench-out/s4/models python scripts/bench_load.py --sessions 8 --rounds 3
    python scripts/bench_load.py --sessions 16 --device "Pixel 7" --page join   # an audience of phones

One `streamlit run app.py` server, one headless Chromium (Playwright, one process) with N separate
browser contexts (N sessions, as N people). Each round opens Predict in every session, then sets
the photo in all of them back to back and waits for every result. Reported: the server time each
page shows (decoding and every level, as `scripts/bench_app.py`), the browser time from upload to
the painted result, errors (exceptions shown, or no result within the timeout), and the server
process's resident memory, sampled every 0.2 s. The first round loads the models and is reported
apart from the warm rounds.

`--page join` opens the audience's page instead (a fresh session each round, as a phone scanning
the code); `--device` gives every context one of Playwright's device descriptors (viewport, touch,
user agent). Each round waits until every page has finished its script run (Join computes the
heatmaps after the answer) before the next starts, so rounds do not overlap.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402


def _server_process():
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            if "streamlit" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise RuntimeError("the streamlit server process was not found")


class MemorySampler(threading.Thread):
    def __init__(self, process):
        super().__init__(daemon=True)
        self.process, self.samples, self.running = process, [], True

    def run(self):
        while self.running:
            try:
                self.samples.append(self.process.memory_info().rss / 2**20)
            except Exception:  # noqa: BLE001 - the server ended
                return
            time.sleep(0.2)


READY = {"predict": "Add a photo above", "join": "What do the models see?"}
#: What a page shows once everything it does for a photo is done (Join: the heatmaps, after the answers).
DONE = {"predict": None, "join": "Where each level looks"}


def run_round(pages, url: str, photo: Path, timeout_ms: int, page_name: str = "predict") -> list[dict]:
    from tests.browser import wait_for_app_idle

    for page in pages:
        page.goto(f"{url}/{page_name}")
    for page in pages:
        page.get_by_text(READY[page_name]).first.wait_for(timeout=120_000)
    started = []
    for page in pages:  # back to back: every session's upload reaches the server within a few ms
        started.append(time.monotonic())
        page.locator("[data-testid='stFileUploaderDropzone'] input[type='file']").set_input_files(str(photo))
    results = []
    for page, t0 in zip(pages, started):
        caption = page.get_by_text(re.compile(r"Server time: \d+ ms")).first
        try:
            caption.wait_for(timeout=timeout_ms)
            browser_ms = (time.monotonic() - t0) * 1000
            match = re.search(r"Server time: (\d+) ms", caption.inner_text())
            error = page.locator("[data-testid='stException']").count() > 0
            results.append({"server_ms": int(match.group(1)), "browser_ms": browser_ms, "error": error})
        except Exception as exc:  # noqa: BLE001 - a session that never got its answer is an error
            results.append({"server_ms": None, "browser_ms": None, "error": f"{type(exc).__name__}"})
    for page in pages:  # the next round starts once every script run (heatmaps included) has ended
        try:
            if DONE[page_name]:
                page.get_by_text(DONE[page_name]).first.wait_for(timeout=timeout_ms)
            wait_for_app_idle(page, timeout_ms)
        except Exception:  # noqa: BLE001 - already counted if it had no answer
            pass
    return results


def summary(rows: list[dict]) -> dict:
    server = [r["server_ms"] for r in rows if r["server_ms"] is not None]
    browser = [r["browser_ms"] for r in rows if r["browser_ms"] is not None]
    return {"uploads": len(rows), "errors": sum(1 for r in rows if r["error"]),
            "server_ms_median": statistics.median(server) if server else None,
            "server_ms_worst": max(server) if server else None,
            "browser_ms_median": round(statistics.median(browser)) if browser else None,
            "browser_ms_worst": round(max(browser)) if browser else None}


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    from core.data.download import resolve_data_dir
    from core.data.folders import summarize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="rounds after the first (cold) one")
    parser.add_argument("--photo", help="the photo to upload (default: the first validation photo)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a session may wait for its result")
    parser.add_argument("--page", choices=sorted(READY), default="predict", help="the page every session uses")
    parser.add_argument("--device", help="a Playwright device descriptor for every session, e.g. \"Pixel 7\"")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    photo = Path(args.photo) if args.photo else summarize(resolve_data_dir()[0]).files["validation"][0][0]
    with streamlit_server({}) as (url, _, _), sync_playwright() as playwright:
        sampler = MemorySampler(_server_process())
        sampler.start()
        idle_mb = None
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = playwright.devices[args.device] if args.device else {"viewport": {"width": 1200, "height": 900}}
        pages = [browser.new_context(**context).new_page() for _ in range(args.sessions)]
        pages[0].goto(url)
        pages[0].get_by_text("How to use it").first.wait_for(timeout=60_000)
        idle_mb = sampler.samples[-1] if sampler.samples else None
        cold = run_round(pages, url, photo, int(args.timeout * 1000), args.page)
        warm = []
        for _ in range(args.rounds):
            warm += run_round(pages, url, photo, int(args.timeout * 1000), args.page)
        sampler.running = False
        browser.close()
    report = {"sessions": args.sessions, "rounds": args.rounds, "photo": str(photo), "page": args.page,
              "device": args.device,
              "cold_round": summary(cold), "warm": summary(warm),
              "server_rss_mb_after_start": round(idle_mb, 1) if idle_mb else None,
              "server_rss_mb_peak": round(max(sampler.samples), 1) if sampler.samples else None}
    w = report["warm"]
    print(f"{args.sessions} sessions on {args.page}{' (' + args.device + ')' if args.device else ''} x "
          f"{args.rounds} warm rounds: server time median {w['server_ms_median']} ms, "
          f"worst {w['server_ms_worst']} ms; upload to painted result median {w['browser_ms_median']} ms, worst "
          f"{w['browser_ms_worst']} ms; errors {w['errors'] + report['cold_round']['errors']}; server memory "
          f"{report['server_rss_mb_after_start']} MB after start, peak {report['server_rss_mb_peak']} MB")
    print(f"cold round (models loading): {json.dumps(report['cold_round'])}")
    if args.json:
        print(json.dumps(report))
    return 0 if not (w["errors"] or report["cold_round"]["errors"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
