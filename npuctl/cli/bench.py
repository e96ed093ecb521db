"""`npuctl bench NAME`: measure a deployment on the running agent through its HTTP endpoints, as its clients see
it, and keep the result in the deployment's status (`lastBench`), where `npuctl get`, `get --agents` and the fleet
dashboard show it. The load runs here, as a client's would; the agent reports its own CPU time and memory."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click
import httpx
from rich.markup import escape
from rich.table import Table

from npuctl.agent.api import PREFIX
from npuctl.cli.benching import (
    DECODE_TOKENS,
    BenchError,
    ProcessProbe,
    Progress,
    Target,
    Watch,
    bench_chat,
    bench_requests,
    guarded,
)
from npuctl.cli.client import AgentClient, AgentError, default_token
from npuctl.cli.control import AGENT
from npuctl.cli.output import OUTPUT, console, emit, err_console
from npuctl.schema.bench import BENCH_ROUNDS, CLIENT_LEVELS, BenchResult, HostFigures, ProcessFigures
from npuctl.schema.enums import Task
from npuctl.schema.placement import coverage_text
from npuctl.schema.power import PowerInForce
from npuctl.schema.status import ConditionType, DeploymentStatus, RunFacts, now

REQUESTS = 32
TIMEOUT_SECONDS = 300.0
"""Longest wait for one answer: a 2,048-token prefill on a slow CPU."""


class AgentProbe:
    """The agent's process figures through its control API."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url + PREFIX + "/process"
        self.os_peak = 0

    async def read(self) -> tuple[float, int]:
        body = (await self.http.get(self.url)).raise_for_status().json()
        self.os_peak = max(self.os_peak, body.get("peakRssBytes") or 0)
        return float(body["cpuSeconds"]), int(body["rssBytes"])


@click.command()
@click.argument("name", required=False)
@click.option("-f", "--filename", "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Bench a manifest on a one-shot `npuctl serve` started for it (builds what is missing) instead "
                   "of the agent; nothing is kept.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="With -f: the artifact store (default: $NPUCTL_CACHE or the user data folder).")
@click.option("--rounds", default=BENCH_ROUNDS, show_default=True, type=click.IntRange(1, 50),
              help="Interleaved rounds of every measurement; figures are their median, with the spread.")
@click.option("--requests", "requests", default=REQUESTS, show_default=True, type=click.IntRange(1, 100_000),
              help="Requests per round at each number of clients (at least one per client).")
@click.option("--clients", "clients", multiple=True, type=click.IntRange(1, 1024), default=CLIENT_LEVELS,
              show_default=True, help="Concurrent clients (repeatable; at most the model's serve.queueLimit).")
@click.option("--decode-tokens", default=DECODE_TOKENS, show_default=True, type=click.IntRange(2, 100_000),
              help="Chat: tokens generated in each decode run (a fast model needs more to outlast the host's jitter).")
@click.option("--keep/--no-keep", default=True, show_default=True,
              help="Keep the result in the deployment's status (needs the agent's token).")
@AGENT
@OUTPUT
def bench(name: str | None, manifest: Path | None, cache: Path | None, rounds: int, requests: int,
          clients: Sequence[int], decode_tokens: int, keep: bool, agent_url: str | None, output: str) -> None:
    """Measure deployment NAME on the agent: chat prefill and decode, or latency and throughput at 1, 16 and 64
    clients; the agent's CPU seconds per token or request, its peak memory, where the work ran and the power policy.
    Progress goes to stderr; the figures to stdout."""
    progress: Progress = (lambda line: err_console.print(f"[dim]bench {escape(name or '')}:[/dim] {escape(line)}"))
    if manifest is not None:
        from npuctl.cli.bench_oneshot import bench_manifest

        try:
            result = bench_manifest(manifest, name, cache, progress, lambda target, probe, facts, host: _run(
                target, facts, host, None, rounds, requests, clients, decode_tokens, progress, probe))
        except BenchError as exc:
            _fail(str(exc), 2)
        _print(result, output)
        return
    if name is None:
        raise click.UsageError("name the deployment to bench (or give -f FILE)")
    token = default_token()
    client = AgentClient(agent_url, token)
    try:
        view = client.deployment(name)
        process = client.process()
    except AgentError as exc:
        _fail(str(exc), 1 if exc.status == 404 else 2)
    status = DeploymentStatus.model_validate(view["status"])
    spec = view.get("spec") or {}
    if not status.is_true(ConditionType.SERVING):
        _fail(f"{name} is not serving ({status.phase.value}); bench a deployment once `npuctl get` shows it Ready", 1)
    target = Target(client.url, (spec.get("serve") or {}).get("name") or name, Task(spec["model"]["task"]),
                    int((spec.get("serve") or {}).get("queueLimit", 64)))
    facts = RunFacts(provider=status.provider, npu_coverage=status.npu_coverage,
                     on_npu=status.is_true(ConditionType.ON_NPU), power=status.power)
    try:
        result = asyncio.run(_run(target, facts, HostFigures.model_validate(process["host"]), token, rounds,
                                  requests, clients, decode_tokens, progress))
    except BenchError as exc:
        _fail(str(exc), 2)
    if keep:
        try:
            client.keep_bench(name, result.model_dump_json())
        except AgentError as exc:
            err_console.print(f"[yellow]warning:[/yellow] the result is not kept in status: {escape(str(exc))}")
    _print(result, output)


def _print(result: BenchResult, output: str) -> None:
    if output != "text":
        emit(result.model_dump(mode="json"), output)
        return
    console.print(_table(result))


async def _run(target: Target, facts: RunFacts, host: HostFigures, token: str | None, rounds: int,
               requests: int, clients: Sequence[int], decode_tokens: int, progress: Progress,
               probe: ProcessProbe | None = None) -> BenchResult:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=max(clients) + 2)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, limits=limits, headers=headers) as http:
        probe = probe or AgentProbe(http, target.url)
        chat = requests_figures = None
        async with Watch(probe) as watch:
            if target.task is Task.TEXT_GENERATION:
                chat, units = await guarded(bench_chat(http, target, rounds, decode_tokens, progress))
                in_flight = 1
            else:
                requests_figures, units = await guarded(
                    bench_requests(http, target, clients, requests, rounds, progress))
                in_flight = max(level.clients for level in requests_figures.levels)
    use = watch.use
    return BenchResult(
        model=target.model, task=target.task.value, time=now(), seconds=time.monotonic() - started, rounds=rounds,
        max_in_flight=in_flight, where=None if facts.provider is None else ("npu" if facts.on_npu else "cpu"),
        provider=facts.provider, npu_coverage=facts.npu_coverage, power=facts.power, host=host,
        process=ProcessFigures(cpu_seconds=use.cpu_seconds, cpu_seconds_per_unit=use.cpu_seconds / max(units, 1),
                               unit="token" if chat else "request", units=units,
                               peak_rss_bytes=max(use.peak_rss, getattr(probe, "os_peak", 0))),
        chat=chat, requests=requests_figures)


