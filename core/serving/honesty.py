"""Fitting a model's honest answers: its calibration and its novelty judge, on its data set's splits.

Training calls `fit_honesty` once a model is scored (`core.training.loop`); `python -m core calibrate
MODEL` calls it for a model trained before (its card gains both, and its predictions change only in
their confidence and in saying "none of these"). The judge's training features come from the
feature cache when level 2 already extracted them with the same network, weights and size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from core import settings
from core.errors import describe
from core.serving.calibration import Calibration, calibrate
from core.serving.novelty import (DEFAULT_ACCEPT_RATE, NoveltyJudge, neighbours_for, normalised, novelty_scores,
                                  threshold_for)

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class Honesty:
    """What `fit_honesty` found: the calibration, the judge with its bank, or why there is no judge."""

    calibration: Calibration | None
    judge: NoveltyJudge | None = None
    bank: np.ndarray | None = None  # the judge's training features, unit length, float16
    judge_note: str | None = None  # why the model has no judge, for the card and the log


def judge_network(backbone: str | None, weights: str | None, image_size) -> tuple[str, str | None, tuple, bool] | None:
    """(backbone, weights, image size, whether it is the model's own) of a model's judge, or None.

    A model on a pretrained network is judged on that network's features at the model's input size
    (level 2's cached features then serve); one without (level 1) by the judge setting's network.
    """
    from core.networks.backbones import get_backbone

    if backbone:
        return backbone, weights, tuple(image_size), True
    judge = settings.judge_backbone()
    if judge is None:
        return None
    return judge, None, tuple(get_backbone(judge).image_size), False


def fit_judge(summary, backbone: str, weights: str | None, image_size, own_network: bool,
              accept_rate: float = DEFAULT_ACCEPT_RATE, cache_dir=None, progress: Progress | None = None,
              should_cancel: Callable[[], bool] | None = None) -> tuple[NoveltyJudge, np.ndarray]:
    """Extracts (or reads from the cache) the judge network's features of both splits; sets the threshold."""
    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    from core.networks.features import split_features

    spec = get_backbone(backbone)
    resolved = resolve_weights(spec, weights)
    if resolved.keras_arg is None:  # a new random network each time it is built: its features mean nothing
        raise ValueError(f"{spec.label} has random weights here, so its features cannot judge photos")
    extractor = make_feature_extractor(spec, resolved, image_size)
    features = {}
    for split in ("train", "validation"):
        features[split], _ = split_features(
            extractor, summary, split, backbone, resolved.key, image_size, cache_dir, should_cancel,
            (lambda done, total, split=split: progress(f"judge-{split}", done, total)) if progress else None)
    bank = normalised(features["train"])
    neighbours = neighbours_for(len(bank))
    scores = novelty_scores(bank, features["validation"], neighbours)
    threshold = threshold_for(scores, accept_rate)
    judge = NoveltyJudge(backbone=backbone, weights=weights, weights_key=resolved.key, image_size=tuple(image_size),
                         own_network=own_network, neighbours=neighbours, threshold=threshold, accept_rate=accept_rate,
                         validation_accepted=float(np.mean(scores <= threshold)), training_photos=len(bank))
    return judge, bank.astype(np.float16)


def refit_honesty(entry, summary, weights: str | None = None, accept_rate: float = DEFAULT_ACCEPT_RATE) -> Honesty:
    """`fit_honesty` for a stored model (one trained before, or to fit again): its raw probabilities on
    the validation split, and its judge on the weights it was built with (`weights` as given, else
    random where the card says so, else the setting, which finds the same file again)."""
    from core.data.decoded import decode_split
    from core.serving.predictor import Predictor

    decoded = decode_split(summary, "validation", entry.image_size)
    raw = Predictor(entry).predict_rows(decoded.images, calibrated=False)
    weights = weights or ("none" if entry.card.weights_key == "none" else None)
    return fit_honesty(summary, entry.card.backbone, weights, entry.image_size, raw, decoded.labels,
                       accept_rate=accept_rate)


def fit_honesty(summary, backbone: str | None, weights: str | None, image_size, val_probabilities: np.ndarray,
                val_labels: np.ndarray, accept_rate: float = DEFAULT_ACCEPT_RATE, cache_dir=None,
                progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None) -> Honesty:
    """Calibrates on the validation probabilities and fits the judge; a judge that cannot be had
    (its weights cannot be loaded, say) leaves a note instead of failing the run."""
    from core.errors import Cancelled

    honesty = Honesty(calibrate(val_probabilities, val_labels))
    try:
        network = judge_network(backbone, weights, image_size)
        if network is None:
            honesty.judge_note = "no judge: LITTLE_DATA_JUDGE_BACKBONE is none"
            return honesty
        honesty.judge, honesty.bank = fit_judge(summary, network[0], network[1], network[2], network[3], accept_rate,
                                                cache_dir, progress, should_cancel)
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the model is trained: a judge that cannot be had is a note, not a failure
        honesty.judge_note = f"no judge: {describe(exc)}"
    return honesty
