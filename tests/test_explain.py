"""Grad-CAM: it finds what decides the class, explains mirror-averaged models as a whole, on every level."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.serving.cards import ModelCard
from core.serving.explain import FLAT_NOTE, Explainer, colourize, feature_layer_name, overlay, peak_of
from core.serving.model_store import ModelError, ModelStore
from core.networks.factories import make_level1_model, with_flip_average
from core.serving.predictor import Predictor, predict_every_level
from core.training.loop import TrainConfig, train
from tests.helpers import jpeg_bytes, png_bytes

ROOT = Path(__file__).resolve().parent.parent
SIZE, OBJECT = 64, 10


def object_dataset(root: Path, n_train=60, n_val=30, seed=0) -> dict[str, tuple[int, int]]:
    """A small red or blue square (the class) at a random place on a grey texture; returns its boxes.

    Nothing else tells the classes apart, so a model that learned the task must look at the square.
    """
    rng = np.random.default_rng(seed)
    boxes = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        for cls, colour in (("blue", (40, 60, 210)), ("red", (210, 50, 40))):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                texture = rng.integers(60, 200, (SIZE // 4, SIZE // 4, 1)).repeat(3, axis=2).astype(np.uint8)
                image = np.asarray(Image.fromarray(texture).resize((SIZE, SIZE), Image.Resampling.BILINEAR)).copy()
                image = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
                y, x = rng.integers(0, SIZE - OBJECT, 2)
                image[y:y + OBJECT, x:x + OBJECT] = colour
                path = folder / f"{cls}.{i}.png"
                Image.fromarray(image).save(path)
                boxes[str(path)] = (int(y), int(x))
    return boxes


@pytest.mark.slow
def test_heatmap_peak_falls_on_the_object(tmp_path):
    boxes = object_dataset(tmp_path / "objects")
    result = train(TrainConfig(level=1, data_dir=str(tmp_path / "objects"), image_size=(SIZE, SIZE), epochs=12,
                               batch_size=16, augment=None, learning_rate=2e-3, seed=3))
    assert result.entry.val_accuracy >= 0.95  # the task was learned: now, where does it look?
    explainer = Explainer(result.entry)
    validation = sorted(p for p in boxes if "/validation/" in p)
    hits = 0
    margin = 3 / SIZE  # a few pixels: the last feature map is 12x12, one cell covers 5 pixels
    for path in validation:
        peak_y, peak_x = explainer.explain(path).peak
        y, x = boxes[path]
        hits += (y / SIZE - margin <= peak_y <= (y + OBJECT) / SIZE + margin
                 and x / SIZE - margin <= peak_x <= (x + OBJECT) / SIZE + margin)
    hit_rate = hits / len(validation)
    print(f"Grad-CAM hit rate on the synthetic objects: {hits}/{len(validation)} = {hit_rate:.1%}")
    assert hit_rate >= 0.9


def saved(model, classes=("a", "b"), size=(32, 32), level=1, **card) -> object:
    return ModelStore().save(model, ModelCard(level=level, classes=list(classes), image_size=size, **card))


def test_mirror_averaged_heatmap_of_a_mirrored_photo_is_the_mirrored_heatmap():
    """Both views are explained and summed, so the mirror-averaged model's heatmap is exactly symmetric."""
    entry = saved(with_flip_average(make_level1_model(2, (32, 32))))
    explainer = Explainer(entry)
    assert explainer.mirror_averaged
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    heatmaps, probabilities = explainer.explain_arrays(images)
    mirrored, mirrored_probabilities = explainer.explain_arrays(images[:, :, ::-1])
    np.testing.assert_allclose(mirrored, heatmaps[:, :, ::-1], atol=1e-4)
    np.testing.assert_allclose(mirrored_probabilities, probabilities, atol=1e-6)
    assert heatmaps.shape == (3, 32, 32) and heatmaps.min() >= 0 and np.allclose(heatmaps.max(axis=(1, 2)), 1)


