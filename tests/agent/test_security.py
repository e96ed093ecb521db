"""Nobody gets in and nothing gets out: the control API's token, owner-only state, names and paths that
cannot leave their folders, size limits, and an agent on a non-loopback address."""

from __future__ import annotations

import hmac
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.agent.auth import ensure_token, token_matches
from npuctl.artifacts import BuildError, Store, build_deployment
from npuctl.artifacts.sources.hf import HfSource
from npuctl.schema import load_file
from tests.agent.harness import Agent, manifest


def test_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert token_matches("Bearer s3cret", "s3cret")
    assert not token_matches("Bearer s3creT", "s3cret")
    assert not token_matches("Basic s3cret", "s3cret") and not token_matches(None, "s3cret")
    assert calls, "hmac.compare_digest decides"


def test_state_folder_and_token_file_are_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    token = ensure_token(state)
    assert len(token) >= 32
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "token").stat().st_mode) == 0o600
    assert ensure_token(state) == token, "the token is made once"


def test_control_api_refuses_escaping_file_names_and_oversized_uploads(agent: Agent) -> None:
    agent.start()
    body = manifest().encode()
    with agent.client() as client:
        assert client.put("/agent/v1/manifests/tiny.yaml", content=body, headers={"Authorization": "Bearer x"}
                          ).status_code == 401
        for name in ["..%2Fescape.yaml", "%2Ftmp%2Fescape.yaml", ".hidden.yaml", "a%5C..%5Cb.yaml", "x.yaml%00.txt"]:
            response = client.put(f"/agent/v1/manifests/{name}", content=body)
            assert response.status_code in (400, 404), (name, response.status_code)
            assert response.headers["content-type"].startswith("application/json")
        assert not (agent.manifests.parent / "escape.yaml").exists() and not Path("/tmp/escape.yaml").exists()
        big = client.put("/agent/v1/manifests/big.yaml", content=b"# " + b"x" * (2 << 20))
        assert big.status_code == 413
        huge = client.post("/v2/models/tiny/infer", content=b"[" + b"0," * (3 << 20) + b"0]",
                           headers={"content-type": "application/json"})
        assert huge.status_code == 413 and "limit" in huge.json()["error"]
    assert sorted(p.name for p in agent.manifests.iterdir()) == ["tiny.onnx"], "nothing was written"


def test_non_loopback_agent_needs_an_opt_in_and_then_guards_reads_too(tmp_path: Path, agent_cache: Path) -> None:
    # An agent on 0.0.0.0 is reachable from the network: every control call, reads included, needs the token.
    agent = Agent(tmp_path, agent_cache, remote=True)
    refused = subprocess.run([sys.executable, "-m", "npuctl", "agent", "--listen", f"0.0.0.0:{agent.port}",
                              "--manifests", str(agent.manifests), "--state", str(agent.state)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "remoteAccess" in refused.stderr, refused.stderr
    agent.start()
    try:
        assert httpx.get(f"{agent.url}/agent/v1/deployments").status_code == 401
        assert httpx.get(f"{agent.url}/agent/v1/events").status_code == 401
        with agent.client() as client:
            assert client.get("/agent/v1/deployments").status_code == 200
    finally:
        agent.stop()


@pytest.mark.parametrize("rest", ["org/repo/../../../etc", "org/repo@main/a/../../b", "org/repo/./x"])
def test_hf_paths_cannot_leave_the_snapshot(rest: str) -> None:
    with pytest.raises(BuildError, match=r"'\.' or '\.\.'"):
        HfSource.parse(rest)


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.ones(64, np.float32).tobytes())
    weight = numpy_helper.from_array(np.zeros((8, 8), np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "256")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "tiny.onnx"))
    (folder / "t.yaml").write_text(manifest("t"))
    with pytest.raises(BuildError, match="outside the model's folder"):
        build_deployment(load_file(folder / "t.yaml").deployments[0], store=Store(tmp_path / "store"))


def test_zip_slip_in_a_downloaded_bundle_stays_inside(tmp_path: Path) -> None:
    from npuctl.artifacts.aihub import unpack

    bundle = tmp_path / "result.onnx.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("../../slipped.txt", "out")
        archive.writestr("/tmp/npuctl-abs-slipped.txt", "out")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BuildError):
        unpack(bundle, out)  # no EPContext model inside: refused, and nothing landed outside
    assert not (tmp_path / "slipped.txt").exists() and not (tmp_path.parent / "slipped.txt").exists()
    assert not Path("/tmp/npuctl-abs-slipped.txt").exists()
