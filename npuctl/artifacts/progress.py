"""Progress inside a step: how far a long step has got (layers read, splits written, graphs compiled,
calibration samples, prompts and tokens), reported by the code doing the work with `report`, wherever it runs.

The step runner installs a reporter around each step's work (`reporting`); a step's child process installs
one that writes to its parent (npuctl.artifacts.children), which reports again on its side. Outside a step
`report` does nothing: library code may call it unconditionally."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

INTERVAL = 1.0
"""Seconds between two reports of one step that reach the build's caller: status and logs stay small."""


@dataclass(frozen=True)
class Progress:
    """How far a running step has got."""

    done: int
    total: int | None
    """None when the step cannot know it in advance."""
    unit: str
    """What is counted, plural: `layers`, `splits`, `graphs`, `calibration samples`, `tokens`."""

    def __str__(self) -> str:
        return f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"


Reporter = Callable[[Progress, str | None], None]
"""Takes a report and what the step is doing in words (or None)."""

_reporter: ContextVar[Reporter | None] = ContextVar("npuctl_progress", default=None)


def report(done: int, total: int | None, unit: str, message: str | None = None) -> None:
    """Tell the running step's caller how far it has got (nothing happens outside a step)."""
    reporter = _reporter.get()
    if reporter is not None:
        reporter(Progress(done, total, unit), message)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """`report` calls in this thread go to `reporter` while the block runs."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


class Throttle:
    """Lets through at most one report per `interval` seconds, except the first, one that finishes what it
    counts (done == total) and one that counts something else: those say where a step is for a long time."""

    def __init__(self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: tuple[float, str, str | None] | None = None

    def passes(self, progress: Progress, message: str | None) -> bool:
        now = self.clock()
        last = self._last
        if (last is not None and now - last[0] < self.interval and progress.done != progress.total
                and (progress.unit, message) == last[1:]):
            return False
        self._last = (now, progress.unit, message)
        return True
