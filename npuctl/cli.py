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
@OUTPUT
def devices(output: str) -> None:
    """Show this host: OS, CPU architecture, SoC, and whether a real Hexagon NPU or only the HTP simulator is there."""
    from npuctl.runtime.devices import detect_host

    host = detect_host()
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


def main() -> None:
    cli()
