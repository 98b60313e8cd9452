"""Augmentation lab: one picture, many variants, every parameter on a slider."""

from pathlib import Path

import streamlit as st

from core.app import workspace
from core.data.augment import PRESET_LABELS, PRESETS, AugmentConfig, preview_variants
from core.data.images import ImageError, load_array
from pages.common import IMAGE_TYPES, current_summary, ensure_app_shell, grid_cells, page_header, photo_upload_mb

# Variants are drawn at about the size they are shown at (a third of the page's right-hand column
# on a wide screen, at 2x pixel density), squashed square as training squashes photos.
SIZE = (320, 320)
FIELDS = ["rotation", "width_shift", "height_shift", "shear", "zoom", "horizontal_flip", "brightness", "contrast",
          "fill_mode"]


@st.cache_data(max_entries=8, show_spinner=False)
def _picture(image_bytes: bytes, name: str):
    return load_array(image_bytes, SIZE, name=name or "the picture")  # errors name the file, as Predict's do


@st.cache_data(max_entries=64, show_spinner=False)
def _variants(image_bytes: bytes, name: str, config_items: tuple, n: int, seed: int):
    """NumPy and Pillow, the same transforms as training's layers: no TensorFlow, milliseconds."""
    return preview_variants(_picture(image_bytes, name), AugmentConfig(**dict(config_items)), n=n, seed=seed)


def _apply_to_widgets(config: AugmentConfig):
    for name in FIELDS:
        st.session_state[f"aug_{name}"] = getattr(config, name)


def image_picker_ui(summary) -> tuple[bytes | None, str]:
    source = st.radio("Picture", ["From the data set", "Upload one"], horizontal=True, label_visibility="collapsed")
    if source == "Upload one":
        upload = st.file_uploader("Your picture", type=IMAGE_TYPES, key="aug_upload", max_upload_size=photo_upload_mb())
        return (upload.getvalue(), upload.name) if upload else (None, "")
    if summary is None:
        st.info("No data set yet: upload a picture instead.")
        return None, ""
    paths = [p for p, _ in summary.files["train"]]
    index = st.number_input("Training image number", 0, len(paths) - 1, value=0, step=1,
                            help="The tutorial's figure uses the first cat.")
    path = Path(paths[int(index)])
    return path.read_bytes(), path.name


def _widget_config() -> AugmentConfig:
    return AugmentConfig(**{name: st.session_state[f"aug_{name}"] for name in FIELDS})


def _name_the_preset() -> None:
    """A control moved: the menu names the preset the settings now match, or Custom. Left on the old
    preset, the menu lied, and picking that preset again did nothing (it was already chosen)."""
    config = _widget_config()
    st.session_state["aug_preset"] = next((k for k, v in PRESETS.items() if v == config), "custom")


def controls_ui() -> tuple[AugmentConfig, str]:
    saved, saved_preset = workspace.augment_settings()
    if "aug_rotation" not in st.session_state:
        _apply_to_widgets(saved)
        st.session_state["aug_preset"] = saved_preset if saved_preset in PRESETS else "custom"
    options = list(PRESETS) + ["custom"]

    def on_preset():
        name = st.session_state["aug_preset"]
        if name in PRESETS:
            _apply_to_widgets(PRESETS[name])

    st.selectbox("Preset", options, key="aug_preset", on_change=on_preset,
                 format_func=lambda k: PRESET_LABELS.get(k, "Custom"))
    st.slider("Rotation (± degrees)", 0, 180, key="aug_rotation", step=5, on_change=_name_the_preset,
              help="All the geometric changes are combined into one transform about the picture's centre, "
                   "so each picture is resampled once, as the tutorial's ImageDataGenerator does.")
    c1, c2 = st.columns(2)
    c1.slider("Width shift", 0.0, 0.5, key="aug_width_shift", step=0.05, on_change=_name_the_preset)
    c2.slider("Height shift", 0.0, 0.5, key="aug_height_shift", step=0.05, on_change=_name_the_preset)
    c1.slider("Shear", 0.0, 0.5, key="aug_shear", step=0.05, on_change=_name_the_preset,
              help="Slants the picture about its centre: 0.2 moves the top and bottom edges sideways by up "
                   "to 20% of half the height, in opposite directions.")
    c2.slider("Zoom", 0.0, 0.5, key="aug_zoom", step=0.05, on_change=_name_the_preset,
              help="Scales width and height each on its own, by up to this fraction in or out, so shapes "
                   "get a little wider or taller too (as the tutorial's `zoom_range`).")
    c1.slider("Brightness", 0.0, 0.5, key="aug_brightness", step=0.05, on_change=_name_the_preset)
    c2.slider("Contrast", 0.0, 0.5, key="aug_contrast", step=0.05, on_change=_name_the_preset)
    st.toggle("Horizontal flip", key="aug_horizontal_flip", on_change=_name_the_preset)
    st.selectbox("Fill pixels outside the picture with", ["nearest", "reflect", "constant", "wrap"], key="aug_fill_mode",
                 on_change=_name_the_preset)
    config = _widget_config()
    return config, next((k for k, v in PRESETS.items() if v == config), "custom")


def main():
    page_header("Augmentation lab",
                "Random transformations make every training epoch see slightly different pictures, so a model "
                "cannot memorise them — the tutorial's *one cat, many pictures*. **The settings here are the ones "
                "the Train page uses for levels 1 and 3.**")
    summary, _, _ = current_summary()
    left, right = st.columns([1, 2], gap="large")
    with left:
        config, preset_name = controls_ui()
        c1, c2 = st.columns(2)
        seed = c1.number_input("Seed", 0, 10_000, value=0, step=1, help="Same seed, same pictures.")
        n = c2.select_slider("Variants", [4, 6, 8, 9, 12, 16], value=9)
        workspace.set_augment_settings(config, preset_name)
        st.caption("Saved for training" + (f" (preset: {PRESET_LABELS[preset_name]})" if preset_name in PRESETS
                                           else " (custom settings)") + f": {config.describe()}.")
    with right:
        image_bytes, name = image_picker_ui(summary)
        if image_bytes is None:
            return
        try:
            original = _picture(image_bytes, name)
            variants = _variants(image_bytes, name, tuple(sorted(config.to_dict().items())), int(n), int(seed))
        except ImageError as exc:
            st.error(str(exc))
            return
        columns_count = 4 if n in (4, 8, 12, 16) else 3
        st.image(original, caption=f"Original: {name}", width=220)
        st.markdown(f"**{n} augmented variants**" + (" (no augmentation: all identical)" if config.is_identity else ""))
        st.caption(f"Drawn at {SIZE[1]}x{SIZE[0]} with the training layers' transforms; training itself sees "
                   "them at each level's input size.")
        for column, image in zip(grid_cells(len(variants), columns_count, key="variants", phone_columns=2), variants):
            column.image(image, width="stretch")


ensure_app_shell()
main()
