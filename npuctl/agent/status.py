"""Status of each deployment, as `npuctl get` shows it: a phase, conditions with reasons, what the
deployment really runs on, and recent events. Persisted atomically in the agent's state folder."""

from __future__ import annotations

import json
import logging
from collections import deque
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from npuctl.agent.files import atomic_write

log = logging.getLogger("npuctl.agent")

STATUS_FILE = "status.json"
MAX_EVENTS = 20


class Phase(StrEnum):
    PENDING = "Pending"
    BUILDING = "Building"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    """Serving, but not what is declared now (an invalid edit, a failed rebuild, an unwanted provider)."""
    FAILED = "Failed"
    NOT_SELECTED = "NotSelected"


class ConditionType(StrEnum):
    VALID = "Valid"
    SELECTED = "Selected"
    ARTIFACTS_READY = "ArtifactsReady"
    LOADED = "Loaded"
    ON_NPU = "OnNPU"
    SERVING = "Serving"


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class Condition(_Record):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str


class Event(_Record):
    time: str
    deployment: str
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


class DeploymentStatus(_Record):
    name: str
    phase: Phase = Phase.PENDING
    conditions: list[Condition] = []
    observed_generation: str | None = None
    """Hash of the spec this status reflects."""
    serving_generation: str | None = None
    """Hash of the spec whose artifacts are serving now (differs from observedGeneration during an update)."""
    provider: str | None = None
    """The execution provider the session really got."""
    npu_coverage: float | None = None
    """Share of graph nodes the QNN EP took, 0..1."""
    artifacts: list[dict[str, Any]] = []
    endpoint: str | None = None
    file: str | None = None
    events: list[Event] = []

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def is_true(self, kind: ConditionType) -> bool:
        found = self.condition(kind)
        return found is not None and found.status == "True"

    def set_condition(self, kind: ConditionType, status: bool | None, reason: str, message: str = "") -> bool:
        """Set a condition; its transition time moves only when its status flips. True if anything changed."""
        value = {True: "True", False: "False", None: "Unknown"}[status]
        old = self.condition(kind)
        if old and (old.status, old.reason, old.message) == (value, reason, message):
            return False
        when = old.last_transition_time if old and old.status == value else now()
        new = Condition(type=kind, status=value, reason=reason, message=message, last_transition_time=when)
        self.conditions = [c for c in self.conditions if c.type != kind] + [new]
        self.conditions.sort(key=lambda c: list(ConditionType).index(c.type))
        return True


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

    def get(self, name: str) -> DeploymentStatus:
        if name not in self.deployments:
            self.deployments[name] = DeploymentStatus(name=name)
        return self.deployments[name]

    def remove(self, name: str) -> None:
        self.deployments.pop(name, None)

    def record(self, name: str, reason: str, message: str, warning: bool = False) -> Event:
        event = Event(time=now(), deployment=name, type="Warning" if warning else "Normal", reason=reason, message=message)
        self.events.append(event)
        log.log(logging.WARNING if warning else logging.INFO, "%s %s: %s", name, reason, message)
        status = self.get(name)
        status.events = [*status.events, event][-MAX_EVENTS:]
        return event

    def save(self) -> None:
        """Write atomically (temp file + rename) when something changed since the last save."""
        deployments = [s.model_dump(mode="json") for s in sorted(self.deployments.values(), key=lambda s: s.name)]
        # Comparing dicts is cheap; encoding and fsyncing every deployment on every pass is not.
        if deployments == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"deployments": deployments, "events": [e.model_dump(mode="json") for e in self.events]}
        atomic_write(self.path, json.dumps(data, indent=1).encode())
        self._saved = deployments


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc.strerror or exc)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


