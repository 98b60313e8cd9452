"""The quick start: a first result within a minute, from one button on the Overview.

It trains level 2 (a pretrained network's features and a small classifier: the best accuracy per
second) and, where the data set's classes have a built-in ImageNet grouping, level 0 (no training),
in one background job; the app then opens Predict on a validation photo. It uses MobileNetV2, not
the stronger default backbone: its features take a third of the time, which keeps cats vs dogs
within the minute and a half this button promises (98.4% rather than 99.0% at level 2). With
EfficientNet-Lite2 it was measured at 102.7 s from the click to the painted prediction (the worker
90.5 s: level 2's features of 3,600 pictures 54.8 s, its 50-epoch head 19.3 s; docs/benchmarks.md,
"The first model in a minute").
"""

from __future__ import annotations

from pathlib import Path

from core.data.folders import DatasetSummary, sample_paths
from core.networks.imagenet import default_grouping
from core.training.loop import TrainConfig

QUICK_LEVEL = 2
QUICK_BACKBONE = "mobilenet_v2"


def first_models(summary: DatasetSummary, data_dir: str | Path | None = None) -> list[TrainConfig]:
    """What the quick start trains for this data set, in order, each with its level's defaults."""
    data = str(data_dir) if data_dir else None
    configs = [TrainConfig(level=QUICK_LEVEL, backbone=QUICK_BACKBONE, data_dir=data)]
    if default_grouping(summary.classes) is not None:
        configs.append(TrainConfig(level=0, backbone=QUICK_BACKBONE, data_dir=data))
    return configs


def sample_photo(summary: DatasetSummary, seed: int = 0) -> Path:
    """One validation photo to show the first prediction on."""
    return sample_paths(summary, split="validation", per_class=1, seed=seed)[0]
