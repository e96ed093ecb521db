"""The reconciler's progress: status and the dashboard show how far a running build step has got, and
nothing once no step runs."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from npuctl.agent.config import AgentConfig
from npuctl.agent.dashboard.views import agent_view
from npuctl.agent.reconcile import Reconciler
from npuctl.agent.state_view import AgentState
from npuctl.agent.status import StatusBook
from npuctl.artifacts import BuildError, BuildResult, StepEvent
from npuctl.artifacts.progress import Progress
from npuctl.artifacts.result import ProgressCallback, StepState
from npuctl.runtime.devices import detect_host
from npuctl.schema import LoadedDeployment
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.timeline import Timeline
from tests.agent.fakes import Build, FakeActuator
from tests.agent.harness import manifest


def reporting(release: threading.Event) -> Build:
    """A build that reports how far its step has got, then waits for the test to let it fail."""

    def build(loaded: LoadedDeployment, progress: ProgressCallback, stop: threading.Event) -> BuildResult:
        event = StepEvent("llm-quantize", StepState.RUNNING, "k", seconds=35.04, message="calibrating",
                          progress=Progress(12, 64, "calibration samples"))
        progress(event)
        release.wait(60)
        raise BuildError("llm-quantize", "stopped by the test")

    return build


def test_status_and_the_dashboard_show_how_far_the_running_step_has_got(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "tiny.yaml").write_text(manifest())
    config = AgentConfig(manifests=[manifests], state=tmp_path / "state", settle_seconds=0)
    release = threading.Event()
    actuator = FakeActuator(step=reporting(release))
    registry = ModelRegistry()
    line = "llm-quantize: 12/64 calibration samples, calibrating, 35.0 s"

    async def scenario() -> None:
        reconciler = Reconciler(config, actuator, StatusBook(config.state))
        reconciler.reconcile_once()
        deadline = time.monotonic() + 60
        while reconciler.book.get("tiny").progress is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        status = reconciler.book.deployments["tiny"]
        assert status.progress is not None and status.progress.line() == line
        assert {k: v for k, v in status.model_dump(mode="json")["progress"].items() if k != "time"} == {
            "step": "llm-quantize", "done": 12, "total": 64, "unit": "calibration samples",
            "message": "calibrating", "seconds": 35.0}
        [view] = agent_view("http://127.0.0.1:1", AgentState(reconciler), registry, Timeline(registry), detect_host()).deployments
        assert view.build is not None and view.build.running == line
        release.set()
        while reconciler.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not reconciler.busy and reconciler.book.deployments["tiny"].progress is None, "no step runs now"

    asyncio.run(scenario())
