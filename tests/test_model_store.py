"""The model store: atomic saves, and every kind of damaged or hostile model file is skipped."""

import json
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from core.serving.cards import CARD_VERSION, Metrics, ModelCard
from core.networks.factories import make_level1_model
from core.serving.model_store import ModelEntry, ModelError, ModelStore, load_model


def card(level=1, classes=("a", "b"), size=(32, 32)) -> ModelCard:
    return ModelCard(level=level, classes=list(classes), image_size=size, metrics=Metrics(val_accuracy=0.5))


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "models")


def test_round_trip(store):
    model = make_level1_model(2, (32, 32))
    entry = store.save(model, card())
    listed = store.list()
    assert [e.id for e in listed.models] == [entry.id] and listed.unusable == []
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(load_model(entry)(x), model(x), atol=1e-6)
    assert store.latest(1).id == entry.id and store.resolve("level1").id == entry.id
    assert store.get(entry.id).card == entry.card  # the card reads back exactly as written
    assert store.resolve(str(entry.model_path)).id == entry.id


def test_crash_while_saving_keeps_the_previous_model(store, monkeypatch):
    model = make_level1_model(2, (32, 32))
    first = store.save(model, card())

    def crash(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a model")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save(model, card())
    listing = store.list()
    assert [e.id for e in listing.models] == [first.id] and listing.unusable == []
    assert not [p for p in store.root.iterdir() if p.name.endswith(".part.keras")]  # temp file cleaned
    load_model(first)


def test_half_written_temp_files_are_never_listed(store):
    store.root.mkdir(parents=True)
    (store.root / ".level1-x-abc.part.keras").write_bytes(b"PK half")
    assert store.list().models == [] and store.list().unusable == []


def save_and_damage(store, damage):
    entry = store.save(make_level1_model(2, (32, 32)), card())
    damage(entry)
    return entry


@pytest.mark.parametrize("name, damage, expected", [
    ("truncated model", lambda e: e.model_path.write_bytes(e.model_path.read_bytes()[:300]), "cannot be loaded"),
    ("other class list", lambda e: e.card_path.write_text(json.dumps({**e.card.to_dict(), "classes": ["a", "b", "c"]})),
     "3 classes"),
    ("other input size", lambda e: e.card_path.write_text(json.dumps({**e.card.to_dict(), "image_size": [64, 64]})),
     "(64, 64)"),
])
def test_damaged_models_fail_to_load_with_a_reason(store, name, damage, expected):
    entry = save_and_damage(store, damage)
    entry = store.get(entry.id)
    with pytest.raises(ModelError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_model(entry)


@pytest.mark.parametrize("content", ["{not json", "[]", json.dumps({"id": "x"})])
def test_corrupt_card_is_listed_as_unusable_and_others_still_load(store, content):
    good = store.save(make_level1_model(2, (32, 32)), card())
    bad = store.save(make_level1_model(2, (32, 32)), card())
    bad.card_path.write_text(content)
    listing = store.list()
    assert [e.id for e in listing.models] == [good.id]
    assert listing.unusable and listing.unusable[0][0] == bad.card_path.name


def test_card_without_model_file_is_unusable(store):
    entry = store.save(make_level1_model(2, (32, 32)), card())
    entry.model_path.unlink()
    assert store.list().unusable == [(entry.card_path.name, "its .keras file is missing")]


def test_lambda_layer_is_refused_by_safe_mode(store):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    entry = store.save(keras.Model(inputs, outputs), card())
    assert [e.id for e in store.list().models] == [entry.id]  # listing reads cards only, never code
    with pytest.raises(ModelError, match="Lambda layer"):
        load_model(entry)
    # The file itself is a valid model: only safe mode stands between it and running its code.
    assert keras.saving.load_model(entry.model_path, safe_mode=False, compile=False) is not None


def test_delete_unlists_first(store):
    entry = store.save(make_level1_model(2, (32, 32)), card())
    store.delete(entry.id)
    assert store.list().models == [] and not entry.model_path.exists()


def test_resolve_unknown(store):
    with pytest.raises(ModelError, match="No trained level-2"):
        store.resolve("level2")


def test_card_round_trip_keeps_unknown_keys_and_reads_version_1_cards(store):
    entry = store.save(make_level1_model(2, (32, 32)), card())
    written = json.loads(entry.card_path.read_text())
    assert written["version"] == CARD_VERSION and written["image_size"] == [32, 32]
    # A card from a newer program (an extra key) and one from before the version field (version 1).
    newer = {**written, "explanations": {"method": "grad-cam"}}
    entry.card_path.write_text(json.dumps(newer))
    again = store.get(entry.id)
    assert again.card.extra == {"explanations": {"method": "grad-cam"}}
    assert again.card.to_dict() == newer  # nothing stripped when written back
    old = {k: v for k, v in written.items() if k != "version"}
    old["metrics"] = {"val_accuracy": 0.75, "a_metric_of_the_future": 1}
    assert ModelCard.from_dict(old).version == 1 and ModelCard.from_dict(old).val_accuracy == 0.75


@pytest.mark.parametrize("content, reason", [
    ({"level": "one", "classes": ["a", "b"], "image_size": [32, 32]}, "malformed"),
    ({"level": 1, "classes": ["a"], "image_size": [32, 32]}, "two classes"),
    ({"level": 1, "classes": ["a", "b"], "image_size": [32]}, "malformed"),
    ({"level": 1, "classes": ["a", "b"]}, "missing 'image_size'"),
])
def test_malformed_cards_are_unusable_with_the_reason(store, content, reason):
    entry = store.save(make_level1_model(2, (32, 32)), card())
    entry.card_path.write_text(json.dumps({**content, "id": entry.id}))
    assert store.list().models == [] and reason in store.list().unusable[0][1]


def test_store_queries(store):
    def save(level, backbone=None, classes=("a", "b"), size=(32, 32)):
        return store.save(make_level1_model(len(classes), size), ModelCard(
            level=level, classes=list(classes), image_size=size, backbone=backbone))

    older_level2 = save(2, "mobilenet_v2")
    level1 = save(1)
    level2 = save(2, "mobilenet_v2")
    other_backbone = save(2, "vgg16")
    assert store.latest_per_level() == {1: level1, 2: other_backbone}
    assert list(store.latest_per_level()) == [1, 2] and store.latest(3) is None
    assert store.start_for(2, "mobilenet_v2", ["a", "b"], (32, 32)) == level2 != older_level2
    assert store.start_for(2, "mobilenet_v2", ["a", "b", "c"], (32, 32)) is None
    assert store.start_for(2, "mobilenet_v2", ["a", "b"], (64, 64)) is None
    assert store.resolve("level2") == other_backbone and store.resolve("latest") == other_backbone


def test_a_model_of_the_active_folder_comes_before_a_newer_one_of_another_folder(store):
    """Ten labels in a small data set of the same classes retrain a level 2; the tutorial's data set,
    active again, must keep its own level 2 (and level 3 must start from it), not the newer one."""
    def save(level, root, backbone="mobilenet_v2"):
        return store.save(make_level1_model(2, (32, 32)), ModelCard(
            level=level, classes=["a", "b"], image_size=(32, 32), backbone=backbone,
            dataset={"root": root, "fingerprint": root[-1]}))

    tutorial = save(2, "/data/tutorial")
    tutorial_level0 = save(0, "/data/tutorial", backbone=None)
    small = save(2, "/data/small")
    assert store.latest_per_level(["a", "b"]) == {0: tutorial_level0, 2: small}  # no folder: the newest
    assert store.latest_per_level(["a", "b"], "/data/tutorial") == {0: tutorial_level0, 2: tutorial}
    assert store.latest_per_level(["a", "b"], "/data/small") == {0: tutorial_level0, 2: small}  # level 0 of another folder, failing its own
    assert store.latest_per_level(["a", "b"], "/data/third")[2] == small
    assert store.start_for(2, "mobilenet_v2", ["a", "b"], (32, 32), "/data/tutorial") == tutorial
    assert store.start_for(2, "mobilenet_v2", ["a", "b"], (32, 32)) == small


@pytest.mark.parametrize("hyperparameters, expected", [
    ({"epochs": 30, "epochs_run": 12}, 12),  # stopped early: the epochs it ran, not the ones asked for
    ({"epochs": 0, "epochs_run": 0}, None),  # level 0 trains nothing
    ({}, None),  # a card from before the figure was recorded
])
def test_epochs_run_is_none_for_a_model_that_trained_no_epochs(hyperparameters, expected):
    entry = ModelEntry(id="m", card=replace(card(), hyperparameters=hyperparameters),
                       model_path=Path("m.keras"), card_path=Path("m.json"))
    assert entry.epochs_run == expected
