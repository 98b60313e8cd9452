"""Data: which data set is in use, what is in it, and how to bring another."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core import settings, workspace
from core.datasets import DatasetError, download_default_dataset, sample_paths, summarize
from core.images import ImageError, thumbnail
from pages.common import current_summary, ensure_app_shell, page_header


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
        columns = st.columns(6)
        for column, path in zip(columns, class_paths):
            image = _thumb(str(path), Path(path).stat().st_mtime)
            if image is not None:
                column.image(image, caption=Path(path).name, width="stretch")


def sources_ui(summary):
    st.subheader("Use another data set")
    tab_default, tab_folder, tab_zip = st.tabs(["Cats vs dogs (default)", "A folder on this machine", "Upload a zip"])
    with tab_default:
        shared = settings.shared_dir()
        st.markdown("The tutorial's photos: 1000 cats and 1000 dogs to train, validation photos to check.")
        if shared and (shared / "datasets" / "cats_vs_dogs").is_dir():
            st.caption(f"An offline copy is available at `{shared / 'datasets' / 'cats_vs_dogs'}`.")
        if st.button("Use cats vs dogs", key="use_default"):
            workspace.set_active_data_dir(None)
            try:
                from core.datasets import resolve_data_dir

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
                   f"Limits: {settings.MAX_ZIP_BYTES // 2**20} MB unpacked, {settings.MAX_ZIP_FILES} files.")
        upload = st.file_uploader("Data-set zip", type=["zip"], key="zip_upload")
        if upload is not None and st.button("Unpack and use it"):
            try:
                with st.spinner("Unpacking safely…"):
                    root = workspace.install_uploaded_zip(upload.getvalue(), upload.name)
                st.success(f"Unpacked to `{root}`; it is now the active data set.")
                st.rerun()
            except DatasetError as exc:
                st.error(f"{upload.name} cannot be used: {exc}")


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
    summary, folder, error = current_summary()
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
    sources_ui(summary)


ensure_app_shell()
main()
