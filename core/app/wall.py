"""The audience's wall: the photos people send from the Join page, with every level's answer.

Photos live in this process's memory only, for the presentation: never in the data set, never on
disk. They go when the presenter clears the wall or the server stops, and the oldest go first
once the wall holds `max_photos`. Each phone may send `per_phone_per_minute` photos a minute (a
sliding window, counted when the photo is sent, so a refused burst costs the models nothing).
Thread-safe: every session of the server shares one wall.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from core.data.images import to_jpeg
from core.errors import LittleDataError
from core.serving.predictor import MultiPrediction

DEFAULT_MAX_PHOTOS = 200
DEFAULT_PER_PHONE_PER_MINUTE = 6
#: Photos are kept as JPEGs of at most this side: enough to enlarge on a projector, ~100 KB each.
THUMBNAIL_SIDE = 720


class TooManyPhotos(LittleDataError):
    """A phone sent more photos in a minute than the wall takes."""


@dataclass(frozen=True)
class LevelAnswer:
    """One level's answer to a wall photo."""

    level: int
    nearest: str  # the most probable class
    probability: float  # its calibrated probability
    unknown: bool  # the level says the photo looks like none of its classes

    @property
    def label(self) -> str | None:
        return None if self.unknown else self.nearest


@dataclass
class WallPhoto:
    """One audience photo on the wall."""

    id: int
    phone: str  # the sending session, for the per-phone limit
    sent: float  # time.time()
    name: str
    jpeg: bytes  # the photo, upright, at most THUMBNAIL_SIDE
    answers: dict[int, LevelAnswer]
    disagreement: str | None  # MultiPrediction.disagreement(): the levels answer differently
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)  # level -> Grad-CAM map, once computed
    hidden: bool = False

    @property
    def refused_by(self) -> list[int]:
        return [level for level, answer in self.answers.items() if answer.unknown]

    @property
    def flagged(self) -> bool:
        """Worth a look: the levels disagree, or one of them says none of these."""
        return bool(self.disagreement or self.refused_by)

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.jpeg)).convert("RGB")


def answers_of(result: MultiPrediction) -> dict[int, LevelAnswer]:
    """Each level's answer in a prediction (levels whose model failed are left out)."""
    answers = {}
    for level, probabilities in sorted(result.per_level.items()):
        nearest = max(probabilities, key=probabilities.get)
        verdict = result.verdicts.get(level)
        answers[level] = LevelAnswer(level, nearest, float(probabilities[nearest]),
                                     bool(verdict is not None and verdict.unknown))
    return answers


class Wall:
    """The photos of one presentation, newest first."""

    def __init__(self, max_photos: int = DEFAULT_MAX_PHOTOS, per_phone_per_minute: int = DEFAULT_PER_PHONE_PER_MINUTE,
                 clock=time.monotonic):
        if max_photos < 1 or per_phone_per_minute < 1:
            raise ValueError("max_photos and per_phone_per_minute must be at least 1.")
        self.max_photos, self.per_phone_per_minute = max_photos, per_phone_per_minute
        self._clock = clock
        self._photos: deque[WallPhoto] = deque()
        self._sent: dict[str, deque[float]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.version = 0  # changes whenever what the wall shows changes (the presenter redraws on it)

    def admit(self, phone: str) -> None:
        """Counts one photo from `phone`; raises `TooManyPhotos` past the per-minute limit."""
        now = self._clock()
        with self._lock:
            sent = self._sent.setdefault(phone, deque())
            while sent and now - sent[0] >= 60:
                sent.popleft()
            if len(sent) >= self.per_phone_per_minute:
                wait = int(60 - (now - sent[0])) + 1
                raise TooManyPhotos(f"That's {self.per_phone_per_minute} photos this minute, the most one phone "
                                    f"can send: try again in {wait} s.")
            sent.append(now)

    def add(self, phone: str, result: MultiPrediction) -> WallPhoto:
        """Puts an answered photo on the wall (the oldest leaves once the wall is full)."""
        if result.image is None:
            raise ValueError("Only a photo that was decoded can go on the wall.")
        photo = WallPhoto(0, phone, time.time(), result.name, to_jpeg(result.image, THUMBNAIL_SIDE), answers_of(result),
                          result.disagreement(), dict(result.heatmaps))
        with self._lock:
            photo.id = next(self._ids)
            self._photos.appendleft(photo)
            while len(self._photos) > self.max_photos:
                self._photos.pop()
            self.version += 1
        return photo

    def attach_heatmaps(self, photo_id: int, heatmaps: dict[int, np.ndarray]) -> None:
        """Adds heatmaps computed after the photo went up (no-op if it has left the wall)."""
        with self._lock:
            for photo in self._photos:
                if photo.id == photo_id:
                    photo.heatmaps.update(heatmaps)
                    self.version += 1
                    return

    def photos(self, include_hidden: bool = False) -> list[WallPhoto]:
        """Newest first."""
        with self._lock:
            return [p for p in self._photos if include_hidden or not p.hidden]

    def get(self, photo_id: int) -> WallPhoto | None:
        with self._lock:
            return next((p for p in self._photos if p.id == photo_id), None)

    def hide(self, photo_id: int, hidden: bool = True) -> None:
        with self._lock:
            for photo in self._photos:
                if photo.id == photo_id:
                    photo.hidden = hidden
                    self.version += 1

    def clear(self) -> None:
        """Drops every photo (a phone's per-minute count stays: it limits the sending, not the wall)."""
        with self._lock:
            self._photos.clear()
            self.version += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._photos)
