"""A deployment's status from its record: the conditions (Valid, ArtifactsReady, Loaded, OnNPU,
Serving) with their reasons, and the phase they add up to. Writes to the status book and, for a
declared deployment that does not serve, puts its not-ready reason in the server."""

from __future__ import annotations

from npuctl.agent.actuator import Actuator
from npuctl.agent.desired import Desired
from npuctl.agent.records import Activity, Record
from npuctl.agent.status import ConditionType as C
from npuctl.agent.status import DeploymentStatus, Phase, StatusBook, set_phase
from npuctl.artifacts import BuildResult

_PHASES = {Activity.IDLE: Phase.PENDING, Activity.BUILDING: Phase.BUILDING, Activity.LOADING: Phase.LOADING}


def validity(book: StatusBook, status: DeploymentStatus, want: Desired) -> None:
    if want.valid:
        status.set_condition(C.VALID, True, "Valid")
        return
    first = want.errors[0]
    more = f" (+{len(want.errors) - 1} more)" if len(want.errors) > 1 else ""
    changed = status.set_condition(C.VALID, False, "InvalidManifest", f"{first}{more}; the last valid version is kept")
    if changed:
        book.record(status.name, "InvalidManifest", str(first), warning=True)


def settle(book: StatusBook, actuator: Actuator, record: Record, want: Desired, status: DeploymentStatus,
           built: BuildResult | None, activity: Activity) -> None:
    """Conditions and phase from what is running, in flight and failed. `activity` is what the
    deployment waits for (its own work, or a build another deployment runs for the same artifacts)."""
    keys = want.keys
    running = record.running
    build_failure = record.failure(Activity.BUILDING, keys.build)
    load_failure = record.failure(Activity.LOADING, keys.load)
    if built is not None:
        status.set_condition(C.ARTIFACTS_READY, True, "Built")
        status.artifacts = actuator.describe_build(built)
    elif build_failure:
        status.set_condition(C.ARTIFACTS_READY, False, build_failure.reason, build_failure.message)
    else:
        status.set_condition(C.ARTIFACTS_READY, None, "Building" if activity is Activity.BUILDING else "Pending")
    if running:
        facts = actuator.describe(running.model)
        status.provider, status.npu_coverage = facts.provider, facts.npu_coverage
        status.power = facts.power
        status.cost = facts.cost
        status.set_condition(C.LOADED, True, "SessionsOpen", facts.note)
        status.set_condition(C.ON_NPU, facts.on_npu, "OnNPU" if facts.on_npu else "OnCPU", facts.note)
        if want.conflict is None:
            status.set_condition(C.SERVING, True, "Serving", f"as {want.deployment.deployment.public_name}")
    else:
        status.provider, status.npu_coverage = None, None
        status.power = None
        status.cost = None
        if load_failure:
            status.set_condition(C.LOADED, False, load_failure.reason, load_failure.message)
            status.set_condition(C.ON_NPU, False, load_failure.reason, load_failure.message)
        else:
            status.set_condition(C.LOADED, None, "Loading" if activity is Activity.LOADING else "Pending")
        if want.conflict is None:
            failure = load_failure or build_failure
            reason, message = ((failure.reason, failure.message) if failure
                               else (_PHASES[activity].value, "not serving yet"))
            status.set_condition(C.SERVING, False, reason, message)
            _unserved(actuator, record, want, reason, message)
    set_phase(book, status, _phase_of(record, want, activity))


def _unserved(actuator: Actuator, record: Record, want: Desired, reason: str, message: str) -> None:
    """Declared but not serving: its routes answer not-ready with the reason, and readiness is false."""
    if record.unserved != (reason, message):
        record.unserved = (reason, message)
        actuator.unavailable(want.deployment.deployment, reason, message)


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
    return Phase.FAILED if failed else Phase.PENDING
