"""Times the Augmentation lab in Chromium, as a person meets it.

1. First visit: seconds from launching `streamlit run app.py` to the lab's grid of variants fully
   painted (every image loaded), opening /augment as the server's first page.
2. A slider change: milliseconds from pressing an arrow key on the rotation slider to the last of
   the new variants painted (every grid image replaced and loaded), over several changes.

    python scripts/bench_augment.py [--changes 10] [--out bench-out/augment.json]

Uses a fresh app home and the data set the app would use (../shared's cats vs dogs here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import browser_page, streamlit_server  # noqa: E402

# Every image of the main area loaded (the original and the variants), and how many there are.
IMAGES_READY = """(count) => {
  const images = [...document.querySelectorAll("[data-testid='stMain'] img")];
  return images.length >= count && images.every(i => i.complete && i.naturalWidth > 0);
}"""
SOURCES = "() => [...document.querySelectorAll(\"[data-testid='stMain'] img\")].map(i => i.src)"
# Every variant replaced (the original's picture stays) and loaded.
VARIANTS_REPLACED = """([old, count]) => {
  const images = [...document.querySelectorAll("[data-testid='stMain'] img")].slice(1);
  return images.length >= count && images.every(i => !old.includes(i.src) && i.complete && i.naturalWidth > 0);
}"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--variants", type=int, default=9)
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)

    home = tempfile.mkdtemp(prefix="little-data-augment-")
    env = {"LITTLE_DATA_HOME": home, "LITTLE_DATA_MODELS_DIR": "", "LITTLE_DATA_CACHE_DIR": "",
           "LITTLE_DATA_JOBS_DIR": ""}
    with browser_page() as page, streamlit_server(env) as (url, _, launched):
        page.goto(f"{url}/augment")
        page.wait_for_function(IMAGES_READY, arg=args.variants + 1, timeout=120_000, polling=20)
        first_visit = time.monotonic() - launched
        page.wait_for_timeout(1000)
        slider = page.get_by_role("slider").first
        changes = []
        for _ in range(args.changes):
            old = page.evaluate(SOURCES)
            slider.focus()
            start = time.perf_counter()
            slider.press("ArrowRight")
            page.wait_for_function(VARIANTS_REPLACED, arg=[old, args.variants], timeout=30_000, polling=10)
            changes.append((time.perf_counter() - start) * 1000)
            page.wait_for_timeout(300)
        rotation = page.get_by_role("slider").first.get_attribute("aria-valuetext")
    result = {"first_visit_s": round(first_visit, 2), "change_ms": [round(c) for c in changes],
              "change_median_ms": round(statistics.median(changes)), "change_worst_ms": round(max(changes)),
              "variants": args.variants, "rotation_after": rotation}
    print(f"first visit to a painted grid: {first_visit:.2f} s after launch; slider change to last variant "
          f"painted: {result['change_median_ms']} ms median, worst {result['change_worst_ms']} ms "
          f"over {len(changes)} changes")
    print(json.dumps(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
