"""Chat models built for the NPU here: the trained tiny Llama and Qwen2 become QNN decoder-pipeline packs
(Olive's passes, context binaries for the HTP simulator), verified by greedy decoding against the fp32 CPU
reference."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from npuctl.artifacts import AccuracyError, BuildError, Store, build_deployment, facts
from npuctl.artifacts.gc import collect
from npuctl.artifacts.result import NpuArtifact
from npuctl.artifacts.store import sha256_file
from npuctl.runtime.devices import NpuKind, detect_host
from tests.tiny_chat import CONTEXT, TinyChat
from tests.tiny_llama import TRAINED_HELD_OUT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")]

NPU_STEPS = ["resolve", "genai-builder", "llm-surgeries", "llm-quantize", "verify-quantized", "llm-static", "compile",
             "verify"]
COUNTED = {"genai-builder": "layers", "llm-surgeries": "surgeries", "llm-quantize": "calibration samples",
           "verify-quantized": "tokens", "llm-static": "splits", "compile": "graphs", "verify": "tokens"}
"""What each step that runs in a child process reports its progress in."""


def context_binaries(wrapper: Path) -> set[str]:
    """The .bin files a wrapper's EPContext nodes name."""
    return {a.s.decode() for n in onnx.load(str(wrapper), load_external_data=False).graph.node
            if n.op_type == "EPContext" for a in n.attribute if a.name == "ep_cache_context"}


def pack_of(artifact: NpuArtifact) -> Path:
    return artifact.context_model.parent


