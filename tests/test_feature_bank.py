"""core.networks.feature_bank: features kept photo by photo, so a split that changed sends only its new photos through the network."""

import shutil

import numpy as np
import pytest

import core.networks.feature_bank as feature_bank_module
from core.data.decoded import decode_split
from core.data.folders import summarize
from core.networks.backbones import resolve_weights
from core.networks.factories import make_feature_extractor
from core.networks.feature_bank import FeatureBank, feature_bank
from core.networks.features import LazyExtractor, extract_features, split_features


def photos(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)


def test_a_photo_is_found_by_its_pixels_and_only_by_them(tmp_path):
    bank = FeatureBank(tmp_path / "bank.npz")
    images = photos(5)
    digests = bank.digests(images)
    assert digests.shape == (5, 16) and len({row.tobytes() for row in digests}) == 5
    assert np.array_equal(bank.digests(images[[3, 1]]), digests[[3, 1]])  # the same pixels, the same digest
    changed = images[:1].copy()
    changed[0, 0, 0, 0] ^= 1  # one bit of one pixel
    assert not np.array_equal(bank.digests(changed)[0], digests[0])

    found, rows = bank.lookup(digests)  # nothing kept yet
    assert not found.any() and rows is None
    features = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    bank.add(digests[:3], features[:3])
    found, rows = bank.lookup(digests[[4, 2, 0]])
    assert found.tolist() == [False, True, True]
    assert np.array_equal(rows[1:], features[[2, 0]])
    bank.add(digests[2:], features[2:] + 100)  # a photo added again keeps its newest row
    found, rows = bank.lookup(digests)
    assert found.all() and np.array_equal(rows, np.concatenate([features[:2], features[2:] + 100]))


def test_the_oldest_rows_go_past_the_size_limit_and_a_damaged_bank_starts_again(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_bank_module, "MAX_BANK_BYTES", 4 * 3 * 4)  # four rows of three float32
    bank = FeatureBank(tmp_path / "bank.npz")
    digests = bank.digests(photos(6))
    features = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    bank.add(digests[:3], features[:3])
    bank.add(digests[3:], features[3:])
    found, rows = bank.lookup(digests)
    assert found.tolist() == [False, False, True, True, True, True]
    assert np.array_equal(rows[2:], features[2:])
    bank.add(digests[:1], np.zeros((1, 5), np.float32))  # rows of another network's shape replace the old ones
    assert bank.lookup(digests)[0].tolist() == [True, False, False, False, False, False]

    for damage in (b"not a bank", bank.path.read_bytes()[:-20]):  # garbage, or a bank cut short
        bank.path.write_bytes(damage)
        found, rows = bank.lookup(digests)
        assert not found.any() and rows is None
        bank.add(digests[:2], features[:2])
        assert bank.lookup(digests)[0].tolist() == [True, True, False, False, False, False]


def test_banks_are_kept_apart_by_network_weights_size_and_view_and_random_weights_have_none(tmp_path):
    base = feature_bank(tmp_path, "net", "imagenet", (32, 32))
    others = [feature_bank(tmp_path, "other", "imagenet", (32, 32)), feature_bank(tmp_path, "net", "file-1", (32, 32)),
              feature_bank(tmp_path, "net", "imagenet", (64, 64)), feature_bank(tmp_path, "net", "imagenet", (32, 32), True)]
    assert base == feature_bank(tmp_path, "net", "imagenet", [32, 32])
    assert len({bank.path for bank in [base, *others]}) == 5
    assert all(bank.path.parent == tmp_path / "features" / "bank" for bank in others)
    assert feature_bank(tmp_path, "net", "none", (32, 32)) is None  # every build of random weights is another network


def test_a_split_that_changed_sends_only_its_new_photos_through_the_network(dataset_factory, tmp_path, seeded):
    """Photos moved from one split to another (as labelling moves them) are not computed again; a new one is."""
    from tests.helpers import make_image
    from tests.registry_examples import SEEDED_BACKBONE as network

    data = tmp_path / "data"
    shutil.copytree(dataset_factory(), data)
    weights = resolve_weights(network, seeded)
    extractor = make_feature_extractor(network, weights)
    size = network.image_size
    computed = []

    def features_of(split: str, network_or_lazy=extractor) -> tuple[np.ndarray, list[str]]:
        summary = summarize(data)
        features, decoded = split_features(network_or_lazy, summary, split, network.name, weights.key, size,
                                           cache_dir=tmp_path / "cache", progress=lambda done, total: computed.append(total))
        return features, decoded.paths

    features_of("train")
    assert computed[-1] == 24
    features_of("validation")
    assert computed[-1] == 12
    computed.clear()
    moved = sorted((data / "validation" / "circles").iterdir())[:2]
    for photo in moved:  # two validation photos labelled into train/
        photo.rename(data / "train" / "circles" / f"moved-{photo.name}")
    no_network = LazyExtractor(lambda: pytest.fail("a network was built"))
    train, paths = features_of("train", no_network)
    validation, _ = features_of("validation", no_network)
    assert computed == [] and len(train) == 26 and len(validation) == 10  # both splits came from the bank

    make_image("squares", np.random.default_rng(9)).save(data / "train" / "squares" / "new.jpg", quality=90)
    train, paths = features_of("train", LazyExtractor(lambda: make_feature_extractor(network, weights)))
    assert computed == [1] and len(train) == 27  # the new photo alone, among 26 from the bank
    # The same rows as the network gives, in the split's own order.
    decoded = decode_split(summarize(data), "train", size, cache_dir=tmp_path / "fresh")
    direct, count = extract_features(extractor, decoded, None)
    assert count == 27 and np.allclose(train, direct, atol=1e-5) and paths == decoded.paths

    mirror = feature_bank(tmp_path / "cache", network.name, weights.key, size, mirror=True)
    mirrored, count = extract_features(extractor, decoded, None, mirror=True, bank=mirror)
    assert count == 27 and np.allclose(mirrored, extract_features(extractor, decoded, None, mirror=True)[0], atol=1e-5)
    again, count = extract_features(extractor, decoded, None, mirror=True, bank=mirror,
                                    progress=lambda done, total: pytest.fail("computed again"))
    assert count == 0 and np.array_equal(again, mirrored)


@pytest.mark.parametrize("lazy", [False, True], ids=["network-given", "network-built-on-demand"])
def test_a_bank_of_another_shape_under_the_same_name_is_replaced(dataset, tmp_path, seeded, lazy):
    from tests.registry_examples import SEEDED_BACKBONE as network

    weights = resolve_weights(network, seeded)
    extractor = (LazyExtractor(lambda: make_feature_extractor(network, weights)) if lazy
                 else make_feature_extractor(network, weights))
    decoded = decode_split(summarize(dataset), "validation", network.image_size, cache_dir=tmp_path)
    bank = feature_bank(tmp_path, network.name, weights.key, network.image_size)
    bank.add(bank.digests(decoded.images[:3]), np.zeros((3, 5), np.float32))  # rows of a network redefined since
    features, count = extract_features(extractor, decoded, None, bank=bank)
    assert count == len(decoded) and features.shape == (len(decoded), 16)
    found, rows = bank.lookup(bank.digests(decoded.images))
    assert found.all() and np.array_equal(rows, features)
