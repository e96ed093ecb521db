"""What is wrong with the agent rather than one deployment: a state folder it cannot write (status is
kept in memory, the write retried with backoff, readiness false until it works again), manifest
files that declare no deployment (invalid, unreadable, or a name another file holds), manifests not read
yet (before the first read, a read past its deadline, a file still settling) and a reconcile loop being
restarted after a failure. Each shows in the control API, as an event and in the log; all but the
invalid files make readiness false."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from npuctl.agent.actuator import Actuator
from npuctl.agent.desired import DesiredState
from npuctl.agent.records import backoff
from npuctl.agent.status import StatusBook
from npuctl.schema import ManifestError
from npuctl.schema.status import Condition, ConditionType, FileProblem, now

log = logging.getLogger("npuctl.agent")

STATE = "state"
"""The readiness subject (and event subject) of the state folder."""
MANIFESTS = "manifests"
"""The readiness subject of reading the manifest folders."""
RECONCILE = "reconcile"
"""The readiness subject of the reconcile loop itself."""
NOT_READ = ("ManifestsNotRead", "the manifest folders have not been read yet")


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
    reading: tuple[str, str] | None = NOT_READ
    """(reason, message) while the manifests are not known: not read yet, a read late, a file settling."""
    reading_since: str = field(default_factory=now)
    loop_error: str | None = None
    """Why the reconcile loop is being restarted, until a pass completes again."""
    loop_attempts: int = 0
    """Restarts since the last pass that completed."""
    loop_since: str = field(default_factory=now)

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
        reason, message = self.reading or ("Read", "")
        return [Condition(type=ConditionType.STATE_SAVED, status="True" if ok else "False",
                          reason="Saved" if ok else "StateWriteFailed", message=self.save_error or "",
                          last_transition_time=self.since),
                Condition(type=ConditionType.MANIFESTS_READ, status="False" if self.reading else "True",
                          reason=reason, message=message, last_transition_time=self.reading_since),
                Condition(type=ConditionType.RECONCILING, status="False" if self.loop_error else "True",
                          reason="Restarting" if self.loop_error else "Running", message=self.loop_error or "",
                          last_transition_time=self.loop_since)]

    def start(self) -> None:
        """The loop starts: readiness waits for the first read of the manifests."""
        self.actuator.not_ready(MANIFESTS, self.reading)

    def check_reading(self, desired: DesiredState, late: str | None = None) -> None:
        """Readiness is false until the manifests are read, while a read is past its deadline (`late` says
        so) and while a file waits to settle: until then what is served is not what the folders declare."""
        problem: tuple[str, str] | None = None
        if late is not None:
            problem = ("ManifestReadTimeout", late)
        elif not desired.read:
            problem = NOT_READ
        elif desired.pending:
            first, more = desired.pending[0], len(desired.pending) - 1
            problem = ("ManifestPending", f"{first.file} was saved and is read at {first.applies_at} if it does not "
                       f"change again{f' (+{more} more)' if more else ''}")
        if problem == self.reading:
            return
        if (problem and problem[0]) != (self.reading and self.reading[0]):
            self.reading_since = now()
            if problem:
                self.book.note(MANIFESTS, *problem, warning=problem[0] == "ManifestReadTimeout")
        self.reading = problem
        self.actuator.not_ready(MANIFESTS, problem)

    def loop_failed(self, exc: BaseException, delay: float) -> None:
        """A reconcile pass raised: shown (condition, event, log, readiness) until one completes again."""
        log.error("reconcile loop failed (%s: %s); restarting it in %.0fs", type(exc).__name__, exc, delay,
                  exc_info=exc)
        if self.loop_error is None:
            self.loop_since = now()
        self.loop_attempts += 1
        self.loop_error = f"{type(exc).__name__}: {exc} (attempt {self.loop_attempts}; restarted in {delay:.0f}s)"
        self.book.note(RECONCILE, "ReconcileLoopFailed", self.loop_error, warning=True)
        self.actuator.not_ready(RECONCILE, ("ReconcileLoopFailed", self.loop_error))

    def loop_ran(self) -> None:
        """A reconcile pass completed."""
        if self.loop_error is None:
            return
        self.book.note(RECONCILE, "ReconcileLoopRunning", "a reconcile pass completed again")
        self.loop_error, self.loop_attempts, self.loop_since = None, 0, now()
        self.actuator.not_ready(RECONCILE, None)

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
