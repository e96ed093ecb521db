"""Running `npuctl` commands and raw HTTP requests the way a careless or hostile user would, for the agent's
tests of what bad input and odd clients get."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.agent.harness import Agent


def npuctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NPUCTL_TOKEN", "NPUCTL_AGENT")}
    return subprocess.run([sys.executable, "-m", "npuctl", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def no_traceback(text: str) -> bool:
    return "Traceback" not in text and "ClientDisconnect" not in text


def raw_request(agent: Agent, head: bytes, body: bytes, wait: float = 15) -> bytes:
    """Send `head` and `body` on a socket and read until the server closes it (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=wait) as sock:
        sock.sendall(head + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer
