"""What a damaged or hostile start gets, each on a real `npuctl` process: an empty token file never turns
authentication off, a binary or folder token stops the start with the reason, a damaged status file is ignored
with a warning, config errors are placed, and a taken port is reported before any build."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from tests.agent.harness import Agent, free_port, manifest, tiny_model
from tests.agent.hostile_client import no_traceback, npuctl, raw_request

POSIX = os.name != "nt"


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
