"""Attention on the HTP (npuctl/artifacts/llm/attention.py) on a hand-made GroupQueryAttention graph in the form
StaticLLM's graphs have it (packed QKV, rotary inside, KV cache as graph inputs and outputs, seqlens_k and
total_sequence_length), compiled in-process for the HTP simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.artifacts import BuildError
from npuctl.artifacts.llm import attention, macs
from npuctl.runtime import qnn
from npuctl.runtime.devices import NpuKind, detect_host

HEADS, KV_HEADS, HEAD, WINDOW, CONTEXT = 4, 2, 16, 8, 32
simulator = pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")


def gqa_graph(path: Path, *, kv_length: int | str = "past_sequence_length", **attributes: Any) -> Path:
    """One GroupQueryAttention over a WINDOW-token chunk; the KV cache's length `kv_length` (symbolic, as StaticLLM
    leaves it, or a number)."""
    rng = np.random.default_rng(0)
    half = HEAD // 2
    angles = np.arange(CONTEXT)[:, None] / 10000 ** (np.arange(half)[None, :] / half)
    caches = [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos_cache"),
              numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin_cache")]
    weight = numpy_helper.from_array(
        (rng.standard_normal((HEADS * HEAD, (HEADS + 2 * KV_HEADS) * HEAD)) * 0.2).astype(np.float32), "qkv_w")
    kv = [1, KV_HEADS, kv_length, HEAD]
    node = helper.make_node(
        "GroupQueryAttention", ["qkv", "", "", "past_key", "past_value", "seqlens_k", "total_seq_len", "cos_cache",
                                "sin_cache"], ["attn", "present_key", "present_value"], name="layer0_attn",
        domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS, do_rotary=1, **attributes)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "qkv_w"], ["qkv"], name="qkv_proj"), node], "gqa",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WINDOW, HEADS * HEAD]),
         helper.make_tensor_value_info("past_key", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("past_value", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1, 1]),
         helper.make_tensor_value_info("total_seq_len", TensorProto.INT32, [])],
        [helper.make_tensor_value_info("attn", TensorProto.FLOAT, [1, WINDOW, HEADS * HEAD]),
         helper.make_tensor_value_info("present_key", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("present_value", TensorProto.FLOAT, kv)], [weight, *caches])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def kv_dims(path: Path) -> list[list[int | str]]:
    graph = onnx.load(str(path)).graph
    return [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output] if "key" in v.name or "value" in v.name]


def test_the_kv_cache_gets_the_context_length_in_every_graph(tmp_path: Path) -> None:
    for name in ("context", "iterator"):
        gqa_graph(tmp_path / f"{name}.onnx")
    attention.fix_kv_length(tmp_path, ["context", "iterator"], CONTEXT)
    for name in ("context", "iterator"):
        assert kv_dims(tmp_path / f"{name}.onnx") == [[1, KV_HEADS, CONTEXT, HEAD]] * 4


@pytest.mark.parametrize(("attributes", "cause"), [
    ({"softcap": 50.0}, r"no attention logit soft-capping \(softcap=50.0\)"),
    ({"rotary_interleaved": 1}, r"no interleaved rotary embedding \(rotary_interleaved=1\)"),
    ({"local_window_size": 16}, r"no sliding-window attention \(local_window_size=16 < contextLength 32\)"),
])
def test_attention_the_htp_cannot_take_is_refused_naming_the_cause_and_the_switch(
        tmp_path: Path, attributes: dict[str, Any], cause: str) -> None:
    gqa_graph(tmp_path / "context.onnx", **attributes)
    with pytest.raises(BuildError, match=rf"layer0_attn: the HTP's GroupQueryAttention has {cause}: "
                                         r"set spec.generation.attention: cpu") as refused:
        attention.fix_kv_length(tmp_path, ["context"], CONTEXT)
    assert refused.value.step == "llm-static"


def test_a_graph_whose_attention_stayed_on_the_cpu_fails_the_compile_naming_the_switch() -> None:
    with pytest.raises(BuildError, match=r"left 2 GroupQueryAttention node\(s\) of graph context on the CPU.*"
                                         r"attention: cpu"):
        attention.check_placed("context", {"GroupQueryAttention": 2})
    attention.check_placed("context", {})


def place(path: Path, provider_options: dict[str, str]) -> tuple[qnn.Coverage, Any]:
    import onnxruntime as ort

    options = qnn.session_options(60, config={qnn.RECORD_ASSIGNMENT: "1"}, provider_options=provider_options)
    session = ort.InferenceSession(str(path), options)
    return qnn.npu_coverage(session), session


@simulator
def test_the_htp_takes_attention_only_pinned_by_op_affinity_and_with_a_static_kv_cache(tmp_path: Path) -> None:
    symbolic = gqa_graph(tmp_path / "symbolic.onnx")
    static = gqa_graph(tmp_path / "static.onnx", kv_length=CONTEXT)
    pinned = attention.provider_options(tmp_path)
    assert place(static, {})[0].other_ops == {"GroupQueryAttention": 1}  # the EP's default: CPU
    assert place(symbolic, pinned)[0].other_ops == {"GroupQueryAttention": 1}
    coverage, session = place(static, pinned)
    assert coverage.nodes_by_ep == {qnn.EP_NAME: 2}


@simulator
def test_attention_on_the_htp_matches_the_cpu_on_the_valid_part_of_the_kv_cache(tmp_path: Path) -> None:
    import onnxruntime as ort

    static = gqa_graph(tmp_path / "static.onnx", kv_length=CONTEXT)
    _, htp = place(static, attention.provider_options(tmp_path))
    cpu = ort.InferenceSession(str(static), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    past = 5  # tokens already in the cache; this chunk's WINDOW tokens follow them
    feeds = {"x": rng.standard_normal((1, WINDOW, HEADS * HEAD)).astype(np.float32),
             "past_key": rng.standard_normal((1, KV_HEADS, CONTEXT, HEAD)).astype(np.float32),
             "past_value": rng.standard_normal((1, KV_HEADS, CONTEXT, HEAD)).astype(np.float32),
             "seqlens_k": np.array([[past + WINDOW - 1]], np.int32), "total_seq_len": np.array(past + WINDOW, np.int32)}
    on_htp, on_cpu = htp.run(None, feeds), cpu.run(None, feeds)
    np.testing.assert_allclose(on_htp[0], on_cpu[0], atol=0.05)
    for htp_kv, cpu_kv in zip(on_htp[1:], on_cpu[1:], strict=True):
        np.testing.assert_allclose(htp_kv[:, :, : past + WINDOW], cpu_kv[:, :, : past + WINDOW], atol=0.05)


def test_the_macs_of_a_graph_are_its_projections_and_attention_over_the_whole_kv_cache(tmp_path: Path) -> None:
    graph = gqa_graph(tmp_path / "context.onnx", kv_length=CONTEXT)
    assert macs.tokens_of(graph) == WINDOW
    assert macs.node_macs(graph, WINDOW, CONTEXT) == {
        "qkv_proj": WINDOW * HEADS * HEAD * (HEADS + 2 * KV_HEADS) * HEAD,
        "layer0_attn": 2 * WINDOW * CONTEXT * HEADS * HEAD}


def test_the_status_lines_give_the_mac_shares_and_name_cpu_ops_only_where_there_are_some() -> None:
    from npuctl.schema.placement import GenerationStatus, NpuCoverage, StagePlacement

    on_htp = StagePlacement(nodes={qnn.EP_NAME: 119}, weight_bytes={}, cpu_ops={}, macs={qnn.EP_NAME: 139264})
    split = StagePlacement(nodes={qnn.EP_NAME: 117, "CPUExecutionProvider": 2}, weight_bytes={},
                           cpu_ops={"GroupQueryAttention": 2})
    status = GenerationStatus(tokens=16, first_divergence=16, matching_tokens=16, prompts=4, npu_tokens=4,
                              npu_first_divergence=4, npu_cosine=0.99998,
                              coverage=NpuCoverage(nodes=0.97, macs=0.845), weight_share=0.74,
                              prefill_mac_share=0.8447, stages={"iterator_ctx": on_htp, "context_ctx": split})
    assert status.lines() == [
        "quantized on the CPU: greedy tokens match the fp32 reference through 16 of 16 (bar 16, 4 prompts); the pack "
        "on the NPU matches it through 4 of 4 (logits cosine 0.99998); NPU coverage 97% of nodes, 84% of per-token "
        "MACs, 74% of weight bytes, 84.5% of MACs per prefill window",
        "  iterator_ctx: 119 on QNN", "  context_ctx: 117 on QNN, 2 on CPU (CPU: GroupQueryAttention x2)"]
