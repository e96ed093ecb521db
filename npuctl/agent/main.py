"""One agent process: the model endpoints and the control API on one port, and the reconcile loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvicorn

from npuctl.agent.actuator import LocalActuator
from npuctl.agent.api import control_routes
from npuctl.agent.auth import StateFolderError, ensure_token, token_matches
from npuctl.agent.bench_api import bench_routes
from npuctl.agent.config import AgentConfig
from npuctl.agent.dashboard.routes import dashboard_routes
from npuctl.agent.dashboard.views import DashboardData, agent_view, dashboard
from npuctl.agent.metrics import AgentCollector
from npuctl.agent.reconcile import Reconciler
from npuctl.agent.source_rules import SourceRules
from npuctl.agent.sources import SourcePoller
from npuctl.agent.state_view import AgentState
from npuctl.agent.status import StatusBook
from npuctl.artifacts.aihub import Credentials
from npuctl.artifacts.published.location import StoreLocation
from npuctl.artifacts.store import Store
from npuctl.errors import NpuctlError
from npuctl.runtime import power
from npuctl.runtime.devices import HostFacts, detect_host
from npuctl.schema.documents import load_document
from npuctl.serve.app import create_app
from npuctl.serve.http.guards import WebPolicy
from npuctl.serve.http.server import PortInUse, bind, server_config
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.timeline import Timeline

log = logging.getLogger("npuctl.agent")


class ConfigError(NpuctlError, ValueError):
    """The agent's configuration file is unreadable or invalid."""


class StartError(ConfigError):
    """Something on this machine stops the start: a taken port, an unusable state folder or token file."""


class AgentFailed(NpuctlError):
    """A part the agent cannot work without (the reconcile loop, the bundle poller) ended while it served: the
    agent stopped, so that its service manager starts it again rather than it serving on with that part dead."""


def load_config(path: Path) -> AgentConfig:
    """An agent config file (YAML, camelCase keys). Relative folders are relative to the file. Errors are
    placed at file:line:col, one per line."""
    config, errors = load_document(path, AgentConfig)
    if config is None:
        raise ConfigError("\n".join(str(error) for error in errors))
    base = path.parent
    return config.model_copy(update={
        "manifests": [base / p for p in config.manifests],
        "state": base / config.state,
        "cache": base / config.cache if config.cache else None,
        "artifact_sources": [_relative_to(base, s) for s in config.artifact_sources],
        "model_roots": [base / p for p in config.model_roots],
    })


def _relative_to(base: Path, source: str | StoreLocation) -> str | StoreLocation:
    url = source.url if isinstance(source, StoreLocation) else source
    if url.startswith(("http://", "https://", "oci://")):
        return source
    return source.model_copy(update={"url": str(base / url)}) if isinstance(source, StoreLocation) else str(base / url)


def make_actuator(config: AgentConfig, registry: ModelRegistry, host: HostFacts,
                  pins: Callable[[], dict[str, str]] | None = None) -> LocalActuator:
    token = config.aihub_token.get_secret_value() if config.aihub_token else None
    return LocalActuator(registry, Store(config.cache), labels=config.labels, host=host,
                         aihub=Credentials(token=token), published=config.artifact_sources, pins=pins,
                         deadlines=config.build_deadlines, rules=SourceRules.of(config))


def make_reconciler(config: AgentConfig, actuator: LocalActuator) -> Reconciler:
    book = StatusBook(config.state)
    book.load()
    return Reconciler(config, actuator, book, endpoint=f"http://{config.listen}")


async def run_agent(config: AgentConfig, on_start: Callable[[Reconciler], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM. Raises ConfigError for a non-loopback address without `remoteAccess`, StartError
    for a taken port or an unusable state folder (both before anything is built)."""
    if not config.loopback and not config.remote_access:
        raise ConfigError(f"listen {config.listen} is reachable beyond this machine: set remoteAccess: true in the "
                          "agent config (or --allow-remote) to serve there; every control call then needs the token")
    try:
        token = ensure_token(config.state)
        sock = bind(config.host, config.port)
    except (StateFolderError, PortInUse) as exc:
        raise StartError(str(exc)) from exc
    for folder in config.manifests:
        folder.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry()
    host = detect_host().with_overrides(config.facts)
    power.configure(config.power)
    # The poller wakes the reconciler; the reconciler's builds ask the poller for the pins of the bundles in effect.
    poller = SourcePoller(config.sources, config.manifests[0], lambda: reconciler.wake(), state=config.state,
                          registries=config.registries)
    actuator = make_actuator(config, registry, host, pins=poller.pins)
    reconciler = make_reconciler(config, actuator)
    registry.idle_times = reconciler.admissions.keep_alive
    registry.idle_for = reconciler.admissions.idle_for
    registry.metrics.registry.register(AgentCollector(reconciler.book, poller, host, loaded=lambda: actuator.shared.open,
                                                      budget=lambda: reconciler.admissions.use(reconciler.costs)))
    timeline = Timeline(registry).start()

    async def dashboard_data(recent: float | None) -> DashboardData:
        view = agent_view(reconciler.endpoint, AgentState(reconciler), registry, timeline, host, poller, recent)
        return dashboard([view])

    routes = [*control_routes(reconciler, token, guard_reads=not config.loopback, sources=poller),
              *bench_routes(reconciler, host, token, guard_reads=not config.loopback),
              *dashboard_routes(dashboard_data, token=None if config.loopback else token)]
    app = create_app(registry, routes=routes, control=True, body_timeout_seconds=config.body_timeout_seconds,
                     web=WebPolicy.of(config.allowed_hosts, config.cors_origins),
                     details=None if config.loopback else lambda request: token_matches(
                         request.headers.get("authorization"), token))
    server = uvicorn.Server(server_config(app, config.host, config.port, config.connection_limits))
    stop = asyncio.Event()
    ended: list[str] = []
    tasks = [_vital(reconciler.run(stop), "reconcile loop", stop, server, ended),
             _vital(poller.run(stop), "bundle poller", stop, server, ended)]
    if on_start:
        on_start(reconciler)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        timeline.stop()
        registry.close()
    if ended:
        raise AgentFailed(f"the agent stopped: {'; '.join(ended)}")


def _vital(work: Coroutine[Any, Any, None], what: str, stop: asyncio.Event, server: uvicorn.Server,
           ended: list[str]) -> asyncio.Task[None]:
    """`work` as a task that must last as long as the agent serves: if it fails or is cancelled before `stop`, the
    server is told to exit and `ended` says what ended and why. (It may return early: a poller of no sources.)"""
    def done(task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if stop.is_set() or not (task.cancelled() or error):
            return
        ended.append(f"its {what} ended ({f'{type(error).__name__}: {error}' if error else 'cancelled'})")
        log.critical("the %s ended while the agent served; stopping the agent", what, exc_info=error)
        server.should_exit = True

    task = asyncio.create_task(work)
    task.add_done_callback(done)
    return task
