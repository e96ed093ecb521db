"""The reconcile loop: read what the manifests declare and what is running, take the next action for
each difference. Level-triggered (events only wake it), idempotent (a second pass changes nothing),
and it never blocks serving: builds and loads run in worker threads and swap in when done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from npuctl.agent.config import AgentConfig
from npuctl.agent.desired import Desired, DesiredState, Keys
from npuctl.agent.status import ConditionType as C
from npuctl.agent.status import DeploymentStatus, Phase, StatusBook
from npuctl.agent.watcher import ManifestWatcher
from npuctl.runtime.placement import NotServable
from npuctl.schema import LoadedDeployment, ModelDeployment

log = logging.getLogger("npuctl.agent")


class Actuator(Protocol):
    """The seam between deciding and doing. `build`, `load` and `survey` block and run in worker threads;
    the others are quick and run on the event loop."""

    def build(self, loaded: LoadedDeployment, progress: Callable[[str, str], None]) -> Any:
        """Produce (or find in the store) the deployment's artifacts. Raises on failure."""

    def load(self, loaded: LoadedDeployment, built: Any) -> Any:
        """Open sessions; returns a loaded model. Raises NotServable when the rules forbid every place."""

    def serve(self, deployment: ModelDeployment, model: Any) -> None:
        """Route the deployment's names to `model`, atomically replacing any previous one."""

    def reconfigure(self, deployment: ModelDeployment) -> None:
        """Apply serving-only options to the model already serving."""

    def unavailable(self, deployment: ModelDeployment, reason: str, message: str) -> None:
        """Answer the deployment's routes as not ready with this reason (nothing loaded)."""

    def unload(self, name: str) -> None:
        """Stop serving and close the deployment's sessions; its routes answer 404."""

    def describe(self, model: Any) -> dict[str, Any]:
        """provider, npuCoverage, onNpu and the placement note of a loaded model, for status."""

    def describe_build(self, built: Any) -> list[dict[str, Any]]:
        """The artifacts of a build (target, socModel, bucket, precision, digests, accuracy), for status."""

    def selects(self, deployment: ModelDeployment) -> tuple[bool, str]:
        """Whether this agent is selected by the deployment's spec.selector, and why not."""

    def survey(self, loaded: LoadedDeployment, base_dir: Path) -> dict[str, Any]:
        """Which build steps are stored and which would run next (blocks: re-hashes stored files)."""


@dataclass
class Running:
    """A deployment that is serving: which keys its artifacts and sessions were made from."""

    generation: str
    keys: Keys
    model: Any


@dataclass
class Failure:
    keys: str
    message: str
    reason: str
    attempts: int
    retry_at: float


