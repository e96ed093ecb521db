"""What a manifest folder may hold and when the agent says it is ready:
entries that are not regular files (links to devices, FIFOs, sockets, folders, dangling links, loops, links
out of the folder) on a real agent process; a reconcile pass that raises and a read that hangs, in process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from npuctl.agent import desired as desired_module
from npuctl.agent import reading as reading_module
from npuctl.agent.config import AgentConfig
from npuctl.agent.reconcile import Reconciler
from npuctl.agent.status import StatusBook
from npuctl.schema import load_file
from tests.agent.fakes import FakeActuator
from tests.agent.harness import Agent, X, infer, manifest

LINUX = sys.platform.startswith("linux")
SECRET = "s3cret-line-of-a-file-outside: 42"
ADDRESS_SPACE = 4 << 30
"""The agent's address-space limit (resource.prlimit) in the hostile-folder test: it starts at ~1.1 GiB of
address space, and before the fix a link to /dev/zero would otherwise take the host's memory."""
RSS_BOUND = 400 << 20
"""The agent's resident memory must stay under this while the hostile folder is read (it serves one tiny model
at ~130 MiB)."""


def npuctl(*args: str, token: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NPUCTL_TOKEN", "NPUCTL_AGENT")}
    env["COLUMNS"] = "400"  # whole file names in the table
    if token:
        env["NPUCTL_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "npuctl", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def hostile_entries(folder: Path, outside: Path) -> dict[str, str]:
    """Entries that are not regular files, made in `folder`: name -> what the agent must say about it."""
    outside.mkdir(exist_ok=True)
    (outside / "secret.yaml").write_text(f"{SECRET}\nanother-secret-line: 7\n")
    os.mkfifo(outside / "fifo")
    os.mkfifo(folder / "raw-fifo.yaml")
    os.mkfifo(folder / ".inner-fifo")
    (folder / "a-folder.yaml").mkdir()
    (folder / "inside").mkdir()
    links = {"zero.yaml": "/dev/zero", "null.yaml": "/dev/null", "fifo-out.yaml": str(outside / "fifo"),
             "secret.yaml": str(outside / "secret.yaml"), "root.yaml": "/", "dangling.yaml": "nowhere",
             "loop-a.yaml": "loop-b.yaml", "loop-b.yaml": "loop-a.yaml", "fifo-in.yaml": ".inner-fifo",
             "folder-in.yaml": "inside"}
    for name, target in links.items():
        (folder / name).symlink_to(target)
    says = {name: "link out of the manifest folder" for name in
            ("zero.yaml", "null.yaml", "fifo-out.yaml", "secret.yaml", "root.yaml")}
    says |= {"raw-fifo.yaml": "not a regular file (a FIFO)", "dangling.yaml": "leads nowhere",
             "loop-a.yaml": "loop of symbolic links", "loop-b.yaml": "loop of symbolic links",
             "fifo-in.yaml": "not a regular file (a FIFO behind a link)",
             "folder-in.yaml": "not a regular file (a folder behind a link)"}
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.bind(str(folder / "socket.yaml"))
            says["socket.yaml"] = "not a regular file (a socket)"
        except OSError:  # a path too long for a socket: the other entries still run
            pass
    return says


class Watch:
    """Polls an agent from a thread: every /v2/health/live answered 200 within 1 s, and its peak RSS (/proc)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.late: list[str] = []
        self.peak_rss = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        assert self.agent.process is not None
        status = Path(f"/proc/{self.agent.process.pid}/status")
        while not self._stop.is_set():
            try:
                answer = httpx.get(f"{self.agent.url}/v2/health/live", timeout=1)
                if answer.status_code != 200:
                    self.late.append(f"live answered {answer.status_code}")
            except httpx.HTTPError as exc:
                self.late.append(f"live did not answer within 1 s: {type(exc).__name__}")
            self.polls += 1
            for line in status.read_text().splitlines() if status.exists() else []:
                if line.startswith("VmRSS:"):
                    self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            self._stop.wait(0.1)


@pytest.mark.skipif(not LINUX, reason="FIFOs, devices, symlinks, /proc and prlimit of Linux")
def test_entries_that_are_not_regular_files_are_refused_and_the_agent_keeps_reconciling(agent: Agent) -> None:
    import resource

    (agent.manifests / "tiny.yaml").write_text(manifest())
    agent.start()
    assert agent.process is not None
    resource.prlimit(agent.process.pid, resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    agent.wait_phase("tiny", "Ready", timeout=300)
    with Watch(agent) as watch:
        says = hostile_entries(agent.manifests, agent.manifests.parent / "outside")

        def listed() -> dict[str, str] | None:
            overview = httpx.get(f"{agent.url}/agent/v1/deployments", timeout=5).json()
            rows = {Path(row["file"]).name: row["message"] for row in overview["invalidFiles"]}
            return rows if set(says) <= set(rows) else None

        rows = agent.wait_for(listed, "a row for every entry that is not a regular file", timeout=60)
        for name, why in says.items():
            assert why in rows[name] and rows[name].startswith(f"{agent.manifests / name}:1:1: "), (name, rows[name])
        assert "a-folder.yaml" not in rows, "a folder named *.yaml is searched, not refused"
        # `npuctl apply -f` of the folder reads it as the agent does: the first refused entry stops it, placed.
        sent = npuctl("apply", "-f", str(agent.manifests), "--dry-run", "--agent", agent.url, token=agent.token,
                      timeout=60)
        assert sent.returncode == 1 and "dangling.yaml: a symbolic link that leads nowhere" in sent.stderr, sent.stderr
        assert "Traceback" not in sent.stderr
        # The reconcile loop still runs: a deployment applied now appears and serves.
        applied = agent.manifests.parent / "tiny2.yaml"
        applied.write_text(manifest("tiny2"))
        done = npuctl("apply", "-f", str(applied), "--agent", agent.url, token=agent.token)
        assert done.returncode == 0 and "created" in done.stdout, done.stdout + done.stderr
        agent.wait_phase("tiny2", "Ready", timeout=120)
        assert infer(agent.client(), "tiny", X).status_code == 200
        table = npuctl("get", "--agent", agent.url)
        overview = httpx.get(f"{agent.url}/agent/v1/deployments", timeout=5).text
    for name in says:
        assert name in table.stdout, (name, table.stdout)
    for text in (table.stdout + table.stderr, overview, agent.log.read_text()):
        assert "s3cret" not in text and "another-secret-line" not in text, "a file outside the folder is never quoted"
    assert "Traceback" not in agent.log.read_text()
    assert watch.polls > 0 and not watch.late, watch.late[:5]
    assert watch.peak_rss < RSS_BOUND, f"agent RSS peaked at {watch.peak_rss >> 20} MiB"
    print(f"\nhostile folder: {len(says)} entries refused; {watch.polls} live polls, none late; "
          f"agent peak RSS {watch.peak_rss >> 20} MiB")


def test_readiness_waits_for_a_manifest_that_is_still_settling(agent: Agent) -> None:
    file = agent.manifests / "tiny.yaml"
    file.write_text(manifest())
    # Saved "a moment ago" as the agent's clock sees it, whatever the start takes on a busy host: with an
    # mtime ahead of the wall clock the file settles settleSeconds (5 s) after the agent first sees it.
    ahead = time.time() + 3600
    os.utime(file, (ahead, ahead))
    agent.launch()
    agent.wait_live()
    first = httpx.get(f"{agent.url}/v2/health/ready", timeout=5)
    assert first.status_code == 503, first.text
    assert first.json()["notReady"]["manifests"]["reason"] in ("ManifestsNotRead", "ManifestPending"), first.text
    table = agent.wait_for(lambda: (done := npuctl("get", "--agent", agent.url)).returncode == 0
                           and "Pending" in done.stdout and done, "npuctl get to show the pending file", timeout=30)
    assert "tiny.yaml" in table.stdout and "applied at" in table.stderr, table.stdout + table.stderr

    agent.wait_for(lambda: httpx.get(f"{agent.url}/v2/health/ready", timeout=5).status_code == 200,
                   "readiness once tiny serves", timeout=300)
    assert infer(agent.client(), "tiny", X).status_code == 200, "ready means what the folder declares is served"
    overview = httpx.get(f"{agent.url}/agent/v1/deployments", timeout=5).json()
    assert overview["pendingFiles"] == []
    read = next(c for c in overview["conditions"] if c["type"] == "ManifestsRead")
    assert read["status"] == "True", read


# -- in process: a pass that raises, a read that hangs -------------------------------------------------------------

async def _until(condition: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
def config(tmp_path: Path) -> Iterator[AgentConfig]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "bad.yaml").write_text("kind: [")
    yield AgentConfig(manifests=[manifests], state=tmp_path / "state", settle_seconds=0, resync_seconds=0.2,
                      debounce_ms=0, backoff_seconds=(0.2, 0.2))


def test_a_reconcile_pass_that_raises_is_shown_and_the_loop_starts_again(config: AgentConfig) -> None:
    actuator = FakeActuator(selected=(False, "not on this test's agent"))  # nothing to build or serve

    async def scenario() -> None:
        reconciler = Reconciler(config, actuator, StatusBook(config.state))
        refresh, calls = reconciler.desired_state.refresh, []

        def fails_once() -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise MemoryError("as reading /dev/zero whole did")
            return refresh()

        reconciler.desired_state.refresh = fails_once  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(reconciler.run(stop))
        await _until(lambda: "reconcile" in actuator.problems or task.done(), "the failure to show in readiness")
        assert not task.done(), "the reconcile loop died"
        condition = next(c for c in reconciler.health.conditions() if c.type == "Reconciling")
        assert condition.status == "False" and "MemoryError" in condition.message, condition
        assert any(e.reason == "ReconcileLoopFailed" for e in reconciler.book.events)
        await _until(lambda: "reconcile" not in actuator.problems and reconciler.health.files, "the loop to run again")
        condition = next(c for c in reconciler.health.conditions() if c.type == "Reconciling")
        assert condition.status == "True", condition
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_a_read_that_hangs_never_blocks_the_loop_and_is_shown(config: AgentConfig,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    actuator = FakeActuator(selected=(False, "not on this test's agent"))  # nothing to build or serve
    gate = threading.Event()
    guard = threading.Timer(20, gate.set)  # before the fix the read blocks the test's own loop: this ends it
    guard.daemon = True
    guard.start()
    def hung(file: Path, within: Path | None = None) -> Any:  # a file on a share that stopped answering
        gate.wait()
        return load_file(file, within) if within else load_file(file)

    monkeypatch.setattr(desired_module, "load_file", hung)
    monkeypatch.setattr(reading_module, "READ_DEADLINE_SECONDS", 0.3)

    async def scenario() -> None:
        reconciler = Reconciler(config, actuator, StatusBook(config.state))
        stop = asyncio.Event()
        task = asyncio.create_task(reconciler.run(stop))
        await _until(lambda: actuator.problems.get("manifests", ("",))[0] == "ManifestReadTimeout",
                     "a late read to show in readiness", timeout=10)
        assert not gate.is_set(), "the read was still hanging"
        condition = next(c for c in reconciler.health.conditions() if c.type == "ManifestsRead")
        assert condition.status == "False" and "more than" in condition.message, condition
        gate.set()
        await _until(lambda: "manifests" not in actuator.problems and reconciler.health.files, "the read to finish")
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