def kv_cache_shapes(wrapper: Path) -> set[tuple[str, tuple[int | str, ...]]]:
    """The element types and shapes of a graph's KV cache inputs and outputs."""
    graph = onnx.load(str(wrapper), load_external_data=False).graph
    return {(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
             tuple(d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim))
            for v in [*graph.input, *graph.output] if v.name.startswith(("past_key_values.", "present."))}


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "phi3"])
def test_a_tiny_chat_model_becomes_a_verified_decoder_pipeline_pack_for_x_elite(
        tiny_chat: TinyChat, architecture: str) -> None:
    built = tiny_chat.build(f"tiny-{architecture}", architecture)
    assert [s.name for s in built.steps] == NPU_STEPS
    [artifact] = built.artifacts
    assert (artifact.target, artifact.soc_model, artifact.compatibility.split(":")[5]) == ("x-elite", 60, "60")
    report = artifact.generation
    # The quantized model on the CPU matches fp32 over every held-out prompt; the compiled pack on the simulator
    # matches the quantized model on its prompt.
    assert report is not None and report.first_divergence == report.tokens == 16
    # Two tokens: the prompt's (the context binaries) and one decoded (the iterator binaries), each run once.
    assert report.prompts == TRAINED_HELD_OUT and report.npu_first_divergence == report.npu_tokens == 2
    assert report.npu_cosine > 0.999
    # The check says where its time went (bench/llm_build.py reads it): loading the binaries, the prompt, the token.
    verify = tiny_chat.store.get(next(s.key for s in artifact.steps if s.name == "verify"))
    assert verify is not None and isinstance(verify.details, facts.LlmVerify)
    seconds = verify.details.pack.seconds
    assert seconds is not None and min(seconds.load, seconds.prefill, seconds.decode) > 0
    # Both checks keep their child's peak memory, as the other steps' facts do.
    checked = tiny_chat.store.get(next(s.key for s in artifact.steps if s.name == "verify-quantized"))
    assert checked is not None and isinstance(checked.details, facts.LlmVerifyQuantized)
    for memory in (verify.details.memory, checked.details.memory):
        assert memory is not None and memory.peak_rss_bytes > 20 << 20  # a Python process, at least
    assert checked.details.memory is not None and checked.details.memory.estimated_bytes is not None
    assert artifact.accuracy is not None and artifact.accuracy.value >= 0.98
    pack = pack_of(artifact)
    config = json.loads((pack / "genai_config.json").read_text())["model"]
    assert config["type"] == "decoder-pipeline" and config["decoder"]["sliding_window"]["window_size"] == 64
    assert config["context_length"] == 256
    stages = config["decoder"]["pipeline"][0]
    assert list(stages) == ["embeddings", "context_ctx", "iterator_ctx", "lm_head_context_ctx", "lm_head_iterator_ctx"]
    for name in ("context_ctx", "iterator_ctx", "lm_head_context_ctx", "lm_head_iterator_ctx"):
        assert stages[name]["session_options"]["provider_options"][0]["qnn"]["soc_model"] == "60"
    # lm_head is two compiled stages: the prompt's (run on its last window only), a token's. The prompt's takes the
    # window's hidden states and its input_ids and computes the logits of the last real position only.
    assert (stages["lm_head_context_ctx"]["is_lm_head"], stages["lm_head_context_ctx"]["run_on_token_gen"]) == (True, False)
    assert stages["lm_head_context_ctx"]["inputs"][-1] == "input_ids"
    [logits] = onnx.load(str(pack / "lm_head_context_ctx.onnx"), load_external_data=False).graph.output
    assert [d.dim_value for d in logits.type.tensor_type.shape.dim] == [1, 1, config["vocab_size"]]
    assert stages["lm_head_iterator_ctx"]["run_on_prompt"] is False
    assert not (pack / "lm_head.onnx").exists()
    assert {"tokenizer.json", "chat_template.jinja"} <= {p.name for p in pack.iterdir()}
    # Each step that ran here (not found in the session's store) said how far it had got while it ran: its
    # reports come between its start and its end, in the unit it counts, up to its total.
    events = tiny_chat.events[f"tiny-{architecture}"]
    ran = [s.name for s in built.steps if not s.cached and s.name in COUNTED]
    for step in ran:
        states = [(e.state.value, e.progress) for e in events if e.step == step]
        reports = [p for state, p in states if p is not None]
        assert states[0] == ("running", None) and states[-1][0] == "done" and len(reports) == len(states) - 2, states
        # llm-quantize counts its calibration samples, then the weights its quantizer reads (no total known).
        units = {COUNTED[step]} | ({"weight reads"} if step == "llm-quantize" else set())
        assert {p.unit for p in reports} <= units and COUNTED[step] in {p.unit for p in reports}, (step, reports)
        assert all(p.total is None or 0 <= p.done <= p.total for p in reports), (step, reports)
    # The first NPU build of each model in the session (test_gguf_generation may have made the fp32 reference).
    assert set(COUNTED) - {"genai-builder"} <= set(ran), ran
    # Where the work runs: every decoder layer, GroupQueryAttention with its KV cache included, on the QNN EP
    # (attention: npu, the default), and lm_head; the embeddings' Gather on the CPU. The KV cache is the HTP's
    # uint16 at the graphs' I/O, its DequantizeLinear and QuantizeLinear compiled with the rest.
    for name in ("context_ctx", "iterator_ctx"):
        assert report.stages[name].nodes.keys() == {"QNNExecutionProvider"}, report.stages[name]
        assert kv_cache_shapes(pack / f"{name}.onnx") == {("uint16", (1, 2, 256, 16))}
    assert report.stages["embeddings"].nodes.keys() == {"CPUExecutionProvider"}
    # One coverage figure: the artifact's is the pack's node share, its MACs share a decoded token's.
    assert artifact.npu_coverage == report.coverage.nodes > 0.9 and 0.3 < report.weight_share < 1.0
    # Per decoded token, every MAC is on the HTP: the projections, the MLP, attention over the whole 256-token
    # cache and lm_head (over one token in both: the prompt's last, a decoded token).
    hf = json.loads((tiny_chat.source(architecture) / "config.json").read_text())
    hidden, heads, kv_heads, head = hf["hidden_size"], hf["num_attention_heads"], hf["num_key_value_heads"], 16
    layer = hidden * head * (heads + 2 * kv_heads) + heads * head * hidden + 3 * hidden * hf["intermediate_size"]
    assert report.stages["iterator_ctx"].macs == {
        "QNNExecutionProvider": hf["num_hidden_layers"] * (layer + 2 * 256 * heads * head)}
    for name in ("lm_head_context_ctx", "lm_head_iterator_ctx"):
        macs = report.stages[name].macs
        assert macs["QNNExecutionProvider"] == hidden * hf["vocab_size"] and not macs.get("CPUExecutionProvider")
    assert report.coverage.macs == report.prefill_mac_share == 1.0
    assert "100% of per-token MACs" in report.lines()[0]
    # What stays on the CPU is named, where and why: the token gather, genai's sequence lengths and sampling, and
    # the dequantization of the HTP's uint16 logits.
    assert [(w.work.value, w.where) for w in report.cpu_work] == [
        ("token-embeddings", "embeddings"), ("sequence-lengths", "onnxruntime-genai"),
        ("logits-dequantize", "lm_head_context_ctx, lm_head_iterator_ctx"), ("sampling", "onnxruntime-genai")]
    assert "  on the CPU: logits-dequantize (lm_head_context_ctx, lm_head_iterator_ctx): the HTP's uint16 logits " \
           "made float for the sampler" in "\n".join(report.lines())


