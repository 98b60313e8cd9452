"""core.networks.backbones and core.networks.factories: cheap random-weight forward passes over every
registered backbone, weights resolution, and the model factories."""

import keras
import numpy as np
import pytest

from core.networks.backbones import BACKBONES, WeightsError, count_flops, get_backbone, resolve_weights
from core.networks.factories import (CaffePreprocess, attach_head, make_feature_extractor, make_head, make_level1_model, prepare_fine_tuning, single_view, with_flip_average)

SMALL = (64, 64)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_forward_flops_and_fine_tuning(name):
    backbone = get_backbone(name)
    extractor = make_feature_extractor(backbone, resolve_weights(backbone, "none"), SMALL)
    images = np.random.default_rng(0).integers(0, 255, (2, 90, 70, 3)).astype("float32")  # any input size
    features = extractor(images)
    assert features.shape[0] == 2 and np.isfinite(np.asarray(features)).all()
    assert count_flops(extractor) > 1e6
    model = attach_head(extractor, make_head(features.shape[1:], num_classes=3))
    assert model(images).shape == (2, 3)
    prepare_fine_tuning(model, backbone)
    base = model.get_layer(name)
    trainable = [l.name for l in base.layers if l.trainable and l.weights]
    assert trainable and all(backbone.is_top_block(n) for n in trainable)
    assert not any(isinstance(l, keras.layers.BatchNormalization) and l.trainable for l in base.layers)
    # Everything below the top block is frozen.
    assert any(l.weights and not l.trainable for l in base.layers)


def test_vgg16_top_block_is_block5():
    backbone = get_backbone("vgg16")
    assert backbone.image_size == (150, 150) and backbone.pooling == "flatten"
    extractor = make_feature_extractor(backbone, resolve_weights(backbone, "none"))
    assert extractor.output.shape[1:] == (4, 4, 512)  # the tutorial's bottleneck shape
    assert 12e9 < count_flops(extractor) < 15e9


def test_mobilenet_v2_native_size_and_flops():
    backbone = get_backbone("mobilenet_v2")
    extractor = make_feature_extractor(backbone, resolve_weights(backbone, "none"))
    assert extractor.output.shape[1:] == (1280,)
    assert 0.55e9 < count_flops(extractor) < 0.65e9  # ~300M multiply-adds


def test_level1_is_the_tutorial_convnet():
    model = make_level1_model(num_classes=2)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 64]
    assert model.output.shape == (None, 1)
    assert model(np.zeros((1, 300, 200, 3), "float32")).shape == (1, 1)
    assert make_level1_model(num_classes=3).output.shape == (None, 3)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_flip_average_averages_the_mirror_and_round_trips(tmp_path, num_classes):
    model = make_level1_model(num_classes, (32, 32))
    averaged = with_flip_average(model)
    images = np.random.default_rng(0).uniform(0, 255, (3, 40, 48, 3)).astype("float32")  # any input size
    expected = (model(images) + model(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(averaged(images), expected, atol=1e-6)
    # A mirror-symmetric picture gets exactly the plain model's answer.
    symmetric = np.concatenate([images[:, :, :24], images[:, :, :24][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(averaged(symmetric), model(symmetric), atol=1e-6)
    assert single_view(averaged) is model and single_view(model) is model
    path = tmp_path / "averaged.keras"
    averaged.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded(images), expected, atol=1e-5)
    assert len(reloaded.weights) == len(model.weights)  # one network, used twice


def test_caffe_preprocess_matches_keras():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(CaffePreprocess()(x), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad", [{"dropout": 1.0}, {"dropout": -0.1}, {"num_classes": 1}])
def test_factories_validate(bad):
    with pytest.raises(ValueError):
        make_level1_model(**{"num_classes": 2, **bad})


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match="mobilenet_v2"):
        get_backbone("resnet9000")


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(get_backbone("mobilenet_v2"), str(tmp_path / "nope.h5"))


def test_a_weights_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    """Pages resolve weights on every run: the file is hashed again only when it changes."""
    import hashlib
    import os

    from core.networks import backbones

    path = tmp_path / "weights.h5"
    path.write_bytes(b"first version")
    hashed = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(backbones.hashlib, "sha256", lambda *a: hashed.append(1) or real_sha256(*a))
    network = get_backbone("mobilenet_v2")
    first = resolve_weights(network, str(path)).key
    assert resolve_weights(network, str(path)).key == first and len(hashed) == 1
    path.write_bytes(b"second version, longer")
    os.utime(path, ns=(1, 1))  # even with the old time, the new size makes it a new version
    second = resolve_weights(network, str(path)).key
    assert second != first and second == f"sha256-{real_sha256(b'second version, longer').hexdigest()[:16]}"
    assert len(hashed) == 2
    # Replaced by a file of the same size with the same modification time (as `cp -p` or unzip leave it):
    # another inode, so hashed again.
    stat = path.stat()
    replacement = tmp_path / "replacement.h5"
    replacement.write_bytes(b"second version, LONGER")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)
    assert resolve_weights(network, str(path)).key == f"sha256-{real_sha256(b'second version, LONGER').hexdigest()[:16]}"
    assert len(hashed) == 3


def test_failed_imagenet_download_says_how_to_supply_a_file(monkeypatch):
    from core.networks import backbones

    def offline(keras, weights, shape):
        raise Exception("URL fetch failure: <urlopen error [Errno -3] Temporary failure in name resolution>")

    backbone = backbones.Backbone(**{**backbones.BACKBONES["vgg16"].__dict__, "builder": offline})
    resolved = resolve_weights(backbone, "imagenet")
    assert resolved.keras_arg == "imagenet"
    with pytest.raises(WeightsError) as info:
        backbones.build_base(backbone, resolved)
    message = str(info.value)
    assert "--weights" in message and "LITTLE_DATA_WEIGHTS_VGG16" in message


def test_local_weights_dir_is_searched_for_imagenet(tmp_path, monkeypatch):
    (tmp_path / "mobilenet_2_5_224_tf_no_top.h5").write_bytes(b"fake")
    monkeypatch.setenv("LITTLE_DATA_WEIGHTS_DIR", str(tmp_path))
    resolved = resolve_weights(get_backbone("mobilenet_025"), "imagenet")
    assert resolved.keras_arg == str(tmp_path / "mobilenet_2_5_224_tf_no_top.h5")
    assert resolved.key.startswith("sha256-")


def test_symmetric_padding_keeps_shapes_and_weights():
    import keras

    from core.networks.backbones import with_symmetric_padding

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
