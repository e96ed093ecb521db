"""The `npuctl` command line: parse, call the library, print. Exit codes: 0 success, 1 the input is
invalid (or, for diff, differs), 2 usage or I/O error."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from npuctl import __version__

OUTPUT = click.option(
    "-o", "--output", "output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True,
    help="Output format; json and yaml are for scripts.",
)

console = Console()
err_console = Console(stderr=True)


def emit(data: Any, output: str) -> None:
    """Print machine-readable output: JSON or YAML, nothing else on stdout."""
    if output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        buffer = StringIO()
        yaml.dump(json.loads(json.dumps(data, default=str)), buffer)
        click.echo(buffer.getvalue(), nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="npuctl")
def cli() -> None:
    """Declarative model deployment for Qualcomm Hexagon NPUs."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@OUTPUT
def validate(paths: Sequence[Path], output: str) -> None:
    """Check manifests (files or folders): exit 0 if all are valid, 1 if not, 2 if a path can't be read."""
    from npuctl.schema import load_paths

    try:
        result = load_paths(paths)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    errors = sorted(result.errors, key=lambda e: (e.file, e.line, e.column))
    if output != "text":
        emit([error.as_dict() for error in errors], output)
    else:
        for error in errors:
            click.echo(str(error), err=True)
        names = ", ".join(d.name for d in result.deployments) or "none"
        status = "valid" if result.ok else f"{len(errors)} error(s)"
        click.echo(f"{len(result.files)} file(s), {len(result.deployments)} valid deployment(s) ({names}); {status}")
    sys.exit(0 if result.ok else 1)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of manifests (point yaml-language-server at it)."""
    from npuctl.schema.models import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@cli.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An agent config: show the device as that agent sees it (its `facts` overrides applied).")
@OUTPUT
def devices(config_file: Path | None, output: str) -> None:
    """Show this host: OS, CPU architecture, SoC, and whether a real Hexagon NPU or only the HTP simulator is there."""
    from npuctl.runtime.devices import detect_host

    host = detect_host()
    if config_file:
        from npuctl.agent.main import ConfigError, load_config

        try:
            host = host.with_overrides(load_config(config_file).facts)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    if output != "text":
        emit(host.as_dict(), output)
        return
    table = Table(show_header=False, box=None)
    for key, value in host.summary():
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)
    if host.ep_devices:
        eps = Table("execution provider", "device type", "vendor id", "notes")
        for device in host.ep_devices:
            eps.add_row(device.ep_name, device.device_type, str(device.vendor_id), device.notes)
        console.print(eps)


# -- the agent and its clients -------------------------------------------------------------------

AGENT = click.option("--agent", "agent_url", envvar="NPUCTL_AGENT", default=None,
                     help="Agent URL (default: NPUCTL_AGENT, else http://127.0.0.1:8765).")


def _client(agent_url: str | None):  # -> AgentClient; imported lazily to keep `npuctl validate` fast
    from npuctl.agent.client import AgentClient, default_token

    return AgentClient(agent_url, default_token())


def _agent_call(call: Any) -> Any:
    from npuctl.agent.client import AgentError

    try:
        return call()
    except AgentError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1 if exc.status in (404, 409, 422) else 2)


def _agent_config(manifests: Sequence[Path], config_file: Path | None, listen: str | None, state: Path | None,
                  cache: Path | None, labels: Sequence[str], allow_remote: bool | None) -> Any:
    """The config file (or defaults) with the command line's options on top."""
    from npuctl.agent.config import AgentConfig
    from npuctl.agent.main import ConfigError, load_config

    try:
        config = load_config(config_file) if config_file else AgentConfig()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    update: dict[str, Any] = {}
    if manifests:
        update["manifests"] = list(manifests)
    if state:
        update["state"] = state
    if cache:
        update["cache"] = cache
    if labels:
        update["labels"] = {**config.labels, **dict(label.split("=", 1) for label in labels)}
    if allow_remote:
        update["remote_access"] = True
    try:
        if listen:
            update["listen"] = AgentConfig(listen=listen).listen  # validated like the file's
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return config.model_copy(update=update)


