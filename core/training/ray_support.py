"""Running work on Ray: connecting, shipping the project to workers, progress back, cancel out.

Sweeps (`core.experiments.sweep`), curves run as sweeps and multi-worker training (`core.training.distribute`) all
start the same way: `connect(address)` joins a cluster (`"auto"`, `"ray://HOST:10001"`) or starts a
local Ray instance on this machine (the default), and a `Relay` actor carries `TrainEvent`s from
the workers to the driver and a cancel request the other way, so a CLI bar or the app's job status
shows the workers' progress and a cancel stops them, on one machine or many.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from core import settings
from core.errors import ConfigError, LittleDataError

class RayUnavailable(LittleDataError):
    """Ray is not installed or the cluster cannot be reached; the message says what to do."""


def absolute_paths(base: dict) -> dict:
    """Folder settings made absolute, so workers started elsewhere find the same ones."""
    return {key: (str(Path(value).expanduser().resolve()) if key.endswith("_dir") and value else value)
            for key, value in base.items()}


def connect(address: str | None = None, num_cpus: int | None = None):
    """Joins the Ray cluster at `address`, or starts a local one (all this machine's CPUs); returns `ray`.

    A remote cluster gets the project as the job's working directory (without data, models or
    caches); a local one finds it on PYTHONPATH. Calling it again reuses the connection.

    Raises:
        RayUnavailable: Ray is not installed, or the address cannot be reached.
    """
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("Ray is not installed: pip install -r requirements.txt.") from exc
    global _local_env
    address = address or settings.ray_address()
    if address in ("", "local"):
        address = None
    env = settings.worker_environment()
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    if address is None:
        env["PYTHONPATH"] = os.pathsep.join([str(settings.PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)
        runtime_env = {"env_vars": env}
    else:
        runtime_env = {"env_vars": env, "working_dir": str(settings.PROJECT_ROOT),
                       "excludes": ["var/", "bench-out/", "test-artifacts/", ".git/", "*.keras", "*.npy", "*.rgb"]}
    if ray.is_initialized():
        if address is not None or _local_env == env:
            return ray
        ray.shutdown()  # a local instance started for other settings (another home): its workers would use those
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"Cannot reach the Ray cluster at {address!r} ({exc}). Start one with `ray start "
                             "--head` or leave --address out to use this machine.") from exc
    _local_env = env if address is None else None
    return ray


_local_env: dict | None = None  # the environment the local Ray instance's workers were started with


def cluster_cpus() -> float:
    """CPUs the connected cluster has in all."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1))


def resources_per_trial(cpus: float | None, gpus: float | None) -> dict[str, float]:
    """A trial's resources: all of one machine's CPUs unless told, so trials run one at a time on it.

    Two trials sharing two cores each take twice as long and fight over memory bandwidth, so on a
    small machine running them one after another is never slower. Ask for fewer CPUs (or a GPU
    fraction) to run several at once on a big machine or a cluster.
    """
    import ray

    if cpus is not None and not cpus > 0:
        raise ConfigError(f"CPUs per trial must be positive, got {cpus}.")
    if gpus is not None and not 0 <= gpus:
        raise ConfigError(f"GPUs per trial must be 0 or more, got {gpus}.")
    if cpus is None:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        cpus = max((node["Resources"].get("CPU", 1) for node in nodes), default=1)
    resources = {"cpu": float(cpus)}
    if gpus:
        resources["gpu"] = float(gpus)
    return resources


def make_relay():
    """A `Relay` actor: events from workers to the driver, a cancel flag from the driver to workers."""
    import ray

    @ray.remote(num_cpus=0)
    class Relay:
        def __init__(self):
            self.events, self.cancelled = [], False

        def put(self, source, event):
            self.events.append((source, event))

        def drain(self):
            events, self.events = self.events, []
            return events

        def cancel(self):
            self.cancelled = True

        def is_cancelled(self):
            return self.cancelled

    return Relay.remote()


class RelayClient:
    """The worker's side of a relay: `report(event)` and `should_cancel()`, as `core.training.loop.train` takes."""

    def __init__(self, relay, source, poll_seconds: float = 0.5):
        self.relay, self.source, self.poll_seconds = relay, source, poll_seconds
        self._checked, self._cancelled, self._last_batch = 0.0, False, 0.0

    def report(self, event) -> None:
        if event.kind == "batch":  # at most two a second: each is a message to another process
            now = time.monotonic()
            if now - self._last_batch < self.poll_seconds:
                return
            self._last_batch = now
        self.relay.put.remote(self.source, event)  # fire and forget: never waits on the driver

    def should_cancel(self) -> bool:
        import ray

        now = time.monotonic()
        if not self._cancelled and now - self._checked >= self.poll_seconds:
            self._checked = now
            self._cancelled = bool(ray.get(self.relay.is_cancelled.remote()))
        return self._cancelled


def pump(relay, running: Callable[[], bool], on_event: Callable[[object, object], None],
         should_cancel: Callable[[], bool], on_cancel: Callable[[], None] | None = None,
         poll_seconds: float = 0.25) -> bool:
    """Forwards relayed events to `on_event(source, event)` while `running()`; passes a cancel on once.

    Returns:
        whether a cancel was requested.
    """
    import ray

    cancelled = False
    while True:
        alive = running()
        for source, event in ray.get(relay.drain.remote()):
            on_event(source, event)
        if not alive:
            return cancelled
        if not cancelled and should_cancel():
            cancelled = True
            relay.cancel.remote()
            if on_cancel is not None:
                on_cancel()
        time.sleep(poll_seconds)


def run_tune(function, param_space: dict, resources: dict, name: str, relay, on_event, should_cancel):
    """Runs `function` as Ray Tune trials over `param_space`, forwarding relayed events; cancel stops them all.

    Trials reuse their worker processes (TensorFlow loads once per worker) and are never retried:
    a failure is the trial's result. Returns (Tune's ResultGrid, whether a cancel was requested).
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables would interleave with our progress
    from ray import tune

    tuner = tune.Tuner(tune.with_resources(function, resources), param_space=param_space,
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(name=name, storage_path=str((settings.home_dir() / "ray").resolve()),
                                                 stop=_cancel_stopper(relay), verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=0)))
    return run_relayed(tuner.fit, relay, on_event, should_cancel)


def run_relayed(fit: Callable[[], object], relay, on_event, should_cancel) -> tuple[object, bool]:
    """Calls the blocking `fit()` in a thread while forwarding the relay's events (see `pump`).

    Returns:
        (what `fit` returned, whether a cancel was requested); an exception from `fit` is re-raised here.
    """
    import threading

    outcome: dict = {}

    def target():
        try:
            outcome["result"] = fit()
        except Exception as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    cancelled = pump(relay, thread.is_alive, on_event, should_cancel)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], cancelled


def _cancel_stopper(relay):
    """A Tune stopper that ends every trial once the relay carries a cancel."""
    import ray
    from ray import tune

    class CancelStopper(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return bool(ray.get(relay.is_cancelled.remote()))

    return CancelStopper()


def trial_error(error) -> str:
    """The message a failed trial's exception carries (Ray wraps it)."""
    from core.errors import describe

    cause = getattr(error, "cause", None) or getattr(error, "__cause__", None)
    return describe(cause) if isinstance(cause, Exception) else str(error).strip().splitlines()[-1]