def test_attention_cpu_keeps_group_query_attention_with_its_kv_cache_on_the_cpu_and_verifies(
        tiny_chat: TinyChat) -> None:
    built = tiny_chat.build("tiny-llama-cpu-attention", "llama", generation={"contextLength": 256, "attention": "cpu"})
    [artifact] = built.artifacts
    report = artifact.generation
    assert report is not None and report.first_divergence == report.tokens == 16
    for name in ("context_ctx", "iterator_ctx"):
        assert report.stages[name].cpu_ops == {"GroupQueryAttention": 2}
        assert kv_cache_shapes(pack_of(artifact) / f"{name}.onnx") == {
            ("float32", (1, 2, "past_sequence_length", 16))}
    [attention] = [w for w in report.cpu_work if w.work.value == "attention"]
    assert attention.where == "context_ctx, iterator_ctx" and "spec.generation.attention is cpu" in attention.reason
    assert "unplaced" not in {w.work.value for w in report.cpu_work}


def test_each_context_iterator_pair_has_its_own_binary_by_default_and_one_shared_with_weight_sharing(
        tiny_chat: TinyChat) -> None:
    plain = tiny_chat.build("tiny-llama", "llama").artifacts[0]
    pack = pack_of(plain)
    assert context_binaries(pack / "context_ctx.onnx") == {"context_ctx_qnn.bin"}
    assert context_binaries(pack / "iterator_ctx.onnx") == {"iterator_ctx_qnn.bin"}
    with pytest.raises(BuildError) as failed:
        tiny_chat.build("tiny-llama-shared", "llama", generation={"contextLength": 256, "window": 64, "weightSharing": True})
    # The shared pack is built; loading it crashes inside libQnnHtp.so on the simulator, and verify says so.
    assert failed.value.step == "verify" and "weightSharing" in failed.value.message
    compiled = [r for r in tiny_chat.store.records() if isinstance(r.details, facts.LlmCompile) and r.details.weight_sharing]
    [shared] = compiled
    # One binary per pair: the decoder layers', and lm_head's (its weight then stored once on the HTP).
    for prompt, token in (("context_ctx", "iterator_ctx"), ("lm_head_context_ctx", "lm_head_iterator_ctx")):
        assert context_binaries(shared.path(f"{prompt}.onnx")) == context_binaries(shared.path(f"{token}.onnx"))
    assert len([f for f in shared.files if f.path.endswith(".bin")]) == 2


def test_targets_share_every_step_up_to_compile_and_x2_elite_gets_its_own_binaries(tiny_chat: TinyChat) -> None:
    first = tiny_chat.build("tiny-llama", "llama")
    both = tiny_chat.build("tiny-llama-fleet", "llama", targets=["x-elite", "x2-elite"])
    ran = [(s.name, s.cached) for s in both.steps]
    assert ran[:6] == [(name, True) for name in NPU_STEPS[:6]]
    assert {a.target: a.soc_model for a in both.artifacts} == {"x-elite": 60, "x2-elite": 88}
    x2 = next(a for a in both.artifacts if a.target == "x2-elite")
    assert x2.compatibility is not None and x2.compatibility.split(":")[5] == "88"
    assert x2.generation is not None and x2.generation.first_divergence == 16
    assert both.artifacts[0].context_model == first.artifacts[0].context_model


def test_a_second_build_runs_nothing_and_a_precision_change_reruns_only_what_depends_on_it(
        tiny_chat: TinyChat) -> None:
    tiny_chat.build("tiny-llama", "llama")
    again = tiny_chat.build("tiny-llama-again", "llama", serve={"name": "other", "maxBatch": 2})
    assert again.all_cached
    w4 = tiny_chat.build("tiny-llama-w4", "llama", precision="w4a16")
    assert {s.name: s.cached for s in w4.steps} == {
        "resolve": True, "genai-builder": True, "llm-surgeries": True, "llm-quantize": False,
        "verify-quantized": False, "llm-static": False, "compile": False, "verify": False}
    assert w4.artifacts[0].generation is not None


