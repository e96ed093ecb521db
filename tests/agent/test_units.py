"""The agent's parts that decide: change classification, keep-last-good, selectors, status, config."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from npuctl.agent.auth import ensure_token, token_matches
from npuctl.agent.config import AgentConfig
from npuctl.agent.dashboard.views import agent_view
from npuctl.agent.desired import Desired, DesiredState, Keys
from npuctl.agent.main import ConfigError, load_config
from npuctl.agent.plan import plan
from npuctl.agent.reconcile import Reconciler
from npuctl.agent.selection import selects
from npuctl.agent.state_view import AgentState
from npuctl.agent.status import ConditionType, DeploymentStatus, StatusBook
from npuctl.agent.watcher import is_manifest_path
from npuctl.artifacts import BuildError, StepEvent
from npuctl.artifacts.progress import Progress
from npuctl.artifacts.result import StepState
from npuctl.runtime.devices import detect_host
from npuctl.schema import load_text
from npuctl.schema.models import Selector
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.timeline import Timeline
from tests.agent.harness import manifest

REPO = Path(__file__).resolve().parents[2]


def loaded(text: str, file: str = "/m/tiny.yaml"):
    (one,) = load_text(text, file).deployments
    return one


def test_keys_sort_changes_into_build_reload_and_serve_only() -> None:
    base = Keys.of(loaded(manifest()))
    serve_only = Keys.of(loaded(manifest(queue_limit=3)))
    assert (serve_only.build, serve_only.load) == (base.build, base.load) and serve_only.serve != base.serve
    runtime = Keys.of(loaded(manifest() + "  runtime:\n    fallback: none\n"))
    assert runtime.build == base.build and runtime.load != base.load
    precision = Keys.of(loaded(manifest(precision="w8a8")))
    assert precision.build != base.build
    elsewhere = Keys.of(loaded(manifest(), "/other/tiny.yaml"))
    assert elsewhere.build != base.build, "file: sources resolve against the manifest's folder"


def test_plan_names_the_effect_and_fields() -> None:
    current = {"tiny": Desired(loaded(manifest()))}
    (same,) = plan([loaded(manifest())], ["tiny"], current)
    assert same.action == "unchanged"
    (change,) = plan([loaded(manifest(precision="fp16"))], ["tiny"], current)
    assert (change.action, change.effect) == ("update", "build")
    assert change.fields == [{"path": "spec.precision", "old": "w8a16", "new": "fp16"}]
    (serve,) = plan([loaded(manifest(queue_limit=5))], ["tiny"], current)
    assert serve.effect == "reconfigure"
    created, deleted = plan([loaded(manifest(name="new"))], ["tiny"], current)
    assert (created.action, deleted.action, deleted.effect) == ("create", "delete", "unload")


def test_an_invalid_edit_keeps_the_last_good_version(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(manifest())
    state = DesiredState([tmp_path])
    first = state.refresh()["tiny"]
    assert first.valid
    (tmp_path / "tiny.yaml").write_text(manifest(precision="int3"))
    kept = state.refresh()["tiny"]
    assert not kept.valid and kept.deployment.deployment.spec.precision == "w8a16"
    assert kept.errors[0].line == 9
    (tmp_path / "tiny.yaml").unlink()
    assert state.refresh() == {}


def test_a_file_that_was_never_valid_declares_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [")
    state = DesiredState([tmp_path, tmp_path / "missing"])
    assert state.refresh() == {} and state.errors


def test_selectors_on_labels_and_facts() -> None:
    facts = {"soc": "x-elite", "socModel": 60, "memoryGiB": 16.0, "os": "windows"}
    ok = Selector.model_validate({"matchLabels": {"ring": "pilot"}, "matchExpressions": [
        {"key": "soc", "operator": "In", "values": ["x-elite", "x2-elite"]},
        {"key": "memoryGiB", "operator": "Gt", "values": ["15"]},
        {"key": "labels.site", "operator": "DoesNotExist"}]})
    assert selects(ok, {"ring": "pilot"}, facts) == (True, "")
    chosen, why = selects(ok, {"ring": "canary"}, facts)
    assert not chosen and "ring=pilot" in why
    x2_only = Selector.model_validate({"matchExpressions": [{"key": "soc", "operator": "In", "values": ["x2-elite"]}]})
    chosen, why = selects(x2_only, {}, facts)
    assert not chosen and "soc=x-elite" in why


def test_condition_transition_time_moves_only_on_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    status = DeploymentStatus(name="tiny")
    times = iter(["t1", "t2"])
    monkeypatch.setattr("npuctl.schema.status.now", lambda: next(times))
    assert status.set_condition(ConditionType.LOADED, False, "Loading")
    assert status.set_condition(ConditionType.LOADED, False, "LoadFailed", "boom")
    assert status.condition(ConditionType.LOADED).last_transition_time == "t1"
    assert not status.set_condition(ConditionType.LOADED, False, "LoadFailed", "boom")
    status.set_condition(ConditionType.LOADED, True, "SessionsOpen")
    assert status.condition(ConditionType.LOADED).last_transition_time == "t2"


def test_status_book_survives_a_restart(tmp_path: Path) -> None:
    book = StatusBook(tmp_path)
    book.get("tiny").set_condition(ConditionType.VALID, True, "Valid")
    book.record("tiny", "Serving", "serving")
    book.save()
    assert not list(tmp_path.glob("*.tmp"))
    again = StatusBook(tmp_path)
    again.load()
    assert again.deployments["tiny"].is_true(ConditionType.VALID)
    assert [e.reason for e in again.events] == ["Serving"]


def test_token_is_owner_only_and_compared_exactly(tmp_path: Path) -> None:
    token = ensure_token(tmp_path / "state")
    assert ensure_token(tmp_path / "state") == token
    assert (tmp_path / "state" / "token").stat().st_mode & 0o077 == 0
    assert token_matches(f"Bearer {token}", token)
    assert not token_matches(f"Bearer {token}x", token) and not token_matches(None, token)
    assert not token_matches(token, token)


def test_editor_files_are_not_manifests() -> None:
    assert is_manifest_path("/m/tiny.yaml") and is_manifest_path("x.yml")
    for name in (".tiny.yaml.swp", "tiny.yaml~", ".#tiny.yaml", "tiny.yaml.tmp", "#tiny.yaml#", "notes.txt"):
        assert not is_manifest_path(name), name


def test_example_agent_config_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    config = load_config(REPO / "agent" / "agent.example.yaml")
    assert config.listen == "127.0.0.1:8765" and config.loopback and config.labels == {"ring": "pilot"}
    (tmp_path / "agent.yaml").write_text("manifests: [m]\nstate: s\nlisten: 0.0.0.0:9000\n")
    config = load_config(tmp_path / "agent.yaml")
    assert config.manifests == [tmp_path / "m"] and config.state == tmp_path / "s" and not config.loopback
    (tmp_path / "bad.yaml").write_text("listen: nowhere\n")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(tmp_path / "bad.yaml")


class _ReportingActuator:
    """A build that reports how far its step has got, then waits for the test to let it fail."""

    def __init__(self) -> None:
        self.reported = threading.Event()
        self.release = threading.Event()

    def build(self, loaded: Any, progress: Any, stop: Any) -> Any:
        event = StepEvent("llm-quantize", StepState.RUNNING, "k", seconds=35.04, message="calibrating",
                          progress=Progress(12, 64, "calibration samples"))
        progress(event)
        self.reported.set()
        self.release.wait(60)
        raise BuildError("llm-quantize", "stopped by the test")

    def selects(self, deployment: Any) -> tuple[bool, str]:
        return True, ""

    def unavailable(self, deployment: Any, reason: str, message: str) -> None:
        pass

    def unload(self, name: str) -> None:
        pass

    def not_ready(self, subject: str, problem: tuple[str, str] | None) -> None:
        pass


def test_status_and_the_dashboard_show_how_far_the_running_step_has_got(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "tiny.yaml").write_text(manifest())
    config = AgentConfig(manifests=[manifests], state=tmp_path / "state", settle_seconds=0)
    actuator = _ReportingActuator()
    registry = ModelRegistry()
    line = "llm-quantize: 12/64 calibration samples, calibrating, 35.0 s"

    async def scenario() -> None:
        reconciler = Reconciler(config, actuator, StatusBook(config.state))  # type: ignore[arg-type]
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
        actuator.release.set()
        while reconciler.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not reconciler.busy and reconciler.book.deployments["tiny"].progress is None, "no step runs now"

    asyncio.run(scenario())
