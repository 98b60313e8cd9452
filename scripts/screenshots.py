"""Screenshots of the app for the README and for looking at what we built.

    LITTLE_DATA_MODELS_DIR=<trained levels> python scripts/screenshots.py --out docs/images \
        --photo ../shared/datasets/cats_vs_dogs/validation/dogs/dog.4001.jpg

Starts `streamlit run app.py` with the current settings, opens the Overview, Predict (with the
photo uploaded, "Where it looks" on) and Curves & comparison in headless Chromium at desktop
size, and Predict at phone size (Pixel 7), and writes one PNG per view; with `--stranger`, Predict
on a photo of something else too. With `--present`: every slide of Present at 1920x1080
(present-01.png, ...), Join on a Pixel 7 after sending the photo (join-phone.png), and the wall
slide with that photo on it (present-wall.png). With `--train`: the Train page at level 0's and level 3's cards
(desktop and phone) and How little data's chart. With `--labels`: builds a data set in the app from
the flowers (`label_demo`: 20 photos a class, three more filed in the wrong class, 40 without a class),
trains level 2 on it, runs both label reviews, then the Data page's "Suspect labels" and "Label
these next" panels (desktop and phone).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import browser_page, streamlit_server, wait_for_app_idle  # noqa: E402


def predict_view(page, url: str, photo: Path, heatmaps: bool) -> None:
    page.goto(f"{url}/predict")
    page.get_by_role("heading", name="Predict", exact=True).first.wait_for(timeout=120_000)
    wait_for_app_idle(page, 120_000)
    if heatmaps:
        page.get_by_text("Where it looks", exact=True).first.click()
        wait_for_app_idle(page, 120_000)
    page.locator("input[type='file']").first.set_input_files(str(photo))
    page.get_by_text("Server time").first.wait_for(timeout=120_000)
    wait_for_app_idle(page, 120_000)


def present_views(url: str, out: Path, photo: Path, stranger: Path | None) -> None:
    """Each slide at projector size, then a phone joining and the wall with its photos."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        presenter = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
        presenter.goto(f"{url}/present?slide=1")
        presenter.get_by_text("Slide 1 of").first.wait_for(timeout=120_000)
        count = int(presenter.get_by_text("Slide 1 of").first.inner_text().split(" of ")[1].split()[0])
        for number in range(1, count):
            presenter.goto(f"{url}/present?slide={number}")
            presenter.get_by_text(f"Slide {number} of").first.wait_for(timeout=120_000)
            presenter.get_by_text("Presenter notes").first.wait_for(timeout=180_000)  # drawn after the slide
            wait_for_app_idle(presenter, 180_000)
            presenter.screenshot(path=str(out / f"present-{number:02d}.png"))
        phone = browser.new_context(**playwright.devices["Pixel 7"]).new_page()
        for sent in [photo, *([stranger] if stranger else [])]:
            phone.goto(f"{url}/join")
            phone.get_by_text("What do the models see?").first.wait_for(timeout=120_000)
            phone.locator("input[type='file']").first.set_input_files(str(sent))
            phone.get_by_text("Server time").first.wait_for(timeout=120_000)
            wait_for_app_idle(phone, 180_000)
        phone.screenshot(path=str(out / "join-phone.png"))  # what the phone shows without scrolling
        phone.set_viewport_size({"width": 412, "height": 2600})  # the page scrolls inside Streamlit's container
        wait_for_app_idle(phone, 60_000)
        phone.screenshot(path=str(out / "join-phone-whole.png"))
        presenter.goto(f"{url}/present?slide={count}")
        presenter.get_by_text("on the wall").first.wait_for(timeout=120_000)
        wait_for_app_idle(presenter, 120_000)
        presenter.screenshot(path=str(out / f"present-{count:02d}-wall.png"))
        browser.close()


def train_views(url: str, out: Path, width: int) -> None:
    """The Train page scrolled to level 0's and level 3's cards (desktop and phone), and How little data's chart."""
    for level, heading in ((0, "Level 0 · no training"), (3, "Level 3 · fine-tuning")):
        for name, viewport in ((f"train-level{level}.png", (width, 1100)), (f"train-level{level}-phone.png", (412, 915))):
            with browser_page(viewport=viewport) as page:
                page.goto(f"{url}/train")
                page.get_by_role("heading", name=heading).first.wait_for(timeout=120_000)
                wait_for_app_idle(page, 120_000)
                page.get_by_role("heading", name=heading).first.scroll_into_view_if_needed()
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / name))
    with browser_page(viewport=(width, 1000)) as page:
        page.goto(f"{url}/efficiency")
        page.get_by_role("heading", name="How little data", exact=False).first.wait_for(timeout=120_000)
        wait_for_app_idle(page, 120_000)
        page.screenshot(path=str(out / "efficiency.png"), full_page=True)