def test_a_quantization_with_one_layers_scales_wrong_is_refused_before_static_shapes_and_compile(
        tiny_chat: TinyChat, tmp_path: Path) -> None:
    tiny_chat.build("tiny-llama", "llama")
    # A copy of the session's store (hard links: nothing written into the shared files) whose w8a16 quantized
    # models have layer 0's weight scales 4x too large, recorded with their new digests as a buggy quantizer
    # would have left them.
    shutil.copytree(tiny_chat.store.steps_dir, tmp_path / "steps", copy_function=os.link)
    store = Store(tmp_path)
    damaged = [r for r in store.records() if isinstance(r.details, facts.LlmQuantize) and r.details.weights == "uint8"]
    assert damaged
    for record in damaged:
        wrong_scales(record.folder, "model.layers.0.", factor=4.0)
    with pytest.raises(AccuracyError) as refused:
        build_deployment(tiny_chat.manifest("tiny-llama", "llama"), store=store)
    assert refused.value.step == "verify"
    assert "the quantized model (w8a16, on the CPU) first differs from the fp32 reference" in refused.value.message
    # Refused before static shapes and compile spent any time on it.
    digests = {r.digest for r in store.records() if r.key in {d.key for d in damaged}}
    assert not [r for r in store.records() if r.step == "llm-static" and r.inputs["model"] in digests]


