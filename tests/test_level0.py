"""Level 0: the pretrained ImageNet classifier with its classes grouped into ours, no training."""

import json
import shutil

import numpy as np
import pytest

from core.errors import ConfigError
from core.networks.imagenet import (
    CATS,
    DOGS,
    check_grouping,
    class_names,
    default_grouping,
    describe_group,
    find_grouping,
    group_by_photos,
    parse_grouping,
)
from core.levels import get_level
from core.networks.factories import ClassGroups
from core.training.loop import TrainConfig, TrainingError, train


def test_class_groups_mean_does_not_favour_the_larger_group():
    """A cat photo's stray probability over many dog breeds must not outvote its cat classes."""
    probabilities = np.full((1, 1000), 1e-4, "float32")
    probabilities[0, 1] = 0.3  # the one "cat" class
    probabilities[0, 10:20] = 0.04  # ten "dog" classes: 0.4 in all, but 0.04 each against the cat's 0.3
    groups = [[1], list(range(10, 20))]
    mean = np.asarray(ClassGroups(groups)(probabilities))
    np.testing.assert_allclose(mean, [[0.04 / (0.3 + 0.04)]], rtol=1e-5)  # one unit: the second class
    assert np.asarray(ClassGroups(groups, aggregate="sum")(probabilities))[0, 0] > 0.5  # the sum says dogs
    three = np.asarray(ClassGroups([[1], [10, 11], [500]])(probabilities))
    np.testing.assert_allclose(three[0], np.array([0.3, 0.04, 1e-4]) / (0.3 + 0.04 + 1e-4), rtol=1e-5)


def test_class_groups_mean_keeps_a_broad_group_on_its_best_members():
    """Every animal against every object: a photo of one animal is scored by its animal's probability over the
    group's size, so a broad group still wins on its best member (the mean of the group's log-probabilities,
    tried before, scores the average animal, unrelated to any one photo)."""
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(1e-6, 1e-4, (1, 1000)).astype("float32")
    probabilities[0, 1] = 0.9  # a goldfish
    probabilities /= probabilities.sum()
    animals, objects = list(range(0, 398)), list(range(398, 1000))
    assert np.asarray(ClassGroups([objects, animals])(probabilities))[0, 0] > 0.95  # the second class: animals