def label_demo(flowers: Path, per_class: int = 20, wrong: int = 3, unlabelled: int = 40) -> Path:
    """A data set built in the app from the flowers, with `wrong` labels swapped and photos without a
    class; level 2 trained on it and both reviews run, as a person would in the app. Its folder."""
    from core.app import workspace
    from core.data.builder import BuiltDataset
    from core.data.folders import summarize
    from core.experiments.label_review import LabelsConfig, LabelTask, run_label_review
    from core.training.loop import TrainConfig, train

    source = summarize(flowers)
    classes = list(source.classes)
    built = BuiltDataset.create("Flowers (label demo)", classes, validation_fraction=0.25)
    by_class = {c: [p for p, label in source.files["train"] if classes[label] == c] for c in classes}
    for number, class_name in enumerate(classes):
        photos = by_class[class_name][:per_class]
        if number < wrong:  # the next class's first photo, filed here by mistake
            photos = photos + [by_class[classes[number + 1]][per_class]]
        built.add_photos(class_name, [(p.name, p.read_bytes()) for p in photos])
    pool = [p for c in classes for p in by_class[c][per_class + 1:per_class + 1 + unlabelled // len(classes)]]
    built.add_unlabelled([(p.name, p.read_bytes()) for p in pool])
    workspace.set_active_data_dir(built.root)
    result = train(TrainConfig(level=2, data_dir=str(built.root)))
    run_label_review(LabelsConfig(LabelTask.SUSPECTS, data_dir=str(built.root)))
    run_label_review(LabelsConfig(LabelTask.SUGGEST, data_dir=str(built.root), model_id=result.entry.id))
    return built.root


def labels_views(url: str, out: Path, width: int) -> None:
    """The Data page's two label panels, at desktop and phone size."""
    for suffix, viewport in (("", (width, 1100)), ("-phone", (412, 915))):
        with browser_page(viewport=viewport) as page:
            page.goto(f"{url}/data")
            heading = page.get_by_role("heading", name="Check the labels").first
            heading.wait_for(timeout=120_000)
            wait_for_app_idle(page, 120_000)
            heading.evaluate("element => element.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / f"data-suspects{suffix}.png"))
            page.locator("button", has_text="Label these next").first.click()
            wait_for_app_idle(page, 120_000)
            page.get_by_text("Which class is it?").first.wait_for(timeout=60_000)
            page.get_by_role("heading", name="Check the labels").first.evaluate(
                "element => element.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / f"data-label-next{suffix}.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs")
    parser.add_argument("--photo", required=True, help="the photo uploaded on Predict")
    parser.add_argument("--stranger", help="a photo of something else, for Predict's refusal (predict-stranger.png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--present", action="store_true", help="only the Present slides, Join and the wall")
    parser.add_argument("--train", action="store_true",
                        help="only the Train page's level-0 and level-3 cards (desktop, phone) and How little data's chart")
    parser.add_argument("--labels", metavar="FLOWERS",
                        help="only the Data page's label panels, on a data set built from this flowers folder")
    parser.add_argument("--keep-demo", action="store_true", help="with --labels: the demo data set built before")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.labels:
        if not args.keep_demo:
            label_demo(Path(args.labels))
        with streamlit_server({}) as (url, _, _):
            labels_views(url, out, args.width)
        for path in sorted(out.glob("data-*.png")):
            print(path)
        return 0
    if args.train:
        with streamlit_server({}) as (url, _, _):
            train_views(url, out, args.width)
        for path in sorted(out.glob("train-level*.png")) + [out / "efficiency.png"]:
            print(path)
        return 0
    if args.present:
        with streamlit_server({}) as (url, _, _):
            present_views(url, out, Path(args.photo), Path(args.stranger) if args.stranger else None)
        for path in sorted(out.glob("present*.png")) + sorted(out.glob("join*.png")):
            print(path)
        return 0
    with streamlit_server({}) as (url, _, _):
        with browser_page(viewport=(args.width, 900)) as page:
            page.goto(url)
            page.get_by_text("How to use it").first.wait_for(timeout=120_000)
            wait_for_app_idle(page, 120_000)
            page.screenshot(path=str(out / "overview.png"))
            predict_view(page, url, Path(args.photo), heatmaps=True)
            page.screenshot(path=str(out / "predict.png"), full_page=True)
            if args.stranger:
                predict_view(page, url, Path(args.stranger), heatmaps=False)
                page.screenshot(path=str(out / "predict-stranger.png"), full_page=True)
            page.goto(f"{url}/curves")
            page.get_by_role("heading", name="Curves & comparison", exact=True).first.wait_for(timeout=120_000)
            wait_for_app_idle(page, 120_000)
            page.screenshot(path=str(out / "curves.png"), full_page=True)
        with browser_page(viewport=(412, 915)) as page:
            predict_view(page, url, Path(args.photo), heatmaps=False)
            page.screenshot(path=str(out / "predict-phone.png"), full_page=True)
    for path in sorted(out.glob("*.png")):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
