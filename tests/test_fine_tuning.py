"""Level 3 on cached views: the cut, the cache and its keys, the batches, and the model it saves."""

from dataclasses import dataclass, replace

import keras
import numpy as np
import pytest

from core.data.augment import AugmentConfig, preset
from core.errors import Cancelled, ConfigError
from core.levels import get_level
from core.networks.backbones import get_backbone, leaf_layers
from core.networks.cut import cut_layer, split_at_top_block
from core.networks.factories import single_view
from core.serving.evaluation import accuracy_of_outputs, model_outputs
from core.serving.model_store import load_model
from core.training.loop import TrainConfig, train
from core.training.view_cache import ViewBatches, ViewCacheKey, cached_views, view_names

TINY = (32, 32)


@dataclass
class Photos:
    """What `cached_views` reads of a decoded split."""

    images: np.ndarray

    def __len__(self):
        return len(self.images)


def photos(n=10, seed=0):
    return Photos(np.random.default_rng(seed).integers(0, 256, (n, *TINY, 3), dtype=np.uint8))


def tiny_bottom():
    inputs = keras.Input((*TINY, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, name="stem_conv")(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, x)


def key(**changes):
    base = ViewCacheKey(fingerprint="abc", backbone="tiny_net", weights_key="none", image_size=TINY,
                        cut_layer="stem_conv", augment=preset("tutorial_train"), views=4, split="train")
    return replace(base, **changes)


def test_the_cache_name_changes_with_everything_its_contents_depend_on(tmp_path):
    changes = [dict(fingerprint="abd"), dict(backbone="other"), dict(weights_key="imagenet"),
               dict(image_size=(64, 64)), dict(cut_layer="block14_add"), dict(augment=preset("aggressive")),
               dict(augment=AugmentConfig(horizontal_flip=True)), dict(views=8), dict(split="validation")]
    paths = {key(**change).path(tmp_path) for change in changes} | {key().path(tmp_path)}
    assert len(paths) == len(changes) + 1
    assert key().path(tmp_path) != key().path(tmp_path / "elsewhere")


@pytest.mark.parametrize("other", [dict(augment=preset("aggressive")), dict(cut_layer="top_conv"), dict(views=3)],
                         ids=["augmentation", "cut point", "view count"])
def test_a_cache_is_never_reused_for_another_augmentation_cut_or_view_count(tmp_path, other):
    bottom, data = tiny_bottom(), photos()
    first, cached = cached_views(bottom, data, key(), tmp_path)
    assert not cached and first.shape == (4, 10, 15, 15, 4) and first.dtype == np.float16
    again, cached = cached_views(bottom, data, key(), tmp_path)
    assert cached and np.array_equal(again, first)
    _, cached = cached_views(bottom, data, key(**other), tmp_path)
    assert not cached
    assert len(list((tmp_path / "views").glob("*.npy"))) == 2


def test_a_cache_of_other_photos_is_rebuilt(tmp_path):
    bottom = tiny_bottom()
    cached_views(bottom, photos(10), key(), tmp_path)
    views, cached = cached_views(bottom, photos(12), key(), tmp_path)  # same name, another length: stale
    assert not cached and views.shape[1] == 12


@pytest.mark.parametrize("failure", ["cancel", "error"])
def test_a_build_stopped_half_way_leaves_nothing_behind(tmp_path, failure):
    calls = []

    def should_cancel():
        calls.append(1)
        return failure == "cancel" and len(calls) > 3

    def progress(done, total):
        if failure == "error" and done > 20:
            raise OSError("disk full")

    with pytest.raises(Cancelled if failure == "cancel" else OSError):
        cached_views(tiny_bottom(), photos(40), key(), tmp_path, should_cancel=should_cancel, progress=progress,
                     batch_size=8)
    assert list((tmp_path / "views").iterdir()) == []  # no cache, no partial file
    _, cached = cached_views(tiny_bottom(), photos(40), key(), tmp_path)
    assert not cached  # the next run builds it whole


def test_only_the_most_recently_used_caches_are_kept(tmp_path):
    import os

    from core.training.view_cache import evict

    folder = tmp_path / "views"
    folder.mkdir()
    for age, name in enumerate("abcdef"):
        (folder / f"{name}.npy").write_bytes(b"x")
        os.utime(folder / f"{name}.npy", (1_000_000 - age * 100, 1_000_000 - age * 100))  # a is the newest
    (folder / "g.123.partial.npy").write_bytes(b"x")  # another process's build in progress
    (folder / "h.456.partial.npy").write_bytes(b"x")  # a build whose process died long ago
    os.utime(folder / "h.456.partial.npy", (1_000_000, 1_000_000))
    gone = evict(folder, keep=3, spare=folder / "f.npy")
    assert sorted(p.name for p in gone) == ["c.npy", "d.npy", "e.npy", "h.456.partial.npy"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.npy", "b.npy", "f.npy", "g.123.partial.npy"]


def test_the_views_are_the_photo_its_mirror_and_draws_of_the_augmentation(tmp_path):
    assert view_names(preset("tutorial_train"), 4) == ["photo", "mirror", "draw 1", "draw 2"]
    assert view_names(preset("none"), 4) == ["photo"]  # nothing to vary: one view
    assert view_names(AugmentConfig(zoom=0.2), 3) == ["photo", "draw 1", "draw 2"]  # no flips, no mirror
    bottom, data = tiny_bottom(), photos(6)
    views, _ = cached_views(bottom, data, key(), tmp_path, dtype=np.float32)
    pixels = data.images.astype(np.float32)
    np.testing.assert_allclose(views[0], bottom.predict(pixels, verbose=0), atol=1e-5)
    np.testing.assert_allclose(views[1], bottom.predict(pixels[:, :, ::-1], verbose=0), atol=1e-5)
    assert not np.allclose(views[2], views[0]) and not np.allclose(views[2], views[3])
    # A view is the same picture whatever the number of views asked for.
    fewer, _ = cached_views(bottom, data, key(views=3), tmp_path, dtype=np.float32)
    np.testing.assert_allclose(fewer[2], views[2], atol=1e-5)


def test_each_epoch_shows_every_photo_once_and_every_view_once_in_as_many_epochs():
    n_views, n_photos = 3, 10
    # Each cached value says which view of which photo it is.
    views = np.array([[[v * 100 + p] for p in range(n_photos)] for v in range(n_views)], np.float16)
    batches = ViewBatches(views, np.arange(n_photos), batch_size=4, seed=0)
    seen = {p: [] for p in range(n_photos)}
    for _ in range(n_views):
        epoch = [batches[i] for i in range(len(batches))]
        batches.on_epoch_end()
        labels = np.concatenate([y for _, y in epoch])
        values = np.concatenate([x for x, _ in epoch])[:, 0].astype(int)
        assert sorted(labels) == list(range(n_photos))
        assert np.array_equal(values % 100, labels)  # the label goes with its own photo
        for value in values:
            seen[value % 100].append(value // 100)
    assert all(sorted(v) == list(range(n_views)) for v in seen.values())
    assert len(batches) == 3 and epoch[-1][0].dtype == np.float32


def test_the_two_parts_compose_to_the_model_and_share_its_weights(tiny_backbone):
    from core.networks.factories import attach_head, make_feature_extractor, make_head, prepare_fine_tuning
    from core.networks.backbones import resolve_weights

    extractor = make_feature_extractor(tiny_backbone, resolve_weights(tiny_backbone, "none"), TINY)
    model = prepare_fine_tuning(attach_head(extractor, make_head(extractor.output_shape[1:], 2, 0.5)), tiny_backbone)
    split = split_at_top_block(model, tiny_backbone, tiny_backbone.top_block_prefixes())
    trained = [layer.name for layer in leaf_layers(split.top) if layer.trainable and layer.trainable_weights]
    assert split.cut_layer == "stem_conv" and len(trained) == 3  # top_conv and the head's two Dense layers
    x = np.random.default_rng(0).uniform(0, 255, (3, *TINY, 3)).astype("float32")
    np.testing.assert_allclose(split.top(split.bottom(x)), model(x), atol=1e-6)
    assert {id(w) for w in split.top.weights} <= {id(w) for w in model.weights}


def test_a_top_block_jumped_by_a_residual_cannot_be_cut():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 1, name="low_conv")(inputs)
    b = keras.layers.Conv2D(3, 1, name="top_conv")(a)
    base = keras.Model(inputs, keras.layers.Add(name="top_add")([b, inputs]), name="skip")
    with pytest.raises(ConfigError, match="reads 2 tensors"):
        cut_layer(base, ("top_",))
    with pytest.raises(ConfigError, match="No layer"):
        cut_layer(base, ("nothing_",))


def test_several_workers_fine_tune_on_the_fly():
    assert TrainConfig(level=3, workers=2).resolved().views == 0


def test_top_block_sizes_are_checked_and_fall_back_where_a_backbone_has_one():
    assert TrainConfig(level=3).resolved().top_block == get_level(3).fine_tuning.top_block == "small"
    assert TrainConfig(level=3, top_block="medium").resolved().top_block == "medium"
    assert TrainConfig(level=3, backbone="vgg16").resolved().top_block == "large"  # VGG16 has only its block5
    assert TrainConfig(level=3, backbone="mobilenet_v2").resolved().top_block == "medium"  # its own measured best
    assert TrainConfig(level=3).resolved().learning_rate == 1e-3  # Lite2's measured rate on cached views
    assert TrainConfig(level=3, views=0).resolved().learning_rate == get_level(3).learning_rate == 1e-4
    assert TrainConfig(level=3, backbone="mobilenet_v2").resolved().learning_rate == 1e-4
    assert TrainConfig(level=3, top_block="medium").resolved().learning_rate == 1e-4  # measured on the small block only
    with pytest.raises(ConfigError, match="has top blocks large"):
        TrainConfig(level=3, backbone="vgg16", top_block="small").resolved()
    tutorial = TrainConfig(level=3, views=0).resolved()  # the tutorial's way: one flag
    assert (tutorial.epochs, tutorial.top_block) == (20, "large")
    with pytest.raises(ConfigError, match="fine-tun"):
        TrainConfig(level=2, views=4)
    with pytest.raises(ConfigError, match="views must be"):
        TrainConfig(level=3, views=-1)
    assert get_backbone("efficientnet_lite2").top_block_sizes == ("large", "medium", "small")


@pytest.mark.slow
def test_cached_views_save_the_same_model_as_the_tutorials_way(dataset_factory, tiny_backbone, tmp_path):
    """Same layers, same input contract, the card says how it trained, and its score is the saved model's."""
    shapes = dataset_factory(n_train=24, n_val=10)
    common = dict(backbone=tiny_backbone.name, weights="none", batch_size=8, image_size=TINY, data_dir=str(shapes))
    level2 = train(TrainConfig(level=2, epochs=15, learning_rate=3e-3, **common)).entry
    tutorial = train(TrainConfig(level=3, epochs=2, views=0, **common)).entry
    first = train(TrainConfig(level=3, epochs=2, views=3, **common))
    cached = first.entry
    assert "views_images_per_s" in first.timings  # built
    again = train(TrainConfig(level=3, epochs=1, views=3, seed=5, **common))
    assert "views_images_per_s" not in again.timings  # another seed and epoch count reuse the cache
    a, b = single_view(load_model(tutorial)), single_view(load_model(cached))
    assert [(w.path, w.shape) for w in a.weights] == [(w.path, w.shape) for w in b.weights]
    assert load_model(cached).input_shape == load_model(tutorial).input_shape == (None, None, None, 3)
    assert cached.card.hyperparameters.items() >= {"views": 3, "top_block": "large", "cut_layer": "stem_conv",
                                               "unfrozen_layers": 3, "epochs": 2}.items()
    assert cached.card.hyperparameters["view_names"] == ["photo", "mirror", "draw 1"]
    assert tutorial.card.hyperparameters["views"] == 0 and tutorial.card.hyperparameters["unfrozen_layers"] == 3
    # The score came from cached validation views; running the saved model gives the same.
    from core.data.decoded import decode_split
    from core.data.folders import summarize

    val = decode_split(summarize(shapes), "validation", TINY)
    assert accuracy_of_outputs(model_outputs(load_model(cached), val), val.labels, 2) == cached.card.metrics.val_accuracy
    # Only the top block and head moved; the layers below the cut are level 2's still.
    start = single_view(load_model(level2)).get_layer(tiny_backbone.name)
    tuned = b.get_layer(tiny_backbone.name)
    np.testing.assert_array_equal(tuned.get_layer("stem_conv").get_weights()[0], start.get_layer("stem_conv").get_weights()[0])
    assert not np.array_equal(tuned.get_layer("top_conv").get_weights()[0], start.get_layer("top_conv").get_weights()[0])
    # Random weights differ from one level-2 run to the next: a new level 2 never reuses the old activations.
    train(TrainConfig(level=2, epochs=2, seed=9, **common))
    assert "views_images_per_s" in train(TrainConfig(level=3, epochs=1, views=3, **common)).timings
