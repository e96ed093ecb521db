"""A fleet of 12 real agents on 127.0.0.1 (half with the facts of a Snapdragon X Elite, half of an X2 Elite)
following one signed bundle, with artifacts from one published store: new versions converge everywhere without a
compile, a bundle signed with another key is refused, selectors leave half NotSelected, and an unreachable
bundle server changes nothing that serves. The tests run in order on one fleet (starting it is the cost)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from npuctl.agent import bundles
from npuctl.artifacts.published.publish import BLOBS, STEPS
from tests.agent.fleet_harness import (
    AGENTS_PER_SOC,
    POLL_SECONDS,
    SOC_ONLY_X_ELITE,
    StaticServer,
    fleet_agent,
    fleet_manifest,
    publish_artifacts,
    publish_bundle,
    ready_on,
    source_state,
    start_all,
    wait_all,
)
from tests.agent.harness import Agent, X, infer, tiny_model

pytestmark = pytest.mark.slow


@dataclass
class Fleet:
    root: Path
    model: Path
    key: bytes
    bundle_server: StaticServer
    artifact_server: StaticServer
    agents: list[Agent]
    x_elite: list[Agent]
    x2_elite: list[Agent]
    timings: dict[str, float]

    def publish(self, version: str, manifest: str, key: bytes | None = None) -> None:
        publish_bundle(self.bundle_server.root, version, {"tiny.yaml": manifest}, key or self.key)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    model = root / "share" / "tiny.onnx"
    model.parent.mkdir()
    tiny_model(model)
    published = root / "published"
    for precision in ("w8a16", "w8a8"):  # the build host publishes both versions' variants ahead of time
        manifest = root / "build-host" / precision / "tiny.yaml"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(fleet_manifest(model, precision=precision))
        publish_artifacts(manifest, root / "build-host" / "cache", published)
    key, public_key = bundles.generate_key()
    bundle_server = StaticServer(root / "bundles")
    publish_bundle(bundle_server.root, "v1", {"tiny.yaml": fleet_manifest(model)}, key)
    bundle_server.start()
    artifact_server = StaticServer(published).start()
    agents = [fleet_agent(root / f"agent-{soc}-{i}", soc=soc, bundle_url=f"{bundle_server.url}/fleet.json",
                          public_key=public_key, artifacts_url=artifact_server.url, interval=POLL_SECONDS,
                          model_roots=[root / "share"])
              for soc in ("x-elite", "x2-elite") for i in range(AGENTS_PER_SOC)]
    fleet = Fleet(root, model, key, bundle_server, artifact_server, agents, agents[:AGENTS_PER_SOC],
                  agents[AGENTS_PER_SOC:], {})
    try:
        started = time.monotonic()
        start_all(agents)
        fleet.timings["launch_to_live"] = time.monotonic() - started
        yield fleet
    finally:
        for agent in agents:
            agent.stop()
        bundle_server.stop()
        artifact_server.stop()
        print(f"\nfleet timings (s): {json.dumps(fleet.timings)}")


def test_new_bundle_versions_converge_on_every_agent_from_the_published_store(fleet: Fleet) -> None:
    fleet.timings["start_to_ready_v1"] = wait_all(fleet.agents, ready_on(precision="w8a16"), "v1 Ready")
    before = {a.url: a.status("tiny")["servingGeneration"] for a in fleet.agents}
    first_soc = {a.url: a.status("tiny")["artifacts"][0]["socModel"] for a in fleet.agents}
    assert [first_soc[a.url] for a in fleet.x_elite] == [60] * AGENTS_PER_SOC
    assert [first_soc[a.url] for a in fleet.x2_elite] == [88] * AGENTS_PER_SOC

    fleet.publish("v2", fleet_manifest(fleet.model, precision="w8a8"))
    fleet.timings["converge_v2"] = wait_all(fleet.agents, ready_on(precision="w8a8"), "v2 (w8a8) Ready")
    for agent in fleet.agents:
        status = agent.status("tiny")
        assert status["servingGeneration"] != before[agent.url]
        assert source_state(agent)["version"] == "v2"
        reasons = {(e["reason"], e["message"].split()[0]) for e in agent.events("tiny")}
        ran = {step for reason, step in reasons if reason == "StepDone"}
        assert not ran & {"compile", "verify", "quantize"}, f"{agent.url} built {ran} instead of fetching"
        assert ("StepFetched", "compile") in reasons

    # Every variant's files came from the store: both SoCs' context binaries, both versions.
    fetched = {r.path.lstrip("/") for r in fleet.artifact_server.log(f"/{BLOBS}/") if r.status == 200}
    compiles = [r for p in (fleet.artifact_server.root / STEPS).glob("*.json")
                if (r := json.loads(p.read_text()))["step"] == "compile"]
    assert sorted((r["details"]["soc_model"], r["details"]["precision"]) for r in compiles) == [
        (60, "w8a16"), (60, "w8a8"), (88, "w8a16"), (88, "w8a8")]
    for record in compiles:
        assert {f"{BLOBS}/{f['sha256']}" for f in record["files"]} <= fetched, record["details"]["soc_model"]


def test_a_bundle_signed_with_another_key_is_refused_and_the_old_one_keeps_serving(fleet: Fleet) -> None:
    serving = {a.url: a.status("tiny")["servingGeneration"] for a in fleet.agents}
    wrong_key, _ = bundles.generate_key()
    fleet.publish("v3-forged", fleet_manifest(fleet.model, precision="fp16"), key=wrong_key)
    fleet.timings["refuse_forged"] = wait_all(
        fleet.agents, lambda a: source_state(a)["state"] == "Rejected", "the forged bundle Rejected")
    for agent in fleet.agents:
        state = source_state(agent)
        assert "signature does not verify" in state["message"] and state["version"] == "v2"
        status = agent.status("tiny")
        assert status["phase"] == "Ready" and status["servingGeneration"] == serving[agent.url]
        with agent.client() as client:
            assert infer(client, "tiny", X).status_code == 200


def test_fleet_view_in_metrics_and_get_agents(fleet: Fleet) -> None:
    fleet.publish("v4", fleet_manifest(fleet.model, precision="w8a8"))  # same manifest as v2, signed right
    wait_all(fleet.agents, lambda a: source_state(a)["state"] == "Synced" and source_state(a)["version"] == "v4",
             "v4 Synced")
    metrics = httpx.get(f"{fleet.agents[0].url}/metrics", timeout=10).text
    assert 'npuctl_deployment_phase{deployment="tiny",phase="Ready"} 1.0' in metrics
    assert 'npuctl_deployment_provider{deployment="tiny",phase="Ready",provider="CPUExecutionProvider"} 1.0' in metrics
    assert 'npuctl_source_state{source="fleet",state="Synced",version="v4"} 1.0' in metrics
    assert 'soc="x-elite",soc_model="60"' in metrics

    agents_file = fleet.root / "agents.txt"
    gone = f"127.0.0.1:{fleet.bundle_server.port + 1}"  # nothing listens there
    agents_file.write_text("# the lab\n" + "\n".join(a.url for a in fleet.agents) + f"\n{gone}\n")
    done = subprocess.run([sys.executable, "-m", "npuctl", "get", "--agents", str(agents_file), "-o", "json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, "an agent that does not answer makes the exit code 1"
    reports = json.loads(done.stdout)
    assert [r["agent"] for r in reports] == [a.url for a in fleet.agents] + [f"http://{gone}"]
    assert all(r["deployments"][0]["status"]["phase"] == "Ready" for r in reports[:-1])
    assert reports[-1]["error"] and not reports[-1]["deployments"]
    table = subprocess.run([sys.executable, "-m", "npuctl", "get", "--agents", str(agents_file)],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"})
    assert table.stdout.count("Ready") == len(fleet.agents) and "Unreachable" in table.stdout


def test_an_unreachable_bundle_server_keeps_everything_serving(fleet: Fleet) -> None:
    fleet.bundle_server.stop()
    try:
        fleet.timings["report_unreachable"] = wait_all(
            fleet.agents, lambda a: source_state(a)["state"] == "Unreachable", "the source Unreachable")
        for agent in fleet.agents:
            assert agent.status("tiny")["phase"] == "Ready"
            with agent.client() as client:
                assert infer(client, "tiny", X).status_code == 200
    finally:
        fleet.bundle_server.start()


def test_a_selector_leaves_the_other_half_not_selected_with_the_reason(fleet: Fleet) -> None:
    fleet.publish("v5", fleet_manifest(fleet.model, precision="w8a8", extra=SOC_ONLY_X_ELITE))
    fleet.timings["converge_selector"] = wait_all(
        fleet.x2_elite, lambda a: a.status("tiny")["phase"] == "NotSelected", "NotSelected on the X2 Elite half")
    for agent in fleet.x2_elite:
        status = agent.status("tiny")
        selected = next(c for c in status["conditions"] if c["type"] == "Selected")
        assert selected["status"] == "False" and selected["reason"] == "SelectorMismatch"
        assert "soc In ['x-elite'] does not hold (this agent: soc=x2-elite)" in selected["message"]
        with agent.client() as client:
            assert infer(client, "tiny", X).status_code == 404
    wait_all(fleet.x_elite, lambda a: source_state(a)["version"] == "v5", "v5 on the X Elite half")
    for agent in fleet.x_elite:
        assert agent.status("tiny")["phase"] == "Ready"
        with agent.client() as client:
            assert infer(client, "tiny", X).status_code == 200
