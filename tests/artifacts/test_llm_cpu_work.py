"""What a decoder-pipeline pack leaves on the CPU, named with its reasons (npuctl/artifacts/llm/cpu_work.py), from
the compile's placement, and how describe words it."""

from __future__ import annotations

from npuctl.artifacts import facts
from npuctl.artifacts.llm import cpu_work
from npuctl.runtime import qnn
from npuctl.schema.placement import GenerationStatus, NpuCoverage

CPU = "CPUExecutionProvider"


def stage(qnn_nodes: int, **cpu_ops: int) -> facts.StagePlacement:
    nodes = ({qnn.EP_NAME: qnn_nodes} if qnn_nodes else {}) | ({CPU: sum(cpu_ops.values())} if cpu_ops else {})
    return facts.StagePlacement(nodes=nodes, weight_bytes={}, cpu_ops=cpu_ops)


def placement(**stages: facts.StagePlacement) -> facts.Placement:
    return facts.Placement(node_share=0.9, weight_share=0.9, stages=stages)


def test_an_all_htp_pack_leaves_the_token_gather_genais_inputs_and_sampling_and_the_logits_dequantize() -> None:
    found = cpu_work.of(placement(embeddings=stage(0, DequantizeLinear=1, Gather=1, QuantizeLinear=1),
                                  context_ctx=stage(119), iterator_ctx=stage(119),
                                  lm_head_context_ctx=stage(4, DequantizeLinear=1),
                                  lm_head_iterator_ctx=stage(4, DequantizeLinear=1)))
    assert [(w.work.value, w.where) for w in found] == [
        ("token-embeddings", "embeddings"), ("sequence-lengths", "onnxruntime-genai"),
        ("logits-dequantize", "lm_head_context_ctx, lm_head_iterator_ctx"), ("sampling", "onnxruntime-genai")]
    assert all(w.reason for w in found)


def test_attention_on_the_cpu_and_ops_the_ep_left_are_named_with_the_graph() -> None:
    found = cpu_work.of(placement(
        embeddings=stage(0, Gather=1),
        context_ctx=stage(100, GroupQueryAttention=2, QuantizeLinear=4, DequantizeLinear=4),
        iterator_ctx=stage(100, GroupQueryAttention=2, QuantizeLinear=4, DequantizeLinear=4, Cast=1),
        lm_head_context_ctx=stage(4, DequantizeLinear=1), lm_head_iterator_ctx=stage(4, DequantizeLinear=1)))
    by_work = {w.work.value: w for w in found}
    assert by_work["attention"].where == "context_ctx, iterator_ctx"
    assert "spec.generation.attention is cpu" in by_work["attention"].reason
    assert by_work["unplaced"].where == "iterator_ctx: Cast"
    assert list(by_work) == ["token-embeddings", "sequence-lengths", "attention", "logits-dequantize", "sampling",
                             "unplaced"]


def test_describe_lists_each_cpu_exception_with_where_and_why() -> None:
    work = cpu_work.of(placement(embeddings=stage(0, Gather=1), context_ctx=stage(119)))
    status = GenerationStatus(tokens=16, first_divergence=16, matching_tokens=16, prompts=4,
                              coverage=NpuCoverage(nodes=0.98, macs=1.0), weight_share=0.84, stages={},
                              cpu_work=work)
    lines = status.lines()[1:]
    assert lines[0] == f"  on the CPU: token-embeddings (embeddings): {cpu_work.REASONS[work[0].work]}"
    assert [line.split(":")[1].strip() for line in lines] == [
        "token-embeddings (embeddings)", "sequence-lengths (onnxruntime-genai)", "sampling (onnxruntime-genai)"]