def test_class_groups_sum_and_renormalise():
    probabilities = np.zeros((2, 1000), "float32")
    probabilities[0, [1, 2]] = 0.3, 0.1  # class a: 0.4
    probabilities[0, 7] = 0.2  # class b: 0.2; the rest is ignored
    probabilities[1, 7] = 0.9
    two = np.asarray(ClassGroups([[1, 2], [7]], aggregate="sum")(probabilities))
    np.testing.assert_allclose(two, [[0.2 / 0.6], [1.0]], rtol=1e-6)  # one unit: the second class
    three = np.asarray(ClassGroups([[1], [2], [7]], aggregate="sum")(probabilities))
    np.testing.assert_allclose(three[0], [0.5, 1 / 6, 1 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        ClassGroups([[1], []])
    with pytest.raises(ValueError, match="aggregate"):
        ClassGroups([[1], [2]], aggregate="max")


def test_the_group_rules_are_spelled_alike_in_the_layer_and_beside_it():
    from core.networks.imagenet import GroupScore

    assert {ClassGroups.MEAN, ClassGroups.SUM} == {rule.value for rule in GroupScore}
    assert ClassGroups.MEAN == GroupScore.MEAN and ClassGroups.SUM == GroupScore.SUM


def test_class_groups_config_round_trip_and_older_models_keep_summing():
    layer = ClassGroups([[1, 2], [7]], name="class_groups")
    again = ClassGroups.from_config(layer.get_config())
    assert again.groups == [[1, 2], [7]] and again.aggregate == ClassGroups.MEAN
    older = {key: value for key, value in layer.get_config().items() if key != "aggregate"}
    assert ClassGroups.from_config(older).aggregate == ClassGroups.SUM  # as it was calibrated


def test_older_models_load_through_keras_summing_and_new_ones_take_means():
    import keras

    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.factories import make_grouped_classifier

    inputs = keras.Input((1000,))
    model = keras.Model(inputs, ClassGroups([[1], list(range(10, 20))], name="class_groups")(inputs))
    config = model.get_config()
    layer_config = next(layer for layer in config["layers"] if layer["name"] == "class_groups")["config"]
    del layer_config["aggregate"]  # as saved before the option existed
    older = keras.Model.from_config(config)
    assert older.get_layer("class_groups").aggregate == ClassGroups.SUM
    probabilities = np.full((1, 1000), 1e-4, "float32")
    probabilities[0, 1], probabilities[0, 10:20] = 0.3, 0.04
    np.testing.assert_allclose(np.asarray(older(probabilities)), [[0.4 / 0.7]], rtol=1e-4)

    backbone = get_backbone("mobilenet_v2")
    level0 = make_grouped_classifier(backbone, resolve_weights(backbone, "none", with_classifier=True), [[1], [2, 3]],
                                     (64, 64))
    assert level0.get_layer("class_groups").aggregate == ClassGroups.MEAN


def test_a_card_says_what_its_level0_found_and_older_cards_found_nothing():
    from core.serving.cards import ModelCard

    def card(hyperparameters):
        return ModelCard.from_dict({"level": 0, "classes": ["a", "b"], "image_size": [8, 8],
                                    "imagenet_classes": {"a": [3, 1], "b": [2]}, "hyperparameters": hyperparameters})

    found = card({"found_imagenet_classes": {"photos": 12, "per_class": 5, "held_out_accuracy": 0.75}}).found_grouping
    assert found.grouping == {"a": [3, 1], "b": [2]} and (found.photos, found.per_class, found.held_out_accuracy) == (12, 5, 0.75)
    for older in (None, {}, {"class_groups": "mean"}, {"found_imagenet_classes": {"photos": 12}}):
        assert card(older).found_grouping is None


def test_a_card_says_whether_its_level0_summed_groups_of_different_sizes():
    from core.serving.cards import ModelCard

    def card(**fields):
        return ModelCard.from_dict({"level": 0, "classes": ["cats", "dogs"], "image_size": [8, 8], **fields})

    older = card(imagenet_classes={"cats": list(range(281, 294)), "dogs": DOGS}, hyperparameters={"epochs": 0})
    assert older.sums_class_groups and older.outvoting_groups() == (("dogs", 118), ("cats", 13))
    assert card(imagenet_classes={"cats": CATS, "dogs": DOGS}, hyperparameters=None).sums_class_groups
    newer = card(imagenet_classes={"cats": CATS, "dogs": DOGS}, hyperparameters={"class_groups": "mean"})
    assert not newer.sums_class_groups and newer.outvoting_groups() is None
    assert card(imagenet_classes={"cats": [281], "dogs": [151]}).outvoting_groups() is None  # sizes equal
    assert not card(level=2).sums_class_groups  # not a level 0


def test_built_in_grouping_for_cats_and_dogs_only():
    assert default_grouping(["cats", "dogs"]) == {"cats": CATS, "dogs": DOGS}
    assert default_grouping(["Dog", "Cat"]) == {"Dog": DOGS, "Cat": CATS}
    assert default_grouping(["circles", "squares"]) is None
    assert default_grouping(["cats", "dogs", "birds"]) is None
    assert len(DOGS) == 118 and CATS == list(range(281, 286))  # the house cats


def test_cli_grouping_syntax_and_checks():
    assert parse_grouping(["cats=281-283", "dogs=151,153-154"]) == {"cats": [281, 282, 283], "dogs": [151, 153, 154]}
    with pytest.raises(ConfigError, match="CLASS=INDICES"):
        parse_grouping(["cats:281"])
    with pytest.raises(ConfigError, match="Give ImageNet classes for dogs"):
        check_grouping({"cats": [281]}, ["cats", "dogs"])
    with pytest.raises(ConfigError, match="given for both cats and dogs"):
        check_grouping({"cats": [281], "dogs": [281]}, ["cats", "dogs"])
    with pytest.raises(ConfigError, match="0 to 999"):
        check_grouping({"cats": [1000], "dogs": [1]}, ["cats", "dogs"])
    assert check_grouping({"dogs": [9, 3, 9], "cats": [2]}, ["cats", "dogs"]) == {"cats": [2], "dogs": [9, 3]}


def test_level0_is_registered_as_a_level_that_trains_nothing():
    level = get_level(0)
    assert not level.trains and level.uses_imagenet_classes and level.needs_backbone
    config = TrainConfig(level=0).resolved()
    assert config.epochs == 0 and config.backbone == "efficientnet_lite2" and config.image_size == (260, 260)


def test_level0_without_a_classifier_says_what_to_do(dataset):
    with pytest.raises(TrainingError, match="needs a backbone with its ImageNet classifier"):
        train(TrainConfig(level=0, backbone="mobilenet_025", weights="none", data_dir=str(dataset),
                          imagenet_classes={"circles": [1], "squares": [2]}))


def test_level0_without_a_grouping_finds_one_from_the_training_photos(dataset, tmp_path):
    """Classes with no built-in grouping: level 0 looks at the training photos (nothing is trained) and
    its card says what it found, from how many photos."""
    result = train(TrainConfig(level=0, backbone="mobilenet_v2", weights="none", data_dir=str(dataset),
                               image_size=(64, 64), models_dir=str(tmp_path / "models")))
    card = result.entry.card
    found = card.found_grouping
    assert found is not None and found.photos == 24 and found.per_class in (1, 2, 5, 10, 20, 50, 100)
    assert set(card.imagenet_classes) == {"circles", "squares"} and all(card.imagenet_classes.values())
    assert not set(card.imagenet_classes["circles"]) & set(card.imagenet_classes["squares"])
    assert card.params["trainable"] == 0 and card.history == {}
    assert found.held_out_accuracy is not None and 0.0 <= found.held_out_accuracy <= 1.0
    given = train(TrainConfig(level=0, backbone="mobilenet_v2", weights="none", data_dir=str(dataset), image_size=(64, 64),
                              models_dir=str(tmp_path / "models"), imagenet_classes={"circles": [3, 1], "squares": [2]}))
    assert given.entry.card.found_grouping is None
    assert given.entry.card.imagenet_classes == {"circles": [3, 1], "squares": [2]}  # as given, in order


def photos_showing(classes: dict[int, list[int]], per_class: int, spread: float, seed: int = 0):
    """Synthetic ImageNet probabilities: each photo of class c puts most of its probability on one of
    `classes[c]`'s ImageNet classes, the rest spread thinly over all 1000."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for c, members in classes.items():
        for _ in range(per_class):
            row = rng.uniform(0, spread, 1000)
            row[rng.choice(members)] += 1.0
            rows.append(row / row.sum())
            labels.append(c)
    return np.asarray(rows), np.asarray(labels)


def test_find_grouping_gives_each_class_the_imagenet_classes_its_photos_show():
    probabilities, labels = photos_showing({0: [985], 1: [883, 738], 2: list(range(300, 315))}, 40, 0.001)
    found = find_grouping(probabilities, labels, ["daisy", "roses", "beetles"])
    assert found.grouping["daisy"][0] == 985 and set(found.grouping["roses"][:2]) == {883, 738}
    assert set(found.grouping["beetles"][:15]) == set(range(300, 315))
    every = [i for group in found.grouping.values() for i in group]
    assert len(every) == len(set(every))  # no ImageNet class in two groups
    assert found.photos == 120 and found.held_out_accuracy > 0.9
    # A class seen through 15 ImageNet classes needs groups that hold most of them: with one class each,
    # most of the beetles' photos would score nothing.
    assert found.per_class >= 10


def test_find_grouping_keeps_groups_short_where_imagenet_has_the_very_classes():
    probabilities, labels = photos_showing({0: [281], 1: [151]}, 20, 0.01)
    found = find_grouping(probabilities, labels, ["cats", "dogs"])
    assert found.per_class == 1 and found.grouping == {"cats": [281], "dogs": [151]}


def test_a_class_whose_photos_look_like_anothers_still_gets_imagenet_classes():
    """A class whose photos are half like one class's and half like another's, only less so, is behind one of
    them on every ImageNet class: it takes the class its photos give most that neither kept."""
    probabilities = np.zeros((3, 1000))
    probabilities[0, [1, 7]] = 0.8, 0.2  # "tabby"-like photo, some "lynx"
    probabilities[1, [2, 8]] = 0.8, 0.2
    probabilities[2, [1, 2, 7, 8]] = 0.4, 0.4, 0.15, 0.05  # the mixed class
    groups = group_by_photos(probabilities, np.array([0, 1, 2]), 3, per_class=1)
    assert groups == [[1], [2], [7]]


def test_find_grouping_with_a_class_of_one_photo_and_bad_input():
    probabilities, labels = photos_showing({0: [1], 1: [2]}, 3, 0.01)
    found = find_grouping(probabilities[:4], labels[:4], ["a", "b"])  # "b" has one photo: sizes cannot be tried
    assert found.held_out_accuracy is None and found.per_class == 10 and found.grouping["b"][0] == 2
    with pytest.raises(ValueError, match=r"\[N, 1000\]"):
        find_grouping(probabilities[:, :10], labels, ["a", "b"])


def test_describe_group_names_the_first_classes():
    names = [f"class_{i}" for i in range(1000)]
    assert describe_group([883, 738, 716], names) == "class 883, class 738, class 716"
    assert describe_group(list(range(20)), names, shown=2) == "class 0, class 1 and 18 more"
    assert describe_group([5, 6], None) == "5, 6"


def test_class_names_come_from_a_local_copy_or_say_they_are_missing(tmp_path, monkeypatch, shared):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(ConfigError, match="not on this machine"):
        class_names(download=False)
    (tmp_path / "keras" / "models").mkdir(parents=True)
    shutil.copy(shared / "weights" / "keras_cache" / "models" / "imagenet_class_index.json", tmp_path / "keras" / "models")
    names = class_names(download=False)
    assert len(names) == 1000 and names[281] == "tabby" and names[151] == "Chihuahua"


@pytest.mark.slow
def test_level0_on_real_photos_with_genuine_weights(shared, monkeypatch):
    """The default backbone's own ImageNet classifier (EfficientNet-Lite2), no training, on 40 cats and 40 dogs."""
    monkeypatch.setenv("LITTLE_DATA_SHARED_DIR", str(shared))
    result = train(TrainConfig(level=0, limit_per_class=40, data_dir=str(shared / "datasets" / "cats_vs_dogs")))
    card = result.entry.card
    assert card.weights.startswith("file efficientnet_lite2_imagenet_torch_layout.npz")
    assert card.imagenet_classes == {"cats": CATS, "dogs": DOGS} and card.history == {}
    assert card.hyperparameters["epochs"] == 0 and card.hyperparameters["optimizer"] is None
    assert card.hyperparameters["class_groups"] == "mean" and not card.sums_class_groups
    assert card.params["trainable"] == 0 and card.params["total"] > 3_000_000
    # It knows cats and dogs before seeing any of ours: 0.975 here, where summing the groups gave 0.90
    # (ImageNet's 118 dog breeds outvoted its 13 house and wild cats).
    assert card.val_accuracy >= 0.93
    assert json.loads(result.entry.card_path.read_text())["imagenet_classes"]["cats"] == CATS


@pytest.mark.slow
def test_level0_finds_imagenet_classes_for_the_flowers(shared, monkeypatch, tmp_path):
    """The flowers have no built-in grouping: level 0 finds one from 8 training photos a class with the genuine
    EfficientNet-Lite2, puts ImageNet's "daisy" among the daisies' classes, and leaves the training photos'
    features in the cache for level 2."""
    from core.data.folders import first_per_class, summarize
    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.features import feature_cache_path

    from core.training import recipes

    monkeypatch.setenv("LITTLE_DATA_SHARED_DIR", str(shared))
    checks = []  # the full classifier against its top on the cached features: the features must be used

    def agrees(*args):
        checks.append(agreed := original(*args))
        return agreed

    original = recipes._agrees_on_first_photos
    monkeypatch.setattr(recipes, "_agrees_on_first_photos", agrees)
    data = shared / "datasets" / "flowers_fewshot"
    result = train(TrainConfig(level=0, limit_per_class=8, data_dir=str(data), models_dir=str(tmp_path / "models")))
    assert checks == [True]
    card = result.entry.card
    assert card.found_grouping is not None and card.found_grouping.photos == 40
    assert 985 in card.imagenet_classes["daisy"][:3]  # ImageNet's daisy
    assert card.val_accuracy >= 0.3  # 5 classes: chance is 0.2; 52% on the 150 validation photos with every training photo
    backbone = get_backbone("efficientnet_lite2")
    path = feature_cache_path(None, first_per_class(summarize(data), 8).fingerprint, backbone.name,
                              resolve_weights(backbone, None).key, backbone.image_size, "train")
    assert path.is_file() and np.load(path).shape == (40, 1280)


def test_the_cli_says_what_level0_found():
    """`core train --level 0` prints what it found, a line per class (by index where ImageNet's names are absent)."""
    from core.cli import found_grouping_text
    from core.networks.imagenet import FoundGrouping

    text = found_grouping_text(FoundGrouping({"roses": [883, 738], "tulips": [991]}, 5, 0.7, 12))
    assert text.splitlines() == ["ImageNet classes found from 12 training photos, up to 5 a class:",
                                 "  roses: 883, 738", "  tulips: 991"]
