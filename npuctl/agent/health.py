"""What is wrong with the agent rather than one deployment: a state folder it cannot write (status is
kept in memory, the write retried with backoff, readiness false until it works again), and manifest
files that declare no deployment (invalid, unreadable, or a name another file holds). Each shows in
the control API, as an event and in the log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from npuctl.agent.actuator import Actuator
from npuctl.agent.desired import DesiredState
from npuctl.agent.records import backoff
from npuctl.agent.status import StatusBook
from npuctl.schema import ManifestError
from npuctl.schema.status import Condition, ConditionType, FileProblem, now

STATE = "state"
"""The readiness subject (and event subject) of the state folder."""


@dataclass
class AgentHealth:
    book: StatusBook
    actuator: Actuator
    clock: Callable[[], float]
    backoff_seconds: tuple[float, float]
    save_error: str | None = None
    save_attempts: int = 0
    retry_at: float | None = None
    """When the next write of a failed save is due (monotonic clock)."""
    since: str = field(default_factory=now)
    files: dict[str, FileProblem] = field(default_factory=dict)
    """Manifest files that declare no deployment, by path."""

    def save(self) -> None:
        """Write status if it changed; on failure keep it in memory and retry after a backoff."""
        if self.retry_at is not None and self.clock() < self.retry_at:
            return
        try:
            self.book.save()
        except OSError as exc:
            self.save_attempts += 1
            delay = backoff(self.save_attempts, *self.backoff_seconds)
            self.retry_at = self.clock() + delay
            if self.save_error is None:
                self.since = now()
            self.save_error = (f"cannot write {self.book.path}: {exc.strerror or exc}; status is kept in memory "
                               f"(attempt {self.save_attempts}; retry in {delay:.0f}s)")
            self.book.note(STATE, "StateWriteFailed", self.save_error, warning=True)
            self.actuator.not_ready(STATE, ("StateWriteFailed", self.save_error))
            return
        if self.save_error is not None:
            self.book.note(STATE, "StateSaved", f"{self.book.path} written again")
            self.actuator.not_ready(STATE, None)
            self.since = now()
        self.save_error, self.save_attempts, self.retry_at = None, 0, None

    def conditions(self) -> list[Condition]:
        ok = self.save_error is None
        return [Condition(type=ConditionType.STATE_SAVED, status="True" if ok else "False",
                          reason="Saved" if ok else "StateWriteFailed", message=self.save_error or "",
                          last_transition_time=self.since)]

    def check_files(self, desired: DesiredState) -> None:
        """Files with errors that no deployment shows: an event (and a log line) when one appears or changes."""
        duplicates = set(desired.duplicates)
        found: dict[str, list[ManifestError]] = {}
        for error in desired.file_errors():
            found.setdefault(error.file, []).append(error)
        files = {}
        for file, errors in found.items():
            reason = "DuplicateName" if all(e in duplicates for e in errors) else "InvalidManifest"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            problem = FileProblem(file=file, reason=reason, message=f"{errors[0]}{more}",
                                  errors=[str(e) for e in errors])
            if self.files.get(file) != problem:
                self.book.note(file, reason, problem.message, warning=True)
            files[file] = problem
        self.files = files
