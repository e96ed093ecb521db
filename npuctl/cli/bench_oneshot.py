"""`npuctl bench -f FILE`: the bench against a one-shot `npuctl serve` started for the manifest, in its own process
as users run it; its CPU time and memory are read here (psutil), where it runs from its OIP model status."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import psutil

from npuctl.cli.benching import BenchError, ProcessProbe, Progress, Target
from npuctl.runtime.devices import detect_host
from npuctl.schema.bench import BenchResult, HostFigures
from npuctl.schema.loader import load_file
from npuctl.schema.power import PowerInForce
from npuctl.schema.status import RunFacts
from npuctl.serve.http.server import bind

READY_SECONDS = 1800.0
"""Longest wait for the server to build and load the model."""

Bench = Callable[[Target, ProcessProbe, RunFacts, HostFigures], Coroutine[Any, Any, BenchResult]]


class ChildProbe:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    async def read(self) -> tuple[float, int]:
        times = self.process.cpu_times()
        return times.user + times.system, self.process.memory_info().rss


def bench_manifest(file: Path, name: str | None, cache: Path | None, progress: Progress, bench: Bench) -> BenchResult:
    from npuctl.agent.bench_api import host_figures

    loaded = load_file(file)
    if not loaded.ok:
        raise BenchError("; ".join(str(e) for e in loaded.errors))
    found = [d for d in loaded.deployments if name in (None, d.name)]
    if len(found) != 1:
        names = ", ".join(d.name for d in loaded.deployments) or "none"
        raise BenchError(f"{file} declares {names}: name the one to bench" if found else f"{file} declares {names}")
    deployment = found[0].deployment
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()  # npuctl serve binds it again at once; another program taking it meanwhile fails the start
    command = [sys.executable, "-m", "npuctl", "serve", "-f", str(file), "--port", str(port)]
    if cache is not None:
        command += ["--cache", str(cache)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            progress(f"starting npuctl serve on {url} (it builds what is missing)")
            _wait_ready(url, deployment.public_name, server)
            status = httpx.get(f"{url}/v2/models/{deployment.public_name}", timeout=30).json()["status"]
            power = status.get("power")
            facts = RunFacts(provider=status.get("provider"), npu_coverage=status.get("npu_coverage"),
                             on_npu=status.get("where") in ("npu", "npu-simulator"),
                             power=PowerInForce.model_validate(power) if power else None)
            target = Target(url, deployment.public_name, deployment.spec.model.task, deployment.spec.serve.queue_limit)
            return asyncio.run(bench(target, ChildProbe(server.pid), facts, host_figures(detect_host())))
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_ready(url: str, model: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"npuctl serve exited ({server.returncode}) before {model} was ready")
        try:
            if httpx.get(f"{url}/v2/models/{model}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise BenchError(f"{model} was not ready within {READY_SECONDS:.0f} s")