def _table(result: BenchResult) -> Table:
    table = Table("figure", "median", "spread", title=f"{result.model} ({result.task}) on {result.host.soc or result.host.arch}")
    if result.chat:
        for prompt in result.chat.prompts:
            table.add_row(f"time to first token, {prompt.prompt_tokens}-token prompt (ms)",
                          f"{prompt.time_to_first_token_ms.median:.1f}", f"{prompt.time_to_first_token_ms.spread:.0%}")
            table.add_row(f"prefill, {prompt.prompt_tokens}-token prompt (tokens/s)",
                          f"{prompt.prefill_tokens_per_second.median:.0f}",
                          f"{prompt.prefill_tokens_per_second.spread:.0%}")
        chat = result.chat
        for label, figure in (("decode (tokens/s)", chat.decode_tokens_per_second),
                              ("inter-token p50 (ms)", chat.inter_token_p50_ms),
                              ("inter-token p95 (ms)", chat.inter_token_p95_ms)):
            table.add_row(label, f"{figure.median:.2f}", f"{figure.spread:.0%}")
    for level in result.requests.levels if result.requests else []:
        for label, figure in ((f"{level.clients} client(s): requests/s", level.requests_per_second),
                              (f"{level.clients} client(s): p50 latency (ms)", level.latency_p50_ms),
                              (f"{level.clients} client(s): p95 latency (ms)", level.latency_p95_ms)):
            table.add_row(label, f"{figure.median:.2f}", f"{figure.spread:.0%}")
    process = result.process
    table.add_row(f"agent CPU seconds per {process.unit}", f"{process.cpu_seconds_per_unit:.4f}", "")
    table.add_row("agent peak RSS (MiB)", f"{process.peak_rss_bytes / 2**20:.0f}", "")
    where = f"{result.where} ({result.provider}, NPU coverage {coverage_text(result.npu_coverage)})"
    table.add_row("where", where, "")
    table.add_row("power", power_line(result.power), "")
    return table


def power_line(power: PowerInForce | None) -> str:
    if power is None:
        return "-"
    chosen = f"agent default on {power.source.value}" if power.source else "manifest"
    settings = ", ".join(f"{k}={v}" for k, v in power.settings.items())
    return f"{power.policy.value} ({chosen}): {settings}"


def _fail(message: str, code: int) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    sys.exit(code)
