"""What a training run reports as it goes, and how far along it is.

`core.training.loop.train` sends `TrainEvent`s to a callback. Three consumers read them: the CLI's
`ProgressBar`, the app's worker (which keeps a `TrainProgress` in the job's status file) and, through
that file, the Train page. The progress arithmetic (fraction done, time left) lives in
`TrainProgress`, and nowhere else.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields

PHASE, BATCH, EPOCH, DONE, FAILED = "phase", "batch", "epoch", "done", "failed"
KINDS = (PHASE, BATCH, EPOCH, DONE, FAILED)
TRAIN_PHASE = "train"


@dataclass(frozen=True)
class TrainEvent:
    """One report from a training run.

    Kinds and the fields each sets:
        phase: `phase` (data, decode-train, extract-validation, train, evaluate, save...) and
            `message`; `done` / `total` images while a phase works through a split.
        batch: `epoch`, `epochs`, `batch`, `batches`, `elapsed` (seconds of fitting) and `logs`.
        epoch: `epoch`, `epochs`, `elapsed` and the whole `history` so far.
        done: `model_id`, `metrics` and `seconds`.
        failed: `error`, the message to show.
    """

    kind: str
    phase: str = ""
    message: str = ""
    done: int | None = None
    total: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    batch: int | None = None
    batches: int | None = None
    elapsed: float | None = None
    logs: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    model_id: str | None = None
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}.")


@dataclass
class TrainProgress:
    """Everything reported so far, folded into one state: `apply` each event in order."""

    phase: str = ""
    message: str = ""
    done: int | None = None
    total: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    batch: int | None = None
    batches: int | None = None
    fit_elapsed: float | None = None
    logs: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    model_id: str | None = None
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None

    def apply(self, event: TrainEvent) -> None:
        if event.kind == PHASE:
            self.phase, self.message = event.phase, event.message
            self.done, self.total = event.done, event.total
        elif event.kind == BATCH:
            self.phase = TRAIN_PHASE
            self.epoch, self.epochs, self.batch, self.batches = event.epoch, event.epochs, event.batch, event.batches
            self.fit_elapsed, self.logs = event.elapsed, dict(event.logs)
            self.message = f"Epoch {event.epoch}/{event.epochs}, batch {event.batch}/{event.batches}"
        elif event.kind == EPOCH:
            self.epoch, self.epochs, self.fit_elapsed = event.epoch, event.epochs, event.elapsed
            self.history = {k: list(v) for k, v in event.history.items()}
        elif event.kind == DONE:
            self.model_id, self.metrics, self.seconds = event.model_id, dict(event.metrics), event.seconds
            self.message = f"Saved {event.model_id}"
        elif event.kind == FAILED:
            self.error = self.message = event.error

    @property
    def batches_done(self) -> int:
        if not self.epoch or not self.batches:
            return 0
        return (self.epoch - 1) * self.batches + (self.batch or 0)

    @property
    def fraction(self) -> float | None:
        """How much of the current phase is done (0..1): batches while training, images otherwise."""
        if self.phase == TRAIN_PHASE and self.epochs and self.batches:
            return min(self.batches_done / (self.epochs * self.batches), 1.0)
        if self.total:
            return min((self.done or 0) / self.total, 1.0)
        return None

    @property
    def eta_seconds(self) -> float | None:
        """Seconds of training left, from the pace of the batches so far (None outside training)."""
        if self.phase != TRAIN_PHASE or not self.epochs or not self.batches or not self.fit_elapsed:
            return None
        done = self.batches_done
        if done <= 0:
            return None
        return self.fit_elapsed / done * (self.epochs * self.batches - done)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrainProgress":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


class ProgressBar:
    """The CLI's view of a run: tqdm bars on stderr for phases and epochs, a line per epoch."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.key = None

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == PHASE and event.total is None:
            self.close()
            print(f"• {event.message}", file=self.stream)
        elif event.kind == PHASE or event.kind == BATCH:
            self._advance(event)
        elif event.kind == EPOCH:
            self.close()
            last = "  ".join(f"{k} {v[-1]:.4f}" for k, v in event.history.items())
            print(f"epoch {event.epoch}/{event.epochs}: {last}  ({event.elapsed:.0f}s)", file=self.stream)
        elif event.kind in (DONE, FAILED):
            self.close()

    def _advance(self, event: TrainEvent) -> None:
        from tqdm import tqdm

        batch = event.kind == BATCH
        key = (event.phase or TRAIN_PHASE, event.epoch)
        if key != self.key:
            self.close()
            desc = f"epoch {event.epoch}/{event.epochs}" if batch else event.phase
            self.bar = tqdm(total=event.batches if batch else event.total, desc=desc, file=self.stream, leave=False)
            self.key = key
        self.bar.update((event.batch if batch else event.done) - self.bar.n)
        if batch:
            self.bar.set_postfix(loss=f"{event.logs.get('loss', 0):.3f}", acc=f"{event.logs.get('accuracy', 0):.3f}")
        elif event.message and event.phase in ("sweep", "curve"):  # which trial or point, and how it goes
            self.bar.set_postfix_str(event.message[-70:])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.key = None, None
