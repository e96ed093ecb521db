"""The status book: condition transition times move only on flips, and the book survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from npuctl.agent.status import ConditionType, DeploymentStatus, StatusBook
from npuctl.schema.status import Reason, StepProgress


def test_condition_transition_time_moves_only_on_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    status = DeploymentStatus(name="tiny")
    times = iter(["t1", "t2"])
    monkeypatch.setattr("npuctl.schema.status.now", lambda: next(times))
    assert status.set_condition(ConditionType.LOADED, False, Reason.LOADING)
    assert status.set_condition(ConditionType.LOADED, False, Reason.LOAD_FAILED, "boom")
    assert (loaded := status.condition(ConditionType.LOADED)) and loaded.last_transition_time == "t1"
    assert not status.set_condition(ConditionType.LOADED, False, Reason.LOAD_FAILED, "boom")
    status.set_condition(ConditionType.LOADED, True, Reason.SESSIONS_OPEN)
    assert (loaded := status.condition(ConditionType.LOADED)) and loaded.last_transition_time == "t2"


def test_status_book_survives_a_restart(tmp_path: Path) -> None:
    book = StatusBook(tmp_path)
    book.get("tiny").set_condition(ConditionType.VALID, True, Reason.VALID)
    book.record("tiny", "Serving", "serving")
    book.save()
    assert not list(tmp_path.glob("*.tmp"))
    again = StatusBook(tmp_path)
    again.load()
    assert again.deployments["tiny"].is_true(ConditionType.VALID)
    assert [e.reason for e in again.events] == ["Serving"]


def test_a_build_step_running_when_the_agent_stopped_is_not_shown_as_running_after_a_restart(tmp_path: Path) -> None:
    book = StatusBook(tmp_path)
    book.get("chat").progress = StepProgress(step="llm-quantize", done=3, total=8, unit="calibration samples",
                                             time="2026-12-06T21:00:00Z")
    book.save()
    again = StatusBook(tmp_path)
    again.load()
    assert again.deployments["chat"].progress is None
