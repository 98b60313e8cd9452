"""Turning untrusted bytes into upright RGB pixels, or one clear error.

Everything that reads an image (data sets, uploads, the CLI) goes through `load_image`, so odd
modes, EXIF rotation, decompression bombs and corrupt files are handled in exactly one place.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core import settings
from core.errors import LittleDataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

# We check the declared size ourselves before any decoding (and say so with the numbers), so
# Pillow's own guard, which refuses at `Image.open` with a vaguer message, is switched off.
Image.MAX_IMAGE_PIXELS = None
#: A JPEG larger than this on both sides is decoded at a reduced scale (1/2, 1/4 or 1/8), here and when a
#: data set's folder is checked.
DRAFT_SIDE = 4096


def too_many_pixels(image: Image.Image, draft_side: int | None = None) -> bool:
    """Whether an opened image would decode to more than `settings.MAX_IMAGE_PIXELS`, after setting a JPEG
    larger than `draft_side` (default `DRAFT_SIDE`) to decode at a reduced scale. The limit is on the
    pixels decoded, so a 108- or 200-megapixel phone JPEG (decoded at 1/2 or 1/4 scale) is read, while a
    PNG declaring as many is refused before decoding."""
    side = draft_side or DRAFT_SIDE
    image.draft("RGB", (side, side))
    return image.size[0] * image.size[1] > settings.MAX_IMAGE_PIXELS


class ImageError(LittleDataError, ValueError):
    """An input that is not a usable image. The message names the file and says why."""


def is_image_name(name: str) -> bool:
    """True for a visible file whose extension is one we read."""
    base = Path(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def load_image(source: str | Path | bytes, name: str | None = None,
               max_bytes: int | None = None, draft_side: int | None = None) -> Image.Image:
    """Decodes an image file or its bytes into an upright 8-bit RGB `PIL.Image`.

    Args:
        source: a path, or the raw bytes of an upload.
        name: the name used in error messages (defaults to the path's name).
        max_bytes: refuse inputs larger than this (default `settings.max_upload_bytes()` for bytes,
            no limit for files already on disk).
        draft_side: a JPEG larger than this on both sides is decoded at a reduced scale (1/2, 1/4 or
            1/8, at least this size; default `DRAFT_SIDE`): a 12-megapixel phone photo decodes several times faster at 1024.

    Raises:
        ImageError: empty, too large, not an image, truncated, or too many pixels.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{name}: cannot be read ({exc.strerror or exc}).") from exc
    else:
        data = bytes(source)
        name = name or "upload"
        max_bytes = settings.max_upload_bytes() if max_bytes is None else max_bytes
    if not data:
        raise ImageError(f"{name}: the file is empty.")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(f"{name}: {len(data) / 2**20:.1f} MB is over the {max_bytes / 2**20:.0f} MB limit.")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        image.seek(0)  # animated GIF/WebP: the first frame
        if too_many_pixels(image, draft_side):
            raise ImageError(
                f"{name}: declares {width}x{height} pixels, over the "
                f"{settings.MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit.")
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: is not an image we can read (JPEG, PNG, WebP, BMP or GIF).") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: the image is corrupt or truncated ({exc}).") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1e-9)
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def to_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resizes (squashing, as Keras' loaders do) to `size` = (height, width); uint8 HxWx3."""
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def load_array(source: str | Path | bytes, size: tuple[int, int], name: str | None = None) -> np.ndarray:
    """`load_image` then `to_array`: the exact pixels a model sees, in training and at inference."""
    return to_array(load_image(source, name=name), size)


def thumbnail(source: str | Path | bytes, max_side: int = 256) -> Image.Image:
    """A small upright RGB copy for display."""
    image = load_image(source)
    image.thumbnail((max_side, max_side))
    return image


def to_jpeg(image: Image.Image, max_side: int | None = None, quality: int = 85) -> bytes:
    """JPEG bytes of an RGB image, shrunk to `max_side` first if given: what pages send to browsers
    (a photo as PNG is several times the bytes to encode and to send)."""
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
