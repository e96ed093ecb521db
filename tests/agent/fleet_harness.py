"""A fleet on one machine: real agent processes with their own ports, state, caches and device facts, a static
web server (ETags, 304s, an access log) for the signed bundle and another for the published artifact store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from npuctl.agent import bundles
from tests.agent.harness import Agent, free_port

FLEET_MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
spec:
  model:
    source: file:{model}
    task: tensor
  precision: {precision}
  accuracy:
    threshold: 0.5
  targets: [x-elite, x2-elite]
{extra}"""

SOC_ONLY_X_ELITE = """\
  selector:
    matchExpressions:
      - key: soc
        operator: In
        values: [x-elite]
"""


AGENTS_PER_SOC = 6
POLL_SECONDS = 1.0
"""How often the fleet agents poll their bundle source."""


def fleet_manifest(model: Path, name: str = "tiny", precision: str = "w8a16", extra: str = "") -> str:
    return FLEET_MANIFEST.format(name=name, model=model.as_posix(), precision=precision, extra=extra)


@dataclass(frozen=True)
class Request:
    time: float
    path: str
    status: int


class StaticServer:
    """Serves a folder as a static web server would: strong ETags from the content, 304 on If-None-Match,
    404 for anything missing. Every request is logged. `stop()` closes the port (an unreachable server)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> StaticServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = server._answer(self)
                with server._lock:
                    server.requests.append(Request(time.monotonic(), self.path, status))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def log(self, prefix: str = "/") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def _answer(self, handler: BaseHTTPRequestHandler) -> int:
        file = (self.root / handler.path.split("?", 1)[0].lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            handler.send_error(404)
            return 404
        body = file.read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        if handler.headers.get("If-None-Match") == etag:
            handler.send_response(304)
            handler.send_header("ETag", etag)
            handler.end_headers()
            return 304
        handler.send_response(200)
        handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return 200


def publish_bundle(folder: Path, version: str, manifests: dict[str, str], key_pem: bytes,
                   name: str = "fleet.json") -> None:
    """Write a bundle and its signature into the bundle server's folder (signature first: never a new bundle
    beside an old signature for longer than a rename)."""
    data = bundles.Bundle(version, manifests).as_bytes()
    signature = bundles.sign(data, bundles.load_private_key(key_pem))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.sig.tmp").write_text(signature)
    (folder / f"{name}.tmp").write_bytes(data)
    (folder / f"{name}.sig.tmp").replace(folder / f"{name}.sig")
    (folder / f"{name}.tmp").replace(folder / name)


def publish_artifacts(manifest: Path, cache: Path, dest: Path | str, *options: str) -> None:
    """What a fleet's build host does: `npuctl build --all-targets --publish` (to a folder or oci://)."""
    done = subprocess.run([sys.executable, "-m", "npuctl", "build", "-f", str(manifest), "--all-targets",
                           "--publish", str(dest), "--cache", str(cache), *options], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"npuctl build --publish failed:\n{done.stderr[-4000:]}")


def fleet_agent(root: Path, *, soc: str, bundle_url: str, public_key: str, artifacts_url: str | dict[str, Any] | None,
                interval: float, labels: dict[str, str] | None = None,
                source_options: dict[str, Any] | None = None, facts: dict[str, Any] | None = None,
                model_roots: list[Path] | None = None) -> Agent:
    """An agent with its own state and cache, device facts of `soc`, following one bundle source
    (`source_options`: more keys of that source, e.g. insecure, cosignPublicKey). With `model_roots`, the
    bundle's `file:` sources may read inside them (modelRoots, allowLocalSources)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "facts": {"soc": soc, **(facts or {})}, "labels": labels or {}, "resyncSeconds": 5, "debounceMs": 50,
        "sources": [{"name": "fleet", "url": bundle_url, "publicKey": public_key, "intervalSeconds": interval,
                     "allowLocalSources": bool(model_roots), **(source_options or {})}],
        "modelRoots": [str(folder) for folder in model_roots or []],
        "artifactSources": [artifacts_url] if artifacts_url else [],
    }
    (root / "agent.yaml").write_text(json.dumps(config, indent=1))
    return Agent(root, root / "cache", config=root / "agent.yaml")


def start_all(agents: list[Agent], timeout: float = 240) -> None:
    """Launch every process first, then wait: the imports (onnxruntime) overlap."""
    for agent in agents:
        agent.launch()
    for agent in agents:
        agent.wait_live(timeout)


def wait_all(agents: list[Agent], condition: Callable[[Agent], Any], what: str, timeout: float = 240) -> float:
    """Seconds until `condition` holds on every agent."""
    started = time.monotonic()
    deadline = started + timeout
    pending = list(agents)
    while pending:
        pending = [a for a in pending if not _holds(a, condition)]
        if pending and time.monotonic() > deadline:
            details = "\n".join(f"{a.url}: {_status_line(a)}" for a in pending)
            raise AssertionError(f"timed out waiting for {what} on {len(pending)} agent(s):\n{details}\n"
                                 f"{pending[0].log.read_text()[-3000:]}")
        if pending:
            time.sleep(0.2)
    return time.monotonic() - started


def ready_on(generation: str | None = None, precision: str | None = None) -> Callable[[Agent], bool]:
    """Ready (on another generation than `generation`), serving `precision`."""
    def check(agent: Agent) -> bool:
        status = agent.status("tiny")
        return bool(status and status["phase"] == "Ready"
                    and (generation is None or status["servingGeneration"] != generation)
                    and (precision is None or [a["precision"] for a in status["artifacts"]] == [precision]))
    return check


def source_state(agent: Agent) -> dict[str, Any]:
    return httpx.get(f"{agent.url}/agent/v1/sources", timeout=10).json()["items"][0]


def _holds(agent: Agent, condition: Callable[[Agent], Any]) -> bool:
    if agent.process and agent.process.poll() is not None:
        raise AssertionError(f"agent {agent.url} exited:\n{agent.log.read_text()[-4000:]}")
    try:
        return bool(condition(agent))
    except (httpx.HTTPError, KeyError, IndexError, TypeError):
        return False


def _status_line(agent: Agent) -> str:
    try:
        return f"{agent.status('tiny')} / source {source_state(agent)}"
    except httpx.HTTPError as exc:
        return f"unreachable: {exc}"
