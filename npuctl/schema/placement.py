"""Where a built artifact's work runs and how well it was checked: the status records of an artifact's accuracy,
a chat pack's placement (nodes, weight bytes and MACs per execution provider) and its one NPU coverage figure.
`Fact` is the base of every status record (npuctl.schema.status)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Fact(BaseModel):
    """Base of status records: camelCase JSON, field docstrings as schema descriptions."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True,
                              use_attribute_docstrings=True)


class AccuracyStatus(Fact):
    metric: str
    """`cosine` (higher is better) or `max_abs_error` (lower is better), against the fp32 model."""
    value: float
    """The worst case over the held-out samples."""
    threshold: float
    """The manifest's bar (spec.accuracy.threshold)."""


class StagePlacement(Fact):
    """Where one graph of a decoder-pipeline pack runs."""

    nodes: dict[str, int]
    """Execution provider -> nodes it took."""
    weight_bytes: dict[str, int]
    """Execution provider -> weight bytes its nodes read."""
    cpu_ops: dict[str, int]
    """Operator -> count, of the nodes on the CPU (GroupQueryAttention and the KV cache with attention: cpu)."""
    macs: dict[str, int] = {}
    """Execution provider -> multiply-accumulates of one run of the graph (attention at a full KV cache)."""


class CpuWork(StrEnum):
    """Work of a decoder-pipeline pack that stays on the host CPU, in the order a token meets it."""

    TOKEN_EMBEDDINGS = "token-embeddings"
    SEQUENCE_LENGTHS = "sequence-lengths"
    ATTENTION = "attention"
    LOGITS_DEQUANTIZE = "logits-dequantize"
    SAMPLING = "sampling"
    UNPLACED = "unplaced"
    """Ops of a compiled graph the QNN EP did not take."""


class CpuException(Fact):
    """One piece of a pack's per-token work on the CPU, and why it is not on the NPU."""

    work: CpuWork
    where: str
    """The pack's graphs that do it, or `onnxruntime-genai` for the host code around them."""
    reason: str


class NpuCoverage(Fact):
    """The NPU coverage of a decoder-pipeline pack, one figure in build output, status, get, describe, /v2/models
    and the dashboard: nodes is the share of graph nodes on the QNN EP (counted when the binaries were compiled,
    over every graph of the pack, its CPU stages and attention included), macs the share of one generated token's
    multiply-accumulates there (weight MACs, and attention at a full KV cache)."""

    nodes: float
    """0..1."""
    macs: float | None = None
    """0..1; None when the build did not count it."""

    @property
    def text(self) -> str:
        """How people read it: `95% of nodes, 71% of per-token MACs`."""
        return coverage_text(self.nodes) + (f", {self.macs:.0%} of per-token MACs" if self.macs is not None else "")


def coverage_text(nodes: float | None) -> str:
    """A node share as people read it (`95% of nodes`; `-` when unknown): the one format of NPU coverage."""
    return "-" if nodes is None else f"{nodes:.0%} of nodes"


class GenerationStatus(Fact):
    """A text-generation pack's greedy check against the fp32 CPU reference, and where its work runs."""

    tokens: int
    """Greedy tokens compared per held-out prompt."""
    first_divergence: int
    """Worst prompt: index of the first token that differs (`tokens` when none does)."""
    matching_tokens: int
    """The bar for firstDivergence (spec.accuracy.matchingTokens)."""
    prompts: int
    """Held-out prompts the quantized model was checked on (on the CPU, against fp32)."""
    npu_tokens: int = 0
    """Greedy tokens of one prompt decoded by the compiled pack itself (on the NPU or its simulator)."""
    npu_first_divergence: int = 0
    """Where the pack's tokens first differ from the quantized model's on the CPU (`npuTokens` when none does)."""
    npu_cosine: float = 0.0
    """First-token logits cosine, the pack against the quantized model on the CPU."""
    coverage: NpuCoverage
    """Where the pack's work runs: shares of nodes and of per-token MACs on the QNN EP."""
    weight_share: float
    """Share of the pack's weight bytes read by nodes on the QNN EP."""
    prefill_mac_share: float | None = None
    """Share of the multiply-accumulates of one prefill window on the QNN EP (None: not counted by this build); a
    decoded token's share is `coverage.macs`."""
    stages: dict[str, StagePlacement]
    """Each graph of the pack, by stage name."""
    cpu_work: list[CpuException] = []
    """What stays on the CPU per token, each with its reason (empty: not listed by this build)."""

    def lines(self) -> list[str]:
        """The check and each stage's placement, in words (for describe and build)."""
        lines = [f"quantized on the CPU: greedy tokens match the fp32 reference through {self.first_divergence} of "
                 f"{self.tokens} (bar {self.matching_tokens}, {self.prompts} prompts); the pack on the NPU matches "
                 f"it through {self.npu_first_divergence} of {self.npu_tokens} (logits cosine {self.npu_cosine:.5f}); "
                 f"NPU coverage {self.coverage.text}, {self.weight_share:.0%} of weight bytes"]
        if self.prefill_mac_share is not None:
            lines[0] += f", {self.prefill_mac_share:.1%} of MACs per prefill window"
        for name, stage in self.stages.items():
            nodes = ", ".join(f"{n} on {ep.removesuffix('ExecutionProvider')}" for ep, n in stage.nodes.items())
            cpu = ", ".join(f"{op} x{n}" for op, n in stage.cpu_ops.items())
            split = "QNNExecutionProvider" in stage.nodes and cpu
            lines.append(f"  {name}: {nodes}" + (f" (CPU: {cpu})" if split else ""))
        lines += [f"  on the CPU: {w.work.value} ({w.where}): {w.reason}" for w in self.cpu_work]
        return lines
