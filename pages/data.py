"""Data: which data set is in use, what is in it, and how to bring another."""

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core import settings
from core.app import workspace
from core.data.builder import BuiltDataset, built_datasets
from core.data.folders import DatasetError, sample_paths, summarize
from core.data.download import download_default_dataset
from core.data.images import ImageError, thumbnail
from pages.common import IMAGE_TYPES, current_summary, ensure_app_shell, grid_cells, page_header, photo_upload_mb
from pages.data_parts.labels import labels_ui


@st.cache_data(max_entries=256, show_spinner=False)
def _thumb(path: str, mtime: float):
    try:
        return thumbnail(path, 160)
    except ImageError:
        return None


def summary_ui(summary):
    counts = pd.DataFrame(summary.counts()).T
    counts["total"] = counts.sum(axis=1)
    left, right = st.columns([2, 3])
    with left:
        st.markdown(f"**Folder:** `{summary.root}`  \n**Source:** {summary.source}  \n"
                    f"**Fingerprint:** `{summary.fingerprint}`")
        st.dataframe(counts, width="stretch")
    with right:
        if summary.unreadable:
            with st.expander(f":material/warning: {len(summary.unreadable)} unreadable file(s) — skipped", expanded=True):
                st.dataframe(pd.DataFrame(summary.unreadable, columns=["file", "why"]), hide_index=True,
                             width="stretch")
        else:
            st.success("Every image file can be read.")
        if summary.ignored:
            st.caption(f"{len(summary.ignored)} non-image file(s) ignored, e.g. `{summary.ignored[0]}`.")


def thumbnails_ui(summary):
    st.subheader("Samples")
    seed = st.session_state.get("thumb_seed", 0)
    if st.button("Show other samples", icon=":material/shuffle:"):
        st.session_state["thumb_seed"] = seed = seed + 1
    paths = sample_paths(summary, split="train", per_class=6, seed=seed)
    for name in summary.classes:
        st.markdown(f"**{name}**")
        class_paths = [p for p in paths if Path(p).parent.name == name]
        for column, path in zip(grid_cells(len(class_paths), 6, key=f"samples-{name}", phone_columns=3), class_paths):
            image = _thumb(str(path), Path(path).stat().st_mtime)
            if image is not None:
                column.image(image, caption=Path(path).name, width="stretch")


def sources_ui(summary):
    st.subheader("Use another data set")
    tab_new, tab_default, tab_folder, tab_zip = st.tabs(["Build your own", "Cats vs dogs (default)",
                                                         "A folder on this machine", "Upload a zip"])
    with tab_new:
        create_ui()
    with tab_default:
        offline = settings.offline_dataset_dir()
        st.markdown("The tutorial's photos: 1000 cats and 1000 dogs to train, validation photos to check.")
        if offline is not None:
            st.caption(f"An offline copy is available at `{offline}`.")
        if st.button("Use cats vs dogs", key="use_default"):
            workspace.set_active_data_dir(None)
            try:
                from core.data.download import resolve_data_dir

                resolve_data_dir(download=False)
                st.rerun()
            except DatasetError:
                download_ui()
    with tab_folder:
        folder = st.text_input("Folder with train/<class>/ and validation/<class>/", placeholder="/data/my_pets")
        if st.button("Use this folder", disabled=not folder):
            try:
                summarize(folder)
                workspace.set_active_data_dir(Path(folder).expanduser())
                st.rerun()
            except DatasetError as exc:
                st.error(f"That folder cannot be used: {exc}")
    with tab_zip:
        st.caption(f"A zip holding `train/<class>/…` and `validation/<class>/…` (one top folder around them is fine). "
                   f"Limits: {settings.max_zip_bytes() // 2**20} MB unpacked, {settings.MAX_ZIP_FILES} files.")
        upload = st.file_uploader("Data-set zip", type=["zip"], key=f"zip_upload_{_nonce('zip_upload')}")
        if upload is not None and st.button("Unpack and use it"):
            try:
                with st.spinner("Unpacking safely…"):
                    root = workspace.install_uploaded_zip(upload.getvalue(), upload.name)
                _bump("zip_upload")  # the zip leaves the uploader: a second click would unpack a second copy
                st.session_state["zip_unpacked"] = f"Unpacked {upload.name} to `{root}`; it is now the active data set."
                st.rerun()
            except DatasetError as exc:
                st.error(f"{upload.name} cannot be used: {exc}")


