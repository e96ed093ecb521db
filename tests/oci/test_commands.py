"""The commands and the agent config refuse bad registry references and unpublished steps with the reason."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from npuctl.agent import bundles
from npuctl.agent.config import AgentConfig
from tests.agent.fleet_harness import fleet_manifest
from tests.agent.harness import tiny_model
from tests.oci.registry import Registry


def npuctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "npuctl", *args], capture_output=True, text=True, timeout=120)


def test_bundle_push_names_what_is_wrong(registry: Registry, tmp_path: Path) -> None:
    key = tmp_path / "bundle.key"
    bundles.write_private_key(key)
    folder = tmp_path / "desired"
    folder.mkdir()
    tiny_model(tmp_path / "tiny.onnx")
    (folder / "tiny.yaml").write_text(fleet_manifest(tmp_path / "tiny.onnx"))
    steps = f"oci://{registry.host}/fleet/steps"

    no_tag = npuctl("bundle", "push", str(folder), f"oci://{registry.host}/fleet/desired", "--key", str(key),
                    "--steps", steps, "--plain-http")
    assert no_tag.returncode == 2 and "names no tag: expected oci://HOST/REPO:TAG" in no_tag.stderr

    unbuilt = npuctl("bundle", "push", str(folder), f"oci://{registry.host}/fleet/desired:pilot", "--key", str(key),
                     "--steps", steps, "--plain-http", "--cache", str(tmp_path / "empty-cache"))
    assert unbuilt.returncode == 1
    said = "".join(unbuilt.stderr.split())  # the console wraps long paths
    assert "desired/tiny.yaml:tiny:stepstatic-shapesisnotbuiltin" in said
    assert f"npuctlbuild-f{folder}/tiny.yaml--all-targets--publish{steps}" in said

    bad_publish = npuctl("build", "-f", str(folder / "tiny.yaml"), "--publish", f"oci://{registry.host}/Fleet/Steps")
    assert bad_publish.returncode == 2 and "is not a repository name (lowercase letters" in bad_publish.stderr


def test_the_agent_config_refuses_bad_references() -> None:
    with pytest.raises(ValidationError, match="names no tag"):
        AgentConfig.model_validate({"sources": [{"name": "fleet", "url": "oci://ghcr.io/contoso/fleet",
                                                 "publicKey": "x"}]})
    with pytest.raises(ValidationError, match="a step repository takes no tag"):
        AgentConfig.model_validate({"artifactSources": ["oci://ghcr.io/contoso/steps:latest"]})
    with pytest.raises(ValidationError, match="insecure"):
        AgentConfig.model_validate({"artifactSources": [{"url": "oci://h/r", "insecure": "maybe"}]})
    config = AgentConfig.model_validate({"artifactSources": [
        "https://artifacts.example.com/npuctl", "oci://ghcr.io/contoso/steps",
        {"url": "oci://127.0.0.1:5000/npuctl/steps", "insecure": True, "username": "u", "password": "hunter2-secret"}]})
    assert [r.url for r in config.registries] == ["oci://ghcr.io/contoso/steps", "oci://127.0.0.1:5000/npuctl/steps"]
    assert "hunter2-secret" not in repr(config) and "hunter2-secret" not in config.model_dump_json()


def test_publishing_over_https_to_a_plain_http_registry_names_it_and_plain_http(tmp_path: Path) -> None:
    class Plain(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        folder = tmp_path / "manifests"
        folder.mkdir()
        tiny_model(tmp_path / "tiny.onnx")
        (folder / "tiny.yaml").write_text(fleet_manifest(tmp_path / "tiny.onnx"))
        done = npuctl("build", "-f", str(folder / "tiny.yaml"), "--publish", f"oci://{host}/fleet/steps",
                      "--cache", str(tmp_path / "cache"))
    finally:
        server.shutdown()
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert done.returncode == 1 and f"{host} did not answer TLS (https)" in said and "--plain-http" in said, said
