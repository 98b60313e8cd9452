"""core.serving.model_server: many sessions' photos batched into one pass per model, a bounded queue."""

import threading
import time

import numpy as np
import pytest

from core.serving.model_server import ModelServer, ModelSet, ServerBusy
from tests.helpers import png_bytes
from PIL import Image


class CountingModel:
    """Stands in for a `Predictor`: 'dogs' as likely as the photo is bright; records every batch it is given."""

    image_size = (8, 8)
    classes = ["cats", "dogs"]
    judge = None

    def __init__(self, gate: threading.Event | None = None, fail: bool = False):
        self.batches, self.gate, self.fail = [], gate, fail

    def predict_arrays(self, images, calibrated=True):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise RuntimeError("the model broke")
        self.batches.append(len(images))
        bright = images.reshape(len(images), -1).mean(1) / 255
        return np.stack([1 - bright, bright], 1)

    def calibrate(self, probabilities):
        return probabilities


class CountingExplainer:
    def __init__(self):
        self.calls = 0

    def explain_arrays(self, images):
        self.calls += 1
        bright = images.reshape(len(images), -1).mean(1) / 255
        return np.zeros((len(images), 2, 2)), np.stack([1 - bright, bright], 1)


def grey(level: int) -> bytes:
    return png_bytes(Image.new("RGB", (16, 12), (level, level, level)))


def test_photos_sent_together_share_a_batch_and_each_gets_its_own_answer():
    model = CountingModel()
    server = ModelServer(max_wait_ms=50)
    models = ModelSet({2: model})
    results = {}

    def send(i):
        results[i] = server.predict(grey(i * 20), f"{i}.png", models)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.close()
    assert sorted(results) == list(range(12))
    for i, result in results.items():
        assert result.error is None and result.name == f"{i}.png"
        assert result.per_level[2]["dogs"] == pytest.approx(i * 20 / 255, abs=1e-6)
        assert result.server_ms > 0
    assert sum(model.batches) == 12 and len(model.batches) < 12, model.batches  # batched
    assert server.stats.photos == 12 and server.stats.largest_batch == max(model.batches)


def test_a_full_queue_says_busy_and_loses_nothing_already_queued():
    gate = threading.Event()
    model = CountingModel(gate)
    server = ModelServer(max_wait_ms=0, max_batch=1, max_queue=3)
    models = ModelSet({2: model})
    first = server.submit(grey(10), "first.png", models)
    time.sleep(0.2)  # the worker has taken it and waits on the gate
    queued = [server.submit(grey(10), f"{i}.png", models) for i in range(3)]
    with pytest.raises(ServerBusy, match="try again in a moment"):
        server.submit(grey(10), "one too many.png", models)
    assert server.stats.refused == 1
    gate.set()
    assert [f.result(10).name for f in [first, *queued]] == ["first.png", "0.png", "1.png", "2.png"]
    server.close()


def test_answers_go_before_heatmaps_and_queue_time_counts():
    gate = threading.Event()
    blocker = ModelSet({2: CountingModel(gate)})
    free = CountingModel()
    explainer = CountingExplainer()
    server = ModelServer(max_wait_ms=0)
    first = server.submit(grey(1), "blocker.png", blocker)
    time.sleep(0.2)
    heatmap = server.submit(grey(2), "heatmap.png", ModelSet({2: free}, explainers={2: explainer}))
    answer = server.submit(grey(3), "answer.png", ModelSet({2: free}))
    time.sleep(0.3)
    gate.set()
    answered, mapped = answer.result(10), heatmap.result(10)
    assert mapped.heatmaps[2].shape == (2, 2) and explainer.calls == 1
    assert answered.server_ms < mapped.server_ms  # the answer was served first
    assert answered.server_ms >= 300  # its wait behind the blocked batch is in its server time
    first.result(10)
    server.close()


def test_a_failing_model_fails_its_batch_only_and_a_bad_photo_is_an_answer_with_an_error():
    server = ModelServer(max_wait_ms=0)
    with pytest.raises(RuntimeError, match="the model broke"):
        server.predict(grey(5), "a.png", ModelSet({2: CountingModel(fail=True)}))
    bad = server.predict(b"not an image", "notes.txt", ModelSet({2: CountingModel()}))
    assert bad.error and "not an image we can read" in bad.error
    good = server.predict(grey(255), "white.png", ModelSet({2: CountingModel()}))
    assert good.per_level[2]["dogs"] == pytest.approx(1.0)
    server.close()
    with pytest.raises(ServerBusy, match="shutting down"):
        server.submit(grey(5), "late.png", ModelSet({2: CountingModel()}))


def test_heatmaps_wait_for_a_quiet_moment_after_answers_but_not_for_ever():
    free, explainer = CountingModel(), CountingExplainer()
    answers, heatmaps = ModelSet({2: free}), ModelSet({2: free}, explainers={2: explainer})
    server = ModelServer(max_wait_ms=0, heatmap_quiet_ms=400, heatmap_max_delay_ms=10_000)
    alone = server.predict(grey(2), "no answer before.png", heatmaps)
    assert alone.server_ms < 300  # nothing was answered lately: no wait
    answered = time.perf_counter()  # before the answer reaches the server: the quiet time starts later
    server.predict(grey(3), "answer.png", answers)
    server.predict(grey(4), "just after an answer.png", heatmaps)
    assert time.perf_counter() - answered >= 0.4  # waited for the room to go quiet
    server.close()

    # A steady stream of answers holds a heatmap back for at most heatmap_max_delay_ms.
    server = ModelServer(max_wait_ms=0, heatmap_quiet_ms=400, heatmap_max_delay_ms=600)
    server.predict(grey(3), "answer.png", answers)
    server.predict(grey(3), "another answer.png", answers)
    pending = server.submit(grey(4), "heatmap.png", heatmaps)
    stream_end = time.perf_counter() + 1.5
    while time.perf_counter() < stream_end and not pending.done():
        server.predict(grey(5), "another answer.png", answers)
        time.sleep(0.05)
    assert pending.done(), "the heatmap waited past its longest delay"
    assert 550 <= pending.result(1).server_ms < 1400
    server.close()
    with pytest.raises(ValueError, match="not negative"):
        ModelServer(heatmap_quiet_ms=-1)
