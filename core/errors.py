"""The one base class for every error Little Data raises on purpose.

A `LittleDataError`'s message is written for the person at the keyboard: it names the file or
setting and says what to do. The CLI prints it as one line and the training worker shows it on the
Train page; anything else that escapes is a bug and is reported with its type.
"""

from __future__ import annotations


class LittleDataError(Exception):
    """Base class: an expected failure whose message is meant for users."""


class ConfigError(LittleDataError, ValueError):
    """A setting out of range or unknown (a level, backbone, preset, epoch count...)."""


class Cancelled(Exception):
    """Raised inside long work when its `should_cancel()` turned true; the caller stops cleanly."""


def describe(exc: BaseException) -> str:
    """The message to show for `exc`: ours as written, anything else with its type."""
    if isinstance(exc, LittleDataError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
