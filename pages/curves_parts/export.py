"""Take a model away: one download button per export format the model offers."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.data.folders import DatasetError
from core.serving.export import ExportFormat, export_name, offered_formats
from core.serving.model_store import ModelEntry, ModelError, ModelStore
from pages.common import predictor_for


@st.cache_data(max_entries=8, show_spinner=False)
def _export_zip(model_id: str, model_path: str, format_text: str, data_root: str | None) -> tuple[bytes, int]:
    """(zip bytes, model size); keyed by the format's text, so the cache keys are plain strings."""
    from core.serving.export import calibration_photos, export_zip_bytes

    fmt = ExportFormat.from_text(format_text)
    entry = ModelStore(Path(model_path).parent).get(model_id)
    calibration = calibration_photos(entry, data_root) if fmt.needs_calibration else None
    data, info = export_zip_bytes(entry, fmt, calibration=calibration, model=predictor_for(entry).model)
    return data, info.bytes


def export_ui(entry: ModelEntry, summary) -> None:
    """Download buttons: the model in each format, with labels.txt and a usage README."""
    with st.expander(":material/download: Take this model away (Keras, SavedModel, LiteRT, ONNX)"):
        st.caption("Each download is a zip: the model, `labels.txt`, and a README with a 10-line snippet for its "
                   "runtime. The model takes raw RGB pixels (0-255) at "
                   f"{entry.image_size[1]}x{entry.image_size[0]} and does its own preprocessing"
                   f"{' and mirror averaging' if entry.card.flip_average else ''}: nothing of Little Data is needed.")
        fmt = st.segmented_control("Format", offered_formats(entry, summary), format_func=lambda f: f.label,
                                   key=f"export_format_{entry.id}")
        if fmt is None:
            return
        try:
            # int8 runs a hundred photos through the model to measure its value ranges: a minute on two cores.
            wait = " Measuring value ranges on a hundred training photos: about a minute." if fmt.needs_calibration else ""
            with st.spinner(f"Converting to {fmt.label}…{wait}", show_time=True):
                data, size = _export_zip(entry.id, str(entry.model_path), fmt.value,
                                         str(summary.root) if summary is not None else None)
        except (ModelError, DatasetError) as exc:
            st.error(f"Cannot export: {exc}")
            return
        st.download_button(f"Download {fmt.label} ({size / 2**20:.1f} MB model, zipped)", data,
                           file_name=export_name(entry, fmt), mime="application/zip",
                           icon=":material/download:", key=f"export_download_{entry.id}_{fmt.value}")
