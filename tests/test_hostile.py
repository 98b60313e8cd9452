"""Broken and hostile input across the library: nothing crashes, nothing is lost, nothing escapes.

The per-input cases live beside their modules (test_images, test_datasets, test_archives, test_model_store,
test_jobs); these are the ones that cut across them: core.serving (model_store, predictor), core.training.loop,
core.app.workspace and core.data.
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

from core.app import workspace
from core.serving.cards import ModelCard
from core.data.folders import DatasetError
from core.networks.factories import make_level1_model
from core.serving.model_store import ModelStore, load_model
from core.serving.predictor import Predictor, predict_every_level
from core.training.loop import TrainConfig, train
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
        from core.networks.factories import make_level1_model
        from core.serving.cards import ModelCard
        from core.serving.model_store import ModelStore
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
    store = ModelStore(tmp_path / "models")
    predictor = Predictor(store.save(make_level1_model(2, (32, 32)), card()))
    monkeypatch.setenv("LITTLE_DATA_MAX_UPLOAD_MB", str(50_000 / 2**20))
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
