"""Augmentation: reproducible by seed, and the transforms the tutorial's ImageDataGenerator makes."""

import numpy as np
import pytest

from core.data.augment import PRESETS, AugmentConfig, augmented_variants, make_augmenter, preset

SIZE = 61  # odd, so the image has a centre pixel


def blank():
    return np.zeros((SIZE, SIZE, 3), np.uint8)


def columns_lit(image, row):
    return np.flatnonzero(image[row, :, 0] > 127)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "none"])
def test_variants_are_reproducible_by_seed(name):
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    first = augmented_variants(image, preset(name), n=4, seed=7)
    again = augmented_variants(image, preset(name), n=4, seed=7)
    other = augmented_variants(image, preset(name), n=4, seed=8)
    assert all(a.shape == image.shape and a.dtype == np.uint8 for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert len({a.tobytes() for a in first}) == 4  # each variant draws its own transform


def test_no_augmentation_is_the_identity():
    assert make_augmenter(preset("none")) is None
    image = np.full((8, 8, 3), 9, np.uint8)
    assert all(np.array_equal(v, image) for v in augmented_variants(image, preset("none"), n=3))


def test_inference_mode_passes_images_through():
    images = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    augmenter = make_augmenter(preset("aggressive"), seed=0)
    np.testing.assert_array_equal(np.asarray(augmenter(images, training=False)), images)


def test_flip_is_exact_mirroring():
    image = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    variants = augmented_variants(image, AugmentConfig(horizontal_flip=True), n=16, seed=0)
    mirrored = [np.array_equal(v, image[:, ::-1]) for v in variants]
    assert all(m or np.array_equal(v, image) for m, v in zip(mirrored, variants))
    assert 0 < sum(mirrored) < 16


def test_shifts_stay_within_their_fraction():
    image = blank()
    image[30, 30] = 255
    config = AugmentConfig(width_shift=0.1, height_shift=0.1, fill_mode="constant")
    moves = set()
    for variant in augmented_variants(image, config, n=12, seed=3):
        row, col = np.unravel_index(np.argmax(variant[..., 0]), variant.shape[:2])
        assert abs(row - 30) <= 0.1 * SIZE + 1 and abs(col - 30) <= 0.1 * SIZE + 1
        moves.add((int(row), int(col)))
    assert len(moves) > 3


def test_shear_is_about_the_centre():
    """A vertical line through the centre tilts about the centre, as ImageDataGenerator's shear does.

    Keras' own RandomShear shears about the top-left corner, which shifts the whole bottom
    of the picture sideways instead.
    """
    image = blank()
    image[:, 30] = 255
    tilted = 0
    for variant in augmented_variants(image, AugmentConfig(shear=0.2, fill_mode="constant"), n=8, seed=4):
        top, middle, bottom = (columns_lit(variant, r).mean() for r in (2, 30, SIZE - 3))
        assert middle == pytest.approx(30, abs=0.6)
        assert (top - 30) == pytest.approx(-(bottom - 30), abs=1.0)
        assert abs(top - 30) <= 0.2 * 30 + 1
        tilted += abs(top - 30) > 1
    assert tilted >= 4


def test_zoom_draws_each_axis_on_its_own():
    """As ImageDataGenerator's zoom_range: the aspect ratio changes too, within +-20% per axis."""
    image = blank()
    image[20:41, 20:41] = 255  # a 21x21 square in the middle
    ratios = []
    for variant in augmented_variants(image, AugmentConfig(zoom=0.2, fill_mode="constant"), n=12, seed=5):
        lit = variant[..., 0] > 127
        height, width = lit.any(axis=1).sum(), lit.any(axis=0).sum()
        assert 21 / 1.2 - 2 <= height <= 21 / 0.8 + 2 and 21 / 1.2 - 2 <= width <= 21 / 0.8 + 2
        assert lit[30, 30]  # about the centre
        ratios.append(width / height)
    assert max(ratios) / min(ratios) > 1.1


def test_rotation_keeps_the_centre_and_its_limit():
    image = blank()
    image[30, :] = 255  # a horizontal line through the centre
    for variant in augmented_variants(image, AugmentConfig(rotation=20, fill_mode="constant"), n=8, seed=6):
        rows = [np.flatnonzero(variant[:, c, 0] > 127).mean() for c in (10, 30, 50)]
        assert rows[1] == pytest.approx(30, abs=0.6)
        slope = (rows[2] - rows[0]) / 40
        assert abs(np.degrees(np.arctan(slope))) <= 20 + 2


def test_augmenter_layer_config_round_trip():
    """Like Keras' own layers: plain keyword arguments and a flat config."""
    augmenter = make_augmenter(preset("tutorial_preview"), seed=11)
    layer = augmenter.layers[0]
    config = layer.get_config()
    assert {k: config[k] for k in preset("tutorial_preview").geometric()} == preset("tutorial_preview").geometric()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config and clone.seed == 11
    images = np.random.default_rng(0).uniform(0, 255, (3, 24, 24, 3)).astype("float32")
    np.testing.assert_array_equal(clone(images, training=True), layer.__class__.from_config(config)(images, training=True))


@pytest.mark.parametrize("bad, message", [(dict(rotation=200), "rotation"), (dict(zoom=1.5), "zoom"),
                                          (dict(fill_mode="mirror"), "fill_mode")])
def test_random_affine_validates_its_arguments(bad, message):
    from core.data.random_affine import RandomAffine

    with pytest.raises(ValueError, match=message):
        RandomAffine(**bad)


def test_pixel_values_alone_need_no_resampling():
    """Brightness and contrast never move pixels, so they never pay for an affine resampling."""
    names = lambda config: [layer.name for layer in make_augmenter(config, seed=0).layers]
    assert "random_affine" not in names(AugmentConfig(brightness=0.2, contrast=0.2))
    assert names(AugmentConfig(horizontal_flip=True)) == ["random_affine"]
    assert not AugmentConfig(brightness=0.2).is_geometric and AugmentConfig(zoom=0.1).is_geometric


# --- The lab's preview: the same transforms in NumPy and Pillow ------------------------------

def _photo(height=60, width=80):
    rng = np.random.default_rng(1)
    base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return np.clip(base + rng.integers(-20, 20, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "constant", "wrap"])
def test_preview_warps_as_the_training_layer_does(fill_mode):
    """Pillow's warp with `affine_rows` equals keras.ops.image.affine_transform, to one grey level."""
    from keras import ops

    from core.data.affine import affine_rows
    from core.data.augment import render_affine

    image = _photo()
    rng = np.random.default_rng(0)
    for flip in (1.0, -1.0):
        angle = rng.uniform(-0.6, 0.6)
        rows = affine_rows(np.cos(angle), np.sin(angle), rng.uniform(-0.3, 0.3), 1.2, 0.85, 7.0, -5.0, flip, 60, 80)
        expected = np.asarray(ops.image.affine_transform(image[None].astype("float32"),
                                                         np.array([[*rows, 0, 0]], "float32"),
                                                         interpolation="bilinear", fill_mode=fill_mode))[0]
        difference = np.abs(render_affine(image, rows, fill_mode).astype("float32") - expected)
        if fill_mode == "wrap":  # TensorFlow blends seam pixels with its fill value 0; Pillow with the wrapped pixel
            assert np.median(difference) <= 1.0 and np.mean(difference <= 1.01) > 0.9
        else:
            assert difference.max() < 1.01  # Pillow rounds to integers; TensorFlow keeps floats


def test_preview_variants_are_seeded_and_bounded():
    from core.data.augment import preview_variants

    image = _photo()
    config = PRESETS["aggressive"]
    first, again = preview_variants(image, config, 9, seed=3), preview_variants(image, config, 9, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = preview_variants(image, config, 9, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert len({v.tobytes() for v in first}) == 9 and all(v.shape == image.shape and v.dtype == np.uint8 for v in first)
    assert all(np.array_equal(v, image) for v in preview_variants(image, AugmentConfig(), 4))
    bright = preview_variants(image, AugmentConfig(brightness=0.3), 6, seed=0)
    shifts = [float(np.median(v.astype(int) - image.astype(int))) for v in bright]
    assert max(abs(s) for s in shifts) <= 0.3 * 255 + 1 and len(set(shifts)) > 1  # one shift per picture


def test_the_preview_needs_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from core.data.augment import PRESETS, preview_variants; "
            "preview_variants(np.zeros((64, 64, 3), np.uint8), PRESETS['aggressive'], 9); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


@pytest.mark.parametrize("config, expected", [
    (AugmentConfig(), "nothing"),
    (AugmentConfig(shear=0.2, zoom=0.2, horizontal_flip=True), "shear 0.2, zoom 0.2, flip"),
    (AugmentConfig(rotation=40, width_shift=0.25, brightness=0.3), "rotation 40°, width shift 0.25, brightness 0.3"),
])
def test_describe_names_what_is_on(config, expected):
    assert config.describe() == expected
