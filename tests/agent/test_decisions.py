"""The reconciler's decisions and status projection, in-process and from tables: no agent process, no build, no
clock but the one passed in. Each row is a situation a deployment can be in and what the agent must do or show."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest

from npuctl.agent.conditions import Seen, project, transitions, unserved
from npuctl.agent.decide import (
    Action,
    Builds,
    Conflict,
    Hold,
    Keep,
    Reconfigure,
    Start,
    StopBuild,
    Unselect,
    Wait,
    decide,
    waits_for,
)
from npuctl.agent.desired import Desired
from npuctl.agent.records import Activity, Failure, Record, Running
from npuctl.agent.status import ConditionType as C
from npuctl.agent.status import DeploymentStatus, Phase, RunFacts
from npuctl.schema import LoadedDeployment, ManifestError, load_text
from npuctl.schema.clashes import clashes
from npuctl.schema.status import Reason
from npuctl.serve.models import ModelStatus, Unavailable
from tests.agent.harness import manifest

NOW = 1000.0


def loaded(text: str, file: str = "/m/tiny.yaml") -> LoadedDeployment:
    (one,) = load_text(text, file).deployments
    return one


WANT = Desired(loaded(manifest()))
SERVE_EDIT = Desired(loaded(manifest(queue_limit=3)))
"""Only a serving option changed: same artifacts, same sessions."""
RELOAD_EDIT = Desired(loaded(manifest() + "  runtime:\n    fallback: none\n"))
"""Same artifacts, new sessions."""
REBUILD_EDIT = Desired(loaded(manifest(precision="w8a8")))
INVALID = Desired(WANT.deployment, errors=(ManifestError(file="/m/tiny.yaml", line=3, column=1, path="spec.model",
                                                         message="field required"),))
_other = loaded(manifest(name="first"), "/m/first.yaml")
_newcomer = loaded(manifest(name="tiny").replace("queueLimit: 64", "queueLimit: 64\n    name: first"))
(CLASH,) = clashes([_other, _newcomer])
CONFLICTED = Desired(_newcomer, conflict=CLASH)


def running(want: Desired) -> Running:
    model = Unavailable(want.deployment.deployment, ModelStatus(True, "Serving", ""))
    return Running(want.generation, want.keys, model, (want.deployment.deployment.public_name,))


def failure(activity: Activity, want: Desired, *, permanent: bool,
            retry_at: float = NOW + 5) -> dict[Activity, Failure]:
    key = want.keys.build if activity is Activity.BUILDING else want.keys.load
    return {activity: Failure(key, want, Reason.BUILD_FAILED, "no space", 1, None if permanent else retry_at)}


@dataclass
class Case:
    want: Desired = WANT
    running: Desired | None = None
    activity: Activity = Activity.IDLE
    work_key: str | None = None
    failures: dict[Activity, Failure] = field(default_factory=dict)
    built: bool = False
    building_elsewhere: bool = False
    selected: bool = True

    def record(self) -> Record:
        return Record("tiny", self.want, self.activity, self.work_key,
                      running=running(self.running) if self.running else None, failures=self.failures)

    def builds(self) -> Builds:
        key = self.want.keys.build
        return Builds(ready=frozenset({key} if self.built else ()), declared=frozenset({key}),
                      running=frozenset({key} if self.building_elsewhere else ()))


DECISIONS: dict[str, tuple[Case, Action]] = {
    "new: build": (Case(), Start(Activity.BUILDING, WANT.keys.build)),
    "built: load": (Case(built=True), Start(Activity.LOADING, WANT.keys.load)),
    "serving what is declared: nothing": (Case(running=WANT, built=True), Keep()),
    "serving option edited: in place": (Case(want=SERVE_EDIT, running=WANT, built=True), Reconfigure()),
    "runtime edited: new sessions beside the old (swap)":
        (Case(want=RELOAD_EDIT, running=WANT, built=True), Start(Activity.LOADING, RELOAD_EDIT.keys.load)),
    "precision edited: rebuild while the old serves":
        (Case(want=REBUILD_EDIT, running=WANT), Start(Activity.BUILDING, REBUILD_EDIT.keys.build)),
    "identical deployment builds the same: wait for it": (Case(building_elsewhere=True), Wait()),
    "own build in flight: wait": (Case(activity=Activity.BUILDING, work_key=WANT.keys.build), Wait()),
    "build of a version no longer declared: stop it":
        (Case(want=REBUILD_EDIT, activity=Activity.BUILDING, work_key=WANT.keys.build), StopBuild()),
    "temporary failure, before its retry time: hold":
        (Case(failures=failure(Activity.BUILDING, WANT, permanent=False)), Hold(
            failure(Activity.BUILDING, WANT, permanent=False)[Activity.BUILDING])),
    "temporary failure, at its retry time: build again":
        (Case(failures=failure(Activity.BUILDING, WANT, permanent=False, retry_at=NOW)),
         Start(Activity.BUILDING, WANT.keys.build)),
    "permanent failure, same manifest: hold for ever":
        (Case(failures=failure(Activity.BUILDING, WANT, permanent=True)),
         Hold(failure(Activity.BUILDING, WANT, permanent=True)[Activity.BUILDING])),
    "permanent failure, manifest saved again: build again":
        (Case(want=Desired(WANT.deployment), failures=failure(Activity.BUILDING, WANT, permanent=True)),
         Start(Activity.BUILDING, WANT.keys.build)),
    "failure of an older version does not hold the new one":
        (Case(want=REBUILD_EDIT, failures=failure(Activity.BUILDING, WANT, permanent=True)),
         Start(Activity.BUILDING, REBUILD_EDIT.keys.build)),
    "load failed for good: not loaded again":
        (Case(built=True, failures=failure(Activity.LOADING, WANT, permanent=True)),
         Hold(failure(Activity.LOADING, WANT, permanent=True)[Activity.LOADING])),
    "its served name belongs to another deployment: load nothing": (Case(want=CONFLICTED, built=True), Conflict()),
    "not selected by this agent: unload": (Case(running=WANT, built=True, selected=False), Unselect()),
}


@pytest.mark.parametrize("case, action", DECISIONS.values(), ids=DECISIONS.keys())
def test_the_next_action_follows_from_the_record(case: Case, action: Action) -> None:
    assert decide(case.record(), case.want, case.builds(), NOW, selected=case.selected) == action


PHASES: dict[str, tuple[Case, Phase, dict[C, tuple[str, str]]]] = {
    "new": (Case(), Phase.PENDING, {C.ARTIFACTS_READY: ("Unknown", "Pending"), C.SERVING: ("False", "Pending")}),
    "building": (Case(activity=Activity.BUILDING), Phase.BUILDING, {C.ARTIFACTS_READY: ("Unknown", "Building")}),
    "another deployment builds it": (Case(building_elsewhere=True), Phase.BUILDING,
                                     {C.SERVING: ("False", "Building")}),
    "loading": (Case(activity=Activity.LOADING, built=True), Phase.LOADING,
                {C.ARTIFACTS_READY: ("True", "Built"), C.LOADED: ("Unknown", "Loading")}),
    "serving": (Case(running=WANT, built=True), Phase.READY,
                {C.LOADED: ("True", "SessionsOpen"), C.SERVING: ("True", "Serving"), C.ON_NPU: ("True", "OnNPU")}),
    "swapping in a reload": (Case(want=RELOAD_EDIT, running=WANT, built=True, activity=Activity.LOADING),
                             Phase.LOADING, {C.SERVING: ("True", "Serving")}),
    "serving the last good version of an invalid file": (Case(want=INVALID, running=WANT, built=True),
                                                         Phase.DEGRADED, {C.VALID: ("False", "InvalidManifest")}),
    "rebuild failed, the old version serves": (Case(want=REBUILD_EDIT, running=WANT, failures=failure(
        Activity.BUILDING, REBUILD_EDIT, permanent=True)), Phase.DEGRADED, {C.ARTIFACTS_READY: ("False", "BuildFailed"),
                                                                             C.SERVING: ("True", "Serving")}),
    "build failed": (Case(failures=failure(Activity.BUILDING, WANT, permanent=True)), Phase.FAILED,
                     {C.ARTIFACTS_READY: ("False", "BuildFailed"), C.SERVING: ("False", "BuildFailed")}),
    "name taken": (Case(want=CONFLICTED, built=True), Phase.FAILED, {C.SERVING: ("False", "NameConflict")}),
    "not selected": (Case(selected=False), Phase.NOT_SELECTED, {C.SELECTED: ("False", "SelectorMismatch")}),
}


def seen(case: Case) -> Seen:
    record = case.record()
    return Seen(record, case.want, waits_for(record, case.builds()), case.selected, "",
                () if case.built else None, RunFacts(provider="QNNExecutionProvider", on_npu=True) if case.running
                else None)


@pytest.mark.parametrize("case, phase, conditions", PHASES.values(), ids=PHASES.keys())
def test_the_status_follows_from_the_record(case: Case, phase: Phase, conditions: dict[C, tuple[str, str]]) -> None:
    status = project(DeploymentStatus(name="tiny"), seen(case))
    assert status.phase is phase
    for kind, (value, reason) in conditions.items():
        found = status.condition(kind)
        assert found is not None and (found.status, found.reason) == (value, reason), (kind, found)


def test_projecting_changes_nothing_and_names_the_events_worth_recording() -> None:
    before = DeploymentStatus(name="tiny")
    after = project(before, seen(Case(failures=failure(Activity.BUILDING, WANT, permanent=True))))
    assert before == DeploymentStatus(name="tiny"), "the previous status is left as it was"
    assert transitions(before, after, WANT) == [("PhaseFailed", "Pending -> Failed", False)]
    assert transitions(after, project(after, seen(Case(failures=failure(Activity.BUILDING, WANT, permanent=True)))),
                       WANT) == [], "a second pass over the same facts changes nothing"
    invalid = project(after, seen(Case(want=INVALID)))
    assert ("InvalidManifest", str(INVALID.errors[0]), True) in transitions(after, invalid, INVALID)
    assert unserved(after) == ("BuildFailed", "no space"), "its routes answer not-ready with the reason"
    assert unserved(project(before, seen(Case(want=CONFLICTED)))) is None, "the names are another's: no placeholder"


def test_the_published_status_schema_lists_every_condition_reason() -> None:
    schema = json.loads((Path(__file__).resolve().parents[2] / "schema" / "status.schema.json").read_text())
    assert schema["$defs"]["Reason"]["enum"] == [reason.value for reason in Reason]
    assert {"NameConflict", "BuildFailed", "SimulatorNotAllowed", "SelectorMismatch"} <= set(Reason)
    condition = project(DeploymentStatus(name="tiny"), seen(Case())).model_dump(mode="json")["conditions"][0]
    contract = {**schema["$defs"]["Condition"], "$defs": schema["$defs"]}
    jsonschema.validate(condition, contract)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**condition, "reason": "Whatever"}, contract)
