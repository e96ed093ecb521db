"""Ollama's model commands on an agent (issue 27), with the official `ollama` clients (Python, and the npm package
under Node): `pull` of a Hugging Face name writes a manifest as `npuctl apply` would, with the agent's token;
`delete` removes it; a name no source resolves, and a call without the token, are refused with the reason.
`npuctl serve` says it cannot."""

from __future__ import annotations

from pathlib import Path

import httpx
import ollama
import pytest
import yaml

from tests.agent.harness import Agent
from tests.serve.test_node import run_node


def test_pull_writes_a_manifest_and_delete_removes_it_with_the_token(agent: Agent,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the agent then tries the new source without the network
    agent.start()
    client = ollama.Client(host=agent.url, headers={"Authorization": f"Bearer {agent.token}"})
    done = client.pull("hf.co/acme/Tiny-Chat")
    assert done.status == "success"
    written = agent.manifests / "tiny-chat.yaml"
    manifest = yaml.safe_load(written.read_text())
    assert manifest["metadata"]["name"] == "tiny-chat"
    assert manifest["spec"]["model"] == {"source": "hf:acme/Tiny-Chat", "task": "text-generation"}
    streamed = [part.status for part in client.pull("hf.co/acme/Tiny-Chat", stream=True)]
    assert streamed[-1] == "success"

    with pytest.raises(ollama.ResponseError) as anonymous:
        ollama.Client(host=agent.url).delete("tiny-chat")
    assert anonymous.value.status_code == 401 and written.is_file()
    with pytest.raises(ollama.ResponseError) as library:
        client.pull("llama3.2")
    assert library.value.status_code == 400 and "declare it in a manifest" in library.value.error
    with pytest.raises(ollama.ResponseError) as quantized:
        client.pull("hf.co/acme/Tiny-Chat-GGUF:Q4_K_M")
    assert quantized.value.status_code == 400 and "FILE.gguf" in quantized.value.error

    agent.wait_for(lambda: "tiny-chat" in httpx.get(f"{agent.url}/agent/v1/deployments").text,
                   what="the agent to read the pulled manifest", timeout=60)
    client.delete("hf.co/acme/Tiny-Chat")
    assert not written.exists()
    with pytest.raises(ollama.ResponseError) as unknown:
        client.delete("never-pulled")
    assert unknown.value.status_code == 404 and "no manifest of this agent declares it" in unknown.value.error


def test_npuctl_serve_says_pull_and_delete_need_an_agent(tmp_path: Path) -> None:
    from npuctl.serve.app import create_app
    from npuctl.serve.http.server import BackgroundServer
    from npuctl.serve.registry import ModelRegistry

    server = BackgroundServer(create_app(ModelRegistry())).start()
    try:
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=server.url).pull("hf.co/acme/Tiny-Chat")
        assert refused.value.status_code == 400 and "npuctl agent" in refused.value.error
    finally:
        server.stop()


def test_the_ollama_npm_package_pulls_and_deletes_with_the_token(agent: Agent,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the agent then tries the new source without the network
    agent.start()
    pulled = run_node("ollama", "ollama_models.mjs", "pull", agent.url, agent.token)
    assert pulled["status"] == "success" and pulled["streamed"][-1] == "success"
    assert pulled["library"]["status"] == 400 and "declare it in a manifest" in pulled["library"]["error"]
    written = agent.manifests / "tiny-chat.yaml"
    assert yaml.safe_load(written.read_text())["spec"]["model"]["source"] == "hf:acme/Tiny-Chat"
    agent.wait_for(lambda: "tiny-chat" in httpx.get(f"{agent.url}/agent/v1/deployments").text,
                   what="the agent to read the pulled manifest", timeout=60)
    deleted = run_node("ollama", "ollama_models.mjs", "delete", agent.url, agent.token)
    assert deleted["anonymous"]["name"] == "ResponseError" and deleted["anonymous"]["status"] == 401
    assert deleted["status"] == "success" and not written.exists()
    assert deleted["unknown"]["status"] == 404 and "no manifest of this agent declares it" in deleted["unknown"]["error"]
