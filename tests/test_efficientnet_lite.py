"""EfficientNet-Lite2: our Keras rebuild, its PyTorch-layout weights, and the registered backbones."""

import numpy as np
import pytest

from core.networks.backbones import BACKBONES, build_base, count_flops, get_backbone, resolve_weights
from core.data.images import load_array
from core.networks.imagenet import DOGS
from tests.helpers import SHARED

LITE2 = SHARED / "weights" / "efficientnet_lite2_imagenet_torch_layout.npz"
ANY_CAT = range(281, 294)  # ImageNet's house cats and wild cats: a house cat is often called a lynx


@pytest.mark.parametrize("name, gflops", [("efficientnet_lite2", 1.72), ("efficientnet_v2b0", 1.43),
                                          ("convnext_tiny", 8.91), ("mobilenet_v2", 0.60)])
def test_registered_flops_are_counted_at_the_native_size(name, gflops):
    backbone = get_backbone(name)
    base = backbone.build(None)
    assert backbone.flops == count_flops(base)
    assert abs(backbone.flops / 1e9 - gflops) < 0.01  # 2 x the published multiply-adds


def test_lite2_architecture():
    import keras

    from core.networks.efficientnet_lite import build_efficientnet_lite2

    model = build_efficientnet_lite2(keras, None, (260, 260, 3), include_top=True)
    assert model.count_params() == 6_150_168  # as many weights as the published checkpoint
    assert model.get_layer("head_relu").output.shape[1:] == (9, 9, 1280)
    assert not any("se_" in layer.name for layer in model.layers)  # Lite: no squeeze-excitation


def test_lite2_weights_file_of_another_network_is_refused(tmp_path):
    import keras

    from core.networks.efficientnet_lite import build_efficientnet_lite2

    np.savez(tmp_path / "other.npz", **{"_conv_stem.weight": np.zeros((16, 3, 3, 3), "float32")})
    with pytest.raises(ValueError, match="other.npz"):
        build_efficientnet_lite2(keras, str(tmp_path / "other.npz"), (64, 64, 3))


@pytest.mark.skipif(not LITE2.is_file(), reason="../shared (real photos and weights) is not present beside the project")
def test_lite2_imagenet_classifier_knows_cats_and_dogs(monkeypatch):
    """The genuine weights through our rebuild: ImageNet's cat and dog classes on real photos."""
    monkeypatch.setenv("LITTLE_DATA_SHARED_DIR", str(SHARED))
    backbone = get_backbone("efficientnet_lite2")
    weights = resolve_weights(backbone, "imagenet", with_classifier=True)
    assert weights.keras_arg.endswith("efficientnet_lite2_imagenet_torch_layout.npz") and not weights.torch_padding
    classifier = build_base(backbone, weights, with_classifier=True)
    photos = {kind: sorted((SHARED / "datasets" / "cats_vs_dogs" / "validation" / kind).glob("*.jpg"))[:10]
              for kind in ("cats", "dogs")}
    pixels = np.stack([load_array(p, (260, 260)) for kind in ("cats", "dogs") for p in photos[kind]]).astype("float32")
    probabilities = np.asarray(classifier.predict((pixels - 127.0) / 128.0, verbose=0))
    top = probabilities.argmax(axis=1)
    assert sum(t in ANY_CAT for t in top[:10]) >= 8 and sum(t in DOGS for t in top[10:]) >= 9
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_lite2_is_offered_for_level_0_and_its_classifier_starts_at_the_head():
    backbone = BACKBONES["efficientnet_lite2"]
    assert backbone.classifier is not None and backbone.classifier.feature_layer == "head_relu"
    assert backbone.preprocessing == "lite" and backbone.image_size == (260, 260)
    assert BACKBONES["convnext_tiny"].classifier is None  # Keras' ConvNeXt hides its last residual add
