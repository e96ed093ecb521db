"""What the reconciler does next for one deployment, decided from facts alone: `decide()` reads the record,
what is declared and which builds exist, and returns an `Action`; it starts nothing and writes nothing, so
every decision can be tested in-process from a table. npuctl.agent.reconcile applies the actions."""

from __future__ import annotations

from dataclasses import dataclass, replace

from npuctl.agent.budget import Fits, Full
from npuctl.agent.desired import Desired
from npuctl.agent.records import Activity, Failure, Record


@dataclass(frozen=True)
class Builds:
    """Which artifacts exist and are being made, across all deployments (by build key)."""

    ready: frozenset[str] = frozenset()
    """Built: their artifacts can be loaded now."""
    running: frozenset[str] = frozenset()
    """Being built by some deployment (identical deployments share one build)."""
    declared: frozenset[str] = frozenset()
    """Declared by some deployment now: a build of any other key is stale."""


@dataclass(frozen=True)
class Demand:
    """What residency adds to a decision (npuctl.agent.residency gathers it)."""

    on_demand: bool = False
    """`residency: onDemand`: loaded only when requests ask for it, and within the budget."""
    wanted: bool = False
    """A request waits for it to load."""
    idle: bool = False
    """Loaded, with no request in flight, past its idle time."""
    room: Fits | Full = Fits()
    """Whether its load fits the budget beside what is loaded (its own older version included), and whom to evict."""
    room_if_drained: Fits | Full = Fits()
    """The same with its own older version unloaded first (a swap that cannot fit both)."""


@dataclass(frozen=True)
class Unselect:
    """This agent is not selected: unload what serves, show NotSelected."""


@dataclass(frozen=True)
class Wait:
    """Nothing to start now: work is in flight, or another deployment builds the same artifacts."""


@dataclass(frozen=True)
class WaitForRoom:
    """An onDemand load fits once the requests in flight on the models it will evict end: its requests wait for
    them (status says so), and the reconciler looks again each second meanwhile."""

    message: str
    """The budget and what holds it."""


@dataclass(frozen=True)
class StopBuild:
    """The build in flight makes artifacts no deployment declares any more: stop it."""


@dataclass(frozen=True)
class Conflict:
    """A name it would be served under belongs to another deployment: load nothing of this version."""


@dataclass(frozen=True)
class Keep:
    """What serves is what is declared: nothing to do."""


@dataclass(frozen=True)
class Reconfigure:
    """Only serving options changed: apply them to the model in place (no rebuild, no reload)."""


@dataclass(frozen=True)
class Start:
    """Start a build or a load of `key`."""

    activity: Activity
    key: str
    evict: tuple[str, ...] = ()
    """Idle onDemand deployments to unload first, to make room."""
    drain: bool = False
    """Unload its own older version first: both do not fit the budget."""


@dataclass(frozen=True)
class Standby:
    """Built, not loaded: it loads on its first request (`onDemand`)."""


@dataclass(frozen=True)
class Unload:
    """Loaded and idle past its idle time (`onDemand`): unload it, and stand by."""


@dataclass(frozen=True)
class OverBudget:
    """Requests wait for it, and it does not fit the budget even after evicting every idle model it may."""

    message: str


@dataclass(frozen=True)
class Hold:
    """The last attempt at this work failed: wait for its retry time, or for the manifest to change."""

    failure: Failure


Action = Unselect | Wait | WaitForRoom | StopBuild | Conflict | Keep | Reconfigure | Start | Hold | Standby | Unload | OverBudget


def decide(record: Record, want: Desired, builds: Builds, now: float, *, selected: bool = True,
           demand: Demand = Demand()) -> Action:
    """The next action for a declared deployment (`now` on the reconciler's monotonic clock)."""
    if not selected:
        return Unselect()
    if record.busy:
        stale = record.activity is Activity.BUILDING and record.work_key not in builds.declared
        return StopBuild() if stale and not record.stop.is_set() else Wait()
    if want.conflict is not None:
        return Conflict()
    keys = want.keys
    running = record.running
    if running is not None and running.keys.load == keys.load:
        if running.keys.serve != keys.serve:
            return Reconfigure()
        return Unload() if demand.on_demand and demand.idle else Keep()
    start = Start(Activity.LOADING, keys.load) if keys.build in builds.ready else Start(Activity.BUILDING, keys.build)
    failure = record.failures.get(start.activity)
    if failure is not None and failure.blocks(start.key, want, now):
        return Hold(failure)
    if start.activity is Activity.BUILDING and start.key in builds.running:
        return Wait()  # another deployment builds the same artifacts: this one loads them when it is done
    if start.activity is Activity.LOADING and demand.on_demand:
        return _within_budget(start, record, demand)
    return start


def _within_budget(start: Start, record: Record, demand: Demand) -> Action:
    """An onDemand load: only when asked for (or to swap in a new version of a loaded one), and only within the
    budget: beside its older version if both fit, else after draining it, else not at all."""
    if record.running is None and not demand.wanted:
        return Standby()
    if isinstance(demand.room, Fits):
        return replace(start, evict=demand.room.evict)
    if record.running is not None and isinstance(demand.room_if_drained, Fits):
        return replace(start, evict=demand.room_if_drained.evict, drain=True)
    if demand.room.busy:
        return WaitForRoom(demand.room.message)
    return OverBudget(demand.room.message)


def waits_for(record: Record, builds: Builds) -> Activity:
    """What the deployment waits for: its own work, or a build another deployment runs for it."""
    want = record.want
    if record.activity is Activity.IDLE and want is not None and want.conflict is None and record.running is None \
            and want.keys.build in builds.running:
        return Activity.BUILDING
    return record.activity
