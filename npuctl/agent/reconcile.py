"""The reconcile loop: read what the manifests declare and what is running, take the next action for
each difference. Level-triggered (events only wake it), idempotent (a second pass changes nothing),
and it never blocks serving: builds and loads run in worker threads and swap in when done.

Each pass decides, acts, then projects, per deployment: `decide()` (npuctl.agent.decide) names the next
action from the deployment's `Record` (npuctl.agent.records) alone; this module applies it (a build or load
ends in an `Outcome` that says whether and when to try again); `project()` (npuctl.agent.conditions) gives the
status, which this module stores with the events it is worth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from npuctl.agent import work
from npuctl.agent.actuator import Actuator, describe_artifacts
from npuctl.agent.budget import Cost, Limits, measured
from npuctl.agent.conditions import NAME_CONFLICT, Seen, project, transitions, unserved
from npuctl.agent.config import AgentConfig
from npuctl.agent.decide import (
    Action,
    Builds,
    Conflict,
    Keep,
    OverBudget,
    Reconfigure,
    Standby,
    Start,
    StopBuild,
    Unload,
    Unselect,
    WaitForRoom,
    decide,
    waits_for,
)
from npuctl.agent.desired import Desired, DesiredState, Keys
from npuctl.agent.health import AgentHealth
from npuctl.agent.reading import ManifestReader
from npuctl.agent.records import Activity, Failure, Outcome, OutcomeKind, Record, Running, backoff
from npuctl.agent.residency import Admissions
from npuctl.agent.status import StatusBook
from npuctl.agent.watcher import ManifestWatcher
from npuctl.artifacts import BuildError, BuildResult, StepEvent
from npuctl.runtime.footprint import process_memory, return_free_memory
from npuctl.schema import LoadedDeployment
from npuctl.schema.status import BuildSteps, Reason
from npuctl.serve.http.errors import ApiError

log = logging.getLogger("npuctl.agent")

@dataclass
class Reconciler:
    config: AgentConfig
    actuator: Actuator
    book: StatusBook
    endpoint: str = ""
    clock: Callable[[], float] = time.monotonic
    """Monotonic seconds: wall-clock jumps cannot stall or rush a backoff. Tests pass their own."""
    desired_state: DesiredState = field(init=False)
    records: dict[str, Record] = field(default_factory=dict)
    builds: dict[str, BuildResult] = field(default_factory=dict)
    """Build results by build key, for the keys declared now (a cache of store lookups; the store is the truth)."""

    def __post_init__(self) -> None:
        self.desired_state = DesiredState(self.config.manifests, self.config.settle_seconds, self.clock)
        self.health = AgentHealth(self.book, self.actuator, self.clock, self.config.backoff_seconds)
        self._builds = ThreadPoolExecutor(max_workers=self.config.build_workers, thread_name_prefix="npuctl-build")
        self._loads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npuctl-load")
        self._wake = asyncio.Event()
        budget = self.config.budget
        return_free_memory()  # what the start freed is not the agent's to keep
        self.admissions = Admissions(Limits(budget.memory_bytes(psutil.virtual_memory().total), budget.npu_sessions,
                                            budget.npu_memory, agent=process_memory()),
                                     self.clock, self.wake, self.actuator, self.book, self.records)
        self.costs: dict[str, Cost] = {}
        """Estimated cost of each loaded build, by build key."""
        self._reader = ManifestReader(self.desired_state, self.health, self._wake.set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def desired(self) -> dict[str, Desired]:
        """What the manifests declare now, by deployment name."""
        return self.desired_state.current

    @property
    def busy(self) -> bool:
        """Whether any build or load is in flight."""
        return any(record.busy for record in self.records.values())

    def wrote(self, file: Path) -> None:
        """`file` was just written whole by the agent (apply): read it at once, unsettled, and soon."""
        self.desired_state.trust(file)
        self.wake()

    def survey(self, loaded: LoadedDeployment, base_dir: Path) -> BuildSteps:
        """Which build steps of `loaded` are stored and which would run next (blocks: re-hashes stored files)."""
        try:
            found = self.actuator.survey(loaded, base_dir)
        except BuildError as exc:
            return BuildSteps(stored=[], next=None, error=str(exc))
        return BuildSteps(stored=[run.name for run in found.stored], next=found.next_step)

    # -- the loop ---------------------------------------------------------------------------------

    def wake(self) -> None:
        """Thread-safe: ask for a reconcile pass soon."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until `stop`. A pass that raises (a bug, MemoryError) does not end the loop silently:
        it is shown as the agent's Reconciling=False with readiness false, and the loop starts again
        after a backoff, until a pass completes."""
        self._loop = asyncio.get_running_loop()
        self.health.start()
        try:
            while not stop.is_set():
                try:
                    await self._watch(stop)
                except Exception as exc:
                    delay = backoff(self.health.loop_attempts + 1, *self.config.backoff_seconds)
                    self.health.loop_failed(exc, delay)
                    await self._pause(stop, delay)
        finally:
            for record in self.records.values():
                record.stop.set()  # a build stuck on a source must not hold the agent's exit (finished steps stay)
            self._builds.shutdown(wait=False, cancel_futures=True)
            self._loads.shutdown(wait=False, cancel_futures=True)
            self._reader.shutdown()

    async def _watch(self, stop: asyncio.Event) -> None:
        watcher = ManifestWatcher(self.config.manifests, self.wake)
        watcher.start()
        try:
            while not stop.is_set():
                watcher.rearm()
                if await self._reader.read():
                    self._apply()
                    self.health.loop_ran()
                await self._sleep(stop)
        finally:
            watcher.stop()

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until woken or the next retry or resync is due; then wait for the file system to go quiet."""
        timeout = self.config.resync_seconds
        now = self.clock()
        due = [failure.retry_at for record in self.records.values() for failure in record.failures.values()]
        due += [self.admissions.due(record) for record in self.records.values()]
        for retry_at in (*due, self.health.retry_at, self.desired_state.settles_at):
            if retry_at is not None:
                timeout = min(timeout, max(0.05, retry_at - now))
        stopper = asyncio.ensure_future(stop.wait())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stopper, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            waker.cancel()
        debounce = self.config.debounce_ms / 1000
        while self._wake.is_set() and not stop.is_set():
            self._wake.clear()
            await asyncio.sleep(debounce)

    # -- one pass ---------------------------------------------------------------------------------

    def reconcile_once(self) -> None:
        """Read the manifests and act on them, all in this thread (tests; the loop reads in a worker)."""
        self.desired_state.refresh()
        self._apply()

    def _apply(self) -> None:
        desired = self.desired_state.current
        builds = self.builds_now()
        for name, want in desired.items():
            record = self.records.setdefault(name, Record(name))
            record.want = want
            try:
                builds = self._reconcile(record, want, builds)
            except Exception as exc:  # one deployment's bug must not stop the others converging
                log.exception("%s: reconcile failed", name)
                self.book.record(name, "ReconcileError", f"{type(exc).__name__}: {exc}", warning=True)
        # Work in flight finishes first (a half-done swap is not undone); the next pass removes it.
        for name in sorted((set(self.records) | set(self.book.deployments)) - set(desired)):
            gone = self.records.get(name)
            if gone is not None:
                gone.want = None
                if gone.activity is Activity.BUILDING and gone.work_key not in builds.declared:
                    self._stop(gone)
            if gone is None or not gone.busy:
                self._delete(name)
        self.builds = {key: built for key, built in self.builds.items() if key in builds.declared}
        self.health.check_files(self.desired_state)
        self.health.check_reading(self.desired_state)
        self.health.save()

    def builds_now(self) -> Builds:
        """Which artifacts are built, being built and declared, across all deployments."""
        return Builds(ready=frozenset(self.builds), declared=frozenset(w.keys.build for w in self.desired.values()),
                      running=frozenset(r.want.keys.build for r in self.records.values()
                                        if r.activity is Activity.BUILDING and r.want is not None))

    def _reconcile(self, record: Record, want: Desired, builds: Builds) -> Builds:
        """Decide, act, then project the status. Returns `builds` with a build this started."""
        deployment = want.deployment.deployment
        selected, why = self.actuator.selects(deployment)
        if selected and not record.busy:
            self._show_conflict(record, want.conflict.message if want.conflict else None)
        built = self.builds.get(want.keys.build)
        demand = self.admissions.demand(record, built, self.records.values(), self.costs)
        action = decide(record, want, builds, self.clock(), selected=selected, demand=demand)
        self._act(record, want, action)
        if isinstance(action, Start) and action.activity is Activity.BUILDING and record.busy:
            builds = replace(builds, running=builds.running | {action.key})
        record = self.records[record.name]  # unselecting replaces it
        running = record.running
        self._show(record, Seen(record, want, waits_for(record, builds), selected, why,
                                tuple(describe_artifacts(built)) if built else None,
                                self.actuator.describe(running.model) if running else None,
                                self.endpoint or None, demand.on_demand,
                                action.message if isinstance(action, WaitForRoom) else ""))
        return builds

    def _act(self, record: Record, want: Desired, action: Action) -> None:
        park = self.admissions.park
        match action:
            case Unselect():
                if record.running or record.unserved or record.parked:
                    self._delete(record.name, keep_status=True)
            case StopBuild():
                self._stop(record)
            case Conflict() if record.running is None and (record.unserved or record.parked) is not None:
                self.actuator.unload(record.name)  # its not-ready placeholder or stand-in would hold the names too
                record.unserved, record.parked = None, None
            case Reconfigure() if record.running is not None:
                self.actuator.reconfigure(want.deployment.deployment)
                record.running.keys = want.keys
                record.running.names = self._names(want)
                record.running.generation = want.generation
                self.book.record(record.name, "ServingUpdated",
                                 "serving options applied in place (no rebuild, no reload)")
            case Keep() if record.running is not None:
                record.running.generation = want.generation
            case Start(activity=Activity.BUILDING, key=key):
                self._start(record, Activity.BUILDING, key, lambda: self._build(record, want, want.keys))
            case Start(activity=Activity.LOADING, key=key, evict=evict, drain=drain):
                for victim in evict:
                    park(self.records[victim], Reason.EVICTED, f"unloaded to make room for {record.name}")
                if drain and record.running is not None:
                    park(record, Reason.IDLE, "the new version does not fit the budget beside the old one: the old "
                         "one is unloaded first")
                self._start(record, Activity.LOADING, key, lambda: self._load(record, want, want.keys))
            case Standby() if record.parked is None or record.parked_for != want.generation:
                park(record, record.parked or Reason.IDLE, "")  # new, or its serving options changed
            case Unload():
                park(record, Reason.IDLE, f"idle for {self.admissions.idle_seconds(record):g} s: unloaded; it loads "
                     "again on its next request")
            case OverBudget(message=message):
                self.admissions.over_budget(record, message)

    def _show(self, record: Record, seen: Seen) -> None:
        """Store the projected status, record what changed, and tell the server why it does not serve."""
        old = self.book.get(record.name)
        new = project(old, seen)
        self.book.put(new)
        for reason, message, warning in transitions(old, new, seen.want):
            self.book.record(record.name, reason, message, warning)
        problem = unserved(new)
        if problem is not None and record.unserved != problem:
            record.unserved = problem
            self.actuator.unavailable(seen.want.deployment.deployment, *problem)

    def _show_conflict(self, record: Record, message: str | None) -> None:
        if record.conflict != message:
            record.conflict = message
            self.actuator.not_ready(record.name, (NAME_CONFLICT, message) if message else None)

    def _start(self, record: Record, activity: Activity, key: str, work: Callable[[], Awaitable[Outcome]]) -> None:
        record.activity = activity
        record.work_key = key
        record.stop = threading.Event()
        task = asyncio.get_running_loop().create_task(self._run(record, activity, key, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stop(self, record: Record) -> None:
        """Stop a build of artifacts no deployment declares any more (its manifest changed or went away):
        a build stuck until its deadline must not hold up the version that replaced it."""
        record.stop.set()
        self.book.record(record.name, "BuildCancelled", "stopping the build: its manifest changed or went away")

    async def _run(self, record: Record, activity: Activity, key: str, work: Callable[[], Awaitable[Outcome]]) -> None:
        want = record.want
        assert want is not None
        try:
            outcome = await work()
        except Exception as exc:  # a bug here must not leave the deployment busy for ever
            log.exception("%s: %s failed", record.name, activity.value.lower())
            outcome = Outcome.failed(Reason.RECONCILE_ERROR, f"{type(exc).__name__}: {exc}", permanent=False)
        record.activity = Activity.IDLE
        self._conclude(record, activity, key, want, outcome)
        if activity is Activity.LOADING and outcome.kind is not OutcomeKind.DONE:
            record.parked = None
            self.admissions.refuse(record.name, ApiError(503, f"the model could not be loaded ({outcome.reason}): "
                                                              f"{outcome.message}"))
        self._wake.set()

    def _conclude(self, record: Record, activity: Activity, key: str, want: Desired, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.DONE:
            record.failures.pop(activity, None)
            return
        if outcome.kind is OutcomeKind.CANCELLED:
            return
        old = record.failure(activity, key)
        attempts = old.attempts + 1 if old and old.want is want else 1  # a saved manifest starts again
        if outcome.kind is OutcomeKind.PERMANENT:
            retry_at, when = None, "not retried until the manifest changes"
        else:
            delay = backoff(attempts, *self.config.backoff_seconds)
            retry_at, when = self.clock() + delay, f"retry in {delay:.0f}s"
        record.failures[activity] = Failure(key, want, outcome.reason, outcome.message, attempts, retry_at)
        self.book.record(record.name, outcome.reason, f"{outcome.message} (attempt {attempts}; {when})", warning=True)

    async def _build(self, record: Record, want: Desired, keys: Keys) -> Outcome:
        name = record.name
        loop = asyncio.get_running_loop()
        self.book.record(name, "Building", "building artifacts")
        self.book.get(name).preflight = None  # the last build's estimate; this one's comes with its pre-flight step
        self.health.save()

        def progress(event: StepEvent) -> None:
            loop.call_soon_threadsafe(self.book.step, name, event)

        result = await work.build(self.actuator, self._builds, want.deployment, progress, record.stop)
        if name in self.book.deployments:
            self.book.deployments[name].progress = None  # no step of it runs any more
        if isinstance(result, Outcome):
            if result.kind is OutcomeKind.CANCELLED:
                self.book.record(name, "BuildStopped",
                                 "the build process was stopped; what is declared now builds next")
            return result
        self.builds[keys.build] = result
        self.book.record(name, "Built", "artifacts ready")
        return Outcome.done()

    async def _load(self, record: Record, want: Desired, keys: Keys) -> Outcome:
        name = record.name
        deployment = want.deployment.deployment
        built = self.builds[keys.build]
        started = self.clock()
        model = await work.load(self.actuator, self._loads, want.deployment, built, keys.load)
        if isinstance(model, Outcome):
            return model
        previous = record.running
        try:
            self.actuator.serve(deployment, model)  # the swap: new routes first, then the old model drains
        except ValueError as exc:  # a name taken since this pass began: close what was opened
            model.retire()
            return Outcome.failed(NAME_CONFLICT, str(exc), permanent=True)
        record.running = Running(want.generation, keys, model, self._names(want))
        self.costs[keys.build] = measured(self.admissions.estimate(want.deployment, built), model.status.cost)
        if record.parked is not None:
            self.book.record(name, "Loaded", f"loaded on demand in {self.clock() - started:.2f} s (cold start)")
        record.unserved, record.parked = None, None
        self.admissions.loaded(name)
        self.book.record(name, "Swapped" if previous else "Serving", "new version serving" if previous else "serving")
        return Outcome.done()

    def _delete(self, name: str, keep_status: bool = False) -> None:
        record = self.records.pop(name, None)
        if record is not None:
            self._show_conflict(record, None)
        if keep_status and record is not None:
            self.records[name] = Record(name, record.want)
        self.actuator.unload(name)
        why = "not selected by this agent" if keep_status else "no manifest declares it any more"
        self.admissions.refuse(name, ApiError(404, f"the model of deployment {name!r} is gone: {why}"))
        self.book.record(name, "Unloaded" if keep_status else "Deleted", why if keep_status else f"{why}; unloaded")
        if not keep_status:
            self.book.remove(name)
        log.info("%s: unloaded", name)

    @staticmethod
    def _names(want: Desired) -> tuple[str, ...]:
        deployment = want.deployment.deployment
        return (deployment.public_name, *deployment.spec.serve.aliases)
