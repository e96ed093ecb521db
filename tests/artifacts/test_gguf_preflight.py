"""A GGUF source's pre-flight, made from the file's header (its metadata and tensor shapes, not its tensors) before
gguf-convert spends minutes dequantizing it: a host that cannot build it is refused first."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from npuctl.artifacts import BuildError, Store, build_deployment
from npuctl.artifacts.llm import pack, preflight
from npuctl.artifacts.result import StepEvent
from npuctl.artifacts.sources import gguf as gguf_source
from tests.manifests import write_deployment
from tests.tiny_gguf import write_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tiny_llama_source, tmp_path_factory.mktemp("gguf") / "tiny.gguf", "Q8_0")


def test_the_header_gives_the_sizes_config_json_has_and_the_parameters_the_checkpoint_has(
        tiny_gguf: Path, tiny_llama_source: Path) -> None:
    from safetensors.torch import load_file

    header = gguf_source.header(tiny_gguf, "file:tiny.gguf")
    config = json.loads((tiny_llama_source / "config.json").read_text())
    sizes = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
             "max_position_embeddings", "vocab_size", "tie_word_embeddings")
    assert {key: header.config[key] for key in sizes} == {key: config[key] for key in sizes}
    count = sum(tensor.numel() for tensor in load_file(str(tiny_llama_source / "model.safetensors")).values())
    assert header.parameters == count
    # The file's check comes with its sizes: the conversion step takes it instead of parsing the file again.
    assert header.inspected == gguf_source.inspect(tiny_gguf, "file:tiny.gguf")
    # What the pre-flight makes of it: the same shapes as from the checkpoint, the conversion's step counted.
    loaded = write_deployment(tiny_gguf.parent, "tiny", {
        "model": {"source": f"file:{tiny_gguf}", "task": "text-generation"}, "precision": "w8a16",
        "targets": ["x-elite"], "generation": {"window": 16, "contextLength": 64}})
    assert pack.resolve_shape(loaded.deployment, header.config, "gguf") == \
        pack.resolve_shape(loaded.deployment, config, "hf")
    needs = preflight.estimate(header.config, tiny_gguf.parent, 1 << 20, converted=True, counted=header.parameters)
    assert needs.parameters == count and "gguf-convert" in needs.stage_rss_bytes


def test_a_gguf_build_this_host_cannot_hold_is_refused_before_its_conversion(
        tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A host with 64 MiB of memory available: no build of any model fits.
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=64 << 20))
    loaded = write_deployment(tmp_path, "tiny", {
        "model": {"source": f"file:{tiny_gguf}", "task": "text-generation"}, "precision": "w8a16",
        "targets": ["x-elite"], "generation": {"window": 16, "contextLength": 64},
        "runtime": {"device": "npu", "allowSimulator": True, "fallback": "none"}})
    store = Store(tmp_path / "store")
    events: list[StepEvent] = []
    with pytest.raises(BuildError) as refused:
        build_deployment(loaded, store=store, progress=events.append)
    assert refused.value.step == "resolve"
    assert f"file:{tiny_gguf}: building " in refused.value.message
    assert "GiB of RAM at its peak and this host has 0.1 GiB available" in refused.value.message
    assert not list(store.records()), "gguf-convert did not run"
    assert {e.step for e in events} <= {"resolve", preflight.STEP}
    shown = [e.preflight for e in events if e.preflight is not None]
    assert shown and "gguf-convert" in shown[0].stage_rss_bytes


def test_a_damaged_gguf_file_is_refused_at_resolve_naming_it(tiny_gguf: Path, tmp_path: Path) -> None:
    # Truncated, or bytes changed in its header (metadata and tensor infos): gguf's reader raised IndexError for
    # some of these, which reached the agent as a crash instead of the source's error.
    good = tiny_gguf.read_bytes()
    rng = random.Random(7)
    damaged_file = tmp_path / "damaged.gguf"
    kinds: set[str] = set()
    for attempt in range(300):
        damaged = bytearray(good)
        if attempt % 2:
            damaged = damaged[:rng.randrange(len(good))]
        else:
            for _ in range(rng.randrange(1, 6)):
                damaged[rng.randrange(min(len(good), 1 << 16))] = rng.randrange(256)
        damaged_file.write_bytes(bytes(damaged))
        try:
            gguf_source.header(damaged_file, "file:damaged.gguf")
        except BuildError as exc:
            assert exc.step == "resolve" and exc.message.startswith("file:damaged.gguf: ")
            kinds.add(exc.message.split(" (")[0])
    assert "file:damaged.gguf: not a readable GGUF file" in kinds
