"""The fleet provisioning playbook (agent/ansible) run for real with `connection: local` into a temporary prefix:
npuctl installed into a venv, the agent config written, the service rendered, and the agent comes up the way the
service starts it (through systemd when it runs here; else the test runs the rendered run script)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.agent.harness import Agent, free_port

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "agent" / "ansible" / "npuctl-agent.yml"
PUBLIC_KEY = "A" * 43 + "="


def ansible_playbook() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.is_file() else shutil.which("ansible-playbook")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ansible_playbook() is None, reason="ansible-playbook is not installed (pip install ansible-core, "
                                                          "part of the dev extra)"),
    pytest.mark.skipif(sys.platform == "win32", reason="Ansible does not run as a controller on Windows"),
]


def test_playbook_installs_configures_and_the_agent_comes_up(tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "npuctl"
    port = free_port()
    # A wheel of this checkout, as a release pipeline would hand the playbook (installing it needs no build backend).
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, timeout=300)
    (wheel,) = wheels.glob("npuctl-*.whl")
    variables = {
        "npuctl_hosts": "localhost",
        "ansible_python_interpreter": sys.executable,
        "npuctl_prefix": str(prefix),
        "npuctl_source": str(wheel),
        "npuctl_python": sys.executable,
        # No downloads in tests: the venv sees this environment's packages and pip installs only npuctl.
        "npuctl_site_packages_from": sysconfig.get_paths()["purelib"],
        "npuctl_pip_args": "--no-deps",
        "npuctl_listen": f"127.0.0.1:{port}",
        "npuctl_public_key": PUBLIC_KEY,
        "npuctl_sources": [{"name": "fleet", "url": f"http://127.0.0.1:{free_port()}/fleet.json",
                            "intervalSeconds": 60}],
        "npuctl_artifact_sources": ["https://artifacts.example/npuctl"],
        "npuctl_labels": {"ring": "pilot"},
        "npuctl_facts": {"soc": "x2-elite"},
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run([ansible_playbook(), "-i", "localhost,", "-c", "local", str(PLAYBOOK),
                           "-e", f"@{tmp_path / 'vars.json'}"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout

    from ruamel.yaml import YAML

    config = YAML(typ="safe").load((prefix / "agent.yaml").read_text())
    assert config["sources"] == [{"name": "fleet", "url": variables["npuctl_sources"][0]["url"],
                                  "intervalSeconds": 60, "publicKey": PUBLIC_KEY}]
    assert config["labels"] == {"ring": "pilot"} and config["facts"] == {"soc": "x2-elite"}
    assert config["artifactSources"] == ["https://artifacts.example/npuctl"]
    assert oct((prefix / "state").stat().st_mode & 0o777) == "0o700"
    run_script = prefix / "bin" / "npuctl-agent"
    unit = (prefix / "npuctl-agent.service").read_text()
    assert f"ExecStart={run_script}" in unit
    installed = prefix / "venv" / "bin" / "npuctl"
    assert installed.is_file()

    if Path("/run/systemd/system").exists():
        agent_process = None  # the playbook started the unit
    else:
        assert "systemd is not running on this host" in done.stdout
        agent_process = subprocess.Popen([str(run_script)], stdout=(tmp_path / "agent.log").open("wb"),
                                         stderr=subprocess.STDOUT)
    agent = Agent(tmp_path / "probe", tmp_path / "probe-cache")
    agent.port, agent.url, agent.log, agent.process = port, f"http://127.0.0.1:{port}", tmp_path / "agent.log", agent_process
    try:
        agent.wait_live(timeout=120)
        metrics = httpx.get(f"{agent.url}/metrics", timeout=10).text
        assert 'soc="x2-elite",soc_model="88"' in metrics, "the agent runs with the config the playbook wrote"
        sources = httpx.get(f"{agent.url}/agent/v1/sources", timeout=10).json()["items"]
        assert [s["name"] for s in sources] == ["fleet"]
        assert (prefix / "state" / "token").is_file()
    finally:
        agent.stop()
