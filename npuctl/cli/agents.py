"""Commands that serve: the agent as a service (`agent`), in the foreground with progress (`up`), and the
one-shot server on built artifacts (`serve`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from npuctl.cli.output import err_console
from npuctl.schema.placement import coverage_text

if TYPE_CHECKING:
    from npuctl.agent.config import AgentConfig
    from npuctl.agent.reconcile import Reconciler
    from npuctl.artifacts import StepEvent


def _labels(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, label = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        labels[key] = label
    return labels


def _agent_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Agent config file (YAML; see agent/agent.example.yaml)."),
        click.option("--listen", help="HOST:PORT for models and control API (default 127.0.0.1:8765)."),
        click.option("--state", type=click.Path(file_okay=False, path_type=Path), help="Status and token folder."),
        click.option("--cache", type=click.Path(file_okay=False, path_type=Path), envvar="NPUCTL_CACHE",
                     help="Artifact store."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", callback=_labels,
                     help="Agent label (repeatable)."),
        click.option("--allow-remote", "remote_access", is_flag=True,
                     help="Allow a non-loopback --listen address (every control call then needs the token)."),
    ]):
        func = option(func)
    return func


def _agent_config(manifests: Sequence[Path], config_file: Path | None, **overrides: Any) -> AgentConfig:
    """The config file (or defaults) with the command line's options on top."""
    from pydantic import ValidationError

    from npuctl.agent.config import AgentConfig
    from npuctl.agent.main import ConfigError, load_config

    try:
        config = load_config(config_file) if config_file else AgentConfig()
        return config.with_overrides(manifests=manifests, **overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except ValidationError as exc:  # an option's value: name the option, not pydantic's model
        raise click.UsageError("; ".join(f"--{'-'.join(map(str, e['loc'][:1])).replace('_', '-')}: "
                                         f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())) from exc


def _run_agent(config: AgentConfig, on_start: Callable[[Reconciler], None] | None = None) -> None:
    import asyncio

    from npuctl.agent.main import AgentFailed, ConfigError, StartError, run_agent
    from npuctl.serve.http.server import loop_factory

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run_agent(config, on_start))
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled, after shutting down cleanly (as `serve`'s run takes it)
    except (StartError, AgentFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@click.command()
@click.option("--manifests", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of manifests to watch (repeatable; apply writes into the first).")
@_agent_options
def agent(manifests: Sequence[Path], config_file: Path | None, **options: Any) -> None:
    """Run the agent: watch manifests, build, load, serve, report status (until Ctrl-C)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _agent_config(manifests, config_file, **options)
    err_console.print(f"npuctl agent on http://{config.listen}, watching {', '.join(map(str, config.manifests))}")
    _run_agent(config)


@click.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path), default=Path("manifests"))
@_agent_options
def up(folder: Path, config_file: Path | None, **options: Any) -> None:
    """Serve the manifests in FOLDER (default ./manifests): build what is missing with progress, then
    print the endpoint and a curl line. Runs until Ctrl-C."""
    from npuctl.cli.progress import follow

    config = _agent_config([folder], config_file, **options)
    err_console.print(f"npuctl up: serving {folder} on http://{config.listen} (Ctrl-C stops)")
    _run_agent(config, on_start=lambda reconciler: follow(reconciler, err_console))


@click.command()
@click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Manifest file or folder (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Artifact store (default: $NPUCTL_CACHE or the user data folder).")
@click.option("--allow-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A Host name to answer besides the listen address (repeatable; * for any).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="A web origin (https://app.example) whose pages may call the server (repeatable; none by default).")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="A request's headers must arrive within this of the connection opening, else 408 and the connection "
                   "closes (default 10).")
@click.option("--keep-alive", type=click.IntRange(min=1), metavar="SECONDS",
              help="Close a connection idle this long between requests (default 5).")
@click.option("--max-connections", type=click.IntRange(min=1), metavar="N",
              help="Open client connections at most; one more gets 503 and is closed (default 512).")
def serve(paths: Sequence[Path], host: str, port: int, cache: Path | None, allowed_hosts: Sequence[str],
          cors_origins: Sequence[str], header_timeout: float | None, keep_alive: int | None,
          max_connections: int | None) -> None:
    """Build what the manifests need (if missing), load the models and serve them until Ctrl-C. One-shot:
    edits to the manifests are not followed (the agent does that)."""
    from npuctl.agent.dashboard.routes import dashboard_routes
    from npuctl.agent.dashboard.views import DashboardData, dashboard, serve_view
    from npuctl.artifacts import BuildResult, Store
    from npuctl.cli.oneshot import serve_registry
    from npuctl.runtime.devices import detect_host
    from npuctl.schema import load_paths
    from npuctl.serve.app import create_app
    from npuctl.serve.http.connections import ConnectionLimits
    from npuctl.serve.http.guards import WebPolicy, check_origin
    from npuctl.serve.http.server import PortInUse, bind, run
    from npuctl.serve.models import ServedModel
    from npuctl.serve.timeline import Timeline

    try:
        web = WebPolicy.of(allowed_hosts, [check_origin(origin) for origin in cors_origins])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cors-origin") from exc
    try:
        result = load_paths(paths)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    for error in result.errors:
        click.echo(str(error), err=True)
    if not result.ok or not result.deployments:
        raise SystemExit(1)
    try:
        sock = bind(host, port)  # before the builds: a taken port is known at once, not minutes later
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from exc

    def loaded(model: ServedModel) -> None:
        status = model.status
        if status.ready:
            where = f"{status.where} ({status.provider}, NPU coverage {coverage_text(status.npu_coverage)})"
            err_console.print(f"[green]serving[/green] {escape(f'{model.name} on {where}: {status.message}')}")
        else:
            err_console.print(f"[red]not ready[/red] {escape(f'{model.name}: {status.reason}: {status.message}')}")

    builds: dict[str, BuildResult] = {}
    registry = serve_registry(
        result.deployments,
        store=Store(cache),
        progress=_print_step,
        on_loaded=loaded,
        on_built=builds.__setitem__,
    )
    url, facts = f"http://{host}:{sock.getsockname()[1]}", detect_host()
    timeline = Timeline(registry).start()

    async def dashboard_data(recent: float | None) -> DashboardData:
        return dashboard([serve_view(url, registry, timeline, facts, builds, recent)])

    err_console.print(f"listening on {url} (OpenAI /v1, Open Inference Protocol /v2, /metrics); dashboard: {url}/")
    try:
        run(create_app(registry, routes=dashboard_routes(dashboard_data), web=web), sock,
            ConnectionLimits(header_timeout or ConnectionLimits.header_timeout_seconds,
                             keep_alive or ConnectionLimits.keep_alive_seconds,
                             max_connections or ConnectionLimits.max_connections))
    finally:
        timeline.stop()
        registry.close()


def _print_step(event: StepEvent) -> None:
    running = event.running()
    err_console.print(f"  {event.where}: {running.doing() if running else event.state.value}", style="dim",
                      markup=False, soft_wrap=True)
