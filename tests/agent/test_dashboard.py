"""The dashboard in a real browser (Debian's chromium driven by Playwright) against real agent processes: a
save shows up as Building then Ready, a broken edit shows its file:line while the old version keeps serving,
the request-rate chart moves under traffic, a remote agent's page wants the token, and `npuctl dashboard`
shows a lab; `npuctl serve` has the page too, with a chat model's TTFT and tokens/s. Screenshots go to the
test's folder (and to $NPUCTL_SCREENSHOTS when set)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import openai
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from npuctl.artifacts import BuildResult, Store
from npuctl.cli import cli
from npuctl.schema.cost import LoadCost
from npuctl.schema.preflight import Preflight
from npuctl.schema.status import BudgetUse
from tests.agent.harness import Agent, free_port, infer, manifest, tiny_model
from tests.conftest import tiny_llama_manifest
from tests.manifests import HUGE

CHROMIUM = Path("/usr/bin/chromium")
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
"""What a browser's navigation accepts: `/` is the dashboard for it (and Ollama's answer for programs)."""
# Without the background-networking flags chromium keeps calling home, which this closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not os.environ.get("CI"):  # CI installs both: there a missing one fails
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import BrowserContext, Page, sync_playwright  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh chromium profile per test."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860})
        yield context
        context.close()


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.extra = Path(os.environ["NPUCTL_SCREENSHOTS"]) if os.environ.get("NPUCTL_SCREENSHOTS") else None

    def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000, "a screenshot of a rendered page"
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)
        return path


def watch_console(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def card(page: Page, name: str) -> Any:
    return page.locator(f'article.deployment[data-name="{name}"]')


def wait_phase(page: Page, name: str, phase: str, timeout: float = 120) -> None:
    card(page, name).locator(f".phase.phase-{phase}").wait_for(timeout=timeout * 1000)


def layered_model(path: Path, width: int = 512, layers: int = 8) -> None:
    """relu(... relu(x @ W0) ... @ W7) with x: float32[1, 512]: a few seconds to quantize, compile and verify."""
    rng = np.random.default_rng(7)
    nodes, weights, previous = [], [], "x"
    for i in range(layers):
        weights.append(numpy_helper.from_array(rng.uniform(-0.1, 0.1, (width, width)).astype(np.float32), f"W{i}"))
        output = "y" if i == layers - 1 else f"h{i}"
        nodes += [helper.make_node("MatMul", [previous, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [output])]
        previous = output
    graph = helper.make_graph(nodes, "layered", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_dashboard_follows_saves_broken_edits_and_traffic(agent: Agent, browser: BrowserContext,
                                                          tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    (agent.manifests / "tiny.yaml").write_text(manifest())
    # And an NPU chat build this host cannot hold (a Llama-3.1-70B-shaped config.json, no weights), checked below.
    checkpoint = agent.manifests / "huge"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(HUGE))
    (checkpoint / "model.safetensors").write_bytes(b"")
    (agent.manifests / "huge.yaml").write_text(json.dumps({
        "apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "huge"},
        "spec": {"model": {"source": "file:huge", "task": "text-generation"}, "precision": "w8a16",
                 "targets": ["x-elite"], "runtime": {"device": "npu", "allowSimulator": True, "fallback": "none"}}}))
    agent.start()
    agent.wait_phase("tiny", "Ready")
    page = browser.new_page()
    errors = watch_console(page)
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/dashboard/v1/data" in request.url else None)
    page.goto(f"{agent.url}/")
    wait_phase(page, "tiny", "Ready", timeout=30)
    assert "x-elite" in card(page, "tiny").locator("table.artifacts").inner_text()
    # What the loaded model costs: in its status, `npuctl describe` and its card.
    cost = (agent.status("tiny") or {})["cost"]
    assert cost["hostBytes"] > 0 and cost["artifactBytes"] > 0 and cost["sessions"] == 1 and cost["loadSeconds"] > 0
    described = CliRunner().invoke(cli, ["describe", "tiny", "--agent", agent.url])
    assert described.exit_code == 0 and f"cost: {LoadCost.model_validate(cost).summary()}" in described.output
    assert LoadCost.model_validate(cost).summary() in card(page, "tiny").locator(".cost").inner_text()
    # The budget's use, as `npuctl get` says it: the loaded model holds part of it.
    use = BudgetUse.model_validate(httpx.get(f"{agent.url}/agent/v1/deployments", timeout=10).json()["budget"])
    assert use.loaded == ["tiny"] and use.memory_used > 0
    page.wait_for_function("line => document.querySelector('section.agent .budget')?.textContent === line",
                           arg=use.line(), timeout=10_000)
    # What the user unfolds stays unfolded across the redraws.
    card(page, "tiny").locator("details summary").click()
    drawn = page.inner_text("#updated")
    page.wait_for_function(f"() => document.getElementById('updated').textContent !== {drawn!r}", timeout=10_000)
    assert card(page, "tiny").locator("table.conditions").is_visible()

    # A new manifest goes Building -> Ready. Its model is built by no other test, and big enough that its build
    # (about 5 s here) outlasts the page's 2 s poll: the page shows the phase it polled, as a person would see it.
    layered_model(agent.manifests / "fresh.onnx")
    (agent.manifests / "fresh.yaml").write_text(
        manifest("fresh").replace("file:tiny.onnx", "file:fresh.onnx").replace("threshold: 0.5", "threshold: 10"))
    wait_phase(page, "fresh", "Building", timeout=60)
    assert card(page, "fresh").locator(".progress .seg.running").count() == 1, "a build in progress shows its steps"
    shots.take(page, "building")
    wait_phase(page, "fresh", "Ready")
    accuracy = card(page, "fresh").locator("table.artifacts").inner_text()
    assert "max_abs_error" in accuracy and "vs fp32" in page.inner_text("body")

    # The NPU chat build this host cannot hold: refused at its pre-flight, the card shows the estimate and what
    # the host lacks, the figures `npuctl describe` prints.
    refused = card(page, "huge").locator(".preflight.refused")
    refused.wait_for(timeout=60_000)
    preflight = Preflight.model_validate((agent.status("huge") or {})["preflight"])
    assert preflight.summary() in refused.inner_text()
    assert f"refused: the build needs {preflight.shortfall()}" in refused.inner_text()
    assert "GiB of RAM at its peak and this host has" in refused.inner_text()
    described = CliRunner().invoke(cli, ["describe", "huge", "--agent", agent.url])
    assert described.exit_code == 0 and preflight.summary() in described.output

    # A broken edit: the error with its line, and the old version still serving.
    broken = manifest().replace("precision: w8a16", "precision: int3")
    line = broken.splitlines().index("  precision: int3") + 1
    (agent.manifests / "tiny.yaml").write_text(broken)
    banner = card(page, "tiny").locator(".banner.invalid")
    banner.wait_for(timeout=60_000)
    assert f"tiny.yaml:{line}:" in banner.inner_text() and "int3" in banner.inner_text()
    assert "still serving" in banner.inner_text()
    wait_phase(page, "tiny", "Degraded", timeout=30)
    with agent.client() as client:
        assert infer(client, "tiny", [0.5] * 8).status_code == 200, "the old version does serve"
    shots.take(page, "broken-edit")

    # Traffic moves the request-rate chart.
    chart = card(page, "tiny").locator('svg[data-metric="requests"]')
    stop = threading.Event()
    sent: list[int] = []

    def send() -> None:
        with agent.client() as client:
            deadline = time.monotonic() + 90
            while not stop.is_set() and time.monotonic() < deadline:
                sent.append(infer(client, "tiny", [0.25] * 8).status_code)
                time.sleep(0.005)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        page.wait_for_function(
            "() => { const c = document.querySelector('article[data-name=\"tiny\"] svg[data-metric=\"requests\"]');"
            " return c && Number(c.dataset.last) > 1 && c.querySelector('polyline'); }", timeout=60_000)
        moved_at = int(chart.get_attribute("data-samples") or 0)
        # Two more samples under load, for a screenshot that shows a line rather than a step.
        page.wait_for_function(f"() => Number(document.querySelector('article[data-name=\"tiny\"] "
                               f"svg[data-metric=\"requests\"]').dataset.samples) >= {moved_at + 2}", timeout=30_000)
        assert float(chart.get_attribute("data-last") or 0) > 1
        shots.take(page, "dashboard")
    finally:
        stop.set()
        sender.join()
    assert sent and set(sent) == {200}
    assert "?" not in polls[0] and all("?seconds=" in url for url in polls[1:]), "later polls fetch only what is new"
    assert errors == [], errors


def test_a_remote_agents_page_needs_the_token_and_the_html_never_holds_it(
        tmp_path: Path, agent_cache: Path, browser: BrowserContext) -> None:
    agent = Agent(tmp_path, agent_cache, remote=True)
    tiny_model(agent.manifests / "tiny.onnx")
    (agent.manifests / "tiny.yaml").write_text(manifest())
    agent.launch()
    try:
        agent.wait_live()
        token = agent.token
        page_answer = httpx.get(f"{agent.url}/", headers=BROWSER, timeout=10)
        assert page_answer.status_code == 401 and "<form" in page_answer.text
        assert httpx.get(f"{agent.url}/", timeout=10).text == "Ollama is running", "programs probing / still find it"
        assert httpx.get(f"{agent.url}/dashboard/v1/data", timeout=10).status_code == 401
        assert token not in page_answer.text

        page = browser.new_page()
        errors = watch_console(page)
        page.goto(f"{agent.url}/")
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        assert page.locator("#failed").is_visible()
        page.fill("#token", token)
        page.click("button[type=submit]")
        wait_phase(page, "tiny", "Ready")
        assert token not in page.content()
        assert page.evaluate("document.cookie") == "", "the session cookie is HttpOnly: no script reads it"
        [cookie] = browser.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]
        Shots(tmp_path / "screenshots").take(page, "remote")
        # The only errors are the two 401 answers the browser logs for the login page.
        assert all("401" in e for e in errors) and len(errors) <= 2, errors
    finally:
        agent.stop()


def test_the_fleet_dashboard_shows_every_agent_with_the_labs_phase_counts(
        tmp_path: Path, agent_cache: Path, browser: BrowserContext) -> None:
    agents = [Agent(tmp_path / name, agent_cache) for name in ("a", "b")]
    dashboard: subprocess.Popen[bytes] | None = None
    try:
        for agent in agents:
            tiny_model(agent.manifests / "tiny.onnx")
            (agent.manifests / "tiny.yaml").write_text(manifest())
            agent.launch()
        for agent in agents:
            agent.wait_live()
            agent.wait_phase("tiny", "Ready")
        nobody = f"http://127.0.0.1:{free_port()}"
        listing = tmp_path / "lab-agents.txt"
        listing.write_text("".join(f"{a.url}\n" for a in agents) + f"# a PC that is off\n{nobody}\n")
        port = free_port()
        with (tmp_path / "dashboard.log").open("ab") as log:
            dashboard = subprocess.Popen([sys.executable, "-m", "npuctl", "dashboard", "--agents", str(listing),
                                          "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        agents[0].wait_for(lambda: httpx.get(url, headers=BROWSER, timeout=2).status_code == 200, "the fleet dashboard",
                           timeout=60)
        page = browser.new_page()
        errors = watch_console(page)
        page.goto(url)
        page.locator('#phases [data-phase="Ready"]').wait_for(timeout=30_000)
        assert page.inner_text('#phases [data-phase="Ready"]') == "2 Ready"
        rows = page.locator("#table tbody tr")
        assert rows.count() == 3
        for agent in agents:
            assert "Ready" in page.inner_text(f'#table tr[data-agent="{agent.url}"][data-name="tiny"]')
            card(page, "tiny").and_(page.locator(f'[data-agent="{agent.url}"]')).wait_for()
        assert "Unreachable" in page.inner_text(f'#table tr[data-agent="{nobody}"]')
        Shots(tmp_path / "screenshots").take(page, "fleet")
        lost = httpx.get(f"{url}nope", timeout=10)
        assert lost.status_code == 404 and "error" in lost.json()
        assert errors == [], errors
        refused = subprocess.run([sys.executable, "-m", "npuctl", "dashboard", "--agents", str(listing),
                                  "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "loopback" in refused.stderr
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(15)
        for agent in agents:
            agent.stop()


def test_npuctl_serve_shows_its_models_and_a_chat_models_ttft_and_tokens_per_second(
        tmp_path: Path, browser: BrowserContext, tiny_llama_source: Path, tiny_llama_store: Store,
        tiny_llama_build: BuildResult) -> None:
    loaded = tiny_llama_manifest(tmp_path, tiny_llama_source, name="chat")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "npuctl", "serve", "-f", str(loaded.file), "--port", str(port),
                                   "--cache", str(tiny_llama_store.root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"{url}/v2/health/ready"):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        page = browser.new_page()
        errors = watch_console(page)
        page.goto(f"{url}/")
        wait_phase(page, "chat", "Ready", timeout=30)
        assert "cpu" in card(page, "chat").locator(".where").inner_text()
        assert "KV cache" in card(page, "chat").locator(".cost").inner_text(), "a chat model's cost has its KV cache"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        moved = ("() => ['ttft', 'tokens'].every(m => Number(document.querySelector("
                 "`article[data-name=\"chat\"] svg[data-metric=\"${m}\"]`)?.dataset.last) > 0)")
        deadline = time.monotonic() + 60
        while not page.evaluate(moved):
            assert time.monotonic() < deadline, "the TTFT and tokens/s charts never moved"
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hello"}],
                                           max_tokens=16, extra_body={"ignore_eos": True})
            time.sleep(0.2)
        Shots(tmp_path / "screenshots").take(page, "serve-chat")
        assert errors == [], errors
    finally:
        server.terminate()
        server.wait(15)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
