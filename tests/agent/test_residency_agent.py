"""Residency on a real agent process, for what only a process shows: an onDemand model loads on its first request
(the request waits and is answered), an idle one is evicted to make room for another, a request that cannot fit
gets 503 with Retry-After naming the budget and what holds it, and status says which is resident."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.harness import Agent, X, infer, manifest, tiny_model

ON_DEMAND = "    residency: onDemand\n"


@pytest.fixture
def budgeted(tmp_path: Path, agent_cache: Path) -> Iterator[Agent]:
    """An agent whose budget holds one tiny model (each is estimated at 64 MiB and a few KB)."""
    config = tmp_path / "agent.yaml"
    config.write_text("resyncSeconds: 1\nbackoffSeconds: [0.5, 2]\nbudget:\n  memory: 100000000\n")
    running = Agent(tmp_path, agent_cache, config=config)
    tiny_model(running.manifests / "tiny.onnx")
    yield running
    running.stop()


def condition(status: dict[str, Any], kind: str) -> tuple[str, str]:
    found = next(c for c in status["conditions"] if c["type"] == kind)
    return found["status"], found["reason"]


def loaded_models(agent: Agent) -> float:
    text = httpx.get(f"{agent.url}/metrics", timeout=10).text
    (line,) = [line for line in text.splitlines() if line.startswith("npuctl_loaded_models ")]
    return float(line.split()[1])


def test_an_on_demand_model_loads_on_its_first_request_and_evicts_the_idle_one_for_another(budgeted: Agent) -> None:
    (budgeted.manifests / "a.yaml").write_text(manifest(name="a") + ON_DEMAND)
    (budgeted.manifests / "b.yaml").write_text(manifest(name="b") + ON_DEMAND + "    priority: 1\n")
    budgeted.start()
    for name in ("a", "b"):
        standing = budgeted.wait_phase(name, "Standby")
        assert condition(standing, "Resident") == ("False", "Idle")
        assert condition(standing, "ArtifactsReady") == ("True", "Built"), "built ahead of time"
    assert loaded_models(budgeted) == 0, "nothing is loaded before it is asked for"
    assert httpx.get(f"{budgeted.url}/v2/health/ready", timeout=10).status_code == 200, "standing by is ready"
    with budgeted.client() as client:
        first = infer(client, "a", X)
        assert first.status_code == 200, first.text  # the request waited while it loaded
        a = budgeted.wait_phase("a", "Ready")
        assert condition(a, "Resident") == ("True", "SessionsOpen")
        assert any(e["reason"] == "Loaded" and "cold start" in e["message"] for e in budgeted.events("a"))
        second = infer(client, "b", X)
        assert second.status_code == 200, second.text
    a = budgeted.wait_phase("a", "Standby")
    assert condition(a, "Resident") == ("False", "Evicted"), "the idle model made room within the budget"
    assert any(e["reason"] == "Evicted" and "to make room for b" in e["message"] for e in budgeted.events("a"))
    assert condition(budgeted.wait_phase("b", "Ready"), "Resident") == ("True", "SessionsOpen")


def test_a_request_that_cannot_fit_gets_503_naming_the_budget_and_what_holds_it(budgeted: Agent) -> None:
    (budgeted.manifests / "pinned.yaml").write_text(manifest(name="pinned"))
    (budgeted.manifests / "later.yaml").write_text(manifest(name="later") + ON_DEMAND)
    budgeted.start()
    budgeted.wait_phase("pinned", "Ready")
    budgeted.wait_phase("later", "Standby")
    with budgeted.client() as client:
        refused = infer(client, "later", X)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"].isdigit()
        message = refused.json()["error"]  # OIP answers errors as {"error": "..."}
        assert "budget (memory 95 MiB" in message and "pinned (" in message and "residency always" in message
        assert infer(client, "pinned", X).status_code == 200, "what holds the budget keeps serving"
    later = budgeted.wait_for(lambda: (s := budgeted.status("later")) and condition(s, "Resident")[1] == "OverBudget"
                              and s, "later OverBudget")
    assert later["phase"] == "Standby"
    assert any(e["reason"] == "OverBudget" for e in budgeted.events("later"))