def create_ui():
    """A new data set: a name and two or more classes; photos are added afterwards."""
    st.markdown("Name your classes, then add photos to each: files or camera shots. A share of each class's "
                "photos is kept aside for validation, automatically.")
    with st.form("new_dataset", border=False):
        name = st.text_input("Name", placeholder="My houseplants")
        classes = st.text_area("Classes, one per line (two or more)", placeholder="healthy\nthirsty", height=100)
        fraction = st.slider("Kept for validation", 0.1, 0.4, 0.2, 0.05,
                             help="This share of each class's photos is only used to check models, never to train them.")
        if st.form_submit_button("Create data set", type="primary", icon=":material/add:"):
            try:
                built = BuiltDataset.create(name, classes.splitlines(), validation_fraction=fraction)
                workspace.set_active_data_dir(built.root)
                st.rerun()
            except DatasetError as exc:
                st.error(str(exc))
    others = built_datasets()
    if others:
        choice = st.selectbox("Or open one built before", [None] + others, format_func=lambda d: "…" if d is None else
                              f"{d.name} ({', '.join(d.classes)})", key="open_built")
        if choice is not None and st.button("Open it"):
            workspace.set_active_data_dir(choice.root)
            st.rerun()


def _nonce(key: str) -> int:
    return st.session_state.setdefault(key, 0)


def _bump(key: str) -> None:
    st.session_state[key] = _nonce(key) + 1  # a new widget key empties the uploader / camera


def _report(report, where: str) -> None:
    """Keeps an upload's outcome for the next run: `where` the photos went ("to cats", "without a class")."""
    if report.added:
        st.session_state["builder_message"] = ("success", f"Added {len(report.added)} photo(s) {where}.")
    if report.skipped:
        lines = "\n".join(f"- **{name}**: {reason}" for name, reason in report.skipped)
        st.session_state["builder_skipped"] = f"{len(report.skipped)} photo(s) not added:\n{lines}"


def builder_ui(built: BuiltDataset):
    """Add photos by upload or camera, see counts, move or delete photos, undo, download."""
    st.subheader(f":material/construction: {built.name}")
    counts = built.counts()
    table = pd.DataFrame(counts).T
    table["total"] = table.sum(axis=1)
    left, right = st.columns([2, 3])
    with left:
        st.dataframe(table, width="stretch")
        st.caption(f"Validation: {built.validation_fraction:.0%} of each class, chosen at random (seeded) as photos "
                   "arrive; photos already placed never move. At most "
                   f"{settings.max_photos_per_class()} photos per class, {settings.max_upload_bytes() // 2**20} MB per photo.")
        for problem in built.problems():
            st.warning(problem, icon=":material/add_a_photo:")
    with right:
        kind, message = st.session_state.pop("builder_message", (None, None))
        if message:
            getattr(st, kind)(message)
        skipped = st.session_state.pop("builder_skipped", None)
        if skipped:
            st.error(skipped, icon=":material/broken_image:")
        class_name = st.segmented_control("Add photos to", built.classes, default=built.classes[0], key="builder_class")
        if class_name is None:
            class_name = built.classes[0]
        tab_files, tab_camera, tab_unlabelled = st.tabs([":material/upload: Upload", ":material/photo_camera: Camera",
                                                         ":material/label_off: Add photos without a class"])
        with tab_files:
            files = st.file_uploader(f"Photos of {class_name}", type=IMAGE_TYPES, accept_multiple_files=True,
                                     key=f"builder_files_{_nonce('builder_files')}", max_upload_size=photo_upload_mb())
            if files and st.button(f"Add {len(files)} photo(s) to {class_name}", type="primary",
                                   icon=":material/add_photo_alternate:"):
                with st.spinner("Checking and storing the photos…"):
                    report = built.add_photos(class_name, [(f.name, f.getvalue()) for f in files])
                _report(report, f"to {class_name}")
                _bump("builder_files")
                st.rerun()
        with tab_camera:
            shot = st.camera_input(f"A shot of {class_name}: each one is added at once",
                                   key=f"builder_camera_{_nonce('builder_camera')}")
            if shot is not None:
                report = built.add_photos(class_name, [(f"camera-{time.strftime('%H%M%S')}.jpg", shot.getvalue())])
                _report(report, f"to {class_name}")
                _bump("builder_camera")
                st.rerun()
        with tab_unlabelled:
            unlabelled_upload_ui(built)
    photos_ui(built)
    with st.expander("Classes, split and download"):
        c1, c2 = st.columns(2)
        with c1:
            new_class = st.text_input("Add a class", key="builder_new_class")
            if st.button("Add class", disabled=not new_class.strip()):
                try:
                    built.add_class(new_class)
                    st.rerun()
                except DatasetError as exc:
                    st.error(str(exc))
            fraction = st.slider("Kept for validation", 0.1, 0.4, built.validation_fraction, 0.05, key="builder_fraction")
            if fraction != built.validation_fraction and st.button("Apply (moves the fewest photos)"):
                built.set_validation_fraction(fraction)
                st.rerun()
        with c2:
            st.caption("The photos as a zip in the layout the zip upload accepts (`train/<class>/`, "
                       "`validation/<class>/`, and `unlabelled/` for photos without a class).")
            if st.button("Prepare the zip", icon=":material/folder_zip:"):
                st.session_state["builder_zip"] = (str(built.root), built.zip_bytes())
            prepared = st.session_state.get("builder_zip")
            if prepared and prepared[0] == str(built.root):
                st.download_button(f"Download ({len(prepared[1]) / 2**20:.1f} MB)", prepared[1],
                                   file_name=f"{built.root.name}.zip", mime="application/zip",
                                   icon=":material/download:")


