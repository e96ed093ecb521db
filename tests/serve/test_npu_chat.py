"""Decoder-pipeline packs built here, served from the HTP simulator through onnxruntime-genai with the QNN plugin,
and talked to with the official openai client over real HTTP; the CPU reference is the same deployment served
with runtime.device: cpu (the fp32 genai model of the same build)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from npuctl.artifacts import BuildResult, artifacts_of
from npuctl.cli.oneshot import build_and_load
from npuctl.runtime.devices import NpuKind, detect_host
from npuctl.serve.models import load_served
from tests.serve.conftest import Serve
from tests.tiny_chat import PROMPTS, TinyChat
from tests.tiny_gguf import write_gguf

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_a_built_pack_streams_chat_from_the_simulator_and_greedy_text_matches_the_cpu_reference(
        tiny_chat: TinyChat, serve: Serve, architecture: str) -> None:
    name = f"tiny-{architecture}"
    built = tiny_chat.build(name, architecture)
    views = tiny_chat.store.views_dir
    npu = load_served(tiny_chat.manifest(name, architecture).deployment, artifacts_of(built, views))
    assert npu.status.ready, npu.status
    assert (npu.status.where, npu.status.provider) == ("npu-simulator", "QNNExecutionProvider")
    assert {s.name: s.where for s in npu.status.stages} == {
        "embeddings": "cpu", "context_ctx": "npu-simulator", "iterator_ctx": "npu-simulator",
        "lm_head_context_ctx": "npu-simulator", "lm_head_iterator_ctx": "npu-simulator"}
    # Its cost: the four context binaries in their NPU sessions, and the KV cache of its one generation slot at the
    # manifest's 256-token context (2 layers x 2 KV heads x 16 per head, keys and values, the HTP's uint16 read
    # from the graphs' cache inputs).
    cost = npu.status.cost
    assert cost is not None and (cost.npu_sessions, cost.sessions) == (4, 5)
    pack = npu.model.pack.folder  # type: ignore[attr-defined]
    assert cost.context_binary_bytes == sum(f.stat().st_size for f in pack.glob("*.bin")) > 0
    # The graphs, their binaries and the embeddings' weights file beside its graph.
    assert cost.artifact_bytes == sum(f.stat().st_size for f in [*pack.glob("*.bin"), *pack.glob("*.onnx"),
                                                                 *pack.glob("*.data")])
    assert cost.kv_cache_bytes == 2 * 2 * 2 * 16 * 256 * 2
    cpu_manifest = tiny_chat.manifest(f"{name}-cpu", architecture, runtime={"device": "cpu"})
    cpu = load_served(cpu_manifest.deployment, artifacts_of(built))
    assert cpu.status.where == "cpu"
    server = serve(npu, cpu)
    api = client(server.url)
    chunks = list(api.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Hello world, how are you?"}], max_tokens=12,
        temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    for prompt in PROMPTS:
        on_npu = api.completions.create(model=name, prompt=prompt, max_tokens=16, temperature=0)
        on_cpu = api.completions.create(model=f"{name}-cpu", prompt=prompt, max_tokens=16, temperature=0)
        assert on_npu.choices[0].text == on_cpu.choices[0].text
        assert on_npu.usage is not None and on_npu.usage.completion_tokens >= 8
    metadata = httpx.get(f"{server.url}/v2/models/{name}").json()
    assert [s["where"] for s in metadata["status"]["stages"]] == ["cpu"] + ["npu-simulator"] * 4
    # What stays on the CPU, named with its reason, as the build found it.
    generation = built.artifacts[0].generation
    assert generation is not None and generation.cpu_work
    assert metadata["status"]["cpu_work"] == [w.model_dump(mode="json") for w in generation.cpu_work]
    assert (metadata["status"]["cpu_work"][0]["work"], metadata["status"]["cpu_work"][0]["where"]) == (
        "token-embeddings", "embeddings")
    # The NPU coverage served is the build's, not one counted on the wrappers (with the CPU attention as NPU).
    assert metadata["status"]["npu_coverage"] == built.artifacts[0].npu_coverage


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_a_gguf_files_pack_streams_the_greedy_text_of_its_cpu_reference(
        tiny_chat: TinyChat, serve: Serve, tmp_path: Path, architecture: str) -> None:
    # The GGUF source takes the same path (attention and the uint16 KV cache on the HTP); its CPU reference is the
    # fp32 model converted from the same file.
    source = f"file:{write_gguf(tiny_chat.source(architecture), tmp_path / f'{architecture}.gguf', 'Q8_0')}"
    name = f"gguf-{architecture}"
    built = tiny_chat.build(name, source)
    assert [s.name for s in built.steps][:2] == ["resolve", "gguf-convert"]
    [artifact] = built.artifacts
    placed = artifact.generation
    assert placed is not None and placed.coverage.macs == placed.prefill_mac_share == 1.0
    npu = load_served(tiny_chat.manifest(name, source).deployment, artifacts_of(built, tiny_chat.store.views_dir))
    cpu = load_served(tiny_chat.manifest(f"{name}-cpu", source, runtime={"device": "cpu"}).deployment,
                      artifacts_of(built))
    assert (npu.status.where, cpu.status.where) == ("npu-simulator", "cpu")
    api = client(serve(npu, cpu).url)
    for prompt in PROMPTS:
        chunks = api.completions.create(model=name, prompt=prompt, max_tokens=16, temperature=0, stream=True)
        streamed = "".join(c.choices[0].text for c in chunks if c.choices)
        on_cpu = api.completions.create(model=f"{name}-cpu", prompt=prompt, max_tokens=16, temperature=0)
        assert streamed == on_cpu.choices[0].text
        assert on_cpu.usage is not None and on_cpu.usage.completion_tokens >= 8


def test_an_x2_elite_pack_is_refused_on_an_x_elite_host_with_the_reason(tiny_chat: TinyChat) -> None:
    manifest = tiny_chat.manifest("tiny-llama-x2", "llama", targets=["x2-elite"])
    built = tiny_chat.build("tiny-llama-x2", "llama", targets=["x2-elite"])
    x_elite_host = detect_host().with_overrides({"soc": "x-elite"})
    served = load_served(manifest.deployment, artifacts_of(built, tiny_chat.store.views_dir), x_elite_host)
    assert not served.status.ready
    assert served.status.reason == "NoContextBinary"
    assert "X Elite" in served.status.message and "fallback is none" in served.status.message


def test_serve_makes_the_packs_host_views_in_its_own_store_and_nowhere_else(
        tiny_chat: TinyChat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As `npuctl serve --cache STORE` does: the store is given, NPUCTL_CACHE is not set. Deleting the store
    # must free the hard-linked views too, so none may land in the user's cache folder.
    monkeypatch.delenv("NPUCTL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    built: list[BuildResult] = []
    served = build_and_load(tiny_chat.manifest("tiny-llama", "llama"), store=tiny_chat.store,
                            on_built=lambda _, result: built.append(result))
    try:
        assert served.status.ready and served.status.where == "npu-simulator", served.status
        binary = built[0].artifacts[0].context_binary
        views = [v / binary.name for v in tiny_chat.store.views_dir.iterdir()]
        assert any(v.is_file() and v.samefile(binary) for v in views), views
        # (onnxruntime's telemetry writes under the user cache: only views are looked for)
        assert not [p for p in tmp_path.rglob("genai_config.json")]
    finally:
        served.retire()
