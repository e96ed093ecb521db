"""Soak: concurrent clients on two models of one agent while one model's manifest is edited, broken, fixed,
deleted and recreated in a loop, and files that clash with the stable model (an alias of its name, a
duplicate metadata.name) come and go. Every answer is right for its input or a documented 404/429/503;
the stable model is never taken over; the agent's memory and threads stay flat and it leaks no file
descriptors.

Not in the default run: `NPUCTL_SOAK=1 python -m pytest tests/agent/test_soak.py -s` (60 s of load;
NPUCTL_SOAK_SECONDS to change)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import psutil
import pytest
from onnx import numpy_helper

from tests.agent.harness import Agent, infer, manifest, tiny_model

SECONDS = float(os.environ.get("NPUCTL_SOAK_SECONDS", "60"))
pytestmark = pytest.mark.skipif(not os.environ.get("NPUCTL_SOAK"), reason="soak: set NPUCTL_SOAK=1")


def expected(model: Path, x: np.ndarray) -> np.ndarray:
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    return np.maximum(0, x @ weights["W"] + weights["b"])


def test_soak_two_models_under_load_while_manifests_churn(tmp_path: Path, agent_cache: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("settleSeconds: 0.5\n")  # edits every 1.5 s: each one settles and is applied
    agent = Agent(tmp_path, agent_cache, config=config)
    tiny_model(agent.manifests / "tiny.onnx")
    stable, churned = agent.manifests / "stable.yaml", agent.manifests / "churned.yaml"
    stable.write_text(manifest("stable"))
    churned.write_text(manifest("churned"))
    agent.start()
    agent.wait_phase("stable", "Ready")
    agent.wait_phase("churned", "Ready")
    process = psutil.Process(agent.process.pid)  # type: ignore[union-attr]
    rss_start, fds_start, threads_start = process.memory_info().rss, process.num_fds(), process.num_threads()
    stop = threading.Event()
    outcomes: Counter[tuple[str, int]] = Counter()
    wrong: list[str] = []

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with agent.client() as http:
            while not stop.is_set():
                for name in ("stable", "churned"):
                    x = rng.uniform(-1, 1, (1, 8)).astype(np.float32)
                    response = infer(http, name, x.reshape(-1).tolist())
                    outcomes[(name, response.status_code)] += 1
                    if response.status_code == 200:
                        y = np.asarray(response.json()["outputs"][0]["data"], np.float32).reshape(1, 8)
                        if not np.allclose(y, expected(agent.manifests / "tiny.onnx", x), atol=1e-4):
                            wrong.append(f"{name}: {x} -> {y}")
                    elif response.status_code not in (404, 429, 503) or name == "stable" and response.status_code != 429:
                        wrong.append(f"{name}: {response.status_code} {response.text[:200]}")

    def churn() -> None:
        edits = [manifest("churned", queue_limit=16), manifest("churned").replace("w8a16", "int3"),
                 manifest("churned"), None, manifest("churned")]
        # Newcomers that want the stable model's names: they must get a condition, never its routes.
        clashes = {agent.manifests / "clash.yaml": manifest("clash") + "    aliases: [stable]\n",
                   agent.manifests / "0-dup.yaml": manifest("stable", precision="w8a8")}
        step = 0
        while not stop.is_set():
            for text in edits:
                if text is None:
                    churned.unlink(missing_ok=True)
                else:
                    churned.write_text(text)
                for file, clash in clashes.items():
                    if step % 2:
                        file.unlink(missing_ok=True)
                    else:
                        file.write_text(clash)
                step += 1
                outcomes[("edits", 0)] += 1
                stop.wait(1.5)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(3)] + [threading.Thread(target=churn)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    churned.write_text(manifest("churned"))
    for file in (agent.manifests / "clash.yaml", agent.manifests / "0-dup.yaml"):
        file.unlink(missing_ok=True)
    agent.wait_phase("churned", "Ready")
    time.sleep(2)  # the clash's removal is applied; its placeholders are gone
    rss_end, fds_end, threads_end = process.memory_info().rss, process.num_fds(), process.num_threads()
    conflicts = [e for e in agent.events("clash") if e["reason"] == "NameConflict"]
    agent.stop()
    print(f"\nsoak {SECONDS:.0f} s: {dict(sorted(outcomes.items()))}; {len(conflicts)} NameConflict events; agent RSS "
          f"{rss_start / 2**20:.0f} -> {rss_end / 2**20:.0f} MiB; fds {fds_start} -> {fds_end}; threads "
          f"{threads_start} -> {threads_end}")
    assert not wrong, wrong[:5]
    assert outcomes[("stable", 200)] > 0 and outcomes[("churned", 200)] > 0
    assert rss_end < rss_start * 1.5, "agent memory grew by half or more"
    assert fds_end <= fds_start + 8, "file descriptors leak"
    assert threads_end <= threads_start + 8, "threads leak"
