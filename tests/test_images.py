"""core.data.images: every odd or hostile image input gets pixels or one clear ImageError naming the file."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core import settings
from core.data.images import ImageError, load_array, load_image
from tests.helpers import jpeg_bytes, png_bytes


def gradient(width=120, height=80) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (height, 1)), np.full((height, width), 128, np.uint8),
                    np.tile(x[::-1], (height, 1))], axis=-1)
    return Image.fromarray(rgb)


def test_plain_jpeg_decodes_to_rgb():
    image = load_image(jpeg_bytes(gradient()), name="photo.jpg")
    assert image.mode == "RGB" and image.size == (120, 80)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    source = gradient()
    if mode == "I;16":
        array = (np.asarray(source.convert("L"), np.uint16) * 257)
        image = Image.fromarray(array)
        assert image.mode == "I;16"
    else:
        image = source.convert(mode)
    data = jpeg_bytes(image) if mode == "CMYK" else png_bytes(image)
    out = load_array(data, (32, 48), name=f"{mode}.img")
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert out.std() > 5  # the picture survived, not a blank frame


def test_sixteen_bit_keeps_its_range():
    array = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (16, 1))
    image = Image.fromarray(array)
    assert image.mode == "I;16"
    out = load_array(png_bytes(image), (16, 64))
    assert out[..., 0].min() < 10 and out[..., 0].max() > 245


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    out = load_array(png_bytes(rgba), (10, 10))
    assert (out == 255).all()


def test_palette_with_transparency():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    out = load_array(png_bytes(image, transparency=0), (8, 8))
    assert (out == 255).all()


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = load_array(buffer.getvalue(), (20, 20))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


@pytest.mark.parametrize("orientation, expected_size", [(6, (80, 120)), (8, (80, 120)), (1, (120, 80)), (3, (120, 80))])
def test_exif_orientation_is_applied(orientation, expected_size):
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = load_image(jpeg_bytes(gradient(), exif=exif.tobytes()))
    assert image.size == expected_size


def test_exif_rotation_direction():
    # A red stripe on the left of the stored pixels; orientation 6 means "rotate 90 degrees clockwise to view",
    # so the stripe must end up on top.
    array = np.full((60, 90, 3), 255, np.uint8)
    array[:, :15] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = np.asarray(load_image(jpeg_bytes(Image.fromarray(array), exif=exif.tobytes(), quality=95)))
    assert out.shape[:2] == (90, 60)
    assert out[:10, :, 1].mean() < 80 and out[-10:, :, 1].mean() > 200


def test_huge_honest_photo_is_downscaled_not_refused():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (100, 125, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((5000, 4000))  # 20 megapixels
    data = jpeg_bytes(big, quality=70)
    out = load_array(data, (150, 150), name="big.jpg")
    assert out.shape == (150, 150, 3)


def test_a_jpeg_over_the_pixel_limit_is_decoded_at_reduced_scale_where_a_png_is_refused(monkeypatch):
    # As a 108-megapixel phone JPEG against the 64-megapixel limit, at a size a test can afford.
    monkeypatch.setattr(settings, "MAX_IMAGE_PIXELS", 2_000_000)
    big = gradient(500, 400).resize((5000, 4000))  # 20 megapixels declared
    out = load_image(jpeg_bytes(big, quality=70), name="phone.jpg", draft_side=1000)
    assert out.size == (1250, 1000)  # decoded at 1/4 scale: 1.25 megapixels
    with pytest.raises(ImageError, match="declares 5000x4000 pixels, over the 2-megapixel limit"):
        load_image(png_bytes(big), name="scan.png", draft_side=1000)


def decompression_bomb(width=30000, height=30000) -> bytes:
    """A tiny PNG whose header declares width x height (the data is not needed to trip the guard)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


BAD_INPUTS = {
    "zero bytes": b"",
    "random bytes": np.random.default_rng(1).bytes(4096),
    "html named png": b"<!doctype html><html><body>hello</body></html>",
    "svg named png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
    "truncated jpeg": jpeg_bytes(gradient(400, 300))[:1500],
    "decompression bomb": decompression_bomb(),
}


WHY = {"zero bytes": "the file is empty.", "random bytes": "is not an image we can read",
       "html named png": "is not an image we can read", "svg named png": "is not an image we can read",
       "truncated jpeg": "the image is corrupt or truncated", "decompression bomb": "over the 64-megapixel limit"}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_clear_error(case):
    with pytest.raises(ImageError) as info:
        load_image(BAD_INPUTS[case], name="suspect.png")
    message = str(info.value)
    assert message.startswith("suspect.png: ") and WHY[case] in message
    assert "\n" not in message and len(message) < 200  # one line a person can read


def test_bomb_message_says_why():
    with pytest.raises(ImageError, match="30000x30000"):
        load_image(decompression_bomb(), name="bomb.png")


def test_upload_over_the_size_limit_is_refused(monkeypatch):
    with pytest.raises(ImageError, match="limit"):
        load_image(b"\xff" * 2048, name="big.jpg", max_bytes=1024)
    assert settings.max_upload_bytes() >= 10 * 2**20  # a normal phone photo fits


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot be read"):
        load_image(tmp_path / "nope.jpg")


def test_a_data_set_folder_keeps_a_jpeg_over_the_pixel_limit_and_lists_a_png_as_unreadable(tmp_path, monkeypatch):
    """The folder check reads a huge JPEG as `load_image` does (at reduced scale): uploads took it, the folder refused it."""
    from core.data import images
    from core.data.folders import summarize

    monkeypatch.setattr(settings, "MAX_IMAGE_PIXELS", 2_000_000)
    monkeypatch.setattr(images, "DRAFT_SIDE", 1000)
    big = gradient(500, 400).resize((5000, 4000))  # 20 megapixels declared
    for split in ("train", "validation"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            (tmp_path / split / name / "small.jpg").write_bytes(jpeg_bytes(gradient(40, 30)))
    (tmp_path / "train" / "a" / "phone.jpg").write_bytes(jpeg_bytes(big, quality=70))
    (tmp_path / "train" / "a" / "scan.png").write_bytes(png_bytes(big))
    summary = summarize(tmp_path)
    assert [p.name for p, _ in summary.files["train"]].count("phone.jpg") == 1
    assert summary.unreadable == [("train/a/scan.png", "declares 5000x4000 pixels")]
    assert images.load_image(tmp_path / "train" / "a" / "phone.jpg").size == (1250, 1000)
