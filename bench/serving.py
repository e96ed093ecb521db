"""`npuctl serve` in its own process for a benchmark: as users run it, on a free port of 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Serving:
    url: str
    pid: int
    """The server process, for figures read from its CPU time."""


@contextmanager
def npuctl_serve(manifests: Path, cache: Path, log: Path, timeout: float = 300) -> Iterator[Serving]:
    """Serve `manifests` (a file or folder) until the block ends; yields the server once it is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w", encoding="utf-8") as out:
        server = subprocess.Popen([sys.executable, "-m", "npuctl", "serve", "-f", str(manifests), "--port", str(port),
                                   "--cache", str(cache)], stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, server, log, timeout)
            yield Serving(url, server.pid)
        finally:
            server.terminate()
            server.wait(30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"npuctl serve exited:\n{log.read_text(encoding='utf-8')}")
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("npuctl serve did not become ready")
