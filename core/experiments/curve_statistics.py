"""The data-efficiency curve in numbers: per level and training-set size, the accuracy over seeds.

The points of `core.experiments.efficiency_curve` are single runs (one size, one seed); the curve the
app draws and the CLI prints is their mean per size, with the spread over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from core.experiments.efficiency_curve import CurvePoint


@dataclass(frozen=True)
class SizeStatistics:
    """One level's validation accuracy at one number of training images per class, over its seeds.

    Attributes:
        std: the population standard deviation over seeds (0 for a single seed).
    """

    level: int
    images_per_class: int
    mean: float
    std: float
    lowest: float
    highest: float
    seeds: int


def statistics_per_size(points: Iterable[CurvePoint]) -> list[SizeStatistics]:
    """One `SizeStatistics` per level and size among `points`, by level then size."""
    by_size: dict[tuple[int, int], list[float]] = {}
    for point in points:
        by_size.setdefault((point.level, point.images_per_class), []).append(point.accuracy)
    return [SizeStatistics(level=level, images_per_class=size, mean=float(np.mean(accuracies)),
                           std=float(np.std(accuracies)), lowest=min(accuracies), highest=max(accuracies),
                           seeds=len(accuracies))
            for (level, size), accuracies in sorted(by_size.items())]
