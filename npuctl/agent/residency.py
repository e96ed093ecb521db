"""Residency (`spec.serve.residency`): which `onDemand` deployments are wanted, idle, or fit the budget, gathered
for `decide()`; and admission, the requests that wait for a model to load. Requests only ask (`admit`) and wake
the reconciler; the reconciler alone loads, unloads and evicts, and answers the waiting requests here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from npuctl.agent.actuator import Actuator
from npuctl.agent.budget import Cost, Full, Limits, Resident, estimate, make_room
from npuctl.agent.decide import Demand
from npuctl.agent.records import Record
from npuctl.agent.status import StatusBook
from npuctl.artifacts import BuildResult
from npuctl.runtime.placement import NotServable
from npuctl.schema import LoadedDeployment
from npuctl.schema.models import Residency as Mode
from npuctl.schema.models import Task
from npuctl.schema.status import BudgetUse, Reason
from npuctl.serve.http.errors import ApiError

log = logging.getLogger("npuctl.agent")

IN_USE_POLL_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5
"""What a request refused for the budget is told to wait: about one idle model's unload or one request's time."""


class Admissions:
    """The requests waiting for their deployment to load, and the per-request idle times (Ollama's keep_alive)."""

    def __init__(self, limits: Limits, clock: Callable[[], float], wake: Callable[[], None], actuator: Actuator,
                 book: StatusBook, records: dict[str, Record]) -> None:
        self.limits = limits
        self.records = records
        """The reconciler's records (read only here)."""
        self.clock = clock
        self.wake = wake
        self.actuator = actuator
        self.book = book
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.keep: dict[str, float] = {}
        """Idle seconds asked by the last request (keep_alive), by deployment; within the manifest's."""

    async def admit(self, name: str) -> None:
        """A request to deployment `name`, which is not loaded: wait until the reconciler has loaded it. Raises
        ApiError when it cannot be (503 with Retry-After when the budget cannot fit it)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(waiter)
        self.wake()
        try:
            await waiter
        finally:
            waiters = self._waiting.get(name, [])
            if waiter in waiters:
                waiters.remove(waiter)

    def wanted(self, name: str) -> bool:
        return any(not w.done() for w in self._waiting.get(name, []))

    def loaded(self, name: str) -> None:
        for waiter in self._waiting.pop(name, []):
            if not waiter.done():
                waiter.set_result(None)

    def refuse(self, name: str, error: ApiError) -> None:
        for waiter in self._waiting.pop(name, []):
            if not waiter.done():
                waiter.set_exception(error)

    def keep_alive(self, name: str, seconds: float) -> bool:
        """A request asked for this idle time (Ollama's keep_alive): it applies within the manifest's idleSeconds,
        to an onDemand deployment. Whether it applies."""
        record = self.records.get(name)
        if record is None or not on_demand(record):
            return False
        self.keep[name] = seconds
        self.wake()
        return True

    def idle_for(self, name: str) -> float | None:
        """The idle time after which deployment `name`'s loaded model unloads (None: it stays while declared)."""
        record = self.records.get(name)
        return self.idle_seconds(record) if record is not None and on_demand(record) else None

    def idle_seconds(self, record: Record) -> float:
        assert record.want is not None
        declared = record.want.deployment.deployment.spec.serve.idle_seconds
        return min(declared, self.keep.get(record.name, declared))

    def idle_at(self, record: Record) -> float | None:
        """When a loaded onDemand deployment becomes idle enough to unload (None: not one, or requests hold it)."""
        if record.running is None or record.want is None or not on_demand(record) or record.running.model.leases:
            return None
        return record.running.model.last_used + self.idle_seconds(record)

    def due(self, record: Record) -> float | None:
        """When the reconciler should look at `record` again for residency: when it becomes idle enough to unload,
        or, while requests hold an onDemand model, in a second (their end is not announced)."""
        if record.running is not None and on_demand(record) and record.running.model.leases:
            return self.clock() + IN_USE_POLL_SECONDS
        return self.idle_at(record)

    def demand(self, record: Record, built: BuildResult | None, records: Iterable[Record],
               costs: dict[str, Cost]) -> Demand:
        """What residency adds to the decision for `record`. `costs` caches the estimates by build key."""
        if not on_demand(record):
            return Demand()
        assert record.want is not None
        idle_at = self.idle_at(record)
        demand = Demand(on_demand=True, wanted=self.wanted(record.name),
                        idle=idle_at is not None and self.clock() >= idle_at)
        if built is None:
            return demand
        if record.want.keys.build not in costs:
            costs[record.want.keys.build] = self.estimate(record.want.deployment, built)
        need = costs[record.want.keys.build]
        others = [r for r in records if r.running is not None and r is not record]
        if _shares(record) and any(_shares(r) and r.running.keys.load == record.want.keys.load
                                   for r in others if r.running is not None):
            need = Cost()  # its sessions are open for another deployment: it takes them as they are
        priority = record.want.deployment.deployment.spec.serve.priority
        own = [record] if record.running is not None else []
        room = make_room(need, priority, self._residents([*others, *own], costs), self.limits)
        return Demand(on_demand=True, wanted=demand.wanted, idle=demand.idle, room=room,
                      room_if_drained=make_room(need, priority, self._residents(others, costs), self.limits)
                      if isinstance(room, Full) else room)

    def estimate(self, loaded: LoadedDeployment, built: BuildResult) -> Cost:
        """A build's cost before it loads (npuctl.agent.budget.estimate); nothing where it cannot be sized: its
        load fails the same way, and says why."""
        try:
            return estimate(self.actuator.estimate(loaded, built))
        except (NotServable, OSError, ValueError) as exc:
            log.warning("%s: cannot estimate its cost (%s)", loaded.deployment.name, exc)
            return Cost()

    def park(self, record: Record, reason: Reason, message: str) -> None:
        """Unload an onDemand deployment, or stand a new one by: its names answer by asking for it to load."""
        assert record.want is not None
        name = record.name
        self.actuator.standby(record.want.deployment.deployment, lambda: self.admit(name),
                              "loaded on its first request")
        if record.running is not None and message:
            self.book.record(name, "Evicted" if reason is Reason.EVICTED else "Unloaded", message)
        record.running, record.parked, record.unserved = None, reason, None
        record.parked_for = record.want.generation

    def use(self, costs: dict[str, Cost]) -> BudgetUse:
        """What the agent itself and its loaded models take of the budget now."""
        running = [r for r in self.records.values() if r.running is not None]
        used = sum((r.cost for r in self._residents(running, costs)), Cost())
        limits = self.limits
        return BudgetUse(memory=limits.memory, memory_used=limits.agent + used.memory, agent_memory=limits.agent,
                         npu_sessions=limits.npu_sessions,
                         npu_sessions_used=used.npu_sessions, npu_memory=limits.npu_memory,
                         npu_memory_used=used.npu_memory, loaded=sorted(r.name for r in running))

    def over_budget(self, record: Record, message: str) -> None:
        """Requests wait for `record`, and the budget cannot fit it: refuse them (503, Retry-After)."""
        self.refuse(record.name, ApiError(503, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
        if record.parked is not Reason.OVER_BUDGET:
            record.parked = Reason.OVER_BUDGET
            self.book.record(record.name, "OverBudget", message, warning=True)

    def _residents(self, records: Iterable[Record], costs: dict[str, Cost]) -> list[Resident]:
        """Loaded deployments as eviction sees them: those on the same sessions as one, charged once."""
        groups: dict[str, list[Record]] = {}
        for record in records:
            assert record.running is not None
            groups.setdefault(record.running.keys.load if _shares(record) else f"{record.name}/", []).append(record)
        return [self._resident(group, costs) for group in groups.values()]

    def _resident(self, group: list[Record], costs: dict[str, Cost]) -> Resident:
        first = group[0]
        assert first.running is not None
        priorities = [r.want.deployment.deployment.spec.serve.priority if r.want is not None else 0 for r in group]
        return Resident(first.name, costs.get(first.running.keys.build, Cost()), max(priorities),
                        max(r.running.model.last_used for r in group if r.running is not None),
                        sum(r.running.model.leases for r in group if r.running is not None),
                        pinned=any(not on_demand(r) for r in group), sharing=tuple(r.name for r in group[1:]))


def _shares(record: Record) -> bool:
    """Whether its loaded model is shared with deployments of the same load key (npuctl.agent.sharing: all but
    text generation, whose queue owns its model's slots)."""
    return record.want is not None and record.want.deployment.deployment.spec.model.task is not Task.TEXT_GENERATION


def on_demand(record: Record) -> bool:
    return record.want is not None and record.want.deployment.deployment.spec.serve.residency is Mode.ON_DEMAND
