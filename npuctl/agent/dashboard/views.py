"""What the dashboard page shows, as typed records: each deployment's status (the agent's own status model),
where it runs and why, its build's steps, the recent events and each model's metric timeline. Built from a
running agent, from `npuctl serve`'s registry, or gathered from many agents (fleet.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from npuctl.agent.actuator import describe_artifacts
from npuctl.agent.sources import SourcePoller
from npuctl.agent.state_view import AgentState
from npuctl.agent.status import ConditionType, DeploymentStatus, Event, Phase, now
from npuctl.artifacts import BuildResult
from npuctl.runtime.devices import HostFacts
from npuctl.schema.status import Reason
from npuctl.serve.models import ServedModel
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.timeline import ModelSeries, Timeline

MAX_EVENTS = 50

StepState = Literal["done", "cached", "fetched", "failed"]
_STEP_STATES: dict[str, StepState] = {"StepDone": "done", "StepCached": "cached", "StepFetched": "fetched",
                                      "StepFailed": "failed"}


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class Host(_Record):
    soc: str | None
    """The SoC's alias (x-elite, x2-elite, ...), when known."""
    soc_model: int | None
    npu: str
    """npu (a real Hexagon NPU), simulator (Qualcomm's HTP simulator) or none."""


class BuildStep(_Record):
    name: str
    """The step and the target/bucket it is for, as the build reports it (`compile x-elite/128`)."""
    state: StepState


class BuildProgress(_Record):
    """A build in progress: the steps finished so far, in order; the next one is running."""

    steps: list[BuildStep]
    running: str | None = None
    """The running step and how far it has got, in words (status.progress), once it has reported."""


class DeploymentView(_Record):
    status: DeploymentStatus
    model: str | None = None
    """The public model name clients use."""
    task: str | None = None
    where: str | None = None
    """npu, npu-simulator or cpu: where its sessions run now."""
    why: str = ""
    """Why there: the placement note, or why it does not serve."""
    build: BuildProgress | None = None
    bench: str | None = None
    """The last `npuctl bench`'s headline figures and time (status.lastBench has them all)."""
    cost: str | None = None
    """What the loaded model costs this host, in words (status.cost has the figures)."""
    preflight: str | None = None
    """An NPU chat build's pre-flight, from its last build, in words: the estimated peak RAM, disk and time against
    what the host had (status.preflight has the figures)."""
    refused: str | None = None
    """What the host lacked, when that pre-flight refused the build."""


class AgentView(_Record):
    url: str
    error: str | None = None
    """Why this agent gave no answer (fleet view only)."""
    invalid: bool = False
    """The lab's list names no agent on this line (`url` is the line as written; `error` its FILE:LINE and why)."""
    host: Host | None = None
    sources: list[str] = []
    """Each manifest source's state (`lab Synced 2026-11-25`)."""
    budget: str | None = None
    """What the loaded models take of the agent's budget, in words as `npuctl get` says it (the control API's
    `budget` has the figures); None for `npuctl serve`, which has no budget."""
    deployments: list[DeploymentView] = []
    events: list[Event] = []
    """Newest first."""
    series: list[ModelSeries] = []
    """Per model, the samples asked for: all that the server keeps (10 minutes), or the last `seconds`."""


class PhaseCount(_Record):
    phase: Phase
    count: int


class DashboardData(_Record):
    """The page's data: one agent, or every agent of a lab."""

    fleet: bool
    generated: str
    agents: list[AgentView]
    phases: list[PhaseCount]
    """Deployments per phase over all agents (phases with none left out)."""


def dashboard(agents: list[AgentView], fleet: bool = False) -> DashboardData:
    counts = Counter(d.status.phase for agent in agents for d in agent.deployments)
    return DashboardData(fleet=fleet, generated=now(), agents=agents,
                         phases=[PhaseCount(phase=p, count=counts[p]) for p in Phase if counts[p]])


def host_view(host: HostFacts) -> Host:
    soc = host.soc
    return Host(soc=soc.alias if soc else None, soc_model=host.soc_model, npu=host.npu.value)


def agent_view(url: str, state: AgentState, registry: ModelRegistry, timeline: Timeline, host: HostFacts,
               poller: SourcePoller | None = None, recent: float | None = None) -> AgentView:
    """A running agent as the page shows it (with the samples of the last `recent` seconds, or all)."""
    views = []
    events = state.events()
    for name in state.names():
        want = state.declared.get(name)
        spec = want.deployment.deployment if want else None
        status = state.status(name) or DeploymentStatus(name=name)
        views.append(_deployment(status, registry.get(name), spec.public_name if spec else None,
                                 spec.spec.model.task.value if spec else None,
                                 _build_progress(status, events) if state.building(name) else None))
    sources = [f"{s.name} {s.state} {s.version or ''}".strip() for s in (poller.states.values() if poller else [])]
    return AgentView(url=url, host=host_view(host), sources=sources, budget=state.budget().line(), deployments=views,
                     events=list(reversed(events))[:MAX_EVENTS], series=timeline.series(recent))


def serve_view(url: str, registry: ModelRegistry, timeline: Timeline, host: HostFacts,
               builds: Mapping[str, BuildResult], recent: float | None = None) -> AgentView:
    """`npuctl serve`'s models (built before serving, not watched): status from what the registry holds."""
    views = []
    for model in sorted(registry.models(), key=lambda m: m.deployment):
        served = model.status
        built = builds.get(model.deployment)
        status = DeploymentStatus(name=model.deployment, phase=Phase.READY if served.ready else Phase.FAILED,
                                  provider=served.provider, npu_coverage=served.npu_coverage, cost=served.cost,
                                  artifacts=describe_artifacts(built) if built else [])
        status.set_condition(ConditionType.VALID, True, Reason.VALID)
        status.set_condition(ConditionType.ARTIFACTS_READY, built is not None, Reason.BUILT if built else Reason(served.reason),
                             "" if built else served.message)
        status.set_condition(ConditionType.LOADED, served.ready, Reason.SESSIONS_OPEN if served.ready else Reason(served.reason),
                             served.message)
        status.set_condition(ConditionType.SERVING, served.ready, Reason(served.reason), served.message)
        views.append(_deployment(status, model, model.name, None, None))
    return AgentView(url=url, host=host_view(host), deployments=views, series=timeline.series(recent))


def _deployment(status: DeploymentStatus, served: ServedModel | None, model: str | None, task: str | None,
                build: BuildProgress | None) -> DeploymentView:
    loaded = status.condition(ConditionType.LOADED)
    serving = status.condition(ConditionType.SERVING)
    why = loaded.message if loaded and loaded.status == "True" else (serving.message if serving else "")
    where = served.status.where if served is not None and served.status.ready else None
    bench = status.last_bench.headline() if status.last_bench else None
    cost = status.cost.summary() if status.cost else None
    preflight = status.preflight
    return DeploymentView(status=status, model=model, task=task, where=where, why=why, build=build, bench=bench,
                          cost=cost, preflight=preflight.summary() if preflight else None,
                          refused=preflight.shortfall() if preflight else None)


def _build_progress(status: DeploymentStatus, events: Iterable[Event]) -> BuildProgress:
    """The steps reported since the deployment's build started (the reconciler records each as an event),
    and how far the running one has got."""
    steps: list[BuildStep] = []
    for event in events:
        if event.deployment != status.name:
            continue
        if event.reason == "Building":
            steps = []
        elif event.reason in _STEP_STATES:
            steps.append(BuildStep(name=event.message, state=_STEP_STATES[event.reason]))
    return BuildProgress(steps=steps, running=status.progress.line() if status.progress else None)
