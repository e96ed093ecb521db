"""What a loaded model costs (npuctl.schema.cost.LoadCost), measured at load and shown the same in the model's
status, `/v2/models/{name}`, Ollama's `/api/ps` and `/api/tags` (through the ollama client) and `/metrics`
(through prometheus_client's parser): MiniLM and the tiny Llama on the CPU, a context binary on the simulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import ollama
import pytest
from prometheus_client.parser import text_string_to_metric_families

from npuctl.artifacts import BuildResult, Store, artifacts_of, build_deployment
from npuctl.runtime.devices import NpuKind, detect_host
from npuctl.runtime.footprint import PeakMemory, estimated_cost, process_memory, return_free_memory
from npuctl.runtime.placement import Artifacts
from npuctl.schema.cost import LoadCost
from npuctl.serve.models import ServedModel, load_served
from tests.runtime.test_loading import relu_model, tensor_deployment
from tests.serve.conftest import Serve, deployment


def gauges(url: str) -> dict[tuple[str, str], float]:
    """(metric name, model) -> value of every per-model gauge."""
    text = httpx.get(f"{url}/metrics").text
    return {(sample.name, sample.labels["model"]): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if "model" in sample.labels and family.type == "gauge"}


def assert_shown(url: str, name: str, cost: LoadCost) -> None:
    """The cost in /v2/models/{name} and in /metrics is the one measured at load."""
    shown = httpx.get(f"{url}/v2/models/{name}").json()["status"]["cost"]
    assert LoadCost.model_validate(shown) == cost
    metrics = gauges(url)
    assert metrics[("npuctl_model_host_memory_bytes", name)] == cost.host_bytes
    assert metrics[("npuctl_model_kv_cache_bytes", name)] == cost.kv_cache_bytes
    assert metrics[("npuctl_model_artifact_bytes", name)] == cost.artifact_bytes
    assert metrics[("npuctl_model_context_binary_bytes", name)] == cost.context_binary_bytes
    assert metrics[("npuctl_model_npu_sessions", name)] == cost.npu_sessions
    assert metrics[("npuctl_model_load_duration_seconds", name)] == pytest.approx(cost.load_seconds)


def test_cpu_models_cost_is_measured_and_shown_alike_everywhere(
        serve: Serve, minilm: Callable[..., ServedModel], minilm_artifacts: Artifacts,
        tiny_llama: Callable[..., ServedModel], tiny_llama_build: BuildResult) -> None:
    embedder, chat = minilm(), tiny_llama()
    cost, chat_cost = embedder.status.cost, chat.status.cost
    assert cost is not None and chat_cost is not None

    assert minilm_artifacts.cpu_model is not None
    weights = minilm_artifacts.cpu_model.stat().st_size  # fp32 MiniLM: its weights are in the graph's file
    assert cost.artifact_bytes == weights
    assert 0.5 * weights < cost.host_bytes < 3 * weights, (cost.host_bytes, weights)
    assert (cost.sessions, cost.npu_sessions, cost.context_binary_bytes, cost.kv_cache_bytes) == (1, 0, 0, 0)
    assert cost.load_seconds > 0 and not cost.estimated
    assert cost.host_bytes <= cost.peak_host_bytes < 4 * weights, "the load's peak is at least what it kept"

    # The tiny Llama (2 layers, 2 KV heads of 16, fp32 cache, 8192 tokens) on the CPU: a KV cache per slot.
    folder = artifacts_of(tiny_llama_build).model_dir
    assert folder is not None
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    assert (decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"]) == (2, 2, 16)
    slots = chat.model.slots  # type: ignore[attr-defined]
    assert chat_cost.kv_cache_bytes == 2 * 2 * 2 * 16 * 8192 * 4 * slots
    onnx_files = [f for f in folder.iterdir() if f.name.startswith("model.onnx")]
    assert chat_cost.artifact_bytes == sum(f.stat().st_size for f in onnx_files) and len(onnx_files) == 2
    assert chat_cost.host_bytes > 0 and chat_cost.memory_bytes == chat_cost.host_bytes + chat_cost.kv_cache_bytes

    server = serve(embedder, chat)
    assert_shown(server.url, "minilm", cost)
    assert_shown(server.url, "tiny-llama", chat_cost)
    client = ollama.Client(host=server.url)
    running = {m.model: m for m in client.ps().models}
    assert (running["minilm"].size, running["minilm"].size_vram) == (cost.memory_bytes, 0), "on the CPU: no VRAM"
    assert (running["tiny-llama"].size, running["tiny-llama"].size_vram) == (chat_cost.memory_bytes, 0)
    listed = {m.model: m for m in client.list().models}
    assert listed["minilm"].size == cost.artifact_bytes and listed["tiny-llama"].size == chat_cost.artifact_bytes


def test_the_peak_of_a_block_counts_memory_it_freed_before_its_end() -> None:
    import time

    import numpy as np

    return_free_memory()
    before = process_memory()
    with PeakMemory() as peak:
        held = np.ones(200 * 2**20 // 8)  # 200 MiB, written: resident
        time.sleep(0.5)  # the sampler's turn, however loaded the host (it samples every 5 ms)
        del held
    assert peak.highest - before > 150 * 2**20
    assert process_memory() - before < 50 * 2**20, "the memory was freed before the block ended"


def test_the_estimate_before_loading_opens_the_same_files(minilm_artifacts: Artifacts,
                                                          tiny_llama_build: BuildResult) -> None:
    host = detect_host()
    estimate = estimated_cost(deployment("minilm"), minilm_artifacts, host)
    served = load_served(deployment("minilm"), minilm_artifacts)
    served.retire()
    measured = served.status.cost
    assert measured is not None and estimate.estimated
    assert (estimate.artifact_bytes, estimate.sessions, estimate.host_bytes) == (measured.artifact_bytes, 1,
                                                                                 measured.artifact_bytes)
    chat = deployment("tiny-llama", model={"source": "file:unused", "task": "text-generation", "format": "genai"},
                      runtime={"device": "cpu"})
    chat_estimate = estimated_cost(chat, artifacts_of(tiny_llama_build), host)
    chat_served = load_served(chat, artifacts_of(tiny_llama_build))
    chat_served.retire()
    chat_measured = chat_served.status.cost
    assert chat_measured is not None
    assert chat_estimate.kv_cache_bytes == chat_measured.kv_cache_bytes > 0
    assert chat_estimate.artifact_bytes == chat_measured.artifact_bytes


@pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")
def test_a_context_binary_is_counted_as_its_file(serve: Serve, tmp_path: Path) -> None:
    relu_model(tmp_path / "relu.onnx")
    built = build_deployment(tensor_deployment(tmp_path), store=Store(tmp_path / "store"), base_dir=tmp_path)
    artifacts = artifacts_of(built)
    on_npu = tensor_deployment(tmp_path, device="npu", allowSimulator=True)
    served = load_served(on_npu, artifacts)
    cost = served.status.cost
    assert cost is not None and served.status.on_npu
    wrapper = artifacts.context_binaries[0].path
    binaries = [f for f in wrapper.parent.iterdir() if f.suffix == ".bin"]
    assert len(binaries) == 1 and cost.context_binary_bytes == binaries[0].stat().st_size > 0
    assert cost.artifact_bytes == wrapper.stat().st_size + binaries[0].stat().st_size
    assert (cost.npu_sessions, cost.sessions) == (1, 1)
    assert estimated_cost(on_npu, artifacts, detect_host()).context_binary_bytes == cost.context_binary_bytes
    assert_shown(serve(served).url, "relu", cost)


@pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")
def test_ollama_ps_counts_an_npu_models_context_binary_as_vram(serve: Serve, minilm_build: BuildResult) -> None:
    artifacts = artifacts_of(minilm_build)
    served = load_served(deployment("minilm", runtime={"device": "npu", "allowSimulator": True}), artifacts)
    cost = served.status.cost
    assert cost is not None and served.status.on_npu
    wrapper = artifacts.context_binaries[0].path
    binary = next(f for f in wrapper.parent.iterdir() if f.suffix == ".bin")
    assert cost.context_binary_bytes == binary.stat().st_size and cost.npu_sessions == 1
    (running,) = ollama.Client(host=serve(served).url).ps().models
    assert running.size_vram == cost.context_binary_bytes and running.size == cost.memory_bytes >= running.size_vram
