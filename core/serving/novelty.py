""""None of these": how unlike its training photos a photo is, and when a model should say so.

A classifier of cats and dogs answers "cats" or "dogs" for a taxi, often at 100%: its softmax only
compares the classes it knows. The judge here compares the photo with the training photos instead,
in the space of an ImageNet-pretrained network's pooled features, where a taxi is far from every
cat and dog: the novelty score is the cosine distance to the k-th nearest training photo
(deep nearest neighbours, Sun et al. 2022). A photo whose score is above the model's threshold
looks like none of its classes.

The threshold is set on the validation split so that a chosen share of its photos is accepted
(`DEFAULT_ACCEPT_RATE`); no photo of "everything else" is needed or seen. Measured on
`../shared/datasets/ood_dev` against class-conditional Gaussians with a shared covariance
(Mahalanobis distance), the nearest-neighbour distance held up far better for a five-class data
set of 30 photos per class, where a 1280-dimensional covariance cannot be estimated
(`scripts/bench_honesty.py`, docs/design.md).

Levels 0, 2 and 3 are judged on their own network's ImageNet features (level 3's on the network
before fine-tuning, so its judge is the same as level 2's); level 1 has no pretrained network, so
a separate judge (`LITTLE_DATA_JUDGE_BACKBONE`, the default backbone) looks at its photos.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: Share of in-class (validation) photos a model accepts: the rest are the price of refusing strangers.
DEFAULT_ACCEPT_RATE = 0.97
MAX_NEIGHBOURS = 5


def neighbours_for(training_photos: int) -> int:
    """k: five neighbours, fewer for tiny data sets (where the fifth may already be another class)."""
    return max(1, min(MAX_NEIGHBOURS, training_photos // 20))


def normalised(features: np.ndarray) -> np.ndarray:
    """[N, ...] features flattened and scaled to unit length (float32)."""
    flat = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def novelty_scores(bank: np.ndarray, features: np.ndarray, neighbours: int, exclude_self: bool = False) -> np.ndarray:
    """Cosine distance from each row of `features` to its `neighbours`-th nearest row of `bank` (unit rows).

    With `exclude_self`, `features` is `bank` itself and each row's own match is skipped.
    """
    sims = normalised(features) @ np.asarray(bank, dtype=np.float32).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    k = min(neighbours, sims.shape[1] - (1 if exclude_self else 0))
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    return (1.0 - kth).astype(np.float64)


@dataclass(frozen=True)
class NoveltyJudge:
    """How a model decides that a photo looks like none of its classes (stored in its card).

    Attributes:
        backbone, weights, weights_key, image_size: the network whose pooled features are compared
            (weights as given to `core.networks.backbones.resolve_weights`).
        own_network: True when that is the model's own pretrained network, False for a separate judge.
        neighbours: k, the neighbour whose distance is the score.
        threshold: scores above it mean "none of these".
        accept_rate: the share of validation photos the threshold was set to accept.
        validation_accepted: the share it accepts (ties and small splits make it differ a little).
        training_photos: how many photos the bank holds (`<model id>.novelty.npy` beside the model).
    """

    backbone: str
    weights: str | None
    weights_key: str
    image_size: tuple[int, int]
    own_network: bool
    neighbours: int
    threshold: float
    accept_rate: float
    validation_accepted: float
    training_photos: int
    method: str = "knn-cosine"

    def describe(self) -> str:
        whose = "its own network's" if self.own_network else f"a separate judge's ({self.backbone})"
        nth = {1: "nearest", 2: "2nd nearest", 3: "3rd nearest"}.get(self.neighbours, f"{self.neighbours}th nearest")
        return (f"cosine distance to the {nth} of {self.training_photos} training photos in "
                f"{whose} ImageNet features; above {self.threshold:.3f} (accepts "
                f"{self.validation_accepted:.0%} of validation photos) it says none of these")

    def to_dict(self) -> dict:
        return {**asdict(self), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, data: dict | None) -> "NoveltyJudge | None":
        """The card's judge, or None for a card written before judges (or a malformed one)."""
        if not data:
            return None
        try:
            return cls(**{**data, "image_size": tuple(int(v) for v in data["image_size"])})
        except (KeyError, TypeError, ValueError):
            return None


def none_of_these(classes: list[str]) -> str:
    """'cats or dogs', 'daisy, dandelion, roses, sunflowers or tulips'."""
    return classes[0] if len(classes) == 1 else f"{', '.join(classes[:-1])} or {classes[-1]}"


def without_the_check(nearest: str, probability: float) -> str:
    """What a refused photo would have been called, worded the same on every page ("nearest: dogs 100%"
    under "Doesn't look like cats or dogs" read as a contradiction)."""
    return f"without the check: {nearest} · {probability:.0%}"


def threshold_for(scores: np.ndarray, accept_rate: float) -> float:
    """The score below which `accept_rate` of `scores` fall."""
    if not 0.5 <= accept_rate <= 1.0:
        raise ValueError(f"accept_rate must be between 0.5 and 1, got {accept_rate}.")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), accept_rate, method="higher"))


@dataclass(frozen=True)
class Verdict:
    """One photo, judged: its novelty score against the model's threshold."""

    novelty: float
    threshold: float

    @property
    def unknown(self) -> bool:
        return self.novelty > self.threshold

    def describe(self) -> str:
        return f"novelty {self.novelty:.3f} {'>' if self.unknown else '<='} {self.threshold:.3f}"


@functools.lru_cache(maxsize=4)
def judge_extractor(backbone: str, weights: str | None, image_size: tuple[int, int]):
    """(weights key, the judge's network: raw pixels -> pooled features), built once per process and
    shared by models."""
    import tensorflow as tf

    from core.networks.backbones import get_backbone, resolve_weights
    from core.networks.factories import make_feature_extractor
    from core.networks.fold import fold_batch_norm

    spec = get_backbone(backbone)
    resolved = resolve_weights(spec, weights)
    extractor = make_feature_extractor(spec, resolved, image_size)
    folded = fold_batch_norm(extractor, inference=True)
    h, w = image_size
    return resolved.key, tf.function(lambda x: folded(x, training=False),
                                     input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)])


class LoadedJudge:
    """A model's judge, ready to score photos: its network and its bank of training features."""

    def __init__(self, judge: NoveltyJudge, bank_path: Path):
        self.judge = judge
        self.bank = normalised(np.load(bank_path))
        key, self._forward = judge_extractor(judge.backbone, judge.weights, tuple(judge.image_size))
        if key != judge.weights_key:  # other weights found here than at training: its distances would mean nothing
            raise ValueError(f"the judge's {judge.backbone} weights here ({key}) are not the ones its training "
                             f"photos were seen with ({judge.weights_key}); run `python -m core calibrate` again")

    @property
    def key(self) -> tuple:
        """Judges with equal keys compute the same features: one pass serves them all."""
        return self.judge.backbone, self.judge.weights_key, tuple(self.judge.image_size)

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] at the judge's size -> pooled features."""
        return self._forward(np.asarray(images, dtype=np.float32)).numpy()

    def verdicts_from_features(self, features: np.ndarray) -> list[Verdict]:
        scores = novelty_scores(self.bank, features, self.judge.neighbours)
        return [Verdict(float(s), self.judge.threshold) for s in scores]

    def verdicts(self, images, batch_size: int = 32) -> list[Verdict]:
        """Verdicts on every row of `images` (uint8 at the judge's size, or a decoded split's rows)."""
        return [verdict for i in range(0, len(images), batch_size)
                for verdict in self.verdicts_from_features(self.features(np.asarray(images[i:i + batch_size])))]
