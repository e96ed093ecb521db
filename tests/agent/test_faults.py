"""Fault injection on a real agent process: killed mid-build, mid-load and mid-swap, a full disk, a
corrupted context binary, its manifest folder deleted, the wall clock jumping. After each, the agent
converges again, rebuilds nothing it had finished, and leaves a store whose every entry verifies."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from npuctl.agent.config import AgentConfig
from npuctl.agent.reconcile import Reconciler
from npuctl.agent.records import Activity
from npuctl.agent.status import StatusBook
from npuctl.artifacts import BuildError, Store
from tests.agent.fakes import FakeActuator
from tests.agent.harness import Agent, X, free_port, infer, manifest, tiny_model


class FastAgent(Agent):
    """The harness agent with a short resync and backoff, so recoveries show within seconds."""

    def start(self) -> FastAgent:
        config = self.state.parent / "agent.yaml"
        config.write_text("resyncSeconds: 1\nbackoffSeconds: [0.5, 2]\n")
        env = {k: v for k, v in os.environ.items() if k not in ("NPUCTL_TOKEN", "NPUCTL_AGENT")}
        command = [sys.executable, "-m", "npuctl", "agent", "--config", str(config), "--manifests", str(self.manifests),
                   "--listen", f"127.0.0.1:{self.port}", "--state", str(self.state), "--cache", str(self.cache)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.wait_for(lambda: self._live(), what="the agent to answer /v2/health/live")
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final status write."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def reasons(self, name: str = "tiny") -> list[str]:
        return [e["reason"] for e in self.events(name)]

    def steps(self, state: str, name: str = "tiny", last_build: bool = False) -> list[str]:
        """Build steps that ended in `state` (Done, Cached), over all events or in the latest build only
        (events persist across restarts)."""
        events = self.events(name)
        if last_build:
            starts = [i for i, e in enumerate(events) if e["reason"] == "Building"]
            events = events[starts[-1]:] if starts else []
        return [e["message"] for e in events if e["reason"] == f"Step{state}"]


@pytest.fixture
def fast(tmp_path: Path) -> Any:
    # Each test gets its own store: what it kills mid-way must be its own build.
    running = FastAgent(tmp_path, tmp_path / "cache")
    tiny_model(running.manifests / "tiny.onnx")
    yield running
    running.stop()


def assert_store_intact(cache: Path) -> None:
    store = Store(cache)
    assert store.verify(drop=False) == [], "every stored step re-hashes to its record"
    assert store.records(), "the store holds the build"


def test_sigkill_during_build_resumes_without_redoing_finished_steps(fast: FastAgent) -> None:
    (fast.manifests / "tiny.yaml").write_text(manifest())
    fast.start()
    done = fast.wait_for(lambda: fast.steps("Done"), "a first build step to finish")
    fast.kill()
    fast.start()
    fast.wait_phase("tiny", "Ready")
    with fast.client() as client:
        assert infer(client, "tiny", X).status_code == 200
    # Status was not saved at the kill: events after the restart are the new process's.
    redone = set(fast.steps("Done", last_build=True)) & set(done)
    assert not redone, f"steps finished before the kill ran again: {redone}"
    assert set(done) <= set(fast.steps("Cached", last_build=True))
    assert_store_intact(fast.cache)


def test_sigkill_after_build_during_load_converges_from_the_store(fast: FastAgent) -> None:
    (fast.manifests / "tiny.yaml").write_text(manifest())
    fast.start()
    fast.wait_for(lambda: "Built" in fast.reasons(), "the build to finish")
    fast.kill()  # the load of a tiny model is under way or just done: either way nothing was saved
    fast.start()
    fast.wait_phase("tiny", "Ready")
    assert fast.steps("Done", last_build=True) == [], "a restart after a finished build builds nothing"
    assert_store_intact(fast.cache)


def test_sigkill_during_a_swap_serves_the_new_version_after_restart(fast: FastAgent) -> None:
    file = fast.manifests / "tiny.yaml"
    file.write_text(manifest())
    fast.start()
    before = fast.wait_phase("tiny", "Ready")
    file.write_text(manifest(precision="w8a8"))
    fast.wait_for(lambda: (s := fast.status("tiny")) and s["observedGeneration"] != before["observedGeneration"],
                  "the change to be seen")
    fast.kill()
    fast.start()
    after = fast.wait_for(lambda: (s := fast.status("tiny")) and s["phase"] == "Ready"
                          and [a["precision"] for a in s["artifacts"]] == ["w8a8"] and s, "the new version Ready")
    assert after["servingGeneration"] == after["observedGeneration"] != before["observedGeneration"]
    with fast.client() as client:
        assert infer(client, "tiny", X).status_code == 200
    assert_store_intact(fast.cache)


def test_corrupted_context_binary_is_detected_and_rebuilt(fast: FastAgent) -> None:
    (fast.manifests / "tiny.yaml").write_text(manifest())
    fast.start()
    fast.wait_phase("tiny", "Ready")
    fast.stop()
    binaries = sorted(fast.cache.glob("steps/*/*.bin"))
    assert binaries, "the build stored a context binary"
    with binaries[0].open("r+b") as f:  # same size, different bytes: only the digest can tell
        f.seek(0)
        first = f.read(16)
        f.seek(0)
        f.write(bytes(b ^ 0xFF for b in first))
    fast.start()
    fast.wait_phase("tiny", "Ready")
    rebuilt = fast.steps("Done", last_build=True)
    assert any(step.startswith("compile") for step in rebuilt), rebuilt
    assert_store_intact(fast.cache)


def test_manifest_folder_deleted_and_recreated_converges(fast: FastAgent) -> None:
    (fast.manifests / "tiny.yaml").write_text(manifest())
    fast.start()
    fast.wait_phase("tiny", "Ready")
    shutil.rmtree(fast.manifests)
    with fast.client() as client:
        fast.wait_for(lambda: infer(client, "tiny", X).status_code == 404, "the deployment to be removed")
        fast.manifests.mkdir()
        tiny_model(fast.manifests / "tiny.onnx")
        (fast.manifests / "tiny.yaml").write_text(manifest())
        fast.wait_phase("tiny", "Ready")
        assert infer(client, "tiny", X).status_code == 200


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 4 MiB tmpfs (needs root and mount, as on this project's machines); skipped elsewhere."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_a_store_write_is_a_clear_condition_and_the_store_stays_intact(
        tmp_path: Path, small_disk: Path) -> None:
    agent = FastAgent(tmp_path, small_disk / "cache")
    tiny_model(agent.manifests / "tiny.onnx")
    (agent.manifests / "tiny.yaml").write_text(manifest())
    filler = small_disk / "filler"
    with filler.open("wb") as f:  # leave ~16 KB: the first step's files don't fit
        f.write(b"\0" * (4 * 2**20 - 16 * 1024))
    try:
        agent.start()
        status = agent.wait_for(
            lambda: (s := agent.status("tiny")) and any(c["type"] == "ArtifactsReady" and c["status"] == "False"
                                                        for c in s["conditions"]) and s, "the build to fail")
        condition = next(c for c in status["conditions"] if c["type"] == "ArtifactsReady")
        assert condition["reason"] == "BuildFailed"
        assert "No space left on device" in condition["message"], condition
        store = Store(agent.cache)
        assert store.verify(drop=False) == [], "no half-written entry is in the store"
        filler.unlink()  # space again: the next retry (backoff) succeeds
        agent.wait_phase("tiny", "Ready")
        assert_store_intact(agent.cache)
    finally:
        agent.stop()


def test_backoff_ignores_wall_clock_jumps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "tiny.yaml").write_text(manifest())
    config = AgentConfig(manifests=[manifests], state=tmp_path / "state", backoff_seconds=(0.5, 0.5), settle_seconds=0)
    actuator = FakeActuator(error=OSError(28, "No space left on device"))  # as a full disk: temporary

    async def scenario() -> None:
        reconciler = Reconciler(config, actuator, StatusBook(config.state))
        reconciler.reconcile_once()
        while reconciler.busy:
            await asyncio.sleep(0.01)
        assert actuator.builds == 1
        real = time.time
        # The wall clock jumps a day ahead, then a day back: the backoff is on the loop's monotonic
        # clock, so neither makes the retry come early (or never).
        for jump in (86_400, -86_400):
            monkeypatch.setattr(time, "time", lambda jump=jump: real() + jump)
            reconciler.reconcile_once()
            assert not reconciler.busy and actuator.builds == 1, "no retry before the backoff delay"
        failure = reconciler.records["tiny"].failures[Activity.BUILDING]
        assert failure.retry_at is not None, "a full disk is temporary: retried"
        await asyncio.sleep(max(0.0, failure.retry_at - time.monotonic()) + 0.05)
        reconciler.reconcile_once()
        while reconciler.busy:
            await asyncio.sleep(0.01)
        assert actuator.builds == 2, "the retry runs once the delay has passed on the monotonic clock"

    asyncio.run(scenario())


class _Clock:
    """A monotonic clock the test moves by hand: backoffs pass without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_permanent_failures_wait_for_the_manifest_and_temporary_ones_back_off(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    file = manifests / "tiny.yaml"
    file.write_text(manifest())
    config = AgentConfig(manifests=[manifests], state=tmp_path / "state", backoff_seconds=(2, 8), settle_seconds=0)
    clock = _Clock()
    actuator = FakeActuator(error=BuildError("resolve", "file:tiny.onnx does not exist"))

    async def settle(reconciler: Reconciler) -> None:
        reconciler.reconcile_once()
        while reconciler.busy:
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        reconciler = Reconciler(config, actuator, StatusBook(config.state), clock=clock)
        await settle(reconciler)
        clock.now += 86_400  # a day of passes: a permanent failure is not retried
        await settle(reconciler)
        assert actuator.builds == 1
        file.write_text(manifest() + "\n")  # saved again: one new attempt
        await settle(reconciler)
        await settle(reconciler)
        assert actuator.builds == 2
        actuator.error = OSError(28, "No space left on device")
        file.write_text(manifest())
        await settle(reconciler)
        delays = []
        for _ in range(4):  # temporary: retried after 2, 4, 8, 8 s (doubling, capped)
            failure = reconciler.records["tiny"].failures[Activity.BUILDING]
            assert failure.retry_at is not None
            delays.append(failure.retry_at - clock.now)
            await settle(reconciler)
            assert actuator.builds == 3 + len(delays) - 1, "no retry before the delay"
            clock.now = failure.retry_at
            await settle(reconciler)
        assert delays == [2, 4, 8, 8] and actuator.builds == 7

    asyncio.run(scenario())


def test_an_agent_whose_bundle_poller_ends_stops_with_the_reason_instead_of_serving_on_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CI saw a fleet agent's poller end while the agent kept serving and reporting its source Synced: that PC would
    # never take another bundle. A part the agent cannot work without that ends now stops the agent (exit 1 from
    # the CLI), so its service manager starts it again.
    from npuctl.agent import main
    from npuctl.agent.sources import SourcePoller

    async def broken(self: SourcePoller, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("a bug in the poller")

    monkeypatch.setattr(SourcePoller, "run", broken)
    (tmp_path / "manifests").mkdir()
    config = AgentConfig(manifests=[tmp_path / "manifests"], state=tmp_path / "state", cache=tmp_path / "cache",
                         listen=f"127.0.0.1:{free_port()}")
    started: list[Reconciler] = []

    async def scenario() -> None:
        async with asyncio.timeout(60):
            await main.run_agent(config, on_start=started.append)

    with pytest.raises(main.AgentFailed) as failed:
        asyncio.run(scenario())
    assert started, "the agent had started serving"
    assert str(failed.value) == "the agent stopped: its bundle poller ended (RuntimeError: a bug in the poller)"


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, as Ctrl-C does in a POSIX terminal")
def test_ctrl_c_stops_the_agent_cleanly_with_exit_0(tmp_path: Path) -> None:
    # click turned Ctrl-C into "Aborted!" and exit 1, which a script or a service reads as a failure; `npuctl
    # serve` already exited 0.
    agent = Agent(tmp_path, tmp_path / "cache").start()
    assert agent.process is not None
    agent.process.send_signal(signal.SIGINT)
    assert agent.process.wait(30) == 0
    assert "Aborted" not in agent.log.read_text()