def unlabelled_upload_ui(built: BuiltDataset) -> None:
    """Photos not sorted yet: they wait in `unlabelled/` until "Label these next" asks for their class."""
    st.caption(f"{len(built.unlabelled())} photo(s) wait for a class. **Label these next** (below) orders them for "
               "labelling and shows them one at a time.")
    files = st.file_uploader("Photos without a class", type=IMAGE_TYPES, accept_multiple_files=True,
                             key=f"builder_unlabelled_{_nonce('builder_unlabelled')}", max_upload_size=photo_upload_mb())
    if files and st.button(f"Add {len(files)} photo(s) without a class", type="primary", icon=":material/add_photo_alternate:"):
        with st.spinner("Checking and storing the photos…"):
            report = built.add_unlabelled([(f.name, f.getvalue()) for f in files])
        _report(report, "without a class")
        _bump("builder_unlabelled")
        st.rerun()


def photos_ui(built: BuiltDataset, per_class: int = 18):
    """Each class's newest photos, with move and delete; the last change can be undone."""
    last = built.last_change()
    if last is not None:
        left, right = st.columns([5, 1])
        left.caption(f":material/history: Last change: {last.description}.")
        if right.button("Undo", icon=":material/undo:", key="builder_undo"):
            built.undo()
            st.rerun()
    tabs = st.tabs([f"{c} ({sum(n.values())})" for c, n in built.counts().items()])
    for tab, class_name in zip(tabs, built.classes):
        with tab:
            photos = sorted([(p, s) for s in ("train", "validation") for p in built.photos(class_name, s)],
                            key=lambda item: item[0].stat().st_mtime, reverse=True)
            if not photos:
                st.caption("No photos yet.")
                continue
            if len(photos) > per_class:
                st.caption(f"The newest {per_class} of {len(photos)}.")
            shown = photos[:per_class]
            for column, (path, split) in zip(grid_cells(len(shown), 6, key=f"built-{class_name}", phone_columns=3),
                                             shown):
                image = _thumb(str(path), path.stat().st_mtime)
                if image is not None:
                    column.image(image, width="stretch", caption=f"{split} · {path.name[:8]}")
                with column.popover("Edit", icon=":material/edit:", width="stretch"):
                    for other in built.classes:
                        if other != class_name and st.button(f"Move to {other}", key=f"bmove_{path}_{other}"):
                            built.move(path, other)
                            st.rerun()
                    if st.button("Delete", key=f"bdelete_{path}", icon=":material/delete:"):
                        built.remove(path)
                        st.rerun()


def download_ui():
    bar = st.progress(0.0, text=f"Downloading {settings.dataset_url()} …")

    def progress(done, total):
        fraction = min(done / total, 1.0) if total else 0.0
        bar.progress(fraction, text=f"Downloading… {done / 2**20:.1f} MB" + (f" of {total / 2**20:.1f} MB" if total else ""))

    try:
        download_default_dataset(progress=progress)
        bar.progress(1.0, text="Downloaded and unpacked.")
        st.rerun()
    except DatasetError as exc:
        bar.empty()
        st.error(str(exc))


def main():
    page_header("Data", "The photos every level learns from. Training uses `train/`; `validation/` is only looked at, "
                        "to tell how well a model does on pictures it never learned from.")
    unpacked = st.session_state.pop("zip_unpacked", None)
    if unpacked:  # said at the top after the rerun that made it active (its tab below is no longer the open one)
        st.success(unpacked, icon=":material/folder_zip:")
        st.toast(unpacked, icon=":material/folder_zip:")  # the page stays scrolled down at the uploader
    summary, folder, error = current_summary()
    active = workspace.active_data_dir()
    if active and BuiltDataset.is_built(active):
        try:
            builder_ui(BuiltDataset(active))
        except DatasetError as exc:
            st.error(str(exc))
        if summary is not None:
            st.success(f"Ready to train: {len(summary.classes)} classes. Fingerprint `{summary.fingerprint}`.",
                       icon=":material/check_circle:")
            labels_ui(summary)
        sources_ui(summary)
        return
    if summary is None:
        if folder is None:
            st.info("No data set is available yet. Download the tutorial's cats vs dogs below (needs internet), "
                    "point to a folder on this machine, or upload a zip. Offline, set `LITTLE_DATA_DATA_DIR` to a "
                    "local folder before starting the app.")
            if st.button("Download cats vs dogs (68 MB)", type="primary"):
                download_ui()
        else:
            st.error(f"The active data set at `{folder}` cannot be used: {error}")
    else:
        summary_ui(summary)
        thumbnails_ui(summary)
        labels_ui(summary)
    sources_ui(summary)


ensure_app_shell()
main()
