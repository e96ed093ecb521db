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


QKV_SCALE, QKV_ZERO = 5.0e-5, 30000
"""The uint16 quantization of the packed QKV projection, as llm-quantize leaves it (asymmetric: -1.5 to 1.77, which
the projection of random inputs fills to its ends)."""


def gqa_graph(path: Path, *, kv_length: int | str = "past_sequence_length", **attributes: Any) -> Path:
    """One GroupQueryAttention over a WINDOW-token chunk, its packed QKV input quantized to uint16 and dequantized
    (Q/DQ, as llm-quantize leaves it); the KV cache's length `kv_length` (symbolic, as StaticLLM leaves it, or a
    number)."""
    rng = np.random.default_rng(0)
    half = HEAD // 2
    angles = np.arange(CONTEXT)[:, None] / 10000 ** (np.arange(half)[None, :] / half)
    caches = [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos_cache"),
              numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin_cache")]
    weight = numpy_helper.from_array(
        (rng.standard_normal((HEADS * HEAD, (HEADS + 2 * KV_HEADS) * HEAD)) * 0.2).astype(np.float32), "qkv_w")
    kv = [1, KV_HEADS, kv_length, HEAD]
    qdq = [numpy_helper.from_array(np.array(QKV_SCALE, np.float32), "qkv_scale"),
           numpy_helper.from_array(np.array(QKV_ZERO, np.uint16), "qkv_zero_point")]
    node = helper.make_node(
        "GroupQueryAttention", ["qkv_dequantized", "", "", "past_key", "past_value", "seqlens_k", "total_seq_len",
                                "cos_cache", "sin_cache"], ["attn", "present_key", "present_value"], name="layer0_attn",
        domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS, do_rotary=1, **attributes)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "qkv_w"], ["qkv"], name="qkv_proj"),
         helper.make_node("QuantizeLinear", ["qkv", "qkv_scale", "qkv_zero_point"], ["qkv_quantized"], name="qkv_q"),
         helper.make_node("DequantizeLinear", ["qkv_quantized", "qkv_scale", "qkv_zero_point"], ["qkv_dequantized"],
                          name="qkv_dq"), node], "gqa",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WINDOW, HEADS * HEAD]),
         helper.make_tensor_value_info("past_key", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("past_value", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1, 1]),
         helper.make_tensor_value_info("total_seq_len", TensorProto.INT32, [])],
        [helper.make_tensor_value_info("attn", TensorProto.FLOAT, [1, WINDOW, HEADS * HEAD]),
         helper.make_tensor_value_info("present_key", TensorProto.FLOAT, kv),
         helper.make_tensor_value_info("present_value", TensorProto.FLOAT, kv)], [weight, *caches, *qdq])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def kv_dims(path: Path) -> list[list[int | str]]:
    graph = onnx.load(str(path)).graph
    return [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output] if "key" in v.name or "value" in v.name]


def kv_types(path: Path) -> set[int]:
    graph = onnx.load(str(path)).graph
    return {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output] if "key" in v.name or "value" in v.name}


def test_the_kv_cache_gets_the_context_length_and_uint16_in_every_graph(tmp_path: Path) -> None:
    for name in ("context", "iterator"):
        gqa_graph(tmp_path / f"{name}.onnx")
    attention.fix_kv_length(tmp_path, ["context", "iterator"], CONTEXT)
    for name in ("context", "iterator"):
        assert kv_dims(tmp_path / f"{name}.onnx") == [[1, KV_HEADS, CONTEXT, HEAD]] * 4
        assert kv_types(tmp_path / f"{name}.onnx") == {TensorProto.UINT16}
        onnx.checker.check_model(str(tmp_path / f"{name}.onnx"), full_check=True)


