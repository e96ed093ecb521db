"""What odd clients and bad input get from a running agent, each on a real `npuctl` process: slow, short and
abandoned bodies, `validate` on a device or an empty folder, `get` at a server that is not npuctl, readiness
seen by strangers, browsers it does not know, and hf: sources that cannot exist."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.agent.harness import Agent, manifest
from tests.agent.hostile_client import no_traceback, npuctl, raw_request

HF_BAD = manifest("bad-hf").replace("source: file:tiny.onnx", "source: hf:../../x")


@pytest.fixture(scope="module")
def plain_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """An agent with no deployments, a 1 s body timeout and one allowed CORS origin."""
    root = tmp_path_factory.mktemp("plain-agent")
    config = root / "agent.yaml"
    config.write_text("bodyTimeoutSeconds: 1\ncorsOrigins: [https://app.example]\n")
    agent = Agent(root, root / "cache", config=config)
    agent.start()
    yield agent
    agent.stop()


def test_slow_and_short_bodies_get_408_and_the_connection_closes(plain_agent: Agent) -> None:
    head = (b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(raw_request(plain_agent, head, b'{"model": '),
                                                                 )) for _ in range(16)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 16 and all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:2]
    assert b"did not arrive within 1 s" in answers[0]
    print(f"\n16 short bodies: all answered 408 and closed within {time.monotonic() - started:.1f} s")


def test_a_client_leaving_mid_body_logs_no_traceback(plain_agent: Agent) -> None:
    head = (b"PUT /agent/v1/manifests/x.yaml HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + plain_agent.token.encode() + b"\r\nContent-Length: 5000\r\n\r\n")
    infer = b"POST /v2/models/x/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    for start in (head, infer) * 3:
        with socket.create_connection(("127.0.0.1", plain_agent.port)) as sock:
            sock.sendall(start + b"x" * 100)
            time.sleep(0.1)
    assert httpx.get(f"{plain_agent.url}/v2/health/live").status_code == 200
    time.sleep(0.5)
    log = plain_agent.log.read_text()
    assert no_traceback(log) and " ERROR " not in log, log[-3000:]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs a device file")
def test_validate_refuses_a_device_and_an_empty_folder(tmp_path: Path) -> None:
    device = npuctl("validate", "/dev/zero")
    assert device.returncode == 2 and "not a regular file" in device.stderr, device.stderr
    empty = npuctl("validate", str(tmp_path))
    assert empty.returncode == 2 and "no manifests" in empty.stderr, empty.stderr


class _NotNpuctl(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body, kind, code = ((b'{"hello": "world"}', "application/json", 200) if "json" in self.path else
                            (b"<html>nope</html>", "text/html", 404))
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_get_at_a_server_that_is_not_npuctl_says_so() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotNpuctl)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        for args in (["get", "--agent", f"{url}/json"], ["get", "--agent", url], ["get", "x", "--agent", f"{url}/json"],
                     ["events", "--agent", f"{url}/json"]):
            done = npuctl(*args, timeout=60)
            assert done.returncode == 2 and "is not an npuctl agent" in done.stderr, (args, done.stderr)
            assert no_traceback(done.stderr)
    finally:
        server.shutdown()


def test_readiness_beyond_loopback_shows_build_messages_only_with_the_token(tmp_path: Path,
                                                                             agent_cache: Path) -> None:
    agent = Agent(tmp_path, agent_cache, remote=True)
    (agent.manifests / "broken.yaml").write_text(manifest("broken").replace("file:tiny.onnx", "file:missing.onnx"))
    agent.launch()
    try:
        agent.wait_live()
        token = {"Authorization": f"Bearer {agent.token}"}
        agent.wait_for(lambda: "missing.onnx" in httpx.get(f"{agent.url}/v2/health/ready", headers=token).text,
                       "the build error in readiness")
        for path in ("/v2/health/ready", "/v2/models/broken/ready", "/v2/models/broken"):
            stranger = httpx.get(f"{agent.url}{path}")
            assert str(tmp_path) not in stranger.text and "missing.onnx" not in stranger.text, (path, stranger.text)
        assert httpx.get(f"{agent.url}/v2/health/ready").json()["notReady"]["broken"]["reason"]
    finally:
        agent.stop()


def test_the_agent_refuses_browsers_it_does_not_know_and_answers_cors_for_those_it_does(plain_agent: Agent) -> None:
    url = f"{plain_agent.url}/v1/embeddings"
    text = httpx.post(url, content=b'{"model": "x", "input": "hi"}', headers={"content-type": "text/plain",
                                                                                "origin": "http://evil.example"})
    assert text.status_code == 403
    plain = httpx.post(url, content=b'{"model": "x", "input": "hi"}', headers={"content-type": "text/plain",
                                                                                 "sec-fetch-site": "cross-site"})
    assert plain.status_code == 415
    rebound = httpx.get(f"{plain_agent.url}/agent/v1/deployments", headers={"host": "rebind.evil.example"})
    assert rebound.status_code == 421
    preflight = httpx.options(f"{plain_agent.url}/agent/v1/manifests/x.yaml", headers={
        "origin": "https://app.example", "access-control-request-method": "PUT",
        "access-control-request-headers": "authorization"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "PUT" in preflight.headers["access-control-allow-methods"]


def test_hf_sources_that_cannot_exist_are_placed_errors_in_validate_apply_and_build(plain_agent: Agent,
                                                                                     tmp_path: Path) -> None:
    for source in ("hf:../../x", "hf:org/-bad-"):
        file = tmp_path / "bad.yaml"
        file.write_text(HF_BAD.replace("hf:../../x", source))
        place = f"{file}:7:13: spec.model.source:"
        for args in (["validate", str(file)], ["build", "-f", str(file), "--cache", str(tmp_path / "cache")]):
            done = npuctl(*args)
            assert done.returncode == 1 and place in done.stderr, (args, done.stderr)
            assert no_traceback(done.stdout + done.stderr)
        env_agent = ["--agent", plain_agent.url]
        os.environ["NPUCTL_TOKEN"] = plain_agent.token
        try:
            applied = subprocess.run([sys.executable, "-m", "npuctl", "apply", "-f", str(file), "--dry-run", *env_agent],
                                     capture_output=True, text=True, timeout=60)
        finally:
            del os.environ["NPUCTL_TOKEN"]
        assert applied.returncode == 1 and "spec.model.source" in applied.stderr and ":7:13:" in applied.stderr, \
            applied.stderr
        assert no_traceback(applied.stderr)
    assert " ERROR " not in plain_agent.log.read_text()
