"""A deployment's status from what the reconciler knows of it: the conditions (Valid, Selected, ArtifactsReady,
Loaded, OnNPU, Serving) with their reasons, and the phase they add up to. `project()` is pure: it returns a new
status and changes nothing (the reconciler stores it, records the events `transitions()` names, and tells the
server why a declared deployment does not serve)."""

from __future__ import annotations

from dataclasses import dataclass

from npuctl.agent.desired import Desired
from npuctl.agent.records import Activity, Record
from npuctl.agent.status import ArtifactStatus, DeploymentStatus, Phase, RunFacts
from npuctl.agent.status import ConditionType as C
from npuctl.schema.status import Reason
from npuctl.schema.status import Reason as R

_PHASES = {Activity.IDLE: Phase.PENDING, Activity.BUILDING: Phase.BUILDING, Activity.LOADING: Phase.LOADING}
_WAITING = {Activity.IDLE: R.PENDING, Activity.BUILDING: R.BUILDING, Activity.LOADING: R.LOADING}
NAME_CONFLICT = R.NAME_CONFLICT


@dataclass(frozen=True)
class Seen:
    """Everything a deployment's status is projected from, besides its previous status."""

    record: Record
    want: Desired
    activity: Activity
    """What it waits for: its own work, or a build another deployment runs for the same artifacts."""
    selected: bool = True
    why_not: str = ""
    """Why the agent is not selected (spec.selector)."""
    artifacts: tuple[ArtifactStatus, ...] | None = None
    """Its build's artifacts, when built."""
    run: RunFacts | None = None
    """Where the model that serves it runs, when one does."""
    endpoint: str | None = None
    on_demand: bool = False
    """`residency: onDemand`: its Resident condition shows whether it is loaded."""
    room: str = ""
    """An onDemand load waiting for the requests in flight on the models it will evict: the budget and what holds
    it (empty: not waiting)."""


def project(previous: DeploymentStatus, seen: Seen) -> DeploymentStatus:
    """The deployment's status now. Conditions keep their transition time unless their status flips."""
    record, want = seen.record, seen.want
    status = previous.model_copy(update={"file": str(want.deployment.file), "endpoint": seen.endpoint,
                                         "observed_generation": want.generation})
    _validity(status, want)
    status.set_condition(C.SELECTED, seen.selected, R.SELECTED if seen.selected else R.SELECTOR_MISMATCH, seen.why_not)
    if not seen.selected:
        status.phase = Phase.NOT_SELECTED
        return status
    if record.running is not None:
        status.serving_generation = record.running.generation
    if want.conflict is not None:
        status.set_condition(C.SERVING, record.running is not None, NAME_CONFLICT, want.conflict.message)
    _artifacts(status, seen)
    _running(status, seen)
    status.phase = _phase_of(record, want, seen.activity)
    return status


def transitions(old: DeploymentStatus, new: DeploymentStatus, want: Desired) -> list[tuple[str, str, bool]]:
    """The events a change of status is worth: (reason, message, warning)."""
    events: list[tuple[str, str, bool]] = []
    valid = new.condition(C.VALID)
    if valid is not None and valid.status == "False" and valid != old.condition(C.VALID) and want.errors:
        events.append((valid.reason, str(want.errors[0]), True))
    serving, was_serving = new.condition(C.SERVING), old.condition(C.SERVING)
    if serving is not None and serving.reason == NAME_CONFLICT and serving != was_serving:
        events.append((NAME_CONFLICT, serving.message, True))
    if new.phase != old.phase:
        events.append((f"Phase{new.phase.value}", f"{old.phase.value} -> {new.phase.value}", False))
    resident, was_resident = new.condition(C.RESIDENT), old.condition(C.RESIDENT)
    if resident is not None and resident.reason == R.WAITING_FOR_ROOM and (
            was_resident is None or was_resident.reason != R.WAITING_FOR_ROOM):
        events.append((R.WAITING_FOR_ROOM.value, resident.message, False))
    return events


def unserved(status: DeploymentStatus) -> tuple[Reason, str] | None:
    """(reason, message) a declared deployment that does not serve answers not-ready with; None when it serves
    or holds no place in the server (not selected, or its names belong to another deployment)."""
    serving = status.condition(C.SERVING)
    if status.phase is Phase.NOT_SELECTED or serving is None or serving.status == "True" \
            or serving.reason == NAME_CONFLICT:
        return None
    return serving.reason, serving.message


def _validity(status: DeploymentStatus, want: Desired) -> None:
    if want.valid:
        status.set_condition(C.VALID, True, R.VALID)
        return
    first = want.errors[0]
    more = f" (+{len(want.errors) - 1} more)" if len(want.errors) > 1 else ""
    status.set_condition(C.VALID, False, R.INVALID_MANIFEST, f"{first}{more}; the last valid version is kept")


