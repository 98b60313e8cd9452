"""Broken and hostile input across the library: nothing crashes, nothing is lost, nothing escapes.

The per-input cases live beside their modules (test_images, test_datasets, test_model_store, test_jobs);
these are the ones that cut across them.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from core import workspace
from core.cards import ModelCard
from core.datasets import DatasetError
from core.models import make_level1_model
from core.model_store import ModelStore, load_model
from core.predictor import Predictor, predict_every_level
from core.training import TrainConfig, train
from tests.helpers import jpeg_bytes, make_image

ROOT = Path(__file__).resolve().parent.parent


def card(classes=("a", "b")) -> ModelCard:
    return ModelCard(level=1, classes=list(classes), image_size=(32, 32))


@pytest.mark.slow
def test_worker_killed_while_saving_keeps_the_previous_model(tmp_path):
    store = ModelStore(tmp_path / "models")
    first = store.save(make_level1_model(2, (32, 32)), card())
    script = textwrap.dedent(f"""
        import sys, time, keras
        sys.path.insert(0, {str(ROOT)!r})
        from core.models import make_level1_model
        from core.cards import ModelCard
        from core.model_store import ModelStore
        real_save = keras.Model.save
        def slow_save(self, path, *a, **k):
            real_save(self, path, *a, **k)
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])  # half a file on disk...
            print("saving", flush=True)
            time.sleep(60)                                  # ...when the process is killed
        keras.Model.save = slow_save
        ModelStore({str(store.root)!r}).save(make_level1_model(2, (32, 32)), ModelCard.from_dict({card().to_dict()!r}))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "saving"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    listing = store.list()
    assert [e.id for e in listing.models] == [first.id] and listing.unusable == []
    assert any(p.name.endswith(".part.keras") for p in store.root.iterdir())  # the half file is there...
    load_model(first)  # ...and never listed; the previous model still loads


def test_concurrent_predictions_while_a_new_model_lands(tmp_path):
    store = ModelStore(tmp_path / "models")
    entry = store.save(make_level1_model(2, (32, 32)), card())
    photo = jpeg_bytes(make_image("circles", np.random.default_rng(0)))
    errors, results = [], []

    def predict_many():
        try:
            predictor = Predictor(store.latest(1))
            for _ in range(20):
                results.append(predict_every_level(photo, "p.jpg", {1: predictor}))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def land_models():
        try:
            for _ in range(3):
                store.save(make_level1_model(2, (32, 32)), card())
                Predictor(store.latest(1))  # a session picking up the newest model
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=predict_many) for _ in range(2)] + [threading.Thread(target=land_models)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == 40 and all(r.error is None and r.per_level[1] for r in results)
    assert len(store.list().models) == 4 and store.list().unusable == []
    assert store.latest(1).id != entry.id


def test_training_goes_on_past_unreadable_images(dataset_factory):
    data = dataset_factory(broken=True)
    result = train(TrainConfig(level=1, epochs=1, batch_size=8, image_size=(32, 32), data_dir=str(data)))
    assert result.entry is not None
    assert result.entry.card.dataset["counts"]["train"] == {"circles": 12, "squares": 13}


def test_oversize_upload_gets_a_message_and_the_batch_goes_on(tmp_path, monkeypatch):
    from core import settings

    store = ModelStore(tmp_path / "models")
    predictor = Predictor(store.save(make_level1_model(2, (32, 32)), card()))
    monkeypatch.setattr(settings, "MAX_UPLOAD_BYTES", 50_000)
    big = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    from PIL import Image

    results = [predict_every_level(jpeg_bytes(Image.fromarray(big), quality=95), "huge.jpg", {1: predictor}),
               predict_every_level(jpeg_bytes(make_image("circles", np.random.default_rng(1))), "ok.jpg", {1: predictor})]
    assert "huge.jpg" in results[0].error and "limit" in results[0].error
    assert results[1].error is None


def test_unusable_model_is_reported_per_level_not_raised():
    result = predict_every_level(jpeg_bytes(make_image("circles", np.random.default_rng(1))), "ok.jpg",
                                 {1: RuntimeError("level1-x: cannot be loaded: truncated")})
    assert result.error is None and "truncated" in result.model_errors[1]


def test_bad_zip_upload_keeps_the_active_data_set(dataset, monkeypatch):
    workspace.set_active_data_dir(dataset)
    with pytest.raises(DatasetError):
        workspace.install_uploaded_zip(b"this is not a zip", "pets.zip")
    assert workspace.active_data_dir() == str(dataset)


def test_workspace_file_corrupt_falls_back_to_defaults():
    from core import settings

    settings.home_dir().mkdir(parents=True, exist_ok=True)
    (settings.home_dir() / "workspace.json").write_text("{broken")
    config, name = workspace.augment_settings()
    assert name == "tutorial_train" and workspace.active_data_dir() is None


def test_symmetric_padding_keeps_shapes_and_weights():
    import keras

    from core.backbones import with_symmetric_padding

    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    patched = with_symmetric_padding(base)
    pads = [l.padding for l in patched.layers if isinstance(l, keras.layers.ZeroPadding2D)]
    assert pads and all(p == ((1, 1), (1, 1)) for p in pads)
    assert patched.get_layer("Conv1").padding == "valid"
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype("float32")
    assert patched(x).shape == base(x).shape
    first = lambda model: keras.Model(model.inputs, model.get_layer("Conv1").output)(x).numpy()
    ours, keras_own = first(patched), first(base)
    assert ours.shape == keras_own.shape == (1, 48, 48, 32)
    # Symmetric padding samples one pixel up-left of Keras' grid: our output at (i, j) needs the
    # input row/column 2i-1, so the top-left output sees padding, and interior outputs differ.
    assert not np.allclose(ours, keras_own, rtol=1e-3, atol=1e-6)
    # PyTorch's definition: output (0, 0) is the kernel over the 1-pixel zero-padded top-left corner.
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel = patched.get_layer("Conv1").get_weights()[0]
    expected = np.einsum("hwc,hwck->k", padded[0, :3, :3], kernel)
    np.testing.assert_allclose(ours[0, 0, 0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(patched.get_layer("Conv1").get_weights()[0], base.get_layer("Conv1").get_weights()[0])