def cache_quantization(path: Path) -> dict[str, tuple[float, int]]:
    """Graph input or output -> the scale and zero point of the DequantizeLinear reading it or QuantizeLinear
    writing it."""
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    found = {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in values:
            tensor = node.input[0] if node.op_type == "DequantizeLinear" else node.output[0]
            found[tensor] = (float(values[node.input[1]]), int(values[node.input[2]]))
    return found


def test_the_cached_values_keep_their_projections_grid_and_the_keys_a_range_widened_for_the_rotation(
        tmp_path: Path) -> None:
    import onnxruntime as ort

    float_graph = gqa_graph(tmp_path / "float.onnx", kv_length=CONTEXT)
    gqa_graph(tmp_path / "context.onnx")
    attention.fix_kv_length(tmp_path, ["context"], CONTEXT)
    scales = cache_quantization(tmp_path / "context.onnx")
    # Past input and present output of a layer share one quantization: genai hands the present back as the past.
    assert scales["past_value"] == scales["present_value"] == (pytest.approx(QKV_SCALE), QKV_ZERO)
    widest = max(QKV_ZERO, 65535 - QKV_ZERO) * QKV_SCALE
    assert scales["past_key"] == scales["present_key"] == (pytest.approx(np.sqrt(2) * widest / 32767), 32768)
    # Random inputs fill the projection's range to both ends: the rotated keys come out of the uint16 cache as the
    # float cache has them to half a step, none clipped; the values exactly (they are on the projection's grid).
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, WINDOW, HEADS * HEAD)).astype(np.float32)
    feeds = {"seqlens_k": np.array([[WINDOW - 1]], np.int32), "total_seq_len": np.array(WINDOW, np.int32)}
    zeros = np.zeros((1, KV_HEADS, CONTEXT, HEAD))
    float_run = ort.InferenceSession(str(float_graph), providers=["CPUExecutionProvider"]).run(None, feeds | {
        "x": x, "past_key": zeros.astype(np.float32), "past_value": zeros.astype(np.float32)})
    quantized = ort.InferenceSession(str(tmp_path / "context.onnx"), providers=["CPUExecutionProvider"])
    cached = quantized.run(None, feeds | {"x": x, "past_key": zeros.astype(np.uint16),
                                          "past_value": zeros.astype(np.uint16)})
    assert [c.dtype for c in cached[1:]] == [np.uint16, np.uint16]
    assert np.abs(float_run[1]).max() > widest  # the rotation took keys past the projection's range
    (key_scale, key_zero), (value_scale, value_zero) = scales["present_key"], scales["present_value"]
    keys, values = cached[1][:, :, :WINDOW], cached[2][:, :, :WINDOW]
    np.testing.assert_allclose((keys.astype(np.float32) - key_zero) * key_scale, float_run[1][:, :, :WINDOW],
                               atol=key_scale / 2 + 1e-6, rtol=0)
    assert 0 < keys.min() and keys.max() < 65535
    np.testing.assert_allclose((values.astype(np.float32) - value_zero) * value_scale, float_run[2][:, :, :WINDOW],
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(cached[0], float_run[0], atol=1e-5)


def test_a_kv_cache_whose_projection_is_not_quantized_is_refused_naming_the_node(tmp_path: Path) -> None:
    model = onnx.load(str(gqa_graph(tmp_path / "context.onnx")))
    model.graph.node[3].input[0] = "qkv"  # the float projection, its Q/DQ bypassed
    onnx.save(model, str(tmp_path / "context.onnx"))
    with pytest.raises(BuildError, match=r"graph context, layer0_attn: its input qkv is not a uint16 DequantizeLinear"):
        attention.fix_kv_length(tmp_path, ["context"], CONTEXT)


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
    assert coverage.nodes_by_ep == {qnn.EP_NAME: 4}


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


@simulator
def test_a_uint16_kv_cache_runs_on_the_htp_with_its_quantize_and_dequantize_and_matches_the_cpu(
        tmp_path: Path) -> None:
    import onnxruntime as ort

    gqa_graph(tmp_path / "context.onnx")
    attention.fix_kv_length(tmp_path, ["context"], CONTEXT)
    coverage, htp = place(tmp_path / "context.onnx", attention.provider_options(tmp_path))
    # Every node on the HTP: the projection with its Q/DQ, attention, and the cache's DequantizeLinear (past) and
    # QuantizeLinear (present) of each of keys and values; nothing left to the CPU.
    assert coverage.nodes_by_ep == {qnn.EP_NAME: 8} and not coverage.other_ops
    cpu = ort.InferenceSession(str(tmp_path / "context.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    past = 5
    feeds = {"x": rng.standard_normal((1, WINDOW, HEADS * HEAD)).astype(np.float32),
             "past_key": rng.integers(20000, 45000, (1, KV_HEADS, CONTEXT, HEAD)).astype(np.uint16),
             "past_value": rng.integers(20000, 45000, (1, KV_HEADS, CONTEXT, HEAD)).astype(np.uint16),
             "seqlens_k": np.array([[past + WINDOW - 1]], np.int32), "total_seq_len": np.array(past + WINDOW, np.int32)}
    on_htp, on_cpu = htp.run(None, feeds), cpu.run(None, feeds)
    np.testing.assert_allclose(on_htp[0], on_cpu[0], atol=0.05)
    quantization = cache_quantization(tmp_path / "context.onnx")
    again = htp.run(None, feeds | {"past_key": on_htp[1], "past_value": on_htp[2]})
    for index, name in ((1, "key"), (2, "value")):
        scale, _ = quantization[f"present_{name}"]
        cached, chunk = slice(0, past), slice(past, past + WINDOW)
        assert on_htp[index].dtype == np.uint16
        # The HTP's float attention holds the cache in fp16 in between: the cached tokens come back within a few
        # uint16 steps of what went in, and unchanged when fed back, so decoding does not drift.
        moved = np.abs(on_htp[index][:, :, cached].astype(np.int32) - feeds[f"past_{name}"][:, :, cached])
        assert moved.max() <= 4, moved.max()
        np.testing.assert_array_equal(again[index][:, :, cached], on_htp[index][:, :, cached])
        np.testing.assert_allclose(on_htp[index][:, :, chunk].astype(np.float32) * scale,
                                   on_cpu[index][:, :, chunk].astype(np.float32) * scale, atol=0.05)


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
