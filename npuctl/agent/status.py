"""The status book: every deployment's status (the models are npuctl.schema.status, re-exported here)
and the agent's event log, persisted atomically in the agent's state folder."""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from npuctl.agent.files import atomic_write
from npuctl.artifacts.result import StepEvent, StepState
from npuctl.schema.status import (
    ArtifactStatus,
    Condition,
    ConditionType,
    DeploymentStatus,
    Event,
    Phase,
    RunFacts,
    now,
)

__all__ = ["ArtifactStatus", "Condition", "ConditionType", "DeploymentStatus", "Event", "Phase", "RunFacts",
           "StatusBook", "now"]

log = logging.getLogger("npuctl.agent")

STEP_REASONS = {StepState.DONE: "StepDone", StepState.CACHED: "StepCached", StepState.FETCHED: "StepFetched",
                StepState.FAILED: "StepFailed"}
"""The event each finished build step is recorded as (a running step is shown by the Building phase)."""
STATUS_FILE = "status.json"
MAX_EVENTS = 20


class StatusBook:
    """All deployments' status and the agent's event log, saved to `<state>/status.json` on change."""

    def __init__(self, state: Path) -> None:
        self.path = state / STATUS_FILE
        self.deployments: dict[str, DeploymentStatus] = {}
        self.events: deque[Event] = deque(maxlen=500)
        self._saved: Any = None

    def load(self) -> None:
        """Read what a previous run saved (events and phases are history; reconcile rewrites the rest)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            deployments = [DeploymentStatus.model_validate(item) for item in data.get("deployments", [])]
            events = [Event.model_validate(e) for e in data.get("events", [])]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            # Damaged, or written by another npuctl version: history only, so start afresh and say so.
            log.warning("%s: ignoring the saved status (%s); it is rewritten from what runs now", self.path,
                        _reason(exc))
            return
        self.deployments = {status.name: status for status in deployments}
        self.events.extend(events)
        # Each event is saved once, in the agent's log; a deployment's recent events are a view of it.
        for status in self.deployments.values():
            status.events = [e for e in self.events if e.deployment == status.name][-MAX_EVENTS:]
            # A step's progress is the running build's, and no build survives the previous run: kept, it would
            # show a step as running until the next build reports.
            status.progress = None

    def get(self, name: str) -> DeploymentStatus:
        if name not in self.deployments:
            self.deployments[name] = DeploymentStatus(name=name)
        return self.deployments[name]

    def put(self, status: DeploymentStatus) -> None:
        """Replace a deployment's status with a newer projection of it."""
        self.deployments[status.name] = status

    def remove(self, name: str) -> None:
        self.deployments.pop(name, None)

    def record(self, name: str, reason: str, message: str, warning: bool = False) -> Event:
        """An event of deployment `name`: in the agent's log, its status and the log file."""
        event = self.note(name, reason, message, warning)
        status = self.get(name)
        status.events = [*status.events, event][-MAX_EVENTS:]
        return event

    def step(self, name: str, event: StepEvent) -> None:
        """A build step's report: an event when a step ends, and the running step's progress in the status."""
        reason = STEP_REASONS.get(event.state)
        if reason is not None:
            where = "/".join(str(part) for part in (event.target, event.bucket) if part)
            self.record(name, reason, f"{event.step} {where}".strip(), warning=event.state is StepState.FAILED)
        if name in self.deployments:  # a deleted deployment's late report must not bring its status back
            self.deployments[name].progress = event.running()
            if event.preflight is not None:
                self.deployments[name].preflight = event.preflight

    def note(self, subject: str, reason: str, message: str, warning: bool = False) -> Event:
        """An event about something that is not a deployment (a manifest file, the state folder)."""
        event = Event(time=now(), deployment=subject, type="Warning" if warning else "Normal", reason=reason,
                      message=message)
        self.events.append(event)
        log.log(logging.WARNING if warning else logging.INFO, "%s %s: %s", subject, reason, message)
        return event

    def save(self) -> None:
        """Write atomically (temp file + rename) when something changed since the last save."""
        deployments = [s.model_dump(mode="json", exclude={"events"})
                       for s in sorted(self.deployments.values(), key=lambda s: s.name)]
        # Comparing dicts is cheap; encoding and fsyncing every deployment on every pass is not.
        current = (deployments, len(self.events), id(self.events[-1]) if self.events else None)
        if current == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"deployments": deployments, "events": [e.model_dump(mode="json") for e in self.events]}
        atomic_write(self.path, json.dumps(data, indent=1).encode())
        self._saved = current


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc.strerror or exc)