def test_explains_the_saved_models_probability_and_any_class():
    model = make_level1_model(3, (32, 32))
    entry = saved(model, classes=("a", "b", "c"))
    explainer = Explainer(entry)
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    data = jpeg_bytes(photo, quality=95)
    explanation = explainer.explain(data, name="photo.jpg")
    expected = Predictor(entry).predict([data])[0].probabilities  # what the stored model says of the same bytes
    assert explanation.class_name == max(expected, key=expected.get)
    assert explanation.probability == pytest.approx(expected[explanation.class_name], abs=1e-5)
    other = explainer.explain(data, name="photo.jpg", class_name="c")
    assert other.class_name == "c" and other.probability == pytest.approx(expected["c"], abs=1e-5)
    assert 0 < other.peak[0] < 1 and 0 < other.peak[1] < 1
    with pytest.raises(ModelError, match="not one of the model's classes"):
        explainer.explain(data, name="photo.jpg", class_name="d")


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_every_level_can_be_explained(level, dataset, tiny_backbone):
    """Tiny random-weight models of each level: the right feature map is tapped and a heatmap comes out."""
    common = dict(data_dir=str(dataset), epochs=1, batch_size=8)
    if level == 0:
        config = TrainConfig(level=0, backbone="mobilenet_v2", weights="none", data_dir=str(dataset),
                             imagenet_classes={"circles": [1, 2], "squares": [3]})
    else:
        if level == 3:
            train(TrainConfig(level=2, backbone=tiny_backbone.name, weights="none", **common))
        config = TrainConfig(level=level, image_size=(32, 32), backbone=tiny_backbone.name if level > 1 else None,
                             weights="none" if level > 1 else None, **common)
    entry = train(config).entry
    assert not entry.card.sums_class_groups  # a new level 0 records that it takes its groups' means
    explainer = Explainer(entry)
    from core.networks.factories import single_view
    from core.serving.model_store import load_model

    network = single_view(load_model(entry))
    expected = entry.card.backbone if level != 1 else [l.name for l in network.layers if "conv" in l.name][-1]
    assert feature_layer_name(network, entry.card.backbone) == expected
    photo = dataset / "validation" / "circles" / "circles.0.jpg"
    explanation = explainer.explain(photo)
    assert explanation.heatmap.shape == entry.image_size and explanation.class_name in entry.classes
    # The heatmap explains what the saved model says (level 0: its class groups' scores, as its layer makes them).
    expected = Predictor(entry).predict([photo.read_bytes()])[0].probabilities
    assert explanation.probability == pytest.approx(expected[explanation.class_name], abs=1e-4)


def test_a_model_without_convolutions_says_so():
    import keras

    inputs = keras.Input((32, 32, 3), name="image")
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs)))
    with pytest.raises(ModelError, match="no convolutional layer"):
        Explainer(saved(model))


def test_overlay_and_colour_scale():
    assert colourize(np.array([[0.0, 1.0]])).tolist() == [[[13, 8, 135], [240, 249, 33]]]
    photo = Image.new("RGB", (1000, 500), (128, 128, 128))
    heat = np.zeros((32, 32))
    heat[:, 24:] = 1.0  # the right quarter
    shown = np.asarray(overlay(photo, heat, max_side=400))
    assert shown.shape == (200, 400, 3)
    assert shown[100, 390, 0] > 180 and shown[100, 10, 2] > shown[100, 10, 0]  # yellow right, blue-ish left