def _run_agent(config: Any, on_start: Any = None) -> None:
    import asyncio

    from npuctl.agent.main import ConfigError, run_agent

    try:
        asyncio.run(run_agent(config, on_start))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _agent_options(func: Any) -> Any:
    for option in reversed([
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Agent config file (YAML; see agent/agent.example.yaml)."),
        click.option("--listen", help="HOST:PORT for models and control API (default 127.0.0.1:8765)."),
        click.option("--state", type=click.Path(file_okay=False, path_type=Path), help="Status and token folder."),
        click.option("--cache", type=click.Path(file_okay=False, path_type=Path), envvar="NPUCTL_CACHE",
                     help="Artifact store."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Agent label (repeatable)."),
        click.option("--allow-remote", is_flag=True, default=None,
                     help="Allow a non-loopback --listen address (every control call then needs the token)."),
    ]):
        func = option(func)
    return func


@cli.command()
@click.option("--manifests", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of manifests to watch (repeatable; apply writes into the first).")
@_agent_options
def agent(manifests: Sequence[Path], **options: Any) -> None:
    """Run the agent: watch manifests, build, load, serve, report status (until Ctrl-C)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _agent_config(manifests, **options)
    err_console.print(f"npuctl agent on http://{config.listen}, watching {', '.join(map(str, config.manifests))}")
    _run_agent(config)


@cli.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path), default=Path("manifests"))
@_agent_options
def up(folder: Path, **options: Any) -> None:
    """Serve the manifests in FOLDER (default ./manifests): build what is missing with progress, then
    print the endpoint and a curl line. Runs until Ctrl-C."""
    from npuctl.agent.progress import follow

    config = _agent_config([folder], **options)
    err_console.print(f"npuctl up: serving {folder} on http://{config.listen} (Ctrl-C stops)")
    _run_agent(config, on_start=lambda reconciler: follow(reconciler, err_console))


@cli.command()
@click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Manifest file or folder (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@AGENT
@OUTPUT
def apply(paths: Sequence[Path], dry_run: bool, agent_url: str | None, output: str) -> None:
    """Send manifests to the agent, which writes them into its watched folder and converges."""
    results = _send_manifests(paths, dry_run, agent_url)
    if output != "text":
        emit(results, output)
        return
    for result in results:
        for change in result["changes"]:
            console.print(_change_line(change, dry_run))
            if dry_run and "steps" in change:
                console.print(f"    {_steps_line(change['steps'])}")


@cli.command()
@click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(exists=True, path_type=Path))
@AGENT
@OUTPUT
def diff(paths: Sequence[Path], agent_url: str | None, output: str) -> None:
    """What applying would change. Exit 0: no difference; 1: differences; 2: error (as kubectl diff)."""
    results = _send_manifests(paths, True, agent_url, invalid_exit=2)
    changes = [c for r in results for c in r["changes"] if c["action"] != "unchanged"]
    if output != "text":
        emit(changes, output)
    else:
        for change in changes:
            console.print(_change_line(change, True))
            for field in change["fields"]:
                console.print(f"    {field['path']}: [red]{escape(repr(field['old']))}[/red] -> "
                              f"[green]{escape(repr(field['new']))}[/green]")
            if "steps" in change:
                console.print(f"    {_steps_line(change['steps'])}")
    sys.exit(1 if changes else 0)


def _send_manifests(paths: Sequence[Path], dry_run: bool, agent_url: str | None, invalid_exit: int = 1) -> list[Any]:
    from npuctl.agent.client import AgentError
    from npuctl.schema.loader import manifest_files

    client = _client(agent_url)
    results = []
    for path in paths:
        for file in manifest_files(path):
            try:
                results.append(client.apply(file.name, file.read_text(encoding="utf-8"), dry_run=dry_run))
            except AgentError as exc:
                for error in exc.body.get("error", {}).get("errors", []):
                    err_console.print(f"{file}:{error['line']}:{error['column']}: {error['path']}: {error['message']}",
                                      markup=False)
                err_console.print(f"[red]error:[/red] {escape(f'{file}: {exc}')}")
                sys.exit(invalid_exit if exc.status == 422 else 2)
    return results


def _steps_line(steps: dict[str, Any]) -> str:
    if steps.get("error"):
        return f"build would fail: {steps['error']}"
    stored = ", ".join(dict.fromkeys(steps["stored"])) or "nothing"
    return f"stored: {stored}; " + (f"builds from: {steps['next']}" if steps["next"] else "nothing to build")


def _change_line(change: dict[str, Any], dry_run: bool) -> str:
    verb = {"create": "created", "update": "configured", "delete": "deleted", "unchanged": "unchanged"}[change["action"]]
    effect = "" if change["effect"] == "none" else f" ({change['effect']})"
    return f"modeldeployment/{change['name']} {verb}{effect}{' (dry run)' if dry_run else ''}"


@cli.command()
@click.argument("name", required=False)
@AGENT
@click.option("--agents", "agents_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Ask every agent in this file (one URL per line) at once; exit 1 if one does not answer.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
def get(name: str | None, agent_url: str | None, agents_file: Path | None, output: str) -> None:
    """List deployments with phase, provider and NPU coverage (or one, by NAME)."""
    if agents_file is not None:
        _get_fleet(agents_file, name, output)
        return
    client = _client(agent_url)
    items = [_agent_call(lambda: client.deployment(name))] if name else _agent_call(client.deployments)
    if output != "table":
        emit(items[0] if name else items, output)
        return
    table = Table("NAME", "PHASE", "PROVIDER", "NPU", "GENERATION", "ENDPOINT", box=None)
    for item in items:
        status = item.get("status", {})
        coverage = status.get("npuCoverage")
        table.add_row(item["metadata"]["name"], status.get("phase", ""), status.get("provider") or "-",
                      f"{coverage:.0%}" if coverage is not None else "-", status.get("observedGeneration") or "-",
                      status.get("endpoint") or "-")
    console.print(table)


def _get_fleet(agents_file: Path, name: str | None, output: str) -> None:
    import os

    from npuctl.agent.fleet import query_agents, read_agent_list

    reports = query_agents(read_agent_list(agents_file), token=os.environ.get("NPUCTL_TOKEN"))
    for report in reports:
        report.deployments = [d for d in report.deployments if name in (None, d["metadata"]["name"])]
    if output != "table":
        emit([r.as_dict() for r in reports], output)
    else:
        table = Table("AGENT", "NAME", "PHASE", "PROVIDER", "NPU", "SOC", "SOURCES", "GENERATION", box=None)
        for report in reports:
            sources = ", ".join(f"{s['name']} {s['state']} {s.get('version') or ''}".strip() for s in report.sources)
            if report.error or not report.deployments:
                table.add_row(report.url, "-", "[red]Unreachable[/red]" if report.error else "-", report.error or "",
                              "", "", sources or "-", "")
            for item in report.deployments:
                status = item.get("status", {})
                coverage = status.get("npuCoverage")
                socs = sorted({str(a.get("socModel")) for a in status.get("artifacts", [])})
                table.add_row(report.url, item["metadata"]["name"], status.get("phase", ""),
                              status.get("provider") or "-", f"{coverage:.0%}" if coverage is not None else "-",
                              ",".join(socs) or "-", sources or "-", status.get("observedGeneration") or "-")
        console.print(table)
    if any(r.error for r in reports):
        sys.exit(1)


@cli.command()
@click.argument("name")
@AGENT
def describe(name: str, agent_url: str | None) -> None:
    """Everything about one deployment: conditions, provider, coverage, artifacts, events."""
    item = _agent_call(lambda: _client(agent_url).deployment(name))
    status = item.get("status", {})
    console.print(f"[bold]{name}[/bold]  phase: {status.get('phase')}  generation: {status.get('observedGeneration')}")
    console.print(f"file: {status.get('file')}\nendpoint: {status.get('endpoint')}\nprovider: {status.get('provider')}"
                  f"  NPU coverage: {status.get('npuCoverage')}")
    console.print("conditions:")
    for c in status.get("conditions", []):
        message = f": {c['message']}" if c.get("message") else ""
        console.print(f"  {c['type']:<15} {c['status']:<7} {c['reason']} (since {c['lastTransitionTime']}){message}",
                      markup=False, soft_wrap=True)
    if status.get("artifacts"):
        console.print("artifacts:")
    for a in status.get("artifacts", []):
        accuracy = a.get("accuracy") or {}
        bar = ("≤" if accuracy.get("metric") == "max_abs_error" else "≥") + f" {accuracy.get('threshold')}"
        measured = f"{accuracy['metric']} {accuracy['value']:.4f} ({bar})" if accuracy else "not measured (prebuilt)"
        console.print(f"  {a['target']} soc {a['socModel']} bucket {a['bucket']} {a['precision']}: {measured}, "
                      f"NPU coverage {a.get('npuCoverage') or 0:.0%}", markup=False, soft_wrap=True)
    console.print("events:")
    _print_events(status.get("events", []))


@cli.command()
@click.argument("name")
@AGENT
def delete(name: str, agent_url: str | None) -> None:
    """Delete a deployment (removes its manifest file from the watched folder)."""
    result = _agent_call(lambda: _client(agent_url).delete(name))
    console.print(f"modeldeployment/{name} deleted ({result['file']} removed)")


@cli.command()
@click.argument("name", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@AGENT
def events(name: str | None, follow: bool, agent_url: str | None) -> None:
    """The agent's recent events (all deployments, or NAME's)."""
    import time

    client = _client(agent_url)
    seen = 0
    while True:
        items = _agent_call(lambda: client.events(name))
        _print_events(items[seen:] if len(items) >= seen else items)
        seen = len(items)
        if not follow:
            return
        time.sleep(1)


def _print_events(items: list[dict[str, Any]]) -> None:
    for e in items:
        color = "yellow" if e["type"] == "Warning" else "dim"
        console.print(f"[{color}]{e['time']}[/{color}] {escape(e['deployment'])} {escape(e['reason'])}: "
                      f"{escape(e['message'])}", soft_wrap=True)


@cli.command()
@click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Manifest file or folder (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Artifact store (default: $NPUCTL_CACHE or the user data folder).")
def serve(paths: Sequence[Path], host: str, port: int, cache: Path | None) -> None:
    """Build what the manifests need (if missing), load the models and serve them until Ctrl-C. One-shot:
    edits to the manifests are not followed (the agent does that)."""
    from npuctl.build import Store
    from npuctl.schema import load_paths
    from npuctl.serve.app import create_app
    from npuctl.serve.models import ServedModel
    from npuctl.serve.oneshot import serve_registry
    from npuctl.serve.server import run

    try:
        result = load_paths(paths)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    for error in result.errors:
        click.echo(str(error), err=True)
    if not result.ok or not result.deployments:
        raise SystemExit(1)

    def loaded(model: ServedModel) -> None:
        status = model.status
        if status.ready:
            where = f"{status.where} ({status.provider}, NPU coverage {status.npu_coverage:.0%})"
            err_console.print(f"[green]serving[/green] {escape(f'{model.name} on {where}: {status.message}')}")
        else:
            err_console.print(f"[red]not ready[/red] {escape(f'{model.name}: {status.reason}: {status.message}')}")

    registry = serve_registry(
        result.deployments,
        store=Store(cache),
        progress=lambda e: err_console.print(f"  {e.step} {e.target or ''} {e.state.value}", style="dim"),
        on_loaded=loaded,
    )
    err_console.print(f"listening on http://{host}:{port} (OpenAI /v1, Open Inference Protocol /v2, /metrics)")
    try:
        run(create_app(registry), host, port)
    finally:
        registry.close()


@cli.command()
@click.option("-f", "--filename", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Manifest file.")
@click.option("--target", "targets", multiple=True, help="Build only this target (alias or soc<N>; repeatable).")
@click.option("--all-targets", is_flag=True, help="Build every declared target (the default without --target).")
@click.option("--publish", "publish_to", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Then publish the build's steps to this folder (a fleet's shared artifact store; see README).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifact store (default: $NPUCTL_CACHE or the user data folder).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def build(path: Path, targets: Sequence[str], all_targets: bool, publish_to: Path | None, cache: Path | None,
          output: str) -> None:
    """Build a manifest's artifacts: export, static shapes, quantize, compile context binaries, verify.
    Steps already in the store are not run again."""
    from npuctl.build import BuildError, Store, build_deployment
    from npuctl.schema import load_file

    if all_targets and targets:
        raise click.UsageError("--all-targets and --target exclude each other")
    loaded = load_file(path)
    for error in loaded.errors:
        click.echo(str(error), err=True)
    if not loaded.ok or not loaded.deployments:
        raise SystemExit(1)
    _quiet_native_logs()
    store = Store(cache)
    results = []
    for deployment in loaded.deployments:
        try:
            if output == "json":
                # The QNN libraries print a banner on stdout; keep stdout for the JSON alone.
                with _stdout_to_stderr():
                    results.append(build_deployment(deployment, store=store, targets=targets or None))
            else:
                with _BuildProgress(deployment.name) as show:
                    results.append(build_deployment(deployment, store=store, targets=targets or None,
                                                    progress=show.update))
        except BuildError as exc:
            err_console.print(f"[red]build of {deployment.name} failed[/red]: {escape(str(exc))}")
            raise SystemExit(1) from exc
    if publish_to is not None:
        from npuctl.build.publish import publish

        done = publish(results, store, publish_to)
        err_console.print(f"published {len(done.steps)} steps to {publish_to} ({done.blobs_written} new files, "
                          f"{_size(done.bytes_written)})")
    if output == "json":
        data = [r.as_dict() for r in results]
        click.echo(json.dumps(data[0] if len(data) == 1 else data, indent=2))
        return
    for result in results:
        for artifact in result.artifacts:
            acc = artifact.accuracy
            measured = f"{acc.metric} {acc.value:.4f} (bar {acc.threshold})" if acc else f"{artifact.origin}, not measured"
            console.print(f"{result.deployment} {artifact.target} (soc {artifact.soc_model}) bucket {artifact.bucket} "
                          f"{artifact.precision.value}: {measured}, "
                          f"NPU coverage {artifact.npu_coverage:.0%}\n  {artifact.context_model}")
        if not result.artifacts:
            console.print(f"{result.deployment}: {result.precision.value} runs on the CPU: {result.cpu_model}")


class _BuildProgress:
    """A live table of build steps on stderr: cached / running / done with time."""

    def __init__(self, name: str) -> None:
        from rich.live import Live

        self.name = name
        self.rows: dict[tuple[str, str | None, int | None], tuple[str, str]] = {}
        self.live = Live(self._table(), console=err_console, transient=False, refresh_per_second=8)

    def __enter__(self) -> _BuildProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._table())
        self.live.__exit__(None, None, None)

    def update(self, event: Any) -> None:
        styles = {"cached": "dim", "running": "yellow", "done": "green", "fetched": "cyan", "failed": "red"}
        state = event.state.value
        seconds = f"{event.seconds:.2f}s" if event.seconds is not None else ""
        self.rows[(event.step, event.target, event.bucket)] = (f"[{styles[state]}]{state}[/]", seconds)
        self.live.update(self._table())

    def _table(self) -> Table:
        table = Table("step", "target", "bucket", "state", "time", title=f"build {self.name}", title_justify="left")
        for (step, target, bucket), (state, seconds) in self.rows.items():
            table.add_row(step, target or "", "" if bucket is None else str(bucket), state, seconds)
        return table


def _quiet_native_logs() -> None:
    import logging

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    # onnxruntime.quantization logs advice ("consider pre-processing") on the root logger as warnings.
    logging.getLogger().setLevel(logging.ERROR)


class _stdout_to_stderr:
    """Point file descriptor 1 at stderr for a while (native libraries write to it directly)."""

    def __enter__(self) -> None:
        import os

        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc: object) -> None:
        import os

        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)


@cli.group()
def cache() -> None:
    """Inspect and clean the artifact store."""


CACHE_DIR = click.option("--cache", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Artifact store (default: $NPUCTL_CACHE or the user data folder).")


@cache.command("ls")
@CACHE_DIR
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def cache_ls(root: Path | None, output: str) -> None:
    """List stored steps (not re-hashed; `cache verify` does that)."""
    from npuctl.build import Store

    store = Store(root)
    records = store.records()
    if output == "json":
        click.echo(json.dumps([r.for_storage() | {"folder": str(r.folder)} for r in records], indent=2))
        return
    table = Table("key", "step", "target", "precision", "size", "created", title=str(store.root), title_justify="left")
    for record in records:
        soc = record.details.get("soc_model")
        table.add_row(record.key[:12], record.step, f"soc {soc}" if soc else "",
                      str(record.details.get("precision") or record.parameters.get("precision") or ""),
                      _size(store.size(record)), record.created)
    console.print(table)


@cache.command("verify")
@CACHE_DIR
@click.option("--keep", is_flag=True, help="Report bad entries but do not remove them.")
def cache_verify(root: Path | None, keep: bool) -> None:
    """Re-hash every stored file; report and drop entries that don't match their records. Exit 1 if any."""
    from npuctl.build import Store

    store = Store(root)
    problems = store.verify(drop=not keep)
    for problem in problems:
        action = "kept" if keep else "removed"
        click.echo(f"{problem.key[:12]} {problem.step or '?'}: {problem.message} ({action})")
    click.echo(f"{len(store.records())} entries ok, {len(problems)} bad")
    raise SystemExit(1 if problems else 0)


@cache.command("gc")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@CACHE_DIR
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
def cache_gc(manifests: Sequence[Path], root: Path | None, dry_run: bool) -> None:
    """Remove stored steps that no manifest in MANIFESTS (files or folders) uses, and dead builders' work folders."""
    from npuctl.build import BuildError, Store
    from npuctl.build.pipeline import referenced_keys
    from npuctl.schema import load_paths

    result = load_paths(manifests)
    if not result.ok:
        for error in result.errors:
            click.echo(str(error), err=True)
        click.echo("not collecting: fix the manifests first (their artifacts would look unused)", err=True)
        raise SystemExit(1)
    store = Store(root)
    keep: set[str] = set()
    for loaded in result.deployments:
        try:
            keep |= referenced_keys(loaded, store=store)
        except BuildError as exc:
            click.echo(f"not collecting: {loaded.name}: {exc}", err=True)
            raise SystemExit(1) from exc
    freed = 0
    for record in store.records():
        if record.key in keep:
            continue
        freed += store.size(record)
        click.echo(f"{'would remove' if dry_run else 'removed'} {record.key[:12]} {record.step}")
        if not dry_run:
            store.remove(record.key)
    if not dry_run:
        store.clean_tmp(max_age_seconds=3600)
    click.echo(f"{'would free' if dry_run else 'freed'} {_size(freed)}; kept {len(keep)} referenced step(s)")


def _size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


@cli.group()
def bundle() -> None:
    """Signed manifest bundles for fleets: keygen, pack, sign, verify (agents follow them via `sources:`)."""


@bundle.command("keygen")
@click.argument("private_key", type=click.Path(dir_okay=False, path_type=Path))
def bundle_keygen(private_key: Path) -> None:
    """Write a new ed25519 private key (PEM, owner-only) and print its public key for agent configs."""
    import os

    from npuctl.agent import bundles

    if private_key.exists():
        raise click.UsageError(f"{private_key} exists; refusing to overwrite a signing key")
    pem, public = bundles.generate_key()
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    click.echo(public)


@bundle.command("pack")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="The bundle's version (shown in agents' source status).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also sign with this private key (writes OUT.sig).")
def bundle_pack(folder: Path, version: str, out: Path, key: Path | None) -> None:
    """Pack the manifests in FOLDER into a bundle (every manifest must be valid)."""
    from npuctl.agent import bundles

    try:
        packed = bundles.pack(folder, version)
    except bundles.BundleError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1)
    data = packed.as_bytes()
    out.write_bytes(data)
    if key:
        _write_signature(out, data, key)
    click.echo(f"{out}: {len(packed.manifests)} manifest(s), version {version}{', signed' if key else ''}")


