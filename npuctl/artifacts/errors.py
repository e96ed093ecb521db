"""Why a build failed, and whether trying again can help.

BuildError            a step could not produce its output; names the step
 ├── AccuracyError    verify measured the built model below the manifest's bar
 └── NotBuiltError    `cached_only` was asked and a step is not in the store

`temporary` tells the agent what a retry can do: a full disk, a lost network or a crashed compiler
may pass next time (retry with backoff); a missing source, an unsupported op or an accuracy below
the bar fail the same way until the manifest (or the tools) change.
"""

from __future__ import annotations

from npuctl.errors import NpuctlError


class BuildError(NpuctlError):
    def __init__(self, step: str, message: str, *, temporary: bool = False, field: tuple[str, ...] = ()) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.temporary = temporary
        self.field = field
        """The manifest field the error is about (`("spec", "model", "format")`), for placing it at its line; empty
        when it is about no one field."""

    @classmethod
    def wrapping(cls, step: str, exc: BaseException) -> BuildError:
        """A build error for an unexpected exception in `step`, temporary when the environment caused it."""
        return cls(step, f"{type(exc).__name__}: {exc}", temporary=is_temporary(exc))


def is_temporary(exc: BaseException) -> bool:
    """Failures of the machine rather than of the input: I/O (a full disk, the network, timeouts) and memory.
    A file that does not exist is the input's fault."""
    if isinstance(exc, BuildError):
        return exc.temporary
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return False
    return isinstance(exc, (OSError, MemoryError))


class AccuracyError(BuildError):
    def __init__(self, message: str, *, metric: str, value: float, threshold: float) -> None:
        super().__init__("verify", message)
        self.metric = metric
        self.value = value
        self.threshold = threshold


class NotBuiltError(BuildError):
    pass
