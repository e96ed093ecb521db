"""`npuctl bench` against a real agent process serving MiniLM (embeddings) and the tiny Llama (chat) on the CPU:
the JSON's fields are there, positive and consistent with each other and with what the server reports, and the
result is kept in the deployment's status, where `npuctl get`, `get --agents`, the agent's dashboard and the lab's
(in chromium) show it. Never timing thresholds."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from npuctl.cli import cli
from npuctl.cli.benching import WORD
from npuctl.schema.bench import BenchResult
from tests.agent.harness import Agent, free_port
from tests.conftest import MINILM_SOURCE

MINILM = f"""\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: minilm}}
spec:
  model: {{source: "{MINILM_SOURCE}", task: embeddings}}
  precision: fp32
  runtime: {{device: cpu}}
  serve: {{queueLimit: 8}}
"""
DECODE = 1024
"""Decode tokens of the chat bench: the tiny Llama makes thousands a second, so fewer would drown in the jitter."""
CHAT = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: chat}}
spec:
  model: {{source: "file:{source}", task: text-generation, format: transformers}}
  precision: fp32
  runtime: {{device: cpu, power: efficient}}
  serve: {{maxBatch: 1}}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_llama_source: Path) -> Iterator[Agent]:
    """One agent for the module, serving both models."""
    pytest.importorskip("onnxruntime_genai")
    root = tmp_path_factory.mktemp("bench-agent")
    agent = Agent(root, root / "cache")
    (agent.manifests / "minilm.yaml").write_text(MINILM, encoding="utf-8")
    (agent.manifests / "chat.yaml").write_text(CHAT.format(source=tiny_llama_source), encoding="utf-8")
    agent.start()
    try:
        agent.wait_phase("minilm", "Ready", timeout=300)
        agent.wait_phase("chat", "Ready", timeout=300)
        yield agent
    finally:
        agent.stop()


def npuctl(agent: Agent, *args: str, token: bool = True) -> Any:
    env = {"NPUCTL_AGENT": agent.url, "NPUCTL_TOKEN": agent.token if token else "", "COLUMNS": "240"}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_bench_of_an_embedder_measures_each_client_level_and_keeps_the_result_in_status(served: Agent) -> None:
    ran = npuctl(served, "bench", "minilm", "-o", "json", "--rounds", "2", "--requests", "6",
                 "--clients", "1", "--clients", "4", "--clients", "64")
    result = json.loads(ran.stdout)
    assert result["model"] == "minilm" and result["task"] == "embeddings" and result["rounds"] == 2
    levels = result["requests"]["levels"]
    # 64 clients is more than the model's queueLimit (8): the bench's load stays within its own queue.
    assert [level["clients"] for level in levels] == [1, 4, 8]
    assert result["maxInFlight"] == 8
    assert [level["requests"] for level in levels] == [6, 6, 8]
    for level in levels:
        assert level["refused"] == 0
        assert level["requestsPerSecond"]["median"] > 0 and level["requestsPerSecond"]["spread"] >= 0
        assert 0 < level["latencyP50Ms"]["median"] <= level["latencyP95Ms"]["median"]
    process = result["process"]
    assert process["unit"] == "request" and process["units"] == 2 * (6 + 6 + 8)
    assert process["cpuSeconds"] > 0 and process["peakRssBytes"] > 0
    assert math.isclose(process["cpuSecondsPerUnit"], process["cpuSeconds"] / process["units"])
    assert result["where"] == "cpu" and result["provider"] == "CPUExecutionProvider"
    # No battery on this host: the agent's default for an unknown power source (burst) is in force.
    assert result["power"]["policy"] == "burst" and result["power"]["source"] == "unknown"
    assert result["host"]["versions"]["onnxruntime"] and result["host"]["npu"] in ("simulator", "none", "npu")

    kept = served.status("minilm")
    assert kept is not None and kept["lastBench"] == result
    assert any(e["reason"] == "Benched" for e in served.events("minilm"))
    table = npuctl(served, "get").stdout
    row = next((line for line in table.splitlines() if line.strip().startswith("minilm")), table)
    best = max(levels, key=lambda level: level["requestsPerSecond"]["median"])
    assert f"{levels[0]['latencyP50Ms']['median']:.1f} ms p50, {best['requestsPerSecond']['median']:.1f} req/s" in row


def test_bench_of_a_chat_model_reports_prefill_per_prompt_length_and_decode(served: Agent) -> None:
    ran = npuctl(served, "bench", "chat", "-o", "json", "--rounds", "1", "--decode-tokens", str(DECODE))
    result = json.loads(ran.stdout)
    chat = result["chat"]
    prompts = chat["prompts"]
    tokens = [p["promptTokens"] for p in prompts]
    assert tokens == sorted(set(tokens)) and len(tokens) >= 2
    for prompt in prompts:
        # One round: the median is that round's figure, so the two agree exactly.
        assert math.isclose(prompt["prefillTokensPerSecond"]["median"] * prompt["timeToFirstTokenMs"]["median"] / 1000,
                            prompt["promptTokens"])
    # Aimed at ~32, ~512 and ~2,048 tokens; each counted as the server counts the same prompt sent whole.
    assert abs(tokens[0] - 32) <= 8 and abs(tokens[1] - 512) <= 16
    for prompt in prompts:
        assert prompt["promptTokens"] == _prompt_tokens(served, WORD * prompt["words"])
    assert chat["decodeTokens"] == DECODE - 1
    assert chat["decodeTokensPerSecond"]["median"] > 0
    assert 0 < chat["interTokenP50Ms"]["median"] <= chat["interTokenP95Ms"]["median"]
    # Each round generated one token per prefill, one for the decode's reference and DECODE.
    assert result["process"]["unit"] == "token" and result["process"]["units"] >= len(prompts) + 1 + DECODE
    assert result["maxInFlight"] == 1
    power = result["power"]
    assert power["policy"] == "efficient" and power["source"] is None
    assert power["settings"] == {"intra_op_num_threads": "1"}  # a quarter of this host's 2 cores, at least one
    assert any(line.startswith("cpu spinning") for line in power["notApplied"])


def test_a_bench_result_is_kept_only_with_the_token_and_in_the_right_shape(served: Agent) -> None:
    url = f"{served.url}/agent/v1/deployments/minilm/bench"
    assert httpx.put(url, content=b"{}", timeout=10).status_code == 401
    wrong = httpx.put(url, content=b'{"model": 3}', headers={"Authorization": f"Bearer {served.token}"}, timeout=10)
    assert wrong.status_code == 422 and "bench result" in wrong.json()["error"]["message"]
    missing = httpx.put(f"{served.url}/agent/v1/deployments/nope/bench", content=b"{}",
                        headers={"Authorization": f"Bearer {served.token}"}, timeout=10)
    assert missing.status_code == 404


def _prompt_tokens(agent: Agent, content: str) -> int:
    body = {"model": "chat", "messages": [{"role": "user", "content": content}], "max_tokens": 1}
    answer = httpx.post(f"{agent.url}/v1/chat/completions", json=body, timeout=60).json()
    return int(answer["usage"]["prompt_tokens"])


def test_the_last_bench_shows_on_the_dashboard_and_on_the_labs(served: Agent, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.agent.test_dashboard import BROWSER, CHROMIUM, CHROMIUM_ARGS, card, watch_console

    npuctl(served, "bench", "minilm", "--rounds", "1", "--requests", "2", "--clients", "1")
    headline = BenchResult.model_validate(served.status("minilm")["lastBench"]).headline()
    listing = tmp_path / "lab-agents.txt"
    listing.write_text(f"{served.url}\n")
    fleet_table = npuctl(served, "get", "--agents", str(listing)).stdout
    assert headline in next(line for line in fleet_table.splitlines() if " minilm " in line)

    port = free_port()
    with (tmp_path / "dashboard.log").open("ab") as log:
        lab = subprocess.Popen([sys.executable, "-m", "npuctl", "dashboard", "--agents", str(listing),
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        lab_url = f"http://127.0.0.1:{port}/"
        served.wait_for(lambda: httpx.get(lab_url, headers=BROWSER, timeout=2).status_code == 200,
                        "the lab's dashboard", timeout=60)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            errors = watch_console(page)
            for url in (f"{served.url}/", lab_url):
                page.goto(url)
                row = page.locator(f'#table tr[data-agent="{served.url}"][data-name="minilm"] td.bench')
                row.wait_for(timeout=30_000)
                assert row.inner_text() == headline
                line = card(page, "minilm").locator("p.bench").inner_text()
                assert headline in line and "power burst (agent default on unknown)" in line
            page.screenshot(path=str(tmp_path / "bench-on-the-lab-dashboard.png"), full_page=True)
            browser.close()
        assert errors == [], errors
    finally:
        lab.terminate()
        lab.wait(15)


def test_bench_of_a_manifest_runs_on_a_one_shot_server_and_reads_its_process(served: Agent) -> None:
    ran = npuctl(served, "bench", "-f", str(served.manifests / "minilm.yaml"), "--cache", str(served.cache),
                 "--rounds", "1", "--requests", "3", "--clients", "1", "-o", "json")
    result = json.loads(ran.stdout)
    assert [level["requests"] for level in result["requests"]["levels"]] == [3]
    assert result["where"] == "cpu" and result["provider"] == "CPUExecutionProvider"
    assert result["power"]["policy"] == "burst" and result["power"]["settings"]["intra_op_num_threads"]
    assert result["process"]["units"] == 3 and result["process"]["cpuSeconds"] > 0
    assert result["process"]["peakRssBytes"] > 0
