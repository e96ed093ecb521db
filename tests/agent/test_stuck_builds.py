"""Stuck sources, on real agent processes: a source that never answers (here a Hugging Face endpoint
on 127.0.0.1 that sends one byte a second, as a hung server or mount does) holds only its own build; that
build stops when its manifest changes or goes away, and at its deadline, with a reason saying which."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from npuctl.agent.dashboard.routes import DATA_PATH
from tests.agent.harness import Agent, manifest, tiny_model
from tests.hostile_sources import CANARY, SECRET_DIGEST, hostile_source, layout, needs_fifo, needs_links

STUCK = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
spec:
  model:
    source: hf:org/never-answers
    task: tensor
  precision: fp32
"""


class DripServer:
    """Answers every request with headers, then one byte of body a second, for ever: each read succeeds
    just in time, so no per-read timeout fires. Counts the connections still open."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
            while True:
                conn.sendall(b" ")
                time.sleep(0.5)
        except OSError:
            pass  # the client went away: what the tests wait for
        finally:
            conn.close()
            with self.lock:
                self.open -= 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[DripServer]:
    server = DripServer()
    # The agent and its build processes inherit the environment: their hf: sources go to the drip server.
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.close()


def _agent(tmp_path: Path, cache: Path, config: str = "") -> Agent:
    file = tmp_path / "agent.yaml"
    file.write_text(config or "{}\n")
    agent = Agent(tmp_path, cache, config=file)
    tiny_model(agent.manifests / "tiny.onnx")
    return agent


def _message(status: dict[str, Any]) -> str:
    return " ".join(c.get("message") or "" for c in status["conditions"])


def test_a_build_stuck_on_a_source_holds_up_nothing_and_stops_when_its_manifest_changes_or_goes(
        tmp_path: Path, agent_cache: Path, hub: DripServer) -> None:
    agent = _agent(tmp_path, agent_cache)
    try:
        (agent.manifests / "stuck.yaml").write_text(STUCK.format(name="stuck"))
        agent.start()
        agent.wait_for(lambda: hub.open == 1, "the stuck build to reach the hub")
        # An unrelated deployment builds and serves while the stuck one waits on its source.
        (agent.manifests / "tiny.yaml").write_text(manifest())
        agent.wait_phase("tiny", "Ready", timeout=180)
        stuck = agent.status("stuck")
        assert stuck["phase"] == "Building"
        # Status and the dashboard name the step it is stuck in (started, nothing reported since).
        assert stuck["progress"]["step"] == "resolve" and stuck["progress"]["done"] is None, stuck["progress"]
        with agent.client() as client:
            page = client.get(DATA_PATH).json()
        [building] = [d for d in page["agents"][0]["deployments"] if d["status"]["name"] == "stuck"]
        assert building["build"]["running"] == "resolve: running", building["build"]
        # Edited to a source that answers: the old build is stopped (its connection closes) and the new one serves.
        (agent.manifests / "stuck.yaml").write_text(manifest(name="stuck"))
        agent.wait_for(lambda: hub.open == 0, "the stopped build to close its connection", timeout=60)
        agent.wait_phase("stuck", "Ready", timeout=180)
        assert "BuildCancelled" in [e["reason"] for e in agent.events("stuck")]
        # Deleted while stuck: the build process goes with it.
        (agent.manifests / "gone.yaml").write_text(STUCK.format(name="gone"))
        agent.wait_for(lambda: hub.open == 1, "the second stuck build to reach the hub", timeout=60)
        (agent.manifests / "gone.yaml").unlink()
        agent.wait_for(lambda: hub.open == 0, "the deleted deployment's build to stop", timeout=60)
        agent.wait_for(lambda: agent.status("gone") is None, "the deleted deployment to leave the status")
        # The agent stopped (a service manager's terminate) while a build is stuck: the build process goes too.
        (agent.manifests / "orphan.yaml").write_text(STUCK.format(name="orphan"))
        agent.wait_for(lambda: hub.open == 1, "the third stuck build to reach the hub", timeout=60)
        agent.stop()
        until = time.monotonic() + 30
        while hub.open and time.monotonic() < until:
            time.sleep(0.1)
        assert hub.open == 0, "the build process outlived the agent"
    finally:
        agent.stop()


def test_a_build_past_its_deadline_is_a_temporary_failure_naming_step_deadline_and_key(
        tmp_path: Path, agent_cache: Path, hub: DripServer) -> None:
    agent = _agent(tmp_path, agent_cache, "buildDeadlines:\n  sourcesSeconds: 3\nbackoffSeconds: [60, 60]\n")
    try:
        (agent.manifests / "stuck.yaml").write_text(STUCK.format(name="stuck"))
        agent.start()
        failed = agent.wait_for(lambda: (s := agent.status("stuck")) and "deadline" in _message(s) and s,
                                "the stuck build to reach its deadline", timeout=120)
        message = _message(failed)
        assert "resolve" in message and "3 s" in message and "buildDeadlines.sourcesSeconds" in message, message
        events = agent.events("stuck")
        stopped = [e for e in events if e["reason"] == "BuildDeadlineExceeded"]
        assert stopped and "retry in" in stopped[-1]["message"], events  # temporary: retried, not given up
        agent.wait_for(lambda: hub.open == 0, "the killed build's connection to close", timeout=30)
    finally:
        agent.stop()


HOSTILE = ("fifo", "dev-zero", "dangling-out", "link-out", "dotdot", "absolute", "folder-with-fifo", "pkg-dotdot")


@needs_fifo
@needs_links
def test_hostile_sources_on_a_real_agent_fail_at_once_placed_and_the_others_serve(tmp_path: Path,
                                                                                   agent_cache: Path) -> None:
    agent = _agent(tmp_path, agent_cache)
    (tmp_path / "scratch").mkdir()
    _, outside = layout(tmp_path / "scratch")  # its manifests folder is not the agent's
    try:
        for kind in HOSTILE:
            pinned = f"    source: {hostile_source(kind, agent.manifests, outside)}\n" \
                     f"    sha256: {{secret.onnx: '{'0' * 64}'}}"  # the old error quoted the digest here
            (agent.manifests / f"h-{kind}.yaml").write_text(
                manifest(name=f"h-{kind}").replace("    source: file:tiny.onnx", pinned))
        (agent.manifests / "tiny.yaml").write_text(manifest())
        agent.start()
        agent.wait_phase("tiny", "Ready", timeout=180)
        for kind in HOSTILE:
            status = agent.wait_phase(f"h-{kind}", "Failed", timeout=60)  # permanent: the same input, the same refusal
            message = _message(status)
            assert f"h-{kind}.yaml:" in message and "spec.model.source:" in message, message
            said = message + " ".join(e["message"] for e in agent.events(f"h-{kind}"))
            assert "TOPSECRET" not in said and SECRET_DIGEST not in said and CANARY not in said, said
    finally:
        agent.stop()


def test_each_step_kind_gets_its_own_deadline_and_status_reports_do_not_extend_it() -> None:
    """In-process: what the agent waits for at each point of a build, and which config key says how long."""
    from npuctl.agent.config import BuildDeadlines
    from npuctl.agent.isolated import _Phase
    from npuctl.artifacts.result import StepEvent, StepState

    deadlines = BuildDeadlines(sources_seconds=60, step_seconds=7200)
    start = _Phase.of("starting the build process", "sourcesSeconds", deadlines)
    resolving = start.after(StepEvent("resolve", StepState.RUNNING, ""), deadlines)
    assert (resolving.step, resolving.key, resolving.seconds) == ("resolve", "sourcesSeconds", 60)
    between = resolving.after(StepEvent("resolve", StepState.CACHED, "k"), deadlines)
    assert (between.key, between.seconds) == ("sourcesSeconds", 60) and "after resolve" in between.step
    compiling = between.after(StepEvent("compile", StepState.RUNNING, "k"), deadlines)
    assert (compiling.step, compiling.key, compiling.seconds) == ("compile", "stepSeconds", 7200)
    report = compiling.after(StepEvent("compile", StepState.RUNNING, "k", message="AI Hub: job running"), deadlines)
    assert report.until == compiling.until  # a long step's status reports do not push its deadline back
