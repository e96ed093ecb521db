"""Commands that talk to a running agent's control API: apply, diff, get, describe, delete, events."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from npuctl.cli.output import OUTPUT, console, emit, err_console

if TYPE_CHECKING:
    from npuctl.cli.client import AgentClient
    from npuctl.schema.status import DeploymentStatus, Event

T = TypeVar("T")

AGENT = click.option("--agent", "agent_url", envvar="NPUCTL_AGENT", default=None,
                     help="Agent URL (default: NPUCTL_AGENT, else http://127.0.0.1:8765).")


def _client(agent_url: str | None) -> AgentClient:
    # Imported here to keep `npuctl validate` from loading httpx.
    from npuctl.cli.client import AgentClient, default_token

    return AgentClient(agent_url, default_token())


def _agent_call(call: Callable[[], T]) -> T:
    from npuctl.cli.client import AgentError

    try:
        return call()
    except AgentError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1 if exc.status in (404, 409, 422) else 2)


@click.command()
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


@click.command()
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
    from npuctl.cli.client import AgentError
    from npuctl.schema.loader import MAX_FILE_BYTES, manifest_files
    from npuctl.schema.opening import Unreadable, read_capped

    client = _client(agent_url)
    results = []
    for path in paths:
        for file in manifest_files(path):
            try:
                text = read_capped(file, MAX_FILE_BYTES, path if path.is_dir() else None).decode("utf-8-sig")
            except (Unreadable, UnicodeDecodeError) as exc:
                err_console.print(f"[red]error:[/red] {escape(f'{file}: {exc}')}")
                sys.exit(invalid_exit)
            try:
                results.append(client.apply(file.name, text, dry_run=dry_run))
            except AgentError as exc:
                for error in exc.body.get("error", {}).get("errors", []):
                    err_console.print(f"{file}:{error['line']}:{error['column']}: {error['path']}: {error['message']}",
                                      markup=False)
                err_console.print(f"[red]error:[/red] {escape(f'{file}: {exc}')}")
                sys.exit(invalid_exit if exc.status == 422 else 2)
    return results


def _steps_line(steps: object) -> str:
    from npuctl.schema.status import BuildSteps

    return BuildSteps.model_validate(steps).line()


def _change_line(change: dict[str, Any], dry_run: bool) -> str:
    verb = {"create": "created", "update": "configured", "delete": "deleted", "unchanged": "unchanged"}[change["action"]]
    effect = "" if change["effect"] == "none" else f" ({change['effect']})"
    return f"modeldeployment/{change['name']} {verb}{effect}{' (dry run)' if dry_run else ''}"


@click.command()
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
    from npuctl.schema.placement import coverage_text
    from npuctl.schema.status import BudgetUse, Condition, FileProblem, PendingFile

    client = _client(agent_url)
    overview = {"items": [_agent_call(lambda: client.deployment(name))]} if name else _agent_call(client.overview)
    items = overview["items"]
    if output != "table":
        emit(items[0] if name else items, output)
        return
    table = Table("NAME", "PHASE", "PROVIDER", "NPU", "GENERATION", "ENDPOINT", "LAST BENCH", box=None)
    for status in map(status_of, items):
        coverage = status.npu_coverage
        table.add_row(escape(status.name), status.phase.value, escape(status.provider or "-"),
                      coverage_text(coverage), status.observed_generation or "-",
                      escape(status.endpoint or "-"), status.last_bench.headline() if status.last_bench else "-")
    problems = [FileProblem.model_validate(p) for p in overview.get("invalidFiles", [])]
    for problem in problems:  # a row per manifest file that declares no deployment
        table.add_row(escape(problem.file), f"[red]{problem.reason}[/red]", "-", "-", "-", "-", "-")
    pending = [PendingFile.model_validate(p) for p in overview.get("pendingFiles", [])]
    for waiting in pending:  # saved, not read yet: what it declares is not applied until then
        table.add_row(escape(waiting.file), "[yellow]Pending[/yellow]", "-", "-", "-", "-", "-")
    console.print(table)
    if "budget" in overview:  # an agent's list (not one deployment's)
        console.print(BudgetUse.model_validate(overview["budget"]).line(), markup=False)
    for problem in problems:
        err_console.print(problem.message, markup=False, soft_wrap=True)
    for waiting in pending:
        err_console.print(f"{waiting.file}: saved; applied at {waiting.applies_at} if it does not change again",
                          markup=False, soft_wrap=True)
    for condition in map(Condition.model_validate, overview.get("conditions", [])):
        if condition.status == "False":
            err_console.print(f"agent: {condition.type.value} {condition.reason}: {condition.message}", markup=False,
                              soft_wrap=True)
    for source in _agent_call(client.sources):  # a source that is not in sync (Stalled, Rejected, ...) says why
        if source.get("state") != "Synced":
            err_console.print(f"source {source.get('name')}: {source.get('state')} (last poll {source.get('last_poll')}"
                              f"): {source.get('message')}", markup=False, soft_wrap=True)


def _get_fleet(agents_file: Path, name: str | None, output: str) -> None:
    import os

    from npuctl.cli.fleet import AgentListError, query_agents, read_agent_list
    from npuctl.schema.placement import coverage_text

    try:
        entries = read_agent_list(agents_file)
    except AgentListError as exc:
        raise click.UsageError(str(exc)) from exc
    reports = query_agents(entries, token=os.environ.get("NPUCTL_TOKEN"))
    for report in reports:
        report.deployments = [d for d in report.deployments if name in (None, d["metadata"]["name"])]
    if output != "table":
        emit([r.as_dict() for r in reports], output)
    else:
        table = Table("AGENT", "NAME", "PHASE", "PROVIDER", "NPU", "SOC", "SOURCES", "GENERATION", "LAST BENCH",
                      box=None)
        for report in reports:
            sources = ", ".join(f"{s['name']} {s['state']} {s.get('version') or ''}".strip() for s in report.sources)
            # Escaped: the agents file and the agents' answers are text, never markup (a line may hold `[/x]`).
            agent, sources = escape(report.url), escape(sources)
            if report.error or not report.deployments:
                problem = "[red]Invalid[/red]" if report.invalid else "[red]Unreachable[/red]" if report.error else "-"
                table.add_row(agent, "-", problem, escape(report.error or ""), "", "", sources or "-", "", "")
            for status in map(status_of, report.deployments):
                coverage = status.npu_coverage
                socs = sorted({str(a.soc_model) for a in status.artifacts})
                table.add_row(agent, escape(status.name), status.phase.value, escape(status.provider or "-"),
                              coverage_text(coverage), ",".join(socs) or "-",
                              sources or "-", status.observed_generation or "-",
                              status.last_bench.headline() if status.last_bench else "-")
        console.print(table)
    if any(r.error for r in reports):
        sys.exit(1)


@click.command()
@click.argument("name")
@AGENT
def describe(name: str, agent_url: str | None) -> None:
    """Everything about one deployment: conditions, provider, coverage, artifacts, events."""
    from npuctl.schema.placement import coverage_text

    status = status_of(_agent_call(lambda: _client(agent_url).deployment(name)))
    console.print(f"[bold]{escape(name)}[/bold]  phase: {status.phase.value}  generation: {status.observed_generation}")
    console.print(f"file: {status.file}\nendpoint: {status.endpoint}\nprovider: {status.provider}"
                  f"  NPU coverage: {coverage_text(status.npu_coverage)}", markup=False)
    if status.progress is not None:
        console.print(f"building: {status.progress.line()}", markup=False, soft_wrap=True)
    if status.cost:
        console.print(f"cost: {status.cost.summary()}", markup=False, soft_wrap=True)
    if status.preflight:
        console.print(status.preflight.summary(), markup=False, soft_wrap=True)
    console.print("conditions:")
    for c in status.conditions:
        message = f": {c.message}" if c.message else ""
        console.print(f"  {c.type.value:<15} {c.status:<7} {c.reason} (since {c.last_transition_time}){message}",
                      markup=False, soft_wrap=True)
    if status.artifacts:
        console.print("artifacts:")
    for a in status.artifacts:
        console.print(f"  {a.target} soc {a.soc_model} bucket {a.bucket} {a.precision}: {a.measured}, "
                      f"NPU coverage {coverage_text(a.npu_coverage)}", markup=False, soft_wrap=True)
        for line in a.generation.lines() if a.generation else []:
            console.print(f"    {line}", markup=False, soft_wrap=True)
    console.print("events:")
    _print_events(status.events)


@click.command()
@click.argument("name")
@AGENT
def delete(name: str, agent_url: str | None) -> None:
    """Delete a deployment (removes its manifest file from the watched folder)."""
    result = _agent_call(lambda: _client(agent_url).delete(name))
    console.print(f"modeldeployment/{name} deleted ({result['file']} removed)")


@click.command()
@click.argument("name", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@AGENT
def events(name: str | None, follow: bool, agent_url: str | None) -> None:
    """The agent's recent events (all deployments, or NAME's)."""
    import time

    client = _client(agent_url)
    seen = 0
    while True:
        from npuctl.schema.status import Event

        items = [Event.model_validate(e) for e in _agent_call(lambda: client.events(name))]
        _print_events(items[seen:] if len(items) >= seen else items)
        seen = len(items)
        if not follow:
            return
        time.sleep(1)


def status_of(item: dict[str, Any]) -> DeploymentStatus:
    """The status in a deployment the control API answered with (`{metadata, spec, status}`)."""
    from npuctl.schema.status import DeploymentStatus

    return DeploymentStatus.model_validate({"name": item["metadata"]["name"], **item.get("status", {})})


def _print_events(items: Sequence[Event]) -> None:
    for e in items:
        color = "yellow" if e.type == "Warning" else "dim"
        console.print(f"[{color}]{e.time}[/{color}] {escape(e.deployment)} {escape(e.reason)}: {escape(e.message)}",
                      soft_wrap=True)
