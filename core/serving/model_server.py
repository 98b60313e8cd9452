"""One model server for every session: photos from many people batched into one forward pass per model.

Streamlit runs each browser session's script in its own thread. If each called the models itself,
16 phones uploading at once would mean 16 interleaved TensorFlow calls fighting over two cores,
each paying its own per-call overhead. Instead every session hands its photo to one `ModelServer`;
its single worker thread takes every photo queued while it was busy (optionally waiting a few
milliseconds for more: dynamic batching, as TensorFlow Serving and Triton do), then runs
`predict_photos` once for all of them that want the same models. The queue is bounded: past `max_queue` waiting photos a submit raises `ServerBusy`
("try again in a moment") instead of making everyone wait longer. Heatmap requests (Grad-CAM) wait
behind answers.

Each answer's `server_ms` is measured from the photo reaching the server to its answer being
ready, its time in the queue included.

    server = ModelServer()
    result = server.predict(photo_bytes, "cat.jpg", ModelSet.of(predictors))
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from core.data.images import ImageError, load_image
from core.errors import LittleDataError
from core.serving.predictor import MultiPrediction, predict_photos

#: How long the worker waits for more photos after the first one of a batch. No wait by default: a
#: photo that finds the worker idle goes at once (one person alone pays nothing), and photos that
#: arrive while it works queue up and form the next batch by themselves.
DEFAULT_MAX_WAIT_MS = 0.0
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_QUEUE = 64
#: A heatmap pass (a gradient pass, several times an answer's cost) starts only once no answer has
#: arrived for this long: a room's photos come in bursts over a second or so, and an answer arriving
#: just after a heatmap pass started would wait for all of it. One person alone waits too (their
#: heatmaps follow their own answer by less than this): letting a heatmap go when the answers before
#: it were for its own photo made 16 phones slower when tried, since the first phones' heatmaps then
#: started in the middle of the room's burst.
DEFAULT_HEATMAP_QUIET_MS = 300.0
#: ... but no heatmap waits longer than this for a quiet moment (a steady stream of answers).
DEFAULT_HEATMAP_MAX_DELAY_MS = 5000.0


class ServerBusy(LittleDataError):
    """Too many photos are waiting for the models; the caller should try again shortly."""


@dataclass(frozen=True)
class ModelSet:
    """The models one request wants: level -> `Predictor` (or the error that made it unusable).

    Requests with the same `key` (the same models, with or without heatmaps) share a batch.
    """

    predictors: dict
    explainers: dict | None = None  # level -> Explainer (or error): heatmaps, from the same pass
    trunks: list = field(default_factory=list)  # `SharedTrunk.plan(predictors)`

    @property
    def key(self) -> tuple:
        def ident(value) -> object:
            return id(value) if not isinstance(value, Exception) else ("error", str(value))

        explainers = self.explainers or {}
        return (tuple((level, ident(p)) for level, p in sorted(self.predictors.items())),
                tuple((level, ident(e)) for level, e in sorted(explainers.items())))


@dataclass
class _Request:
    photo: Image.Image  # decoded, upright RGB
    name: str
    models: ModelSet
    future: Future
    arrived: float  # time.perf_counter() when it reached the server


@dataclass
class ServerStats:
    """What the server has done since it started (for benchmarks and the presenter)."""

    photos: int = 0
    batches: int = 0
    refused: int = 0  # photos turned away with ServerBusy
    largest_batch: int = 0

    @property
    def mean_batch(self) -> float:
        return self.photos / self.batches if self.batches else 0.0


class ModelServer:
    """A worker thread that answers photos in batches. Thread-safe; one per process is enough.

    Answers come before heatmaps: a request with explainers (Grad-CAM, a gradient pass: 240 ms for
    four levels on two cores, against 50-100 ms for the answers) waits while any answer is queued
    and until no answer has arrived for `heatmap_quiet_ms` (at most `heatmap_max_delay_ms` after it
    arrived), and heatmaps go one photo at a time (`max_heatmap_batch`), so an answer that arrives
    meanwhile waits for at most one photo's heatmaps.
    """

    def __init__(self, max_wait_ms: float = DEFAULT_MAX_WAIT_MS, max_batch: int = DEFAULT_MAX_BATCH,
                 max_queue: int = DEFAULT_MAX_QUEUE, max_heatmap_batch: int = 1,
                 heatmap_quiet_ms: float = DEFAULT_HEATMAP_QUIET_MS,
                 heatmap_max_delay_ms: float = DEFAULT_HEATMAP_MAX_DELAY_MS):
        if min(max_batch, max_queue, max_heatmap_batch) < 1 or min(max_wait_ms, heatmap_quiet_ms,
                                                                   heatmap_max_delay_ms) < 0:
            raise ValueError("max_batch, max_queue and max_heatmap_batch must be at least 1, "
                             "max_wait_ms, heatmap_quiet_ms and heatmap_max_delay_ms not negative.")
        self.max_wait = max_wait_ms / 1000
        self.heatmap_quiet, self.heatmap_max_delay = heatmap_quiet_ms / 1000, heatmap_max_delay_ms / 1000
        self._last_answer_arrival = float("-inf")
        self.max_batch, self.max_queue, self.max_heatmap_batch = max_batch, max_queue, max_heatmap_batch
        self.stats = ServerStats()
        self._answers: deque[_Request] = deque()
        self._heatmaps: deque[_Request] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._serve, name="little-data-model-server", daemon=True)
        self._worker.start()

    def submit(self, photo: bytes | Image.Image, name: str, models: ModelSet, arrived: float | None = None) -> Future:
        """Queues one photo (its bytes, or an upright RGB image); the future gives its `MultiPrediction`.

        `arrived` (a `time.perf_counter()` value): when the photo reached the server, if before this
        call (decoding it first); it starts the answer's `server_ms`. Raises `ServerBusy` when
        `max_queue` photos are already waiting.
        """
        arrived = arrived if arrived is not None else time.perf_counter()
        if not isinstance(photo, Image.Image):
            # Decoded here, in the caller's thread (sessions decode side by side), not in the one
            # worker every session waits on; a photo that does not decode is answered at once.
            try:
                photo = load_image(photo, name=name)
            except ImageError as exc:
                failed = MultiPrediction(name, error=str(exc), server_ms=(time.perf_counter() - arrived) * 1000)
                future: Future = Future()
                future.set_result(failed)
                return future
        request = _Request(photo, name, models, Future(), arrived)
        with self._ready:
            if self._closing:
                raise ServerBusy("The model server is shutting down.")
            if len(self._answers) + len(self._heatmaps) >= self.max_queue:
                self.stats.refused += 1
                raise ServerBusy("The models are busy with everyone else's photos: try again in a moment.")
            (self._heatmaps if models.explainers else self._answers).append(request)
            if not models.explainers:
                self._last_answer_arrival = max(self._last_answer_arrival, time.perf_counter())
            self._ready.notify()
        return request.future

    def predict(self, photo: bytes | Image.Image, name: str, models: ModelSet,
                timeout: float | None = 120.0, arrived: float | None = None) -> MultiPrediction:
        """`submit` and wait for the answer."""
        return self.submit(photo, name, models, arrived).result(timeout=timeout)

    @property
    def waiting(self) -> int:
        with self._ready:
            return len(self._answers) + len(self._heatmaps)

    def close(self) -> None:
        """Stops the worker once the photos already queued are answered."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._worker.join(timeout=60)

    def _next_batch(self) -> list[_Request] | None:
        """Waits for work, then for up to max_wait more; returns requests for one pass (None: closed and drained)."""
        with self._ready:
            while True:
                while not (self._answers or self._heatmaps or self._closing):
                    self._ready.wait()
                if not (self._answers or self._heatmaps):
                    return None
                if self._answers or self._closing:
                    break
                now = time.perf_counter()
                start_at = min(self._last_answer_arrival + self.heatmap_quiet,
                               self._heatmaps[0].arrived + self.heatmap_max_delay)
                if now >= start_at:
                    break
                self._ready.wait(start_at - now)  # an answer arriving meanwhile wakes the worker
            deadline = time.perf_counter() + self.max_wait
            while (not self._closing and len(self._answers) < self.max_batch
                   and (remaining := deadline - time.perf_counter()) > 0):
                self._ready.wait(remaining)
            source, limit = ((self._answers, self.max_batch) if self._answers
                             else (self._heatmaps, self.max_heatmap_batch))
            key = source[0].models.key  # one set of models per pass; others wait for the next
            batch = [r for r in source if r.models.key == key][:limit]
            for request in batch:
                source.remove(request)
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._answer(batch)

    def _answer(self, requests: list[_Request]) -> None:
        models = requests[0].models
        try:
            results = predict_photos([(r.photo, r.name) for r in requests], models.predictors, models.explainers,
                                     models.trunks)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server; each caller gets the error
            for request in requests:
                request.future.set_exception(exc)
            return
        done = time.perf_counter()
        with self._ready:
            self.stats.photos += len(requests)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(requests))
        for request, result in zip(requests, results):
            result.server_ms = (done - request.arrived) * 1000
            request.future.set_result(result)
