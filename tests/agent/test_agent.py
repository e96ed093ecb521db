"""The agent as users rely on it: save a manifest and the machine follows, without losing what serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from tests.agent.harness import Agent, X, infer, manifest


def test_save_converges_and_bad_edits_keep_the_last_good_version(agent: Agent) -> None:
    file = agent.manifests / "tiny.yaml"
    file.write_text(manifest())
    agent.start()
    status = agent.wait_phase("tiny", "Ready")
    assert status["observedGeneration"] and status["provider"] == "CPUExecutionProvider"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions.items() >= {
        "Valid": "True", "ArtifactsReady": "True", "Loaded": "True", "Serving": "True", "OnNPU": "False"}.items()
    assert status["artifacts"][0]["socModel"] == 60
    with agent.client() as client:
        assert infer(client, "tiny", X).status_code == 200

        file.write_text(manifest().replace("precision: w8a16", "precision: int3"))
        status = agent.wait_for(lambda: (s := agent.status("tiny")) and s["phase"] == "Degraded" and s, "Degraded")
        valid = next(c for c in status["conditions"] if c["type"] == "Valid")
        assert valid["status"] == "False"
        assert f"{file}:9:14: spec.precision: 'int3' is not one of" in valid["message"]
        assert infer(client, "tiny", X).status_code == 200, "the last good version keeps serving"

        file.write_text(manifest())
        agent.wait_phase("tiny", "Ready")
        assert infer(client, "tiny", X).status_code == 200


def test_precision_change_swaps_with_no_failed_request(agent: Agent) -> None:
    file = agent.manifests / "tiny.yaml"
    file.write_text(manifest())
    agent.start()
    before = agent.wait_phase("tiny", "Ready")
    stop = threading.Event()
    codes: list[int] = []

    def client_loop() -> None:
        with agent.client() as client:
            while not stop.is_set():
                response = infer(client, "tiny", X)
                codes.append(response.status_code)
                if response.status_code == 200:
                    (output,) = response.json()["outputs"]
                    expected = np.maximum(0, np.asarray(X, dtype=np.float32))  # shape check only below
                    assert len(output["data"]) == expected.size

    thread = threading.Thread(target=client_loop)
    thread.start()
    try:
        file.write_text(manifest(precision="w8a8"))
        after = agent.wait_for(
            lambda: (s := agent.status("tiny")) and s["phase"] == "Ready"
            and s["observedGeneration"] != before["observedGeneration"] and s, "the new version Ready")
    finally:
        stop.set()
        thread.join()
    assert codes and set(codes) == {200}, f"failed requests during the swap: {sorted(set(codes))}"
    assert after["servingGeneration"] == after["observedGeneration"]
    assert [a["precision"] for a in after["artifacts"]] == ["w8a8"]
    assert any(e["reason"] == "Swapped" for e in agent.events("tiny"))


def test_serving_only_change_applies_in_place(agent: Agent) -> None:
    file = agent.manifests / "tiny.yaml"
    file.write_text(manifest())
    agent.start()
    agent.wait_phase("tiny", "Ready")
    events_before = len(agent.events("tiny"))
    file.write_text(manifest(queue_limit=8).replace("    queueLimit: 8\n", "    queueLimit: 8\n    aliases: [small]\n"))
    with agent.client() as client:
        agent.wait_for(lambda: infer(client, "small", X).status_code == 200, "the alias to answer")
    new = [e["reason"] for e in agent.events("tiny")[events_before:]]
    assert "ServingUpdated" in new
    assert not {"Building", "Swapped", "Serving"} & set(new), new


def test_delete_unloads_and_routes_answer_404(agent: Agent) -> None:
    file = agent.manifests / "tiny.yaml"
    file.write_text(manifest())
    agent.start()
    agent.wait_phase("tiny", "Ready")
    file.unlink()
    with agent.client() as client:
        response = agent.wait_for(lambda: (r := infer(client, "tiny", X)).status_code == 404 and r, "404")
        assert "tiny" in response.json()["error"]
    assert agent.status("tiny") is None


def test_restart_adopts_the_store_without_building(agent: Agent) -> None:
    (agent.manifests / "tiny.yaml").write_text(manifest())
    agent.start()
    agent.wait_phase("tiny", "Ready")
    agent.stop()
    agent.start()
    agent.wait_phase("tiny", "Ready")
    reasons = [e["reason"] for e in agent.events("tiny")]
    restart = reasons[len(reasons) - 1 - reasons[::-1].index("Building"):]
    assert "StepCached" in restart and "StepDone" not in restart, restart


def test_mutating_calls_need_the_token(agent: Agent) -> None:
    agent.start()
    body = manifest().encode()
    with agent.client(token=False) as anonymous:
        assert anonymous.put("/agent/v1/manifests/tiny.yaml", content=body).status_code == 401
        assert anonymous.delete("/agent/v1/deployments/tiny").status_code == 401
        wrong = anonymous.put("/agent/v1/manifests/tiny.yaml", content=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token" in wrong.json()["error"]["message"]
    assert not (agent.manifests / "tiny.yaml").exists()
    with agent.client() as client:
        response = client.put("/agent/v1/manifests/tiny.yaml", content=body)
        assert response.status_code == 200, response.text
        (change,) = response.json()["changes"]
        assert (change["name"], change["action"], change["effect"]) == ("tiny", "create", "build")
        assert change["steps"]["next"] is not None or change["steps"]["stored"], change
    assert (agent.manifests / "tiny.yaml").read_text() == manifest()
    agent.wait_phase("tiny", "Ready")
    assert (agent.state / "token").stat().st_mode & 0o077 == 0


def test_apply_dry_run_and_diff_change_nothing(agent: Agent, tmp_path: Path) -> None:
    (agent.manifests / "tiny.yaml").write_text(manifest())
    agent.start()
    agent.wait_phase("tiny", "Ready")
    mine = tmp_path / "tiny.yaml"
    mine.write_text(manifest())
    env = {"NPUCTL_AGENT": agent.url, "NPUCTL_TOKEN": agent.token}
    assert npuctl(env, "diff", "-f", str(mine)).returncode == 0

    mine.write_text(manifest(precision="fp16"))
    shown = npuctl(env, "diff", "-f", str(mine))
    assert shown.returncode == 1 and "spec.precision" in shown.stdout and "fp16" in shown.stdout
    dry = npuctl(env, "apply", "--dry-run", "-o", "json", "-f", str(mine))
    assert dry.returncode == 0
    (result,) = json.loads(dry.stdout)
    assert result["dryRun"] and result["changes"][0]["effect"] == "build"
    steps = result["changes"][0]["steps"]
    assert "static-shapes" in steps["stored"] and steps["next"] == "compile", steps
    assert (agent.manifests / "tiny.yaml").read_text() == manifest(), "a dry run writes nothing"

    mine.write_text(manifest(precision="int3"))
    bad = npuctl(env, "diff", "-f", str(mine))
    assert bad.returncode == 2 and f"{mine}:9:14" in bad.stderr


def npuctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "npuctl", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_not_ready_until_serving_and_fallback_none_says_why(agent: Agent) -> None:
    file = agent.manifests / "tiny.yaml"
    file.write_text(manifest() + "  runtime:\n    fallback: none\n")
    agent.start()
    status = agent.wait_phase("tiny", "Failed")
    serving = next(c for c in status["conditions"] if c["type"] == "Serving")
    assert serving["status"] == "False" and serving["reason"] == "SimulatorNotAllowed"
    assert status["provider"] is None
    with agent.client() as client:
        ready = client.get("/v2/models/tiny/ready")
        assert ready.status_code == 503 and "simulator" in ready.text.lower()
        assert client.get("/v2/health/ready").status_code == 503
        file.write_text(manifest())
        agent.wait_phase("tiny", "Ready")
        assert client.get("/v2/health/ready").status_code == 200
