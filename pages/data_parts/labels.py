"""Check the labels: suspect labels found for you, and the unlabelled photos to label next.

Both reviews run as background jobs (`core.experiments.label_review`); these panels start them, show
the kept result, and apply corrections to the app's own data sets with undo.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import streamlit as st

from core.app import jobs
from core.data.builder import BuiltDataset, EditableDataset, editable
from core.data.folders import UNLABELLED, DatasetSummary
from core.data.images import ImageError, thumbnail
from core.experiments.label_next import Suggestion
from core.experiments.label_review import LabelReview, LabelsConfig, LabelTask, load_review, skip_photo, skipped_photos
from core.experiments.suspects import Suspect
from core.serving.model_store import ModelEntry, ModelError, ModelStore
from core.training.loop import TrainConfig
from pages.common import (background_job_ui, grid_cells, heatmap_overlay, latest_models, level_label, start_button_ui,
                          trained_elsewhere)
from pages.corrections import apply_change, undo_ui

WAS_ACTIVE = f"{jobs.JobKind.LABELS.value}_was_active"  # background_job_ui redraws the page when the job ends
SHOWN = 12  # suspects per page of the panel
RETRAIN_EVERY = 10  # labels between offers to retrain


@st.fragment(run_every=1.0)
def labels_job_ui() -> None:
    """A review's progress, or a retraining's started from here (both redraw the page when they end)."""
    background_job_ui(jobs.JobKind.LABELS, "label review", "Cancel", "Cancelling…", "Starting…")
    background_job_ui(jobs.JobKind.TRAIN, "retraining", "Cancel the training", "Cancelling…", "Starting…")


SUSPECTS_PANEL, NEXT_PANEL = "Suspect labels", "Label these next"


def labels_ui(summary: DatasetSummary) -> None:
    """The "Check the labels" section of the Data page: one panel at a time, so only the one in view
    listens to its keyboard shortcuts."""
    st.subheader(":material/fact_check: Check the labels")
    labels_job_ui()
    fixer = editable(summary.root)
    def remember_panel():  # in the address, so a reload or Back returns to the panel in use
        if st.session_state.get("labels_panel") == NEXT_PANEL:
            st.query_params["labels"] = "next"
        else:
            st.query_params.pop("labels", None)

    panel = st.segmented_control(
        "Panel", [SUSPECTS_PANEL, NEXT_PANEL], default=NEXT_PANEL if st.query_params.get("labels") == "next"
        else SUSPECTS_PANEL, key="labels_panel", label_visibility="collapsed", on_change=remember_panel,
        format_func=lambda name: f":material/report: {name}" if name == SUSPECTS_PANEL else
        f":material/label: {name} ({len(summary.unlabelled)} waiting)")
    if panel == NEXT_PANEL:
        label_next_ui(summary, fixer)  # its undo below the photo
    else:
        if fixer is not None:
            undo_ui(fixer, key="undo_labels")  # the suspects' corrections, and their errors
        suspects_ui(summary, fixer)


def _ago(then: float) -> str:
    minutes = (time.time() - then) / 60
    return "just now" if minutes < 1 else f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.0f} h ago"


def _relative(summary, image: str) -> str:
    try:
        return Path(image).resolve().relative_to(Path(summary.root).resolve()).as_posix()
    except ValueError:
        return image


def _busy() -> bool:
    return jobs.active_job() is not None


# --- Suspect labels ------------------------------------------------------------------------------


def suspects_ui(summary: DatasetSummary, fixer: EditableDataset | None) -> None:
    st.caption("Photos whose label the model disbelieves: each photo is judged by classifiers that never saw it "
               "(ten, each trained on the bottleneck features of the other photos), and the photos whose given "
               "class they find least likely come first, with the class they more likely belong to.")
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    split = left.segmented_control("Photos to check", ["train", "validation", "all"], default="train",
                                   key="suspects_split") or "train"
    with right:
        start_button_ui("Find suspect labels", LabelsConfig(LabelTask.SUSPECTS, data_dir=str(summary.root), split=split),
                        "suspects_start", _busy(), WAS_ACTIVE)
    review = load_review(LabelTask.SUSPECTS, summary.root)
    if review is None:
        st.info("No check yet. It takes seconds once the bottleneck features are cached (level 2 caches them), "
                "about a minute per thousand photos before.", icon=":material/info:")
        return
    kept = fixer.kept_labels() if fixer is not None else set()
    suspects = [s for s in review.items if Path(s.image).is_file() and _relative(summary, s.image) not in kept]
    st.markdown(f"**{len(suspects)} suspect label(s)** among the {review.split} photos "
                f"(checked {_ago(review.created)}, in {review.seconds:.0f} s"
                + (f"; {len(review.items) - len(suspects)} fixed or confirmed since" if len(suspects) < len(review.items)
                   else "") + ").")
    if review.fingerprint != summary.fingerprint:
        st.caption(":material/update: The photos have changed since this check; run it again to re-check them all.")
    if not suspects:
        st.success("No suspect labels left.", icon=":material/check_circle:")
        return
    if fixer is None:
        outside_ui(summary, suspects)
    model = _heatmap_model()
    heatmaps = model is not None and st.toggle(
        "Where the model looks", key="suspect_heatmaps",
        help=f"Overlay the Grad-CAM heatmap of {model.id if model else ''} for the class it sees in each photo.")
    shown = st.session_state.get("suspects_shown", SHOWN)
    visible = suspects[:shown]
    for cell, suspect in zip(grid_cells(len(visible), 4), visible):  # most suspect first
        with cell.container(border=True):
            suspect_card_ui(summary, fixer, suspect, model if heatmaps else None)
    if len(suspects) > shown and st.button(f"Show more ({len(suspects) - shown} left)", key="suspects_more"):
        st.session_state["suspects_shown"] = shown + SHOWN
        st.rerun()


#: What a suspect's doubt is, wherever it is shown.
DOUBT_HELP = ("Doubt: 1 minus the probability that classifiers which never saw the photo give its label. "
              "Near 1, they are sure it is another class; on a small data set, a doubt under 0.7 is weak evidence.")


def suspect_card_ui(summary: DatasetSummary, fixer: EditableDataset | None, suspect: Suspect,
                    model: ModelEntry | None) -> None:
    """One suspect: the photo, its label and the likelier class; with `fixer` (a data set of the app's),
    the buttons that fix it."""
    path = Path(suspect.image)
    try:
        st.image(_picture(path, model), width="content")  # a thumbnail: not blown up to a phone's whole width
    except ImageError:
        st.caption(f"{path.name}: unreadable")
    key = _relative(summary, suspect.image)
    st.markdown(f"**{suspect.given}** → looks like **{suspect.suggested}**")
    st.caption(f"`{key}` · doubt {suspect.score:.2f}", help=DOUBT_HELP)
    if fixer is None:
        return
    if st.button(f"Move to {suspect.suggested}", key=f"s_move_{key}", icon=":material/drive_file_move:",
                 type="primary", width="stretch"):
        apply_change(lambda: fixer.move(path, suspect.suggested))
    if st.button("It's right", key=f"s_keep_{key}", icon=":material/check:", width="stretch",
                 help="Keep this label; the photo stops appearing here."):
        apply_change(lambda: fixer.keep_label(path))
    if st.button("Remove", key=f"s_remove_{key}", icon=":material/delete:", width="stretch",
                 help="Take the photo out of the data set (undo brings it back)."):
        apply_change(lambda: fixer.remove(path))


def outside_ui(summary: DatasetSummary, suspects: list[Suspect]) -> None:
    """A data set the app does not edit: the suspects as a list, and how to fix them by hand."""
    st.info(f"This data set lives outside the app's folder (`{summary.root}`), so the app does not change it. "
            "To fix a label, move the photo into the folder of its class yourself, for example "
            f"`mv {_relative(summary, suspects[0].image)} "
            f"{Path(_relative(summary, suspects[0].image)).parent.parent.as_posix()}/{suspects[0].suggested}/`; "
            "to edit it here, upload it as a zip on this page (the app then keeps its own copy).",
            icon=":material/folder_managed:")
    with st.expander(f"All {len(suspects)} as a list, to fix by hand", icon=":material/list:"):
        st.dataframe(pd.DataFrame([{"photo": _relative(summary, s.image), "labelled": s.given, "looks like": s.suggested,
                                    "doubt": round(s.score, 3)} for s in suspects]), hide_index=True, width="stretch",
                     column_config={"doubt": st.column_config.NumberColumn(help=DOUBT_HELP)})


def _heatmap_model() -> ModelEntry | None:
    """The model whose heatmaps explain the suspects: the newest of the best level for these classes."""
    latest = latest_models()
    for level in (3, 2, 1, 0):
        if level in latest:
            return latest[level]
    return None


def _picture(path: Path, model: ModelEntry | None):
    """The photo, with `model`'s heatmap over it when one is given and it can be drawn."""
    if model is not None:
        try:
            return heatmap_overlay(model.id, str(model.model_path), str(path))
        except (ModelError, OSError, ValueError):
            pass  # a model without a heatmap (or gone since): the photo itself
    return thumbnail(path, 240)


# --- Label these next ----------------------------------------------------------------------------


def label_next_ui(summary: DatasetSummary, fixer: EditableDataset | None) -> None:
    review = load_review(LabelTask.SUGGEST, summary.root)
    ranked_photos_ui(summary, fixer, review)
    if fixer is not None and review is not None:
        # Below the photo, also once the last waiting photo has its class: above, the progress and the
        # undo that appear with the first label pushed the photo and its buttons off the screen.
        undo_ui(fixer, key="undo_labels")
        retrain_ui(summary, fixer, review)


def ranked_photos_ui(summary: DatasetSummary, fixer: EditableDataset | None, review: LabelReview | None) -> None:
    """The model to rank with, the ranking job, and the next ranked photo to label."""
    if not summary.unlabelled:
        where = ("Add them with **Add photos without a class** above." if BuiltDataset.is_built(summary.root) else
                 f"Put them in `{Path(summary.root) / UNLABELLED}/` (beside `train/`), then come back.")
        st.info(f"There are no unlabelled photos in this data set. Photos you have not sorted yet can wait there; "
                f"the app then orders them for labelling, one at a time, and retrains when you have given ten. {where}",
                icon=":material/label_off:")
        return
    latest = latest_models()
    if not latest:
        st.info(f"{len(summary.unlabelled)} unlabelled photo(s) wait. To rank them the app needs a model of these "
                "classes: train level 2 on the **Train** page first (seconds on cached features).",
                icon=":material/model_training:")
        return
    by_id = {entry.id: entry for entry in sorted(latest.values(), key=lambda e: (e.level != 2, -e.level))}  # level 2
    # first: it retrains in seconds. The options are the models, not their levels, so that a level 2 retrained
    # after labelling replaces the one shown (options that stay the same keep their old labels on screen).
    model_id = st.selectbox("Rank them with", list(by_id), key="suggest_model",
                            format_func=lambda k: f"{level_label(by_id[k].level)} · {_percent(by_id[k])}")
    entry = by_id[model_id]
    fresh = review is not None and review.model_id == entry.id
    start_button_ui(f"Rank the {len(summary.unlabelled)} unlabelled photos" if not fresh else "Rank them again",
                    LabelsConfig(LabelTask.SUGGEST, data_dir=str(summary.root), model_id=entry.id),
                    "suggest_start", _busy(), WAS_ACTIVE)
    st.caption("Ordered so that every kind of photo ends up near a labelled one, and the class with the fewest "
               "labels gets the next photo: ten shots of one scene do not all come first, and a rare class is "
               "not forgotten. After ten labels, retrain and compare.")
    if review is None:
        return
    skipped = skipped_photos(review)
    pending = [s for s in review.items if Path(s.image).is_file() and s.image not in skipped]
    if fixer is None:
        st.info("This data set lives outside the app's folder, so the app does not move its photos: label these "
                "by moving each into `train/<class>/` yourself, in this order.", icon=":material/folder_managed:")
        st.dataframe(pd.DataFrame([{"photo": _relative(summary, s.image), "model thinks": s.predicted,
                                    "score": round(s.score, 3)} for s in pending]), hide_index=True, width="stretch")
        return
    if pending:
        labelling_ui(summary, fixer, pending[0], len(pending), review)
    else:
        st.success("Every ranked photo is labelled, skipped or removed." + (
            " Rank again to see the skipped ones and any added since." if summary.unlabelled else ""),
                   icon=":material/check_circle:")


def _percent(entry: ModelEntry) -> str:
    if entry.val_accuracy is None:
        return "not scored"
    elsewhere = trained_elsewhere(entry)
    return f"{entry.val_accuracy:.1%} on " + (f"{elsewhere}'s validation photos" if elsewhere else "validation")


def _labels_since(fixer: EditableDataset, since: float) -> int:
    """How many photos were given a class in the app after `since` (undone ones are no longer in the history)."""
    return sum(1 for change in fixer.history() if change.time > since
               and any(source.startswith(f"{UNLABELLED}/") and not target.startswith(".") for source, target in change.renames))


def labelling_ui(summary: DatasetSummary, fixer: EditableDataset, suggestion: Suggestion, left: int,
                 review: LabelReview) -> None:
    """One photo, big, with a button per class (keys 1-9), skip and none of these."""
    path = Path(suggestion.image)
    picture, buttons = st.columns([3, 2], gap="large")
    with picture:
        try:
            st.image(thumbnail(path, 480), width="content")  # big, never blown up past the photo's stored size
        except ImageError:
            st.warning(f"{path.name} cannot be read; skip it or remove it.")
    with buttons:
        # A phone has no keys to press: its buttons lose the key hints (a style alone takes no room).
        st.html("<style>@media (hover: none) {[data-testid='stButton'] kbd {display: none;}}</style>")
        st.markdown(f"**Which class is it?**  \n<small>{left} ranked photo(s) to go · the model thinks "
                    f"**{suggestion.predicted}**</small>", unsafe_allow_html=True)
        for number, class_name in enumerate(summary.classes, start=1):
            shortcut = str(number) if number <= 9 else None  # Streamlit shows the key on the button
            # Every class looks the same: a highlighted guess invites accepting it without looking, and a
            # wrong label costs more than a missing one.
            if st.button(class_name, key=f"label_{path.name}_{class_name}", width="stretch", shortcut=shortcut):
                apply_change(lambda: fixer.label(path, class_name))
        skip, none = st.columns(2)
        if skip.button("Skip", key=f"label_skip_{path.name}", icon=":material/skip_next:", width="stretch",
                       shortcut="s"):
            skip_photo(review, suggestion.image)  # on disk: a reload does not bring it back
            st.rerun()
        if none.button("None of these", key=f"label_none_{path.name}", icon=":material/delete:", width="stretch",
                       help="The photo fits no class: remove it from the data set (undo brings it back)."):
            apply_change(lambda: fixer.remove(path))


def retrain_ui(summary: DatasetSummary, fixer: EditableDataset, review: LabelReview) -> None:
    """After every ten labels: retrain level 2 on them, and the validation accuracy before and after."""
    after = _retrained_model(review)
    before = review.model_accuracy
    ranked_by_level_2 = review.model_level == 2
    if after is not None and after.val_accuracy is not None:
        if before is not None and ranked_by_level_2:
            change = round((after.val_accuracy - before) * 100, 1)
            st.metric("Validation accuracy after your labels", f"{after.val_accuracy:.1%}",
                      f"{change:+.1f} points" if change else "unchanged",
                      delta_arrow="auto" if change else "off", delta_color="normal" if change else "gray",
                      help=f"Both on this data set's validation photos: {review.model_id} ranked the photos and "
                           f"scored {before:.1%}; {after.id} was trained after labelling.")
        else:
            st.metric("Level 2's validation accuracy after your labels", f"{after.val_accuracy:.1%}",
                      help=f"{review.model_id} ranked the photos; {after.id} was trained after labelling.")
        # The photos still waiting were ranked by the model before: the retrained one ranks them here, without
        # going back up to the model picker.
        start_button_ui("Rank again with it", LabelsConfig(LabelTask.SUGGEST, data_dir=str(summary.root),
                                                            model_id=after.id), "suggest_again", _busy(), WAS_ACTIVE)
        st.caption("The photos still waiting were ranked by the model before your labels; the retrained one "
                   "chooses the next ones better.")
    done = _labels_since(fixer, max(review.created, _timestamp(after.card.created) if after else 0.0))
    if done == 0:
        return
    if done < RETRAIN_EVERY:
        st.progress(done / RETRAIN_EVERY, text=f"{done} of {RETRAIN_EVERY} labels before retraining is worth it")
        return
    config = TrainConfig(level=2, backbone=_backbone_of(review), data_dir=str(summary.root))
    st.markdown(f":material/model_training: **{done} new labels.** Retrain level 2 with them (seconds on cached "
                "features) and compare" + (f": the model that ranked them scored {before:.1%}." if before is not None
                                          else "."))
    start_button_ui("Retrain level 2", config, "label_retrain", _busy(), "train_was_active")


def _timestamp(created: str) -> float:
    """A card's ISO creation time in seconds since the epoch (0 when it has none)."""
    try:
        moment = datetime.fromisoformat(created)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _backbone_of(review: LabelReview) -> str | None:
    try:
        return ModelStore().get(review.model_id).card.backbone
    except ModelError:  # the ranking model was deleted since: level 2's default backbone
        return None


def _retrained_model(review: LabelReview) -> ModelEntry | None:
    """The newest level-2 model trained on this data set after the ranking, if any (one trained on another
    folder of the same classes meanwhile is scored on other validation photos: no comparison)."""
    entry = latest_models().get(2)
    if (entry is None or entry.id == review.model_id or _timestamp(entry.card.created) <= review.created
            or not entry.trained_in(review.data_dir)):
        return None
    return entry
