"""Residency in-process: who is evicted to make room (priority, then recency; never a pinned model, one with
requests in flight, or one of a higher priority than the newcomer's), when nothing fits, and what `decide()` does
with an onDemand deployment: stand by, load when asked, unload when idle, swap within the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from npuctl.agent.budget import SESSION_OVERHEAD, Cost, Fits, Full, Limits, Resident, estimate, make_room, measured
from npuctl.agent.conditions import project, transitions
from npuctl.agent.decide import Builds, Demand, Keep, OverBudget, Standby, Start, Unload, WaitForRoom, decide
from npuctl.agent.desired import Desired
from npuctl.agent.records import Activity, Record, Running
from npuctl.agent.residency import Admissions
from npuctl.agent.status import ConditionType as C
from npuctl.agent.status import DeploymentStatus, Phase
from npuctl.artifacts import BuildResult
from npuctl.schema.cost import LoadCost
from npuctl.schema.enums import Precision
from npuctl.schema.models import Task
from npuctl.schema.status import BudgetUse, Reason
from npuctl.serve.models import ModelStatus, Unavailable
from tests.agent.harness import manifest
from tests.agent.test_decisions import NOW, WANT, loaded, seen
from tests.agent.test_decisions import Case as Decision

GB = 1 << 30
LIMITS = Limits(memory=4 * GB, npu_sessions=4)
ON_DEMAND = Desired(loaded(manifest() + "    residency: onDemand\n    idleSeconds: 60\n"))
RELOADED = Desired(loaded(manifest() + "    residency: onDemand\n  runtime:\n    fallback: none\n"))


def resident(name: str, gb: float, *, priority: int = 0, used: float = 0.0, in_flight: int = 0,
             pinned: bool = False) -> Resident:
    return Resident(name, Cost(int(gb * GB), 1), priority, used, in_flight, pinned)


ROOM: dict[str, tuple[list[Resident], float, int, Fits | type[Full]]] = {
    "fits beside what is loaded": ([resident("a", 1)], 1, 0, Fits()),
    "the least recently used goes first": ([resident("old", 1.5, used=1), resident("new", 1.5, used=9)], 2, 0,
                                           Fits(("old",))),
    "the lowest priority goes first, however recent": (
        [resident("low", 1.5, priority=-1, used=9), resident("high", 1.5, priority=5, used=1)], 2, 5, Fits(("low",))),
    "as many as it takes, in order": ([resident(name, 1.2, used=i) for i, name in enumerate("abc")], 2.5, 0,
                                      Fits(("a", "b"))),
    "a pinned model is never evicted": ([resident("pinned", 3, pinned=True, used=0), resident("idle", 0.5, used=5)],
                                        1.2, 0, Full),
    "a model with requests in flight is never evicted": ([resident("busy", 3, in_flight=1)], 2, 0, Full),
    "a higher priority than the newcomer's is never evicted": ([resident("vip", 3, priority=9)], 2, 0, Full),
    "larger than the whole budget": ([], 5, 0, Full),
    "NPU sessions count too": ([resident(f"s{i}", 0.1, used=i) for i in range(4)], 0.1, 0, Fits(("s0",))),
}


@pytest.mark.parametrize("loaded_now, gb, priority, expected", ROOM.values(), ids=ROOM.keys())
def test_eviction_order_by_priority_then_recency(loaded_now: list[Resident], gb: float, priority: int,
                                                  expected: Fits | type[Full]) -> None:
    room = make_room(Cost(int(gb * GB), 1), priority, loaded_now, LIMITS)
    if expected is Full:
        assert isinstance(room, Full)
    else:
        assert room == expected


def test_when_nothing_fits_the_message_names_the_budget_and_what_holds_it() -> None:
    room = make_room(Cost(2 * GB, 1), 0, [resident("pinned", 3, pinned=True), resident("busy", 0.5, in_flight=2)],
                     LIMITS)
    assert isinstance(room, Full)
    assert "memory 4096 MiB, 4 NPU sessions" in room.message
    assert "pinned (3072 MiB, pinned: residency always)" in room.message
    assert "busy (512 MiB, 2 requests in flight)" in room.message
    assert not room.busy, "draining the busy model would not be enough beside the pinned one: refuse now"


def test_a_model_that_fits_once_requests_in_flight_end_waits_for_them_rather_than_503() -> None:
    room = make_room(Cost(2 * GB, 1), 0, [resident("busy", 3, in_flight=1)], LIMITS)
    assert isinstance(room, Full) and room.busy
    assert not make_room(Cost(2 * GB, 1), 0, [resident("vip", 3, priority=9, in_flight=1)], LIMITS).busy, \
        "a higher priority than the newcomer's is never evicted, busy or not"


def test_npuctl_get_shows_the_budget_s_use_in_one_line() -> None:
    use = BudgetUse(memory=8 * GB, memory_used=GB // 2, npu_sessions=8, npu_sessions_used=1, loaded=["minilm"])
    assert use.line() == "budget: memory 512/8192 MiB, NPU sessions 1/8; loaded: minilm"
    with_agent = BudgetUse(memory=8 * GB, memory_used=GB // 2 + 120 * 2**20, agent_memory=120 * 2**20,
                           npu_sessions=8, npu_sessions_used=1, loaded=["minilm"])
    assert with_agent.line() == ("budget: memory 632/8192 MiB (the agent itself 120 MiB), NPU sessions 1/8; "
                                 "loaded: minilm")


AGENT = Limits(memory=4 * GB, npu_sessions=4, agent=GB)
"""A budget of which the agent process itself takes a quarter."""


def test_the_agent_itself_is_charged_first_the_models_share_the_rest() -> None:
    assert make_room(Cost(3 * GB, 1), 0, [], AGENT) == Fits()
    alone = make_room(Cost(3 * GB + 1, 1), 0, [], AGENT)
    assert isinstance(alone, Full), "the model fits the budget, not beside the agent"
    assert "the agent itself taking 1024 MiB of it" in alone.message
    assert "held by: the agent itself (1024 MiB) (the model alone is larger than what is left)" in alone.message
    assert make_room(Cost(2 * GB, 1), 0, [resident("idle", 1.5)], AGENT) == Fits(("idle",))
    busy = make_room(Cost(2 * GB, 1), 0, [resident("busy", 1.5, in_flight=1)], AGENT)
    assert isinstance(busy, Full) and busy.busy
    assert "held by: the agent itself (1024 MiB), busy (1536 MiB, 1 requests in flight)" in busy.message


def test_a_load_is_admitted_against_its_peak_not_what_it_keeps() -> None:
    spiky = Cost(GB, 1, peak=2 * GB)
    assert make_room(spiky, 0, [resident("idle", 2.5)], LIMITS) == Fits(("idle",)), \
        "1 GB kept fits beside 2.5 GB in 4 GB, its 2 GB while loading does not: the idle model goes first"
    assert make_room(spiky, 0, [resident("a", 1)], LIMITS) == Fits()
    refused = make_room(Cost(GB, 1, peak=5 * GB), 0, [], LIMITS)
    assert isinstance(refused, Full) and "(5120 MiB while it loads" in refused.message
    assert make_room(Cost(2 * GB, 1, peak=GB), 0, [resident("a", 2)], LIMITS) == Fits(), \
        "a peak below what it keeps changes nothing"


def test_before_a_load_its_cost_is_the_runtime_s_estimate_plus_a_session_and_twice_its_files_at_the_peak() -> None:
    load = LoadCost(host_bytes=100, artifact_bytes=100, kv_cache_bytes=50, context_binary_bytes=30, npu_sessions=2,
                    estimated=True)
    assert estimate(load) == Cost(SESSION_OVERHEAD + 150, 2, 30, peak=SESSION_OVERHEAD + 2 * 100 + 50)


def test_a_measured_load_keeps_its_peak_for_the_next_admission() -> None:
    estimated = Cost(GB, 0, peak=2 * GB)
    load = LoadCost(host_bytes=GB // 2, peak_host_bytes=3 * GB, artifact_bytes=GB // 4)
    assert measured(estimated, load) == Cost(GB, 0, 0, peak=3 * GB), "the measurement replaces the guessed peak"
    assert measured(estimated, None) == estimated


def record(want: Desired, running: Desired | None = None, parked: Reason | None = None) -> Record:
    model = Unavailable(want.deployment.deployment, ModelStatus(True, "Serving", ""))
    run = Running(running.generation, running.keys, model, ()) if running else None
    return Record("tiny", want, running=run, parked=parked)


BUILT = Builds(ready=frozenset({ON_DEMAND.keys.build}), declared=frozenset({ON_DEMAND.keys.build}))
FULL = Full("the agent's budget (...) cannot fit this model")


def test_on_demand_decisions() -> None:
    loads = Start(Activity.LOADING, ON_DEMAND.keys.load)
    assert decide(record(ON_DEMAND), ON_DEMAND, Builds(), NOW, demand=Demand(on_demand=True)) == Start(
        Activity.BUILDING, ON_DEMAND.keys.build), "built ahead of time"
    assert decide(record(ON_DEMAND), ON_DEMAND, BUILT, NOW, demand=Demand(on_demand=True)) == Standby()
    assert decide(record(ON_DEMAND), ON_DEMAND, BUILT, NOW, demand=Demand(on_demand=True, wanted=True)) == loads
    assert decide(record(ON_DEMAND), ON_DEMAND, BUILT, NOW, demand=Demand(
        on_demand=True, wanted=True, room=Fits(("other",)))) == Start(Activity.LOADING, ON_DEMAND.keys.load,
                                                                         evict=("other",))
    assert decide(record(ON_DEMAND), ON_DEMAND, BUILT, NOW, demand=Demand(
        on_demand=True, wanted=True, room=FULL, room_if_drained=FULL)) == OverBudget(FULL.message)
    busy = Full(FULL.message, busy=True)
    assert decide(record(ON_DEMAND), ON_DEMAND, BUILT, NOW, demand=Demand(
        on_demand=True, wanted=True, room=busy, room_if_drained=busy)) == WaitForRoom(FULL.message), \
        "waits for the busy one's requests"
    serving = record(ON_DEMAND, running=ON_DEMAND)
    assert decide(serving, ON_DEMAND, BUILT, NOW, demand=Demand(on_demand=True, idle=True)) == Unload()
    assert decide(record(WANT, running=WANT), WANT, BUILT, NOW, demand=Demand(idle=True)) == Keep(), \
        "an always model is never unloaded for idleness"


def test_a_swap_loads_beside_the_old_version_only_if_both_fit() -> None:
    old = record(RELOADED, running=ON_DEMAND)
    builds = Builds(ready=frozenset({RELOADED.keys.build}), declared=frozenset({RELOADED.keys.build}))
    beside = decide(old, RELOADED, builds, NOW, demand=Demand(on_demand=True))
    assert beside == Start(Activity.LOADING, RELOADED.keys.load), "an edit of a loaded model swaps, asked for or not"
    drained = decide(old, RELOADED, builds, NOW, demand=Demand(on_demand=True, room=FULL, room_if_drained=Fits()))
    assert drained == Start(Activity.LOADING, RELOADED.keys.load, drain=True)
    unloaded = record(RELOADED, parked=Reason.IDLE)
    assert decide(unloaded, RELOADED, builds, NOW, demand=Demand(on_demand=True)) == Standby(), \
        "an edit of an unloaded onDemand deployment builds, then stands by"


STANDING: dict[str, tuple[Reason, Activity, Phase, tuple[str, str]]] = {
    "never asked for": (Reason.IDLE, Activity.IDLE, Phase.STANDBY, ("False", "Idle")),
    "evicted": (Reason.EVICTED, Activity.IDLE, Phase.STANDBY, ("False", "Evicted")),
    "over budget": (Reason.OVER_BUDGET, Activity.IDLE, Phase.STANDBY, ("False", "OverBudget")),
    "loading on a request": (Reason.IDLE, Activity.LOADING, Phase.LOADING, ("False", "Loading")),
}


@pytest.mark.parametrize("parked, activity, phase, resident_", STANDING.values(), ids=STANDING.keys())
def test_an_on_demand_deployment_shows_why_it_is_not_loaded(parked: Reason, activity: Activity, phase: Phase,
                                                            resident_: tuple[str, str]) -> None:
    case = Decision(want=ON_DEMAND, built=True, activity=activity)
    view = seen(case)
    status = project(DeploymentStatus(name="tiny"), type(view)(**{**view.__dict__, "record": Record(
        "tiny", ON_DEMAND, activity, parked=parked), "on_demand": True}))
    assert status.phase is phase
    found = status.condition(C.RESIDENT)
    assert found is not None and (found.status, found.reason) == resident_
    serving = status.condition(C.SERVING)
    assert serving is not None and (serving.status, serving.reason) == ("True", "OnDemand"), "its names answer"


def test_deployments_on_the_same_sessions_are_charged_once_and_evicted_together() -> None:
    twins = [record(ON_DEMAND, running=ON_DEMAND), record(ON_DEMAND, running=ON_DEMAND)]
    twins[1].name = "twin"
    admissions = Admissions(LIMITS, lambda: NOW, lambda: None, cast(Any, None), cast(Any, None),
                            {r.name: r for r in twins})
    use = admissions.use({ON_DEMAND.keys.build: Cost(GB, 1)})
    assert (use.memory_used, use.npu_sessions_used, use.loaded) == (GB, 1, ["tiny", "twin"])
    shared = Resident("tiny", Cost(3 * GB, 1), 0, 0.0, 0, False, sharing=("twin",))
    assert make_room(Cost(2 * GB, 1), 0, [shared], LIMITS) == Fits(("tiny", "twin")), \
        "the sessions close only when both go"
    newcomer = record(ON_DEMAND)
    newcomer.name = "third"
    built = BuildResult("third", Task.EMBEDDINGS, Precision.FP32, None, Path("missing"), None, ())
    three = {ON_DEMAND.keys.build: Cost(3 * GB, 1)}  # twice that does not fit the 4 GB
    assert admissions.demand(newcomer, built, twins, three).room == Fits(), \
        "its sessions are open already: it takes no more of the budget, and evicts nobody"


def test_a_load_waiting_for_room_shows_it_in_status_and_one_event() -> None:
    view = seen(Decision(want=ON_DEMAND, built=True))
    waiting = type(view)(**{**view.__dict__, "record": Record("tiny", ON_DEMAND, parked=Reason.EVICTED),
                            "on_demand": True, "room": FULL.message})
    before = project(DeploymentStatus(name="tiny"), type(view)(**{**waiting.__dict__, "room": ""}))
    status = project(before, waiting)
    found = status.condition(C.RESIDENT)
    assert found is not None and (found.status, found.reason) == ("False", "WaitingForRoom")
    assert FULL.message in found.message and "requests wait" in found.message
    assert [e[0] for e in transitions(before, status, ON_DEMAND)] == ["WaitingForRoom"]
    assert transitions(status, project(status, waiting), ON_DEMAND) == [], "said once, not at every pass"


@pytest.mark.parametrize(("host", "kv", "binaries", "sessions", "want"), [
    (900, 300, 0, 0, Cost(1200, 1, 500)),  # the load took more than the files say (KV cache included): measured
    (10, 0, 0, 0, Cost(1000, 1, 500)),  # RSS growth misses what first requests allocate: the estimate is a floor
    (10, 0, 800, 2, Cost(1000, 2, 800)),  # more NPU sessions and binary bytes than estimated
])
def test_a_loaded_models_cost_is_its_measurement_where_that_exceeds_the_estimate(host: int, kv: int, binaries: int,
                                                                                sessions: int, want: Cost) -> None:
    load = LoadCost(host_bytes=host, artifact_bytes=500, kv_cache_bytes=kv, context_binary_bytes=binaries,
                    npu_sessions=sessions, sessions=max(sessions, 1))
    assert measured(Cost(1000, 1, 500), load) == want
    assert measured(Cost(1000, 1, 500), None) == Cost(1000, 1, 500)
