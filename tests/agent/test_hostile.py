"""What a hostile afternoon found on the agent side (issue 13), each on a real `npuctl` process: the token,
damaged state and config, slow and broken bodies, a taken port, odd paths for validate, a server that is not
npuctl, browsers, and what readiness tells strangers."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.agent.harness import Agent, free_port, manifest, tiny_model

POSIX = os.name != "nt"
HF_BAD = manifest("bad-hf").replace("source: file:tiny.onnx", "source: hf:../../x")


def npuctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NPUCTL_TOKEN", "NPUCTL_AGENT")}
    return subprocess.run([sys.executable, "-m", "npuctl", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def no_traceback(text: str) -> bool:
    return "Traceback" not in text and "ClientDisconnect" not in text


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


# -- finding 6: the token -------------------------------------------------------------------------------------

@pytest.mark.skipif(not POSIX, reason="POSIX modes")
def test_an_empty_token_file_never_turns_authentication_off(agent: Agent) -> None:
    agent.state.mkdir(parents=True)
    agent.state.chmod(0o777)
    (agent.state / "token").write_text("  \n")
    (agent.state / "token").chmod(0o644)
    agent.start()
    body = manifest().encode()
    for header in (b"Bearer ", b"Bearer", b"Bearer  \t", b"bearer "):
        # httpx refuses to send a header value ending in a space; a hostile client does not ask it.
        head = (b"PUT /agent/v1/manifests/tiny.yaml?dryRun=true HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Authorization: " + header + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        answer = raw_request(agent, head, body)
        assert answer.startswith(b"HTTP/1.1 401"), (header, answer[:200])
    assert len(agent.token) >= 32, "a new token was made"
    assert stat.S_IMODE((agent.state / "token").stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.state.stat().st_mode) == 0o700
    log = agent.log.read_text()
    assert "was empty" in log and "had mode 777" in log
    with agent.client() as client:
        assert client.put("/agent/v1/manifests/tiny.yaml?dryRun=true", content=body).status_code == 200
    agent.stop()
    (agent.state / "token").chmod(0o644)  # a token others can read is made owner-only at the next start
    agent.start()
    assert stat.S_IMODE((agent.state / "token").stat().st_mode) == 0o600 and "had mode 644" in agent.log.read_text()


# -- finding 9: damaged state and config ----------------------------------------------------------------------

@pytest.mark.parametrize("saved", [
    "[1, 2, 3]",
    json.dumps({"deployments": [{"name": "tiny", "phase": "Hibernating"}], "events": []}),
    json.dumps({"deployments": {"tiny": 1}, "events": "none"}),
    '{"deployments": [{"name": "tiny", "pha',
])
def test_a_damaged_status_file_is_ignored_with_a_warning(agent: Agent, saved: str) -> None:
    agent.state.mkdir(parents=True)
    (agent.state / "status.json").write_text(saved)
    (agent.manifests / "tiny.yaml").write_text(manifest())
    agent.start()
    agent.wait_phase("tiny", "Ready")
    log = agent.log.read_text()
    assert "ignoring the saved status" in log and no_traceback(log), log[-3000:]


@pytest.mark.parametrize(("token", "says"), [(b"\x00\xff\xfe binary", "not ASCII"), (None, "is not a file")])
def test_a_binary_or_folder_token_stops_the_start_with_the_reason(tmp_path: Path, token: bytes | None,
                                                                   says: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if token is None:
        (state / "token").mkdir()
    else:
        (state / "token").write_bytes(token)
    done = npuctl("agent", "--manifests", str(tmp_path / "m"), "--state", str(state),
                  "--listen", f"127.0.0.1:{free_port()}", timeout=60)
    assert done.returncode == 1 and says in done.stderr and str(state / "token") in done.stderr, done.stderr
    assert no_traceback(done.stderr)


@pytest.mark.parametrize(("text", "where", "says"), [
    ("listen: [127.0.0.1\n", ":2:1:", "YAML syntax"),
    ("manifests: [m]\nresyncSeconds: fast\n", ":2:16: resyncSeconds:", "number"),
    ("lisen: 127.0.0.1:9\n", ":1:1: lisen:", "did you mean 'listen'"),
    ("corsOrigins: [evil.example]\n", ":1:14: corsOrigins:", "not an origin"),
])
def test_agent_config_errors_are_placed(tmp_path: Path, text: str, where: str, says: str) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    done = npuctl("agent", "--config", str(config), "--state", str(tmp_path / "state"), timeout=60)
    assert done.returncode != 0 and f"{config}{where}" in done.stderr and says in done.stderr, done.stderr
    assert no_traceback(done.stderr) and "pydantic" not in done.stderr


# -- finding 10: bodies, ports, paths, foreign servers, readiness ----------------------------------------------

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


def test_a_taken_port_is_reported_before_any_build(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    tiny_model(folder / "tiny.onnx")
    (folder / "tiny.yaml").write_text(manifest())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = npuctl("agent", "--manifests", str(folder), "--state", str(tmp_path / "state"),
                       "--cache", str(tmp_path / "cache"), "--listen", f"127.0.0.1:{port}", timeout=60)
        serve = npuctl("serve", "-f", str(folder), "--port", str(port), "--cache", str(tmp_path / "cache"), timeout=60)
    for done in (agent, serve):
        assert done.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in done.stderr, done.stderr
        assert no_traceback(done.stderr)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("record.json")), "nothing built"


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


# -- findings 7 and 8 on the agent: browsers, and hf: sources nothing can fetch ----------------------------------

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
