"""Why a build failed.

BuildError            a step could not produce its output; names the step
 ├── AccuracyError    verify measured the built model below the manifest's bar
 └── NotBuiltError    `cached_only` was asked and a step is not in the store
"""

from __future__ import annotations


class BuildError(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class AccuracyError(BuildError):
    def __init__(self, message: str, *, metric: str, value: float, threshold: float) -> None:
        super().__init__("verify", message)
        self.metric = metric
        self.value = value
        self.threshold = threshold


class NotBuiltError(BuildError):
    pass
