"""The reconciler's promises on a real agent process: what fails for good waits for the manifest to
change, status follows its published schema, names are never taken from what serves, identical
deployments share their sessions, and faults of the state folder or the manifests folder are seen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.agent.harness import Agent, X, infer, manifest, tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def quick(tmp_path: Path, agent_cache: Path) -> Iterator[Agent]:
    """An agent with a 1 s resync and a 0.5 s first backoff: a retry storm would show within seconds."""
    config = tmp_path / "agent.yaml"
    config.write_text("resyncSeconds: 1\nbackoffSeconds: [0.5, 2]\n")
    running = Agent(tmp_path, agent_cache, config=config)
    tiny_model(running.manifests / "tiny.onnx")
    yield running
    running.stop()


def reasons(agent: Agent, name: str) -> list[str]:
    return [e["reason"] for e in agent.events(name)]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_permanent_build_failure_is_not_retried_until_the_manifest_changes(quick: Agent) -> None:
    file = quick.manifests / "broken.yaml"
    file.write_text(manifest(name="broken").replace("file:tiny.onnx", "file:later.onnx"))
    quick.start()
    failed = quick.wait_phase("broken", "Failed")
    assert "later.onnx" in condition(failed, "ArtifactsReady")["message"]
    # Four resyncs and several backoff delays: a source that does not exist is not built again.
    time.sleep(4)
    assert reasons(quick, "broken").count("Building") == 1, reasons(quick, "broken")
    assert any("not retried until the manifest changes" in e["message"] for e in quick.events("broken"))
    tiny_model(quick.manifests / "later.onnx")
    file.write_text(file.read_text() + "\n")  # saved again: the manifest changed
    quick.wait_phase("broken", "Ready")
    assert reasons(quick, "broken").count("Building") == 2


def test_a_live_agents_status_validates_against_the_published_schema(quick: Agent) -> None:
    (quick.manifests / "tiny.yaml").write_text(manifest())
    (quick.manifests / "broken.yaml").write_text(manifest(name="broken").replace("file:tiny.onnx", "file:no.onnx"))
    quick.start()
    quick.wait_phase("tiny", "Ready")
    quick.wait_phase("broken", "Failed")
    schema = json.loads((REPO / "schema" / "status.schema.json").read_text())
    with quick.client() as client:
        items = client.get("/agent/v1/deployments").json()["items"]
    assert {item["metadata"]["name"] for item in items} == {"tiny", "broken"}
    for item in items:
        jsonschema.validate(item["status"], schema)
    saved = json.loads((quick.state / "status.json").read_text())
    for status in saved["deployments"]:
        jsonschema.validate(status, schema)
    tiny = next(item["status"] for item in items if item["metadata"]["name"] == "tiny")
    assert tiny["artifacts"] and tiny["artifacts"][0]["accuracy"]["metric"]
    with pytest.raises(jsonschema.ValidationError):  # the schema does check: a wrong phase is refused
        jsonschema.validate({**tiny, "phase": "Sleeping"}, schema)


def metric(agent: Agent, name: str) -> float:
    text = httpx.get(f"{agent.url}/metrics", timeout=10).text
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


def overview(agent: Agent) -> dict[str, Any]:
    return httpx.get(f"{agent.url}/agent/v1/deployments", timeout=10).json()


def test_a_serve_name_clash_is_a_condition_on_the_newcomer_and_loads_nothing(quick: Agent) -> None:
    (quick.manifests / "tiny.yaml").write_text(manifest())
    quick.start()
    quick.wait_phase("tiny", "Ready")
    clash = manifest(name="other") + "    aliases: [tiny]\n"
    (quick.manifests / "other.yaml").write_text(clash)
    status = quick.wait_for(lambda: (s := quick.status("other")) and s["phase"] == "Failed" and s, "other Failed")
    serving = condition(status, "Serving")
    assert (serving["status"], serving["reason"]) == ("False", "NameConflict")
    assert "'tiny'" in serving["message"] and str(quick.manifests / "tiny.yaml") in serving["message"]
    time.sleep(3)  # a retry storm would load a session a second
    assert reasons(quick, "other").count("NameConflict") == 1, reasons(quick, "other")
    assert "PhaseLoading" not in reasons(quick, "other")
    assert metric(quick, "npuctl_loaded_models") == 1, "no session was opened for the newcomer"
    ready = httpx.get(f"{quick.url}/v2/health/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["notReady"]["other"]["reason"] == "NameConflict"
    with quick.client() as client:
        assert infer(client, "tiny", X).status_code == 200, "the deployment that held the name keeps serving"
        refused = client.put("/agent/v1/manifests/other-2.yaml", content=manifest(name="other-2") + "    name: tiny\n",
                             params={"dryRun": "true"})
        assert refused.status_code == 409 and "'tiny'" in refused.json()["error"]["message"]
    checked = subprocess.run([sys.executable, "-m", "npuctl", "validate", str(quick.manifests)],
                             capture_output=True, text=True)
    # validate has no history: it names the later file in its order, and refuses the folder
    assert checked.returncode == 1 and "model name 'tiny' is already served by deployment" in checked.stderr
    (quick.manifests / "tiny.yaml").unlink()  # the name is free: the newcomer gets it
    quick.wait_phase("other", "Ready")
    with quick.client() as client:
        assert infer(client, "tiny", X).status_code == 200


def test_a_duplicate_name_keeps_the_older_and_files_that_declare_nothing_show(quick: Agent) -> None:
    (quick.manifests / "tiny.yaml").write_text(manifest())
    quick.start()
    quick.wait_phase("tiny", "Ready")
    (quick.manifests / "0-tiny.yaml").write_text(manifest(precision="w8a8"))  # sorts first
    (quick.manifests / "bad.yaml").write_text("kind: [\n")
    (quick.manifests / "gone.yaml").symlink_to(quick.manifests / "nowhere.yaml")
    files = quick.wait_for(lambda: len((o := overview(quick))["invalidFiles"]) == 3 and o["invalidFiles"], "3 rows")
    assert {Path(f["file"]).name: f["reason"] for f in files} == {
        "0-tiny.yaml": "DuplicateName", "bad.yaml": "InvalidManifest", "gone.yaml": "InvalidManifest"}
    status = quick.status("tiny")
    assert status["phase"] == "Ready" and status["file"] == str(quick.manifests / "tiny.yaml")
    assert [a["precision"] for a in status["artifacts"]] == ["w8a16"], "the serving deployment was not replaced"
    subjects = {Path(e["deployment"]).name: e["reason"] for e in httpx.get(f"{quick.url}/agent/v1/events").json()["items"]}
    assert subjects.items() >= {"0-tiny.yaml": "DuplicateName", "bad.yaml": "InvalidManifest"}.items()
    assert "DuplicateName" in quick.log.read_text() and "a symbolic link that leads nowhere" in quick.log.read_text()
    shown = subprocess.run([sys.executable, "-m", "npuctl", "get", "--agent", quick.url], capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0
    for name in ("0-tiny.yaml", "bad.yaml", "gone.yaml"):
        assert name in shown.stdout, shown.stdout


def test_identical_deployments_share_one_build_and_one_loaded_model(quick: Agent) -> None:
    for i in range(20):
        (quick.manifests / f"tiny-{i}.yaml").write_text(manifest(name=f"tiny-{i}"))
    quick.start()
    for i in range(20):
        quick.wait_phase(f"tiny-{i}", "Ready")
    assert metric(quick, "npuctl_loaded_models") == 1
    costs = [(quick.status(f"tiny-{i}") or {}).get("cost") for i in range(20)]
    assert costs[0] is not None and all(cost == costs[0] for cost in costs), "the one set of sessions' cost, once"
    events = httpx.get(f"{quick.url}/agent/v1/events", timeout=10).json()["items"]
    assert [e["reason"] for e in events].count("Building") == 1, "one build pass for all twenty"
    with quick.client() as client:
        assert all(infer(client, f"tiny-{i}", X).status_code == 200 for i in (0, 7, 19))
    for i in range(1, 20):
        (quick.manifests / f"tiny-{i}.yaml").unlink()
    quick.wait_for(lambda: len(overview(quick)["items"]) == 1, "19 deployments removed")
    with quick.client() as client:
        assert infer(client, "tiny-0", X).status_code == 200, "the shared sessions stay while one uses them"
    assert metric(quick, "npuctl_loaded_models") == 1
    (quick.manifests / "tiny-0.yaml").unlink()
    quick.wait_for(lambda: metric(quick, "npuctl_loaded_models") == 0, "the last one closes the sessions")


def test_an_unwritable_state_folder_is_seen_and_reconciling_goes_on(quick: Agent) -> None:
    (quick.manifests / "tiny.yaml").write_text(manifest())
    quick.start()
    quick.wait_phase("tiny", "Ready")
    saved = quick.state / "status.json"
    saved.unlink()
    saved.mkdir()  # a status write (temp file + rename onto it) now fails, as on a full disk
    (saved / "keep").write_text("")
    (quick.manifests / "other.yaml").write_text(manifest(name="other"))
    quick.wait_phase("other", "Ready")
    ready = httpx.get(f"{quick.url}/v2/health/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["notReady"]["state"]["reason"] == "StateWriteFailed"
    state = next(c for c in overview(quick)["conditions"] if c["type"] == "StateSaved")
    assert (state["type"], state["status"], state["reason"]) == ("StateSaved", "False", "StateWriteFailed")
    assert str(saved) in state["message"] and "StateWriteFailed" in quick.log.read_text()
    shutil.rmtree(saved)  # space again: the retry writes it
    quick.wait_for(lambda: saved.is_file() and "other" in saved.read_text(), "status saved again")
    quick.wait_for(lambda: httpx.get(f"{quick.url}/v2/health/ready", timeout=10).status_code == 200, "ready again")


def test_a_file_written_in_two_steps_seconds_apart_is_applied_only_whole(tmp_path: Path, agent_cache: Path) -> None:
    agent = Agent(tmp_path, agent_cache)  # the default settle time
    tiny_model(agent.manifests / "tiny.onnx")
    file = agent.manifests / "tiny.yaml"
    file.write_text(manifest() + "    name: public\n")
    codes: list[int] = []
    stop = threading.Event()
    try:
        agent.start()
        agent.wait_phase("tiny", "Ready")

        def poll() -> None:
            with agent.client() as client:
                while not stop.is_set():
                    codes.append(infer(client, "public", X).status_code)

        poller = threading.Thread(target=poll)
        poller.start()
        whole = manifest(queue_limit=32) + "    name: public\n"
        half = manifest(queue_limit=32)  # valid, but serves as 'tiny': applied, it would rename the model
        with file.open("w") as out:
            out.write(half)
            out.flush()
            time.sleep(4)
            out.write(whole[len(half):])
        agent.wait_for(lambda: "ServingUpdated" in reasons(agent, "tiny"), "the whole file applied")
        stop.set()
        poller.join()
        assert codes and set(codes) == {200}, f"{codes.count(404)} answers 404 while the file was half written"
        assert reasons(agent, "tiny").count("ServingUpdated") == 1
    finally:
        stop.set()
        agent.stop()


def test_a_recreated_manifests_folder_is_watched_again_at_once(tmp_path: Path, agent_cache: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("resyncSeconds: 3600\n")  # only the watcher can bring it back within the test
    agent = Agent(tmp_path, agent_cache, config=config)
    tiny_model(agent.manifests / "tiny.onnx")
    (agent.manifests / "tiny.yaml").write_text(manifest())
    try:
        agent.start()
        agent.wait_phase("tiny", "Ready")
        shutil.rmtree(agent.manifests)
        agent.wait_for(lambda: agent.status("tiny") is None, "the deployment removed")
        agent.manifests.mkdir()
        tiny_model(agent.manifests / "tiny.onnx")
        (agent.manifests / "tiny.yaml").write_text(manifest())
        agent.wait_phase("tiny", "Ready", timeout=60)
    finally:
        agent.stop()