@bundle.command("sign")
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def bundle_sign(bundle_file: Path, key: Path) -> None:
    """Write BUNDLE.sig: the ed25519 signature over the bundle's bytes."""
    _write_signature(bundle_file, bundle_file.read_bytes(), key)
    click.echo(f"{bundle_file}.sig written")


@bundle.command("verify")
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", required=True, help="base64 ed25519 public key (as in agent configs).")
def bundle_verify(bundle_file: Path, public_key: str) -> None:
    """Check a bundle and its .sig as an agent would: exit 0 if it verifies and is valid, 1 if not."""
    from npuctl.agent import bundles

    data = bundle_file.read_bytes()
    signature = Path(f"{bundle_file}.sig")
    try:
        bundles.verify(data, signature.read_text(encoding="utf-8") if signature.exists() else "", public_key)
        packed = bundles.parse(data)
    except bundles.BundleError as exc:
        err_console.print(f"[red]refused:[/red] {escape(f'{bundle_file}: {exc}')}")
        sys.exit(1)
    click.echo(f"{bundle_file}: verified, version {packed.version}, {len(packed.manifests)} manifest(s)")


def _write_signature(bundle_file: Path, data: bytes, key: Path) -> None:
    from npuctl.agent import bundles

    try:
        signature = bundles.sign(data, bundles.load_private_key(key.read_bytes()))
    except (bundles.BundleError, ValueError) as exc:
        raise click.UsageError(f"{key}: {exc}") from exc
    Path(f"{bundle_file}.sig").write_text(signature + "\n", encoding="utf-8")


def main() -> None:
    cli()
