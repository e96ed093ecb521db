"""An NPU chat build's pre-flight (its estimated peak RAM, disk and time, and what the host has) in the
deployment's status, as the agent reports it and `npuctl describe` prints it."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from npuctl.agent.status import StatusBook
from npuctl.artifacts import BuildError, Store, build_deployment
from npuctl.artifacts.llm import preflight
from npuctl.cli import cli
from npuctl.schema.preflight import Preflight
from tests.agent.harness import Agent
from tests.manifests import HUGE, huge_deployment, write_deployment


def test_an_npu_chat_builds_pre_flight_is_in_its_status_and_describe(agent: Agent, tiny_llama_source: Path) -> None:
    write_deployment(agent.manifests, "chat", {
        "model": {"source": f"file:{tiny_llama_source}", "task": "text-generation", "format": "transformers"},
        "precision": "w8a16", "targets": ["x-elite"],
        "runtime": {"device": "npu", "allowSimulator": True, "fallback": "none"}})
    agent.start()
    status = agent.wait_for(lambda: (s := agent.status("chat")) and s.get("preflight") and s,
                            "the pre-flight in chat's status")
    needs = Preflight.model_validate(status["preflight"])
    config = json.loads((tiny_llama_source / "config.json").read_text(encoding="utf-8"))
    assert needs.parameters == preflight.parameters(config) > 0
    assert {"genai-builder", "llm-quantize", "compile"} <= set(needs.stage_rss_bytes)
    assert needs.peak_rss_bytes == max(needs.stage_rss_bytes.values()) and needs.disk_bytes > 0 and needs.seconds > 0
    assert 0 < needs.available_memory_bytes <= psutil.virtual_memory().total and needs.free_disk_bytes > 0
    described = CliRunner().invoke(cli, ["describe", "chat", "--agent", agent.url])
    assert described.exit_code == 0, described.output
    assert needs.summary() in described.output
    (agent.manifests / "chat.yaml").unlink()  # the rest of the build is not what this test is about




def test_a_refused_builds_estimate_stays_in_its_status_across_a_restart(tmp_path: Path) -> None:
    deployment = huge_deployment(tmp_path)
    book = StatusBook(tmp_path / "state")
    book.get("huge")
    with pytest.raises(BuildError) as refused:
        build_deployment(deployment, store=Store(tmp_path / "store"), progress=lambda event: book.step("huge", event))
    needs = book.get("huge").preflight
    assert needs is not None and needs.parameters == preflight.parameters(HUGE)
    assert needs.peak_rss_bytes > needs.available_memory_bytes
    assert f"~{needs.peak_rss_bytes / 2**30:.1f} GiB of RAM" in refused.value.message  # the figures it was refused on
    book.save()
    again = StatusBook(tmp_path / "state")
    again.load()
    assert again.get("huge").preflight == needs