@pytest.mark.slow
def test_cli_explain_json_and_bad_images(tmp_path, dataset):
    models = tmp_path / "models"
    train(TrainConfig(level=1, data_dir=str(dataset), models_dir=str(models), image_size=(32, 32), epochs=1,
                      batch_size=8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    good = dataset / "validation" / "circles" / "circles.0.jpg"
    out_png = tmp_path / "where.png"
    out = subprocess.run([sys.executable, "-m", "core", "explain", "level1", str(good), str(bad), str(good),
                          "--models-dir", str(models), "-o", str(out_png), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1  # one photo could not be explained
    assert "error: " in out.stderr and "bad.jpg: is not an image we can read" in out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["file"] for r in rows] == [str(good), str(good)] and rows[0] == rows[1]
    assert rows[0]["class"] in ("circles", "squares") and all(0 <= v <= 1 for v in rows[0]["peak"])
    assert Image.open(out_png).size[0] > 256


def certain_level2_model(backbone, num_classes: int):
    """Level 2's network (backbone, pooling, head network, mirror averaging) whose head is so sure of the
    last class that float32 rounds its probabilities to exactly 0 and 1, as a trained Lite2 was (issue 20)."""
    import keras

    from core.networks.backbones import resolve_weights
    from core.networks.factories import attach_head, make_feature_extractor, make_head

    keras.utils.set_random_seed(0)
    extractor = make_feature_extractor(backbone, resolve_weights(backbone, "none"), (32, 32))
    head = make_head(extractor.output.shape[1:], num_classes)
    kernel, bias = head.layers[-1].get_weights()
    certain = np.zeros_like(kernel)
    certain[:, -1] = np.abs(kernel[:, -1]) * 100  # the last class's score still grows with the features
    bias[-1] += 100.0  # far past where sigmoid or softmax round to 1 in float32
    head.layers[-1].set_weights([certain, bias])
    return with_flip_average(attach_head(extractor, head))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_a_certain_level2_model_gets_a_finite_heatmap(num_classes, tiny_backbone):
    """Issue 20: log(1 - p) of a probability of exactly 1 made the heatmap NaN (two classes) or blank (three)."""
    model = certain_level2_model(tiny_backbone, num_classes)
    classes = [f"c{i}" for i in range(num_classes)]
    entry = saved(model, classes=classes, level=2, backbone=tiny_backbone.name)
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    output = model.predict(np.asarray(photo.resize((32, 32)), np.float32)[None], verbose=0)[0]
    assert output[-1] == 1.0 and (num_classes == 2 or output[:-1].max() == 0.0)  # saturated, as in the issue
    explanation = Explainer(entry).explain(png_bytes(photo), name="certain.png")
    assert np.isfinite(explanation.heatmap).all() and explanation.heatmap.max() == pytest.approx(1.0)
    assert explanation.note is None and explanation.class_name == classes[-1] and explanation.probability == 1.0
    assert 0 < explanation.peak[0] < 1 and 0 < explanation.peak[1] < 1


def test_predict_page_heatmap_of_a_certain_photo(tiny_backbone):
    """The Predict page's "Where it looks" runs `predict_every_level` with an explainer: same fix, a real map."""
    entry = saved(certain_level2_model(tiny_backbone, 2), level=2, backbone=tiny_backbone.name)
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    result = predict_every_level(png_bytes(photo), "certain.png", {2: Predictor(entry)}, explainers={2: Explainer(entry)})
    assert result.error is None and not result.explain_errors and result.per_level[2] == {"a": 0.0, "b": 1.0}
    heatmap = result.heatmaps[2]
    assert np.isfinite(heatmap).all() and heatmap.max() == pytest.approx(1.0)
    assert np.asarray(overlay(result.image, heatmap)).shape == (32, 32, 3)


def test_a_non_finite_heatmap_becomes_a_blank_one_with_a_note(monkeypatch):
    """Whatever makes the gradients NaN, the photo gets a blank map, a note and a peak, not a ValueError."""
    explainer = Explainer(saved(make_level1_model(2, (32, 32))))
    real = explainer._cams
    monkeypatch.setattr(explainer, "_cams", lambda images, index: (real(images, index)[0] * np.nan,
                                                                    real(images, index)[1]))
    photo = Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    explanation = explainer.explain(png_bytes(photo), name="nan.png")
    assert (explanation.heatmap == 0).all() and explanation.note == FLAT_NOTE
    assert explanation.peak == (0.5, 0.5) and explanation.to_dict()["note"] == FLAT_NOTE
    assert np.asarray(overlay(explanation.image, explanation.heatmap)).shape == (32, 32, 3)
    assert peak_of(np.full((4, 4), np.nan)) == (0.5, 0.5) and peak_of(np.zeros((4, 4))) == (0.5, 0.5)


def test_cli_explain_reports_a_failing_photo_and_explains_the_others(tmp_path, monkeypatch, capsys):
    """One unreadable photo and one that breaks inside Grad-CAM are named on stderr; the good one is explained."""
    from core.cli import main

    entry = saved(make_level1_model(2, (32, 32)))
    good, corrupt, breaks = tmp_path / "good.png", tmp_path / "corrupt.jpg", tmp_path / "breaks.png"
    photo = Image.fromarray(np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    good.write_bytes(png_bytes(photo))
    breaks.write_bytes(png_bytes(photo))
    corrupt.write_bytes(b"not an image")
    explain_image = Explainer.explain_image

    def failing_on_one(self, image, name, class_name=None):
        if name.endswith("breaks.png"):
            raise ValueError("attempt to get argmin of an empty sequence")  # what issue 20's photos hit
        return explain_image(self, image, name, class_name)

    monkeypatch.setattr(Explainer, "explain_image", failing_on_one)
    out_png = tmp_path / "where.png"
    code = main(["explain", entry.id, str(corrupt), str(good), str(breaks), "-o", str(out_png)])
    captured = capsys.readouterr()
    assert code == 1  # as predict: 1 when any photo failed
    assert f"{corrupt}: is not an image we can read" in captured.err
    assert f"{breaks}: cannot be explained (ValueError: attempt to get argmin" in captured.err
    assert f"{good}: " in captured.out and "looks most at" in captured.out and "Wrote 1 heatmap(s)" in captured.out
    assert Image.open(out_png).size == (256, 276)  # one tile and the colour scale
