"""What every command prints with: the consoles, machine-readable output, sizes."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import click
from rich.console import Console

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
        return
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = StringIO()
    yaml.dump(json.loads(json.dumps(data, default=str)), buffer)
    click.echo(buffer.getvalue(), nl=False)


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def generation_lines(report: dict[str, Any] | None) -> list[str]:
    """A decoder-pipeline pack's greedy check and where each stage runs (GenerationReport.as_dict), in words."""
    if not report:
        return []
    lines = [f"greedy tokens match the fp32 reference through {report['first_divergence']} of {report['tokens']} "
             f"(bar {report['matching_tokens']}, {report['prompts']} prompts); on QNN: {report['node_share']:.0%} of "
             f"nodes, {report['weight_share']:.0%} of weight bytes"]
    for name, stage in report["stages"].items():
        nodes = ", ".join(f"{n} on {ep.removesuffix('ExecutionProvider')}" for ep, n in stage["nodes"].items())
        cpu = ", ".join(f"{op} x{n}" for op, n in stage["cpu_ops"].items())
        lines.append(f"  {name}: {nodes}" + (f" (CPU: {cpu})" if "QNNExecutionProvider" in stage["nodes"] else ""))
    return lines