def test_the_fp32_reference_run_in_parts_over_the_quantized_tokens_finds_what_decoding_it_greedily_finds(
        tiny_chat: TinyChat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from npuctl.artifacts.llm import calibration, decode
    from npuctl.artifacts.llm import verify as llm_verify
    from npuctl.runtime.prompts import PromptTokenizer

    built = tiny_chat.build("tiny-llama", "llama")
    records = {r.digest: r for r in tiny_chat.store.records()}
    # This build's w8a16 check: the session's store holds other builds' (other sources, windows and precisions).
    key = next(s.key for s in built.artifacts[0].steps if s.name == "verify-quantized")
    [record] = [r for r in records.values() if r.key == key]
    assert isinstance(record.details, facts.LlmVerifyQuantized)
    graphs, weights = records[record.inputs["reference"]].folder, records[record.inputs["weights"]].folder
    prompts, tokens = record.parameters["prompts"], record.parameters["tokens"]
    # The same quantization, and a copy with layer 0's scales wrong: its tokens leave fp32's early.
    damaged = tmp_path / "damaged"
    shutil.copytree(records[record.inputs["model"]].folder, damaged, copy_function=os.link)
    wrong_scales(damaged, "model.layers.0.", factor=4.0)
    monkeypatch.setattr(calibration, "PART_BYTES", 16 << 10)
    assert len(calibration.plan(onnx.load(str(graphs / "model.onnx"), load_external_data=False).graph, set(),
                                decode.STEP, calibration.PART_BYTES)) > 4
    tokenizer = PromptTokenizer(graphs)
    fp32 = decode.Decoder(graphs / "model.onnx", frozenset([tiny_chat_eos(graphs)]), weights=weights)
    whole = {prompt: fp32.greedy([tokenizer.plain(prompt)], tokens)[0] for prompt in prompts}
    divergences = []
    for number, quantized in enumerate((records[record.inputs["model"]].folder, damaged)):
        out = tmp_path / f"checked-{number}"
        out.mkdir()
        checks = llm_verify._quantized(graphs, weights, quantized, prompts, tokens, out)
        qdq = decode.Decoder(quantized / "model.onnx", frozenset([tiny_chat_eos(graphs)]))
        for check in checks:
            # Alone, not in the check's batch of every prompt: the same tokens and first logits.
            mine = qdq.greedy([tokenizer.plain(check.prompt)], tokens)[0]
            expected = whole[check.prompt]
            assert check.quantized_tokens == mine.tokens
            assert check.first_divergence == llm_verify.first_divergence(mine.tokens, expected.tokens, tokens)
            assert check.reference_tokens == expected.tokens[:check.first_divergence + 1]
            assert check.cosine == pytest.approx(decode.cosine(mine.first_logits, expected.first_logits), abs=1e-5)
        with np.load(out / llm_verify.PROBE) as probe:
            np.testing.assert_allclose(probe["reference"], whole[prompts[0]].first_logits, atol=1e-4)
        divergences.append(min(c.first_divergence for c in checks))
    assert divergences[1] < divergences[0]


def test_the_quantized_graph_decodes_the_prompts_8_at_a_time_each_as_it_would_alone(tiny_chat: TinyChat) -> None:
    from npuctl.artifacts.inputs import HELD_OUT_CORPUS
    from npuctl.artifacts.llm import decode
    from npuctl.runtime.prompts import PromptTokenizer

    built = tiny_chat.build("tiny-llama", "llama")
    records = {r.digest: r for r in tiny_chat.store.records()}
    key = next(s.key for s in built.artifacts[0].steps if s.name == "verify-quantized")
    [record] = [r for r in records.values() if r.key == key]
    graphs, quantized = records[record.inputs["reference"]].folder, records[record.inputs["model"]].folder
    tokenizer = PromptTokenizer(graphs)
    # 11 prompts of different lengths: a batch of 8 (the cap), then one of 3.
    prompts = [tokenizer.plain(" ".join(text.split()[:words])) for text, words in zip(HELD_OUT_CORPUS, range(2, 13))]
    assert len(prompts) == 11 and len({len(p) for p in prompts}) > 4
    qdq = decode.Decoder(quantized / "model.onnx", frozenset([tiny_chat_eos(graphs)]))
    batches: list[int] = []
    run = qdq.session.run

    def counted(names: Any, feed: dict[str, Any]) -> Any:
        batches.append(len(feed["input_ids"]))
        return run(names, feed)

    qdq.session.run = counted  # type: ignore[method-assign]
    together = qdq.greedy(prompts, 16)
    assert set(batches) == {decode.BATCH, 3} and decode.BATCH == 8
    for prompt, answer in zip(prompts, together, strict=True):
        alone = qdq.greedy([prompt], 16)[0]
        assert answer.tokens == alone.tokens
        np.testing.assert_array_equal(answer.first_logits, alone.first_logits)
    # Rows end at the end token on their own (some at once) while the others go on.
    lengths = [len(a.tokens) for a in together]
    assert 1 in lengths and max(lengths) > 4


def genai_config(folder: Path) -> dict[str, Any]:
    model: dict[str, Any] = json.loads((folder / "genai_config.json").read_text())["model"]
    return model


def tiny_chat_eos(folder: Path) -> int:
    eos = genai_config(folder)["eos_token_id"]
    return int(eos[0] if isinstance(eos, list) else eos)


def wrong_scales(folder: Path, layer: str, factor: float) -> None:
    """Multiply the MatMul weight scales of one layer of `folder/model.onnx`, and record the file's new digest.
    The scales are in the graph; the weights stay in the (hard-linked) data file, which onnx would refuse to read."""
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    hit = 0
    for tensor in model.graph.initializer:
        if tensor.name.startswith(layer) and tensor.name.endswith("MatMul.weight_scale"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), tensor.name))
            hit += 1
    assert hit
    onnx.save(model, str(folder / "model.onnx.new"))
    os.replace(folder / "model.onnx.new", folder / "model.onnx")  # a new file: the hard-linked original stays
    record = json.loads((folder / "record.json").read_text())
    for entry in record["files"]:
        if entry["path"] == "model.onnx":
            entry["sha256"], entry["size"] = sha256_file(folder / "model.onnx"), (folder / "model.onnx").stat().st_size
    (folder / "record.json.new").write_text(json.dumps(record))
    os.replace(folder / "record.json.new", folder / "record.json")


def test_static_shapes_read_only_config_json_of_the_checkpoint_and_make_the_same_graphs(tiny_chat: TinyChat,
                                                                                         tmp_path: Path) -> None:
    from npuctl.artifacts.llm import olive_steps

    built = tiny_chat.build("tiny-llama", "llama")
    keys = {s.name: s.key for s in built.steps}
    records = {r.step: r for r in tiny_chat.store.records() if r.key in (keys["llm-quantize"], keys["llm-static"])}
    # The checkpoint without its weights: where to split comes from the model's shape alone.
    (tmp_path / "hf").mkdir()
    shutil.copy(tiny_chat.source("llama") / "config.json", tmp_path / "hf")
    stored = records["llm-static"]
    request = {"model_dir": str(records["llm-quantize"].folder), "hf_dir": str(tmp_path / "hf"),
               **{k: stored.parameters[k] for k in ("splits", "window", "context_length", "attention")}}
    details = olive_steps.static(request, tmp_path / "static")
    assert (details.split_assignments, details.pipeline) == (stored.details.split_assignments,
                                                             stored.details.pipeline)
    # The same files, byte for byte: graphs, their weights' data files, genai_config.json.
    made = {p.name for p in (tmp_path / "static").iterdir()} - {"record.json"}
    assert made == {p.name for p in stored.folder.iterdir()} - {"record.json"}
    assert {p.suffix for p in stored.folder.iterdir()} >= {".onnx", ".data", ".json"}
    for name in made:
        assert filecmp.cmp(tmp_path / "static" / name, stored.path(name), shallow=False), name