def _artifacts(status: DeploymentStatus, seen: Seen) -> None:
    build_failure = seen.record.failure(Activity.BUILDING, seen.want.keys.build)
    if seen.artifacts is not None:
        status.set_condition(C.ARTIFACTS_READY, True, R.BUILT)
        status.artifacts = list(seen.artifacts)
    elif build_failure:
        status.set_condition(C.ARTIFACTS_READY, False, build_failure.reason, build_failure.message)
    else:
        status.set_condition(C.ARTIFACTS_READY, None, R.BUILDING if seen.activity is Activity.BUILDING else R.PENDING)


def _running(status: DeploymentStatus, seen: Seen) -> None:
    record, want, run = seen.record, seen.want, seen.run
    if record.running is not None:
        run = run or RunFacts()
        status.provider, status.npu_coverage, status.power = run.provider, run.npu_coverage, run.power
        status.cost = run.cost
        status.set_condition(C.LOADED, True, R.SESSIONS_OPEN, run.note)
        status.set_condition(C.ON_NPU, run.on_npu, R.ON_NPU if run.on_npu else R.ON_CPU, run.note)
        if want.conflict is None:
            status.set_condition(C.SERVING, True, R.SERVING, f"as {want.deployment.deployment.public_name}")
        if seen.on_demand:
            status.set_condition(C.RESIDENT, True, R.SESSIONS_OPEN, "loaded; unloaded after idleSeconds without "
                                 "requests, or to make room for a model of the same or a higher priority")
        return
    status.provider, status.npu_coverage, status.power = None, None, None
    status.cost = None
    load_failure = record.failure(Activity.LOADING, want.keys.load)
    if record.parked is not None and not load_failure:
        _standing_by(status, seen, record.parked)
        return
    if seen.on_demand:
        status.set_condition(C.RESIDENT, False, R.LOADING if seen.activity is Activity.LOADING else R.PENDING)
    if load_failure:
        status.set_condition(C.LOADED, False, load_failure.reason, load_failure.message)
        status.set_condition(C.ON_NPU, False, load_failure.reason, load_failure.message)
    else:
        status.set_condition(C.LOADED, None, R.LOADING if seen.activity is Activity.LOADING else R.PENDING)
    if want.conflict is None:
        failure = load_failure or record.failure(Activity.BUILDING, want.keys.build)
        reason, message = (failure.reason, failure.message) if failure else (_WAITING[seen.activity],
                                                                             "not serving yet")
        status.set_condition(C.SERVING, False, reason, message)


_PARKED = {R.IDLE: "not loaded: it loads on its next request",
           R.EVICTED: "unloaded to make room within the agent's budget; it loads again on its next request",
           R.OVER_BUDGET: "asked for, but the agent's budget cannot fit it beside the models it may not evict"}


def _standing_by(status: DeploymentStatus, seen: Seen, parked: Reason) -> None:
    """Built, not loaded (onDemand): its names answer, by having it loaded."""
    loading = seen.activity is Activity.LOADING
    status.set_condition(C.LOADED, None if loading else False, R.LOADING if loading else parked, _PARKED[parked])
    status.set_condition(C.ON_NPU, False, R.LOADING if loading else parked, _PARKED[parked])
    if seen.room and not loading:
        status.set_condition(C.RESIDENT, False, R.WAITING_FOR_ROOM, f"asked for; {seen.room}: its requests wait for "
                             "those in flight on the models it will evict to end")
    else:
        status.set_condition(C.RESIDENT, False, R.LOADING if loading else parked, _PARKED[parked])
    if seen.want.conflict is None:
        status.set_condition(C.SERVING, True, R.ON_DEMAND, f"as {seen.want.deployment.deployment.public_name}, "
                             "loaded on its first request")


def _phase_of(record: Record, want: Desired, activity: Activity) -> Phase:
    running = record.running
    current = running is not None and running.keys.load == want.keys.load
    failed = (record.failure(Activity.BUILDING, want.keys.build) or record.failure(Activity.LOADING, want.keys.load)
              or want.conflict)
    if running and current and want.valid and not want.conflict:
        return Phase.READY
    if running:
        return Phase.DEGRADED if failed or not want.valid else _PHASES[activity]
    if activity is not Activity.IDLE:
        return _PHASES[activity]
    if record.parked is not None and not record.failure(Activity.LOADING, want.keys.load):
        return Phase.STANDBY
    return Phase.FAILED if failed else Phase.PENDING
