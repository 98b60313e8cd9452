"""core.training.progress: the events a run reports and the arithmetic of how far along it is."""

import pytest

from core.training.progress import TrainEvent, TrainProgress


def test_progress_arithmetic():
    progress = TrainProgress()
    progress.apply(TrainEvent("phase", phase="extract-train", message="Extracting", done=30, total=120))
    assert progress.fraction == 0.25 and progress.eta_seconds is None
    progress.apply(TrainEvent("batch", epoch=2, epochs=4, batch=5, batches=10, elapsed=15.0, logs={"loss": 0.5}))
    assert progress.batches_done == 15 and progress.fraction == pytest.approx(15 / 40)
    assert progress.eta_seconds == pytest.approx(25.0)  # 1 s per batch, 25 batches to go
    assert progress.message == "Epoch 2/4, batch 5/10"
    progress.apply(TrainEvent("epoch", epoch=2, epochs=4, elapsed=20.0, history={"val_accuracy": [0.5, 0.75]}))
    progress.apply(TrainEvent("done", model_id="m", metrics={"val_accuracy": 0.75}, seconds=30.0))
    again = TrainProgress.from_dict(progress.to_dict())
    assert again == progress and again.history == {"val_accuracy": [0.5, 0.75]}
    with pytest.raises(ValueError, match="kind must be one of"):
        TrainEvent("halfway")
