"""What a decoder-pipeline pack leaves on the host CPU per token, each piece named with its reason, read from the
compile's placement: the CPU stages and the ops the QNN EP left beside its compiled graphs, and the work
onnxruntime-genai itself does between the graph calls."""

from __future__ import annotations

from npuctl.artifacts import facts
from npuctl.artifacts.llm import attention, lm_head
from npuctl.runtime import qnn
from npuctl.schema.placement import CpuException, CpuWork

GENAI = "onnxruntime-genai"

REASONS = {
    CpuWork.TOKEN_EMBEDDINGS: "a lookup of one table row per token id, no arithmetic; compiled, the vocabulary-sized "
                              "table would sit in HTP memory to be read one row at a time",
    CpuWork.SEQUENCE_LENGTHS: "two integers per graph call (past_seq_len, total_seq_len) that onnxruntime-genai "
                              "sets between calls; the attention mask and the rotary tables they index are "
                              "computed inside GroupQueryAttention (on the HTP with attention: npu)",
    CpuWork.LOGITS_DEQUANTIZE: "the HTP's uint16 logits made float for the sampler (one value per vocabulary entry); "
                               "the QNN EP leaves a graph's final DequantizeLinear to the CPU",
    CpuWork.SAMPLING: "greedy or top-k/top-p choice over the logits and the stop checks, in onnxruntime-genai's "
                      "search, which runs on the host",
    CpuWork.ATTENTION: "spec.generation.attention is cpu: GroupQueryAttention over the KV cache runs between the "
                       "HTP partitions",
    CpuWork.UNPLACED: "ops the QNN EP did not take when the graph was compiled",
}
"""Why each piece of work stays on the CPU."""


def of(placement: facts.Placement) -> list[CpuException]:
    """The pack's CPU work, in the order a token meets it."""
    found: dict[CpuWork, list[str]] = {}
    unplaced: dict[str, set[str]] = {}
    for name, stage in placement.stages.items():
        ops = dict(stage.cpu_ops)
        if qnn.EP_NAME not in stage.nodes and "Gather" in ops:
            found.setdefault(CpuWork.TOKEN_EMBEDDINGS, []).append(name)
            continue
        if ops.pop(attention.OP, 0):
            found.setdefault(CpuWork.ATTENTION, []).append(name)
            # Its inputs and outputs are quantized and dequantized beside it, on the CPU as well.
            ops.pop("QuantizeLinear", None)
            ops.pop("DequantizeLinear", None)
        elif name.removesuffix("_ctx") in (lm_head.CONTEXT, lm_head.ITERATOR) and ops.pop("DequantizeLinear", 0):
            found.setdefault(CpuWork.LOGITS_DEQUANTIZE, []).append(name)
        if ops:
            unplaced[name] = set(ops)
    if unplaced:
        found[CpuWork.UNPLACED] = [f"{name}: {', '.join(sorted(ops))}" for name, ops in unplaced.items()]
    found[CpuWork.SEQUENCE_LENGTHS] = [GENAI]
    found[CpuWork.SAMPLING] = [GENAI]
    return [CpuException(work=work, where=", ".join(found[work]), reason=REASONS[work])
            for work in CpuWork if work in found]
