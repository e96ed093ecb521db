"""What the reconciler knows of each deployment: one record with what is declared, what serves, what
is in flight, and how the last build and load ended. Outcomes say what a finished piece of work
means for the next pass: done, retry after a delay, or permanent (wait for the manifest to change)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum

from npuctl.agent.desired import Desired, Keys
from npuctl.schema.status import Reason
from npuctl.serve.models import ServedModel


class Activity(StrEnum):
    """The work in flight for a deployment (at most one at a time)."""

    IDLE = "Idle"
    BUILDING = "Building"
    LOADING = "Loading"


class OutcomeKind(StrEnum):
    DONE = "Done"
    RETRY = "Retry"
    """Temporary (a full disk, the network, a crashed child): tried again after a backoff delay."""
    PERMANENT = "Permanent"
    """The same input fails the same way (accuracy below the bar, an unsupported op, a source that
    does not exist): tried again only once the manifest changes (or the agent restarts, with new tools)."""
    CANCELLED = "Cancelled"
    """Stopped because what it worked for is no longer declared: not a failure; the next pass starts
    what is declared now."""


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    reason: Reason = Reason.PENDING
    """Why it failed (meaningless when done or cancelled)."""
    message: str = ""

    @classmethod
    def done(cls) -> Outcome:
        return cls(OutcomeKind.DONE)

    @classmethod
    def cancelled(cls) -> Outcome:
        return cls(OutcomeKind.CANCELLED)

    @classmethod
    def failed(cls, reason: Reason, message: str, *, permanent: bool) -> Outcome:
        return cls(OutcomeKind.PERMANENT if permanent else OutcomeKind.RETRY, reason, message)


@dataclass(frozen=True)
class Failure:
    """The last failed build or load of a deployment."""

    key: str
    """The build or load key it failed for: a failure of an older version does not count for the new one."""
    want: Desired
    """The declared version it failed for: a permanent failure waits until this changes."""
    reason: Reason
    message: str
    attempts: int
    retry_at: float | None
    """When a retry is due (monotonic clock); None for a permanent failure."""

    @property
    def permanent(self) -> bool:
        return self.retry_at is None

    def blocks(self, key: str, want: Desired, now: float) -> bool:
        """Whether this failure holds back a new attempt at `key` for `want` at time `now`."""
        if key != self.key:
            return False
        if self.retry_at is None:
            return want is self.want
        return now < self.retry_at


@dataclass
class Running:
    """What a deployment serves: the keys its artifacts and sessions were made from, and its names."""

    generation: str
    keys: Keys
    model: ServedModel
    names: tuple[str, ...]


@dataclass
class Record:
    """One deployment as the reconciler tracks it."""

    name: str
    want: Desired | None = None
    """What its manifest declares now (None once no manifest declares it)."""
    activity: Activity = Activity.IDLE
    work_key: str | None = None
    """The build or load key of the work in flight."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set to stop the work in flight (a build of a version no longer declared); a new one per work."""
    running: Running | None = None
    failures: dict[Activity, Failure] = field(default_factory=dict)
    """The last failure of each kind of work (BUILDING, LOADING)."""
    unserved: tuple[Reason, str] | None = None
    """(reason, message) it is held as not-ready under in the server, when declared but not serving."""
    conflict: str | None = None
    """The name conflict readiness shows for it (it has no place in the server: its names are taken)."""
    parked: Reason | None = None
    """Why an onDemand deployment stands by unloaded (Idle, Evicted, OverBudget); its names answer by asking for
    it to load. None while loaded, or not standing by."""
    parked_for: str | None = None
    """The generation its stand-in was made from (a serving option edited while it stands by makes a new one)."""

    @property
    def busy(self) -> bool:
        return self.activity is not Activity.IDLE

    def failure(self, activity: Activity, key: str) -> Failure | None:
        """The last failure of this kind, if it was for what is declared now (not an older version)."""
        failure = self.failures.get(activity)
        return failure if failure and failure.key == key else None


def backoff(attempts: int, first: float, longest: float) -> float:
    """Doubling from `first`, capped at `longest`."""
    return min(longest, first * 2.0 ** min(attempts - 1, 60))
