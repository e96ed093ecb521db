"""A chat deployment edited into a build that cannot work: the agent says why and what to change, and the
version already serving keeps answering."""

from __future__ import annotations

import json

import openai
import pytest

from npuctl.runtime.devices import NpuKind, detect_host
from tests.agent.harness import Agent
from tests.manifests import write_deployment
from tests.tiny_chat import CONTEXT, TinyChat

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")]


def test_an_npu_edit_with_a_window_past_the_models_context_fails_and_the_cpu_version_keeps_serving(
        agent: Agent, tiny_chat: TinyChat) -> None:
    checkpoint = tiny_chat.source("llama")
    source = f"file:{checkpoint}"
    agent.config = agent.manifests.parent / "agent.yaml"  # the checkpoint is outside the manifests folder
    agent.config.write_text(json.dumps({"modelRoots": [str(checkpoint.parent)]}))
    cpu = {"model": {"source": source, "task": "text-generation"}, "precision": "fp32",
           "runtime": {"device": "cpu"}}
    write_deployment(agent.manifests, "chat", cpu)
    agent.start()
    agent.wait_phase("chat", "Ready", timeout=300)
    api = openai.OpenAI(base_url=f"{agent.url}/v1", api_key=agent.token, max_retries=0)

    def answer() -> str:
        reply = api.completions.create(model="chat", prompt="Hello world, how", max_tokens=8, temperature=0)
        return reply.choices[0].text

    before = answer()
    assert before
    write_deployment(agent.manifests, "chat", cpu | {
        "precision": "w8a16", "targets": ["x-elite"], "generation": {"window": 600},
        "runtime": {"device": "npu", "allowSimulator": True, "fallback": "none"}})
    status = agent.wait_for(lambda: (s := agent.status("chat")) and s["phase"] == "Degraded" and s,
                            "the NPU edit to fail", timeout=300)
    ready = next(c for c in status["conditions"] if c["type"] == "ArtifactsReady")
    assert ready["status"] == "False"
    assert (f"spec.generation.window 600 is not shorter than the model's context of {CONTEXT} tokens"
            in ready["message"]) and "lower spec.generation.window" in ready["message"]
    assert status["servingGeneration"] != status["observedGeneration"]
    assert answer() == before, "the CPU version keeps serving"
