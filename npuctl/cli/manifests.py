"""Commands that read manifests and this host, with no agent: validate, schema, devices."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click
from rich.table import Table

from npuctl.cli.output import OUTPUT, console, emit


@click.command()
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


@click.command()
@click.option("--status", "of_status", is_flag=True, help="The schema of a deployment's status instead (what the agent "
              "saves and its control API answers).")
def schema(of_status: bool) -> None:
    """Print the JSON Schema of manifests (point yaml-language-server at it), or of status."""
    from npuctl.schema.rules import json_schema
    from npuctl.schema.status import status_schema

    click.echo(json.dumps(status_schema() if of_status else json_schema(), indent=2))


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An agent config: show the device as that agent sees it (its `facts` overrides applied).")
@OUTPUT
def devices(config_file: Path | None, output: str) -> None:
    """Show this host: OS, CPU architecture, SoC, whether a real Hexagon NPU or only the HTP simulator is there, and
    what it offers models now: memory total and available, what one HTP session holds and how many would fit."""
    from npuctl.runtime.capacity import host_capacity
    from npuctl.runtime.devices import detect_host

    host = detect_host()
    if config_file:
        from npuctl.agent.main import ConfigError, load_config

        try:
            host = host.with_overrides(load_config(config_file).facts)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    capacity = host_capacity(host)
    if output != "text":
        emit(host.as_dict() | {"capacity": capacity.as_dict()}, output)
        return
    table = Table(show_header=False, box=None)
    memory, *npu = capacity.summary()
    for key, value in host.summary():
        rows = {"memory": [memory], "npu": [(key, value), *npu]}.get(key, [(key, value)])
        for name, text in rows:
            table.add_row(f"[bold]{name}[/bold]", text)
    console.print(table)
    if host.ep_devices:
        eps = Table("execution provider", "device type", "vendor id", "notes")
        for device in host.ep_devices:
            eps.add_row(device.ep_name, device.device_type, str(device.vendor_id), device.notes)
        console.print(eps)
