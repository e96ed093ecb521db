"""The reconciler's promises on a real agent process: what fails for good waits for the manifest to
change, status follows its published schema, names are never taken from what serves, identical
deployments share their sessions, and faults of the state folder or the manifests folder are seen."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.agent.harness import Agent, infer, manifest, tiny_model

REPO = Path(__file__).resolve().parents[2]
X = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8]


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