@dataclass
class Reconciler:
    config: AgentConfig
    actuator: Actuator
    book: StatusBook
    endpoint: str = ""
    desired_state: DesiredState = field(init=False)
    running: dict[str, Running] = field(default_factory=dict)
    built: dict[str, Any] = field(default_factory=dict)
    """Build results by build key (a cache of store lookups; the store is the truth)."""
    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)
    """(deployment, "build"|"load") -> last failure, for backoff."""
    busy: dict[str, str] = field(default_factory=dict)
    """Deployments with work in flight -> "build" | "load"."""
    desired: dict[str, Desired] = field(default_factory=dict)
    unserved: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Declared deployments held as not-ready in the server, with the (reason, message) shown."""

    def __post_init__(self) -> None:
        self.desired_state = DesiredState(self.config.manifests)
        self._builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npuctl-build")
        self._loads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npuctl-load")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the loop ---------------------------------------------------------------------------------

    def wake(self) -> None:
        """Thread-safe: ask for a reconcile pass soon."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        watcher = ManifestWatcher(self.config.manifests, self.wake)
        watcher.start()
        try:
            while not stop.is_set():
                watcher.rearm()
                self.reconcile_once()
                await self._sleep(stop)
        finally:
            watcher.stop()
            self._builds.shutdown(wait=False, cancel_futures=True)
            self._loads.shutdown(wait=False, cancel_futures=True)

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until woken or the next retry or resync is due; then wait for the file system to go quiet."""
        timeout = self.config.resync_seconds
        now = self._now()
        for failure in self.failures.values():
            timeout = min(timeout, max(0.05, failure.retry_at - now))
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

    def _now(self) -> float:
        # The loop's monotonic clock: wall-clock jumps cannot stall or rush a backoff.
        return asyncio.get_running_loop().time()

    # -- one pass ---------------------------------------------------------------------------------

    def reconcile_once(self) -> None:
        self.desired = self.desired_state.refresh()
        for name, want in self.desired.items():
            try:
                self._reconcile(name, want)
            except Exception as exc:  # one deployment's bug must not stop the others converging
                log.exception("%s: reconcile failed", name)
                self.book.record(name, "ReconcileError", f"{type(exc).__name__}: {exc}", warning=True)
        # Work in flight finishes first (a half-done swap is not undone); the next pass removes it.
        for name in sorted((set(self.running) | set(self.book.deployments)) - set(self.desired) - set(self.busy)):
            self._delete(name)
        self.book.save()

    def _reconcile(self, name: str, want: Desired) -> None:
        deployment = want.deployment.deployment
        status = self.book.get(name)
        status.file = str(want.deployment.file)
        status.endpoint = self.endpoint or None
        generation = want.generation
        self._validity(status, want)
        selected, why = self.actuator.selects(deployment)
        status.set_condition(C.SELECTED, selected, "Selected" if selected else "SelectorMismatch", why)
        if not selected:
            if name in self.running or name in self.unserved:
                self._delete(name, keep_status=True)
            self._phase(status, Phase.NOT_SELECTED)
            status.observed_generation = generation
            return
        if name in self.busy:
            return
        keys = want.keys
        running = self.running.get(name)
        if running and running.keys.load == keys.load:
            if running.keys.serve != keys.serve:
                self.actuator.reconfigure(deployment)
                running.keys = keys
                self.book.record(name, "ServingUpdated", "serving options applied in place (no rebuild, no reload)")
            running.generation = generation
            status.observed_generation = generation
            status.serving_generation = generation
            self._settle(status, want)
            return
        status.observed_generation = generation
        if keys.build in self.built:
            self._maybe_start(name, "load", keys.load, lambda: self._load(want, keys))
        else:
            self._maybe_start(name, "build", keys.build, lambda: self._build(want, keys))
        self._settle(status, want)

    def _maybe_start(self, name: str, kind: str, key: str, work: Callable[[], Any]) -> None:
        failure = self.failures.get((name, kind))
        if failure and failure.keys == key and self._now() < failure.retry_at:
            return
        self.busy[name] = kind
        task = asyncio.get_running_loop().create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build(self, want: Desired, keys: Keys) -> None:
        name = want.name
        loop = asyncio.get_running_loop()
        self.book.record(name, "Building", "building artifacts")
        self.book.save()

        def progress(step: str, state: str) -> None:
            loop.call_soon_threadsafe(self._step_event, name, step, state)

        try:
            result = await loop.run_in_executor(self._builds, self.actuator.build, want.deployment, progress)
        except Exception as exc:  # a failed build must never stop the loop
            self._fail(name, "build", keys.build, "BuildFailed", str(exc))
        else:
            self.built[keys.build] = result
            self.failures.pop((name, "build"), None)
            self.book.record(name, "Built", "artifacts ready")
        finally:
            self.busy.pop(name, None)
            self._wake.set()

    async def _load(self, want: Desired, keys: Keys) -> None:
        name = want.name
        deployment = want.deployment.deployment
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self._loads, self.actuator.load, want.deployment, self.built[keys.build])
        except NotServable as exc:
            self._fail(name, "load", keys.load, str(exc.reason), exc.message)
        except Exception as exc:
            self._fail(name, "load", keys.load, "LoadFailed", str(exc))
        else:
            previous = self.running.get(name)
            self.actuator.serve(deployment, model)  # the swap: new routes first, then the old model drains
            self.running[name] = Running(want.generation, keys, model)
            self.unserved.pop(name, None)
            self.failures.pop((name, "load"), None)
            status = self.book.get(name)
            status.serving_generation = want.generation
            self.book.record(name, "Swapped" if previous else "Serving", "new version serving" if previous else "serving")
        finally:
            self.busy.pop(name, None)
            self._wake.set()

    def _fail(self, name: str, kind: str, key: str, reason: str, message: str) -> None:
        old = self.failures.get((name, kind))
        attempts = old.attempts + 1 if old and old.keys == key else 1
        first, longest = self.config.backoff_seconds
        delay = min(longest, first * 2 ** (attempts - 1))
        self.failures[(name, kind)] = Failure(key, message, reason, attempts, self._now() + delay)
        self.book.record(name, reason, f"{message} (attempt {attempts}; retry in {delay:.0f}s)", warning=True)

    def _delete(self, name: str, keep_status: bool = False) -> None:
        self.running.pop(name, None)
        self.unserved.pop(name, None)
        for kind in ("build", "load"):
            self.failures.pop((name, kind), None)
        self.actuator.unload(name)
        if keep_status:
            self.book.record(name, "Unloaded", "not selected by this agent")
        else:
            self.book.record(name, "Deleted", "no manifest declares it any more; unloaded")
            self.book.remove(name)
        log.info("%s: unloaded", name)

    def _step_event(self, name: str, step: str, state: str) -> None:
        if state in ("done", "cached", "fetched", "failed"):
            self.book.record(name, f"Step{state.capitalize()}", step, warning=state == "failed")

    # -- status -----------------------------------------------------------------------------------

    def _validity(self, status: DeploymentStatus, want: Desired) -> None:
        if want.valid:
            status.set_condition(C.VALID, True, "Valid")
            return
        first = want.errors[0]
        more = f" (+{len(want.errors) - 1} more)" if len(want.errors) > 1 else ""
        changed = status.set_condition(C.VALID, False, "InvalidManifest", f"{first}{more}; the last valid version is kept")
        if changed:
            self.book.record(status.name, "InvalidManifest", str(first), warning=True)

    def _settle(self, status: DeploymentStatus, want: Desired) -> None:
        """Conditions and phase from what is running, in flight and failed."""
        name = status.name
        running = self.running.get(name)
        keys = want.keys
        build_failure = self._failure(name, "build", keys.build)
        load_failure = self._failure(name, "load", keys.load)
        if keys.build in self.built:
            status.set_condition(C.ARTIFACTS_READY, True, "Built")
            status.artifacts = self.actuator.describe_build(self.built[keys.build])
        elif build_failure:
            status.set_condition(C.ARTIFACTS_READY, False, build_failure.reason, build_failure.message)
        else:
            status.set_condition(C.ARTIFACTS_READY, None, "Building" if self.busy.get(name) == "build" else "Pending")
        if running:
            facts = self.actuator.describe(running.model)
            status.provider, status.npu_coverage = facts["provider"], facts["npuCoverage"]
            status.set_condition(C.LOADED, True, "SessionsOpen", facts.get("note", ""))
            status.set_condition(C.ON_NPU, facts["onNpu"], "OnNPU" if facts["onNpu"] else "OnCPU", facts.get("note", ""))
            status.set_condition(C.SERVING, True, "Serving", f"as {want.deployment.deployment.public_name}")
        else:
            status.provider, status.npu_coverage = None, None
            if load_failure:
                status.set_condition(C.LOADED, False, load_failure.reason, load_failure.message)
                status.set_condition(C.ON_NPU, False, load_failure.reason, load_failure.message)
            else:
                status.set_condition(C.LOADED, None, "Loading" if self.busy.get(name) == "load" else "Pending")
            failure = load_failure or build_failure
            reason, message = ((failure.reason, failure.message) if failure
                               else (self._activity(name).value, "not serving yet"))
            status.set_condition(C.SERVING, False, reason, message)
            self._unserved(want.deployment.deployment, reason, message)
        self._phase(status, self._phase_of(status, want, running))

    def _unserved(self, deployment: ModelDeployment, reason: str, message: str) -> None:
        """Declared but not serving: its routes answer not-ready with the reason, and readiness is false."""
        if self.unserved.get(deployment.name) != (reason, message):
            self.unserved[deployment.name] = (reason, message)
            self.actuator.unavailable(deployment, reason, message)

    def _phase_of(self, status: DeploymentStatus, want: Desired, running: Running | None) -> Phase:
        name = status.name
        current = running is not None and running.keys.load == want.keys.load
        failed = self._failure(name, "build", want.keys.build) or self._failure(name, "load", want.keys.load)
        if running and current and want.valid:
            return Phase.READY
        if running:
            return Phase.DEGRADED if failed or not want.valid else self._activity(name)
        if name in self.busy:
            return self._activity(name)
        return Phase.FAILED if failed else Phase.PENDING

    def _failure(self, name: str, kind: str, key: str) -> Failure | None:
        """The last failure of this kind, if it was for what is declared now (not an older version)."""
        failure = self.failures.get((name, kind))
        return failure if failure and failure.keys == key else None

    def _activity(self, name: str) -> Phase:
        return {"build": Phase.BUILDING, "load": Phase.LOADING}.get(self.busy.get(name, ""), Phase.PENDING)

    def _phase(self, status: DeploymentStatus, phase: Phase) -> None:
        if status.phase != phase:
            self.book.record(status.name, f"Phase{phase.value}", f"{status.phase.value} -> {phase.value}")
            status.phase = phase
