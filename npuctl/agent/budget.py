"""The agent's budget, and who makes room when it is full. Pure: `make_room()` reads what is loaded and answers
which idle models to evict, or why nothing can be; npuctl.agent.residency acts on it.

The memory budget covers the whole agent process: its own memory, measured at its start (`Limits.agent`), is
charged first, and the models share the rest. A model's cost is estimated from its artifact sizes (`estimate()`)
before it loads; once loaded, `measured()` takes the larger of that and what the load measured
(npuctl.runtime.footprint: RSS growth plus the full KV cache). A load is admitted against its peak (`Cost.peak`:
what the process holds at once while the sessions open), which may exceed what the model keeps once loaded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from npuctl.schema.cost import LoadCost

MiB = 1 << 20
SESSION_OVERHEAD = 64 * MiB
"""What an onnxruntime session takes beyond its weights (arena, tokenizer, threads): a rough figure for small
models, which an estimate from file sizes alone would call nearly free."""
LOAD_COPIES = 2
"""Before a first load measures it, a load's peak is estimated with this many copies of its files: onnxruntime
reads a graph whole, then builds its optimized initializers beside that copy (bench/load_cost.py: MiniLM fp32's
86 MiB graph peaks at 130 MiB of growth and keeps 112 MiB)."""


@dataclass(frozen=True)
class Cost:
    """What one loaded model takes."""

    memory: int = 0
    """Host memory, bytes."""
    npu_sessions: int = 0
    npu_memory: int = 0
    """Context binaries on the NPU, bytes."""
    peak: int = 0
    """Host memory, bytes, the load takes at once while its sessions open (0: no more than `memory`). Sums of
    loaded models' costs carry none: only a load in progress has a peak."""

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.memory + other.memory, self.npu_sessions + other.npu_sessions,
                    self.npu_memory + other.npu_memory)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.memory - other.memory, self.npu_sessions - other.npu_sessions,
                    self.npu_memory - other.npu_memory)

    def loading(self) -> Cost:
        """What admitting this model's load must leave room for: its peak, where that is above what it keeps."""
        return Cost(max(self.memory, self.peak), self.npu_sessions, self.npu_memory)


@dataclass(frozen=True)
class Limits:
    """The budget in effect (agent config `budget`, its memory share resolved on this machine)."""

    memory: int
    """For the whole agent process, bytes: its own memory and its models'."""
    npu_sessions: int
    npu_memory: int | None = None
    agent: int = 0
    """The agent process's own memory, bytes (Python, onnxruntime, the server), measured at its start before any
    model loads: charged to `memory` first."""

    def holds(self, cost: Cost) -> bool:
        """Whether models of `cost` together fit beside the agent itself."""
        return (self.agent + cost.memory <= self.memory and cost.npu_sessions <= self.npu_sessions
                and (self.npu_memory is None or cost.npu_memory <= self.npu_memory))

    def describe(self) -> str:
        npu = f", {self.npu_memory / MiB:.0f} MiB of NPU memory" if self.npu_memory is not None else ""
        agent = f", the agent itself taking {self.agent / MiB:.0f} MiB of it" if self.agent else ""
        return f"memory {self.memory / MiB:.0f} MiB{agent}, {self.npu_sessions} NPU sessions{npu}"


@dataclass(frozen=True)
class Resident:
    """A loaded model as eviction sees it."""

    name: str
    cost: Cost
    priority: int
    last_used: float
    """When its last request ended (or it loaded), on the reconciler's clock."""
    in_flight: int
    """Requests it is answering or has queued: never evicted while any."""
    pinned: bool
    """`residency: always`: never evicted."""
    sharing: tuple[str, ...] = ()
    """The other deployments on the same sessions (one load key), charged once with it and evicted with it: the
    sessions close only with the last of them."""


@dataclass(frozen=True)
class Fits:
    evict: tuple[str, ...] = ()
    """The models to unload first, in order (empty: it fits as things are)."""


@dataclass(frozen=True)
class Full:
    message: str
    """The budget and what holds it, in words (the 503's message)."""
    busy: bool = False
    """It fits once the requests in flight on models it may evict end: it waits for them instead of a 503 (an
    admitted request is never dropped, and a newcomer is not refused for a model that is merely busy)."""


def make_room(need: Cost, priority: int, residents: Sequence[Resident], limits: Limits) -> Fits | Full:
    """Whether a model of cost `need` and `priority` fits, and which idle models to evict for it: the least
    recently used of the lowest priority first, never a pinned model, one with requests in flight, or one of a
    higher priority than the newcomer's. The newcomer counts at its load's peak."""
    need = need.loading()
    used = sum((r.cost for r in residents), Cost())
    if limits.holds(used + need):
        return Fits()
    evictable = sorted((r for r in residents if not r.pinned and r.in_flight == 0 and r.priority <= priority),
                       key=lambda r: (r.priority, r.last_used))
    evict: list[str] = []
    for victim in evictable:
        evict.extend((victim.name, *victim.sharing))
        used -= victim.cost
        if limits.holds(used + need):
            return Fits(tuple(evict))
    busy = [r for r in residents if not r.pinned and r.in_flight > 0 and r.priority <= priority]
    drained = used - sum((r.cost for r in busy), Cost())
    return Full(_held(need, residents, limits), busy=bool(busy) and limits.holds(drained + need))


def _held(need: Cost, residents: Iterable[Resident], limits: Limits) -> str:
    holders = [f"{r.name} ({r.cost.memory / MiB:.0f} MiB, "
               + ("pinned: residency always" if r.pinned else f"{r.in_flight} requests in flight" if r.in_flight
                  else f"priority {r.priority}") + ")" for r in residents]
    agent = [f"the agent itself ({limits.agent / MiB:.0f} MiB)"] if limits.agent else []
    held = ", ".join(agent + holders) + ("" if holders else " (the model alone is larger than what is left)")
    return (f"the agent's budget ({limits.describe()}) cannot fit this model ({need.memory / MiB:.0f} MiB while "
            f"it loads, {need.npu_sessions} NPU sessions); held by: {held.strip() or 'nothing'}")


def estimate(cost: LoadCost) -> Cost:
    """A model's cost before it loads, from the runtime's estimate (npuctl.runtime.footprint.estimated_cost: the
    bytes of the files its sessions would open, the KV cache at full context) and SESSION_OVERHEAD; its load's
    peak with LOAD_COPIES of those files."""
    return Cost(SESSION_OVERHEAD + cost.memory_bytes, cost.npu_sessions, cost.context_binary_bytes,
                peak=SESSION_OVERHEAD + LOAD_COPIES * cost.host_bytes + cost.kv_cache_bytes)


def measured(estimated: Cost, load: LoadCost | None) -> Cost:
    """A loaded model's cost: the measurement where it is larger than the estimate. The estimate stays a floor:
    RSS growth over the load misses what the first requests allocate (arenas, KV pages). Its peak, for its next
    load, is the measured one (the estimate's copies are a guess)."""
    if load is None:
        return estimated
    return Cost(max(estimated.memory, load.memory_bytes), max(estimated.npu_sessions, load.npu_sessions),
                max(estimated.npu_memory, load.context_binary_bytes), peak=load.peak_host_bytes)
