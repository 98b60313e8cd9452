"""Level 1's modern network option (`--arch xception`): built, sized, trained, explained."""

import numpy as np
import pytest

from core.networks.backbones import count_flops
from core.errors import ConfigError
from core.levels import SMALL_CONVNETS, get_level
from core.networks.factories import SMALL_CONVNET_FACTORIES
from core.training.loop import TrainConfig, train


@pytest.mark.parametrize("arch", list(SMALL_CONVNETS))
def test_every_small_convnet_is_registered_with_its_size_and_flops(arch):
    spec = SMALL_CONVNETS[arch]
    model = SMALL_CONVNET_FACTORIES[arch](2, spec.image_size, 0.5)
    assert abs(count_flops(model) / 1e9 - spec.gflops) < 1e-3
    assert model(np.zeros((1, 90, 70, 3), "float32")).shape == (1, 1)  # raw pixels of any size
    assert arch in get_level(1).archs


def test_the_small_xception_is_the_books():
    model = SMALL_CONVNET_FACTORIES["xception"](2, (180, 180), 0.5)
    assert 700_000 < model.count_params() < 750_000  # "about 0.7 M weights"
    trunk = model.get_layer("residual_trunk")
    assert sum("sepconv" in layer.name for layer in trunk.layers) == 10 and trunk.output.shape[1:] == (6, 6, 512)


def test_arch_defaults_and_checks():
    assert TrainConfig(level=1).resolved().arch == "tutorial"
    config = TrainConfig(level=1, arch="xception").resolved()
    assert config.image_size == (180, 180) and config.epochs == get_level(1).epochs
    assert TrainConfig(level=2).resolved().arch is None
    with pytest.raises(ConfigError, match="uses --backbone"):
        TrainConfig(level=2, arch="xception")
    with pytest.raises(ConfigError, match="offers tutorial, xception"):
        TrainConfig(level=1, arch="resnet")


def test_xception_level1_trains_is_stored_and_explained(dataset):
    from core.serving.explain import Explainer

    result = train(TrainConfig(level=1, arch="xception", epochs=2, batch_size=8, image_size=(48, 48),
                               data_dir=str(dataset)))
    card = result.entry.card
    assert card.hyperparameters["arch"] == "xception" and card.image_size == (48, 48)
    assert card.val_accuracy is not None and card.params["total"] > 700_000
    photo = next((dataset / "validation" / "circles").glob("*.jpg"))
    explanation = Explainer(result.entry).explain(photo)
    assert explanation.heatmap.shape[:2] == (48, 48) and np.isclose(explanation.heatmap.max(), 1.0)
