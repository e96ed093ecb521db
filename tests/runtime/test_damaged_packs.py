"""A pack's genai_config.json and stage graphs as a damaged download or a hostile folder gives them: every reading
(the load's, the agent's sizing) ends in a PackError (or the sizing's GraphError) naming the file and what is
wrong, never an AttributeError,
TypeError or protobuf DecodeError (a fuzz found all three, and a stage named outside its folder read)."""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from onnx import TensorProto, helper, save

from npuctl.runtime.footprint import kv_cache_bytes
from npuctl.runtime.genai_pack import MAX_CONFIG_BYTES, PackError, read_pack
from npuctl.runtime.graph_facts import GraphError
from tests.artifacts.conftest import tiny_model

CONFIG: dict[str, Any] = {
    "model": {"type": "decoder-pipeline", "context_length": 256, "eos_token_id": [2, 3],
              "decoder": {"num_hidden_layers": 2, "num_key_value_heads": 2, "head_size": 16,
                          "inputs": {"past_key_names": "past_key_values.%d.key"},
                          "sliding_window": {"window_size": 64, "slide_key_value_cache": False},
                          "pipeline": [{"embeddings": {"filename": "embeddings.onnx"},
                                        "context": {"filename": "context.onnx", "session_options": {
                                            "provider_options": [{"qnn": {"htp_performance_mode": "burst"}}]}}}]}},
    "search": {"max_length": 256}}
ODD: list[Any] = [None, 0, -1, "x", "", "%s%s", [], {}, [1], {"a": 1}, True, 2**70, "../outside.onnx", "/etc/passwd"]


def write_pack(folder: Path) -> Path:
    tiny_model(folder / "embeddings.onnx")
    context = helper.make_node("EPContext", ["x"], ["y"], domain="com.microsoft", embed_mode=0,
                               ep_cache_context="context.bin", ep_sdk_version="2.51.0", source="QNN")
    graph = helper.make_graph([context], "context", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
         str(folder / "context.onnx"))
    (folder / "context.bin").write_bytes(bytes(64))
    (folder / "genai_config.json").write_text(json.dumps(CONFIG))
    return folder


def paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        yield from paths(child, (*at, key))


def replaced(at: tuple[Any, ...], odd: Any) -> Any:
    if not at:
        return odd
    config = copy.deepcopy(CONFIG)
    parent = config
    for key in at[:-1]:
        parent = parent[key]
    parent[at[-1]] = odd
    return config


def read(folder: Path) -> None:
    kv_cache_bytes(read_pack(folder), 1)


def test_the_undamaged_pack_reads(tmp_path: Path) -> None:
    pack = read_pack(write_pack(tmp_path))
    assert [s.name for s in pack.stages] == ["embeddings", "context"] and pack.stages[1].on_qnn
    assert (pack.kv.layers, pack.kv.heads, pack.kv.head_size, pack.padded_window) == (2, 2, 16, 64)
    assert kv_cache_bytes(pack, 1) == 2 * 2 * 2 * 16 * 256 * 4  # no cache input in these graphs: float32 assumed


def test_every_field_of_genai_config_replaced_by_an_odd_value_reads_or_is_a_pack_error(tmp_path: Path) -> None:
    folder = write_pack(tmp_path)
    (tmp_path.parent / "outside.onnx").write_bytes((folder / "embeddings.onnx").read_bytes())
    refused = 0
    for at in paths(CONFIG):
        for odd in ODD:
            (folder / "genai_config.json").write_text(json.dumps(replaced(at, odd)))
            try:
                read(folder)
            except PackError as exc:
                assert "genai_config.json" in str(exc), f"{at} = {odd!r}: {exc}"
                refused += 1
    assert refused > 100, "most replacements are refused"
    config = replaced(("model", "decoder", "pipeline", 0, "embeddings", "filename"), "../outside.onnx")
    (folder / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(PackError, match="stage 'embeddings' names ../outside.onnx, which is not in"):
        read_pack(folder)
    (folder / "genai_config.json").write_text('{"model": {"type": "decoder-pipeline", "context_length": "long"')
    with pytest.raises(PackError, match="genai_config.json is not an onnxruntime-genai config"):
        read_pack(folder)
    (folder / "genai_config.json").write_text(json.dumps(replaced(("model", "context_length"), [1])))
    with pytest.raises(PackError, match=r"not an onnxruntime-genai config: model.context_length: "):
        read_pack(folder)


@pytest.mark.parametrize("stage", ["embeddings.onnx", "context.onnx"])
def test_a_truncated_flipped_or_random_stage_graph_is_a_pack_error_naming_it(tmp_path: Path, stage: str) -> None:
    folder = write_pack(tmp_path)
    good = (folder / stage).read_bytes()
    rng = random.Random(stage)
    for attempt in range(150):
        damaged = bytearray(good)
        if attempt % 3 == 0:
            damaged = damaged[:rng.randrange(len(good))]
        elif attempt % 3 == 1:
            for _ in range(rng.randrange(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        else:
            damaged = bytearray(rng.randbytes(rng.randrange(1, 300)))
        (folder / stage).write_bytes(bytes(damaged))
        try:
            read(folder)
        except (PackError, GraphError) as exc:  # GraphError: the sizing's own reading (graph_facts)
            assert stage in str(exc)


def test_a_config_that_is_a_fifo_or_too_large_is_refused_without_blocking_or_reading_it_whole(tmp_path: Path) -> None:
    folder = write_pack(tmp_path)
    config = folder / "genai_config.json"
    config.write_bytes(b" " * (MAX_CONFIG_BYTES + 1) + json.dumps(CONFIG).encode())
    with pytest.raises(PackError, match=r"genai_config.json is over 1 MiB"):
        read_pack(folder)
    if hasattr(os, "mkfifo"):  # a FIFO nobody writes: reading it would block for ever
        config.unlink()
        os.mkfifo(config)
        with pytest.raises(PackError, match=r"genai_config.json is missing or not a regular file"):
            read_pack(folder)