def test_unsupported_architecture_is_refused_naming_it(tiny_chat: TinyChat, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BuildError, match=r"architecture 'gpt2' \(GPT2LMHeadModel\) cannot be built for the NPU"):
        tiny_chat.build("tiny-gpt2", f"file:{tmp_path}")


def test_a_window_or_kv_cache_past_the_models_context_is_refused_naming_the_knob(tiny_chat: TinyChat) -> None:
    with pytest.raises(BuildError, match=rf"spec.generation.window 600 is not shorter than the model's context of {CONTEXT}"):
        tiny_chat.build("tiny-wide", "llama", generation={"window": 600})
    with pytest.raises(BuildError, match=r"spec.generation.contextLength 1024 is longer than the model's context"):
        tiny_chat.build("tiny-long", "llama", generation={"contextLength": 1024})


def test_a_graph_over_qnns_finalize_limit_is_refused_before_any_step_naming_the_splits_to_set(
        tiny_chat: TinyChat, tmp_path: Path) -> None:
    # Llama-3.2-3B's shapes: ~2.6 GiB of w8a16 weights in one graph. Qualcomm's x86 prepare finalizes even a
    # 2.3 GB graph, so the device's error 1002 cannot be produced here: the build refuses the shape up front.
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 3072, "num_attention_heads": 24,
        "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 8192, "num_hidden_layers": 28,
        "max_position_embeddings": 131072, "vocab_size": 128256}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BuildError) as refused:
        tiny_chat.build("llama-3b-one-graph", f"file:{tmp_path}", generation={"splits": 1})
    assert refused.value.step == "resolve"
    # With attention on the HTP the graph also holds its layers' uint16 KV cache (4096 tokens) as input and output.
    assert ("~3.5 GiB (2.6 GiB of w8a16 weights and 0.9 GiB of its layers' uint16 KV cache as input and output at "
            "contextLength 4096) in one graph, over QNN's ~2 GB finalize limit") in refused.value.message
    assert ("set spec.generation.splits to 4 or more, or auto, or a shorter spec.generation.contextLength"
            in refused.value.message)


def test_a_config_with_an_impossible_size_is_refused_naming_the_field(tiny_chat: TinyChat, tmp_path: Path) -> None:
    config = json.loads((tiny_chat.source("llama") / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 0}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BuildError, match=r"config.json: num_hidden_layers must be a positive integer, not 0"):
        tiny_chat.build("tiny-no-layers", f"file:{tmp_path}")


def test_an_soc_the_qnn_sdk_cannot_compile_for_fails_the_build_naming_the_target(tiny_chat: TinyChat) -> None:
    with pytest.raises(BuildError, match=r"QNN EP took none of the \d+ nodes .* for soc 999.*targets\[\]\.socModel"):
        tiny_chat.build("tiny-soc999", "llama", targets=[{"socModel": 999}])


# Last in the file: it builds w4a16 in the session's store, which the tests above expect to build first.
def test_the_store_keeps_one_fp32_model_and_gc_drops_what_a_precision_change_left_behind(tiny_chat: TinyChat) -> None:
    w8 = {s.name: s.key for s in tiny_chat.build("tiny-llama", "llama").steps}
    store = tiny_chat.store
    sizes = {step: store.size(store.get(key)) for step, key in w8.items() if store.get(key) is not None}
    # The fp32 weights are the reference's (genai-builder, also the CPU fallback); the surgeries keep the graph.
    assert sizes["llm-surgeries"] < sizes["genai-builder"] / 4
    # Kept for re-use while a manifest uses them; a precision change leaves the old quantization behind for gc.
    tiny_chat.build("tiny-llama-w4", "llama", precision="w4a16")
    dropped = {r.key for r in collect(store, [tiny_chat.manifest("tiny-llama-w4", "llama", precision="w4a16")],
                                      dry_run=True).removed}
    assert {w8["llm-quantize"], w8["llm-static"], w8["compile"], w8["verify"]} <= dropped
    assert not {w8["genai-builder"], w8["llm-surgeries"]} & dropped
