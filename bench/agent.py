"""Agent benchmarks: save-to-serving time for an artifact already in the store, the cost of a no-op
reconcile pass over 200 manifests, and the agent's idle memory.

    python bench/agent.py [--json] [--model minilm|tiny]

Plain Python against the real agent (a subprocess, as users run it) on 127.0.0.1; nothing is timed
inside the test suite."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.agent.harness import Agent, infer, manifest, tiny_model  # noqa: E402

MINILM = (REPO / "manifests" / "minilm.yaml").read_text()


def save_to_serving(root: Path, model: str) -> tuple[float, float, float]:
    """(first build seconds, save-to-serving seconds with the store warm, idle RSS MiB)."""
    agent = Agent(root / "agent", root / "cache")
    tiny_model(agent.manifests / "tiny.onnx")
    text, name = (MINILM, "minilm") if model == "minilm" else (manifest(), "tiny")
    agent.start()
    try:
        started = time.perf_counter()
        (agent.manifests / f"{name}.yaml").write_text(text)
        agent.wait_phase(name, "Ready", timeout=900)
        first = time.perf_counter() - started
        (agent.manifests / f"{name}.yaml").unlink()
        agent.wait_for(lambda: agent.status(name) is None, "unload")
        with agent.client() as client:
            started = time.perf_counter()
            # As `npuctl apply` sends it: applied at once (a hand-saved file first settles for settleSeconds).
            client.put(f"/agent/v1/manifests/{name}.yaml", content=text.encode()).raise_for_status()
            agent.wait_for(lambda: _answers(client, model), "serving again", timeout=300)
            warm = time.perf_counter() - started
        time.sleep(3)  # idle
        assert agent.process is not None
        rss = psutil.Process(agent.process.pid).memory_info().rss / 2**20
    finally:
        agent.stop()
    return first, warm, rss


def _answers(client: httpx.Client, model: str) -> bool:
    if model == "tiny":
        return infer(client, "tiny", [0.1] * 8).status_code == 200
    body = {"model": "all-minilm-l6-v2", "input": "hello"}
    return client.post("/v1/embeddings", json=body).status_code == 200


def noop_reconcile(root: Path, count: int = 200, passes: int = 20) -> float:
    """Median milliseconds of a reconcile pass when all `count` deployments already serve."""
    from npuctl.agent.config import AgentConfig
    from npuctl.agent.main import make_actuator, make_reconciler
    from npuctl.runtime.devices import detect_host
    from npuctl.serve.registry import ModelRegistry

    folder = root / "many"
    folder.mkdir()
    tiny_model(folder / "tiny.onnx")
    for i in range(count):
        (folder / f"tiny-{i}.yaml").write_text(manifest(name=f"tiny-{i}"))
    config = AgentConfig(manifests=[folder], state=root / "state-many", cache=root / "cache")

    async def measure() -> float:
        reconciler = make_reconciler(config, make_actuator(config, ModelRegistry(), detect_host()))
        reconciler._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 600

        def serving() -> list[str]:
            return [name for name, record in reconciler.records.items() if record.running]

        while len(serving()) < count:
            reconciler.reconcile_once()
            await asyncio.sleep(0.05)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(serving())} of {count} serving")
        timings = []
        for _ in range(passes):
            started = time.perf_counter()
            reconciler.reconcile_once()
            timings.append((time.perf_counter() - started) * 1000)
        assert not reconciler.busy, "a converged pass must start no work"
        for name in serving():
            reconciler.actuator.unload(name)
        return statistics.median(timings)

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first, warm, rss = save_to_serving(root, args.model)
        noop = noop_reconcile(root)
    figures = {"model": args.model, "first_build_to_serving_s": round(first, 2), "save_to_serving_cached_s": round(warm, 2),
               "noop_reconcile_200_ms": round(noop, 1), "idle_rss_mib": round(rss, 1)}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
