"""Text-generation runtime: streaming detokenization, and QNN decoder-pipeline packs on this host's HTP
simulator (a one-stage pipeline compiled from a tiny graph) or refused for another SoC's binary."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.artifacts.compile import COMPAT_KEY, CONTEXT_MODEL, compile_context
from npuctl.runtime.devices import detect_host
from npuctl.runtime.generation import GenerationModel, Sampling
from npuctl.runtime.loading import load_model
from npuctl.runtime.placement import Artifacts, NotServable, Reason
from npuctl.runtime.text_stream import TextStream
from npuctl.schema.models import ModelDeployment
from tests.runtime.byte_tokenizer import byte_tokenizer

VOCAB = 64


def test_pieces_add_up_to_the_text_even_across_split_characters(tmp_path: Path) -> None:
    tokenizer = byte_tokenizer(tmp_path)
    text = "héllo 🙂 wörld"
    ids = tokenizer.tokenizer.encode(text).ids
    assert len(ids) == len(text.encode())
    stream = TextStream(tokenizer.detokenizer())
    pieces = [stream.push(token) for token in ids] + [stream.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) and pieces.count("") >= 4, "split characters are held back"


def test_a_stop_string_split_over_tokens_is_held_back_and_cut(tmp_path: Path) -> None:
    tokenizer = byte_tokenizer(tmp_path)
    stream = TextStream(tokenizer.detokenizer(), stop=["END"])
    released = [stream.push(token) for token in tokenizer.tokenizer.encode("abcENxyzEND tail").ids]
    assert released[:5] == ["a", "b", "c", "", ""], "'EN' may begin the stop string"
    assert stream.stopped and "".join(released) + stream.finish() == "abcENxyz"


def pipeline_pack(folder: Path, *, soc_model: int = 60,
                  claimed_soc: int | None = None) -> tuple[Path, np.ndarray]:
    """A decoder-pipeline pack with one NPU stage: logits = table[input_ids], compiled to a context binary for
    `soc_model`; `claimed_soc` rewrites what the wrapper says it was built for."""
    table = np.random.default_rng(0).standard_normal((VOCAB, VOCAB)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0)], "lookup",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT32, [1, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, VOCAB])],
        [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = folder.parent / f"{folder.name}-lookup.onnx"
    onnx.save(model, str(source))
    (folder / "ctx").mkdir(parents=True)
    compile_context(source, folder / "ctx", soc_model=soc_model, fp16=True, optimization_level=1)
    if claimed_soc is not None:
        wrapper = onnx.load(str(folder / "ctx" / CONTEXT_MODEL))
        for prop in wrapper.metadata_props:
            if prop.key == COMPAT_KEY:
                prop.value = f"v2:6:2.51.0:5.51.0:0:{claimed_soc}:0:0"
        onnx.save(wrapper, str(folder / "ctx" / CONTEXT_MODEL))
    stage = {"filename": f"ctx/{CONTEXT_MODEL}", "inputs": ["input_ids"], "outputs": ["logits"],
             "run_on_prompt": True, "run_on_token_gen": True,
             # As AI Hub packs write it: a Windows library name, resolved on this host by npuctl.
             "session_options": {"log_id": "lookup", "provider_options": [
                 {"qnn": {"backend_path": "QnnHtp.dll", "htp_performance_mode": "burst"}}]}}
    config = {"model": {"type": "decoder-pipeline", "context_length": 32, "bos_token_id": 0, "eos_token_id": VOCAB - 1,
                        "pad_token_id": 0, "vocab_size": VOCAB,
                        "decoder": {"head_size": 8, "hidden_size": 8, "num_attention_heads": 1,
                                    "num_hidden_layers": 0, "num_key_value_heads": 1,
                                    "inputs": {"input_ids": "input_ids"}, "outputs": {"logits": "logits"},
                                    "session_options": {"log_id": "pipeline", "provider_options": []},
                                    "pipeline": [{"lookup": stage}]}},
              "search": {"max_length": 32, "do_sample": False, "past_present_share_buffer": False}}
    (folder / "genai_config.json").write_text(json.dumps(config), encoding="utf-8")
    _byte_tokenizer(folder)
    return folder, table


def _byte_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({chr(65 + i): i for i in range(VOCAB)}, unk_token="A")).save(str(folder / "tokenizer.json"))


def pack_deployment(**runtime: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "pack"},
        "spec": {"model": {"source": "file:pack", "task": "text-generation", "format": "genai"},
                 "runtime": runtime}})


@pytest.fixture(scope="module")
def simulator_pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    if detect_host().npu.value != "simulator":
        pytest.skip("needs onnxruntime-qnn's HTP simulator (x86_64)")
    return pipeline_pack(tmp_path_factory.mktemp("pack") / "pack")


@pytest.mark.slow
def test_a_pipeline_pack_for_this_hosts_simulator_loads_and_generates_on_qnn(
        simulator_pack: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, table = simulator_pack
    model = load_model(pack_deployment(device="npu", allowSimulator=True, fallback="none"),
                       Artifacts(None, folder, views=tmp_path / "views"))
    assert isinstance(model, GenerationModel)
    assert model.info.where.value == "npu-simulator" and model.info.provider == "QNNExecutionProvider"
    assert model.info.npu_coverage == 1.0 and model.slots == 1
    tokens = list(model.tokens([5], Sampling(6, temperature=0), threading.Event()))
    expected, token = [], 5
    for _ in range(6):
        token = int(np.argmax(table[token]))
        expected.append(token)
        if token == VOCAB - 1:
            break
    assert tokens == expected  # the lookup ran in the context binary: the CPU EP cannot run an EPContext node


def test_a_pipeline_pack_for_another_soc_is_refused_with_the_reason(tmp_path: Path) -> None:
    host = detect_host()
    if host.npu.value == "none":
        pytest.skip("needs the QNN EP")
    folder, _ = pipeline_pack(tmp_path / "pack", claimed_soc=88)
    x_elite = host.with_overrides({"soc": "x-elite"})
    with pytest.raises(NotServable) as refused:
        load_model(pack_deployment(device="npu", allowSimulator=True), Artifacts(None, folder), x_elite)
    assert refused.value.reason in (Reason.NO_CONTEXT_BINARY, Reason.INCOMPATIBLE_CONTEXT_BINARY)
    assert "X2 Elite" in refused.value.message and "X Elite" in refused.value.message
    # A pack has no CPU graph to fall back to: the NPU's reason stands even with fallback: cpu.
    assert "no CPU-runnable model" in refused.value.message


def test_a_pipeline_pack_is_not_run_on_the_simulator_unless_allowed(tmp_path: Path) -> None:
    host = detect_host()
    if host.npu.value != "simulator":
        pytest.skip("needs the HTP simulator")
    folder, _ = pipeline_pack(tmp_path / "pack")
    with pytest.raises(NotServable) as refused:
        load_model(pack_deployment(), Artifacts(None, folder), host)
    assert refused.value.reason is Reason.SIMULATOR_NOT_ALLOWED


def test_fallback_none_keeps_a_cpu_decoder_off_the_cpu_on_an_npu_host(tiny_llama_build: Any) -> None:
    host = detect_host()
    if host.npu.value == "none":
        pytest.skip("needs the QNN EP")
    deployment = pack_deployment(device="npu", allowSimulator=True, fallback="none")
    with pytest.raises(NotServable) as refused:
        load_model(deployment, Artifacts(None, tiny_llama_build.model_dir), host)
    assert refused.value.reason is Reason.NO_CONTEXT_BINARY and "fallback is none" in refused.value.message
