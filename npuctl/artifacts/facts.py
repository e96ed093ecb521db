"""What each build step records about its output: one frozen model per step kind, stored under `details` in the
step's record.json with its `kind`, and read back as that model (`parse`). A step's kind names its facts; it is its
step name except where one step name has two shapes (the encoder's and T5's `export`, the LLM pack's `compile` and
`verify`). `step` is the name keys and progress events use.

Records written before the facts had a `details` key (their facts were spread beside the record's own keys) are
read through `from_flat`: the store rewrites each once in this shape (`store.Store`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from npuctl.runtime import qnn
from npuctl.schema.models import Precision
from npuctl.schema.placement import AccuracyStatus, CpuException, GenerationStatus, NpuCoverage

# The pre-flight's estimate is also the deployment's status record: one model, kept in the schema.
from npuctl.schema.preflight import Preflight as Preflight


class Facts(BaseModel):
    # A stored fact nobody declared is refused: it would be carried without anyone reading it.
    model_config = ConfigDict(frozen=True, extra="forbid")

    step: ClassVar[str]
    """The step these facts belong to."""


class Targeted(Facts):
    """The target a step's output is for."""

    soc_model: int
    htp_arch: int | None
    precision: Precision | None
    """None for a prebuilt pack's binary (the pack does not say)."""
    qnn_sdk: str | None
    """The QNN SDK of the onnxruntime-qnn here (a pack's binary: the one it was compiled with)."""


class Binary(Targeted):
    """A context binary (EPContext wrapper + .bin) for one target."""

    ep_compatibility_info: str | None
    """The wrapper's `ep_compatibility_info.QNNExecutionProvider`, e.g. v2:6:2.51.0:5.51.0:0:60:0:0."""

    @property
    def compiled_with(self) -> str | None:
        """The QNN SDK the binary was compiled with."""
        return self.qnn_sdk


class Coverage(BaseModel):
    """Which execution providers took a session's graph nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    qnn_share: float
    nodes_by_ep: dict[str, int]
    other_ops: dict[str, int]

    @classmethod
    def of(cls, coverage: qnn.Coverage) -> Coverage:
        return cls(qnn_share=coverage.qnn_share, nodes_by_ep=coverage.nodes_by_ep, other_ops=coverage.other_ops)


class Accuracy(BaseModel):
    """A verified artifact against its fp32 reference on held-out inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    """"cosine" (of pooled embeddings, of flattened outputs, of first-token logits), "max_abs_error" or "agreement"."""
    value: float
    """Worst case over the held-out samples."""
    mean: float
    threshold: float
    samples: int
    agreement: float | None
    """Rerank, classification, text2text-generation: share of held-out comparisons that agree with fp32."""

    def status(self) -> AccuracyStatus:
        return AccuracyStatus(metric=self.metric, value=self.value, threshold=self.threshold)

    def as_dict(self) -> dict[str, str | float]:
        """The `npuctl build -o json` shape."""
        shown: dict[str, str | float] = {"metric": self.metric, "value": self.value, "threshold": self.threshold}
        return shown if self.agreement is None else shown | {"agreement": self.agreement}


class Download(Facts):
    kind: Literal["download"] = "download"
    step: ClassVar[str] = "download"
    url: str
    sha256: str


class Export(Facts):
    kind: Literal["export"] = "export"
    step: ClassVar[str] = "export"
    input_names: list[str]


class Seq2SeqExport(Facts):
    kind: Literal["seq2seq-export"] = "seq2seq-export"
    step: ClassVar[str] = "export"
    layers: int
    heads: int
    d_kv: int
    max_output_tokens: int
    decoder_start_token_id: int | None
    eos_token_id: int | None


class StaticShapes(Facts):
    kind: Literal["static-shapes"] = "static-shapes"
    step: ClassVar[str] = "static-shapes"


class NpuFixes(Facts):
    kind: Literal["npu-fixes"] = "npu-fixes"
    step: ClassVar[str] = "npu-fixes"
    clamped_mask_constants: int


class Preprocess(Facts):
    kind: Literal["preprocess"] = "preprocess"
    step: ClassVar[str] = "preprocess"


class DecoderStatic(Facts):
    kind: Literal["decoder-static"] = "decoder-static"
    step: ClassVar[str] = "decoder-static"
    clamped_mask_constants: int


class Quantize(Facts):
    kind: Literal["quantize"] = "quantize"
    step: ClassVar[str] = "quantize"
    precision: Precision
    calibration_samples: int


class Compile(Binary):
    kind: Literal["compile"] = "compile"
    step: ClassVar[str] = "compile"
    npu_coverage: float
    coverage: Coverage


class AihubCompile(Binary):
    kind: Literal["aihub-compile"] = "aihub-compile"
    step: ClassVar[str] = "aihub-compile"
    aihub_job: str
    aihub_device: str
    qnn_sdk_compiled: str | None
    """The QNN SDK AI Hub compiled with (qnn_sdk is the one here)."""

    @property
    def compiled_with(self) -> str | None:
        return self.qnn_sdk_compiled or self.qnn_sdk


class CompileDecoder(Binary):
    """An encoder-decoder's one-step decoder compiled for a target, or why the QNN EP refused it."""

    kind: Literal["compile-decoder"] = "compile-decoder"
    step: ClassVar[str] = "compile-decoder"
    ep_compatibility_info: str | None = None
    npu_coverage: float | None = None
    refused: str | None = None
    """Why the QNN EP did not compile the decoder (it then runs on the CPU); None when it did."""


class ImportPack(Binary):
    kind: Literal["import-pack"] = "import-pack"
    step: ClassVar[str] = "import-pack"
    context_binary: str
    """The binary's path in the step's folder."""


class Verify(Targeted):
    kind: Literal["verify"] = "verify"
    step: ClassVar[str] = "verify"
    accuracy: Accuracy
    npu_coverage: float
    """Lowest of the compile's and the verifying session's share of nodes on the QNN EP."""
    coverage: Coverage


class GenaiBuilder(Facts):
    kind: Literal["genai-builder"] = "genai-builder"
    step: ClassVar[str] = "genai-builder"
    precision: str
    """The model builder's precision name (fp32, int4)."""
    memory: StageMemory | None = None
    """Its child's peak RSS (None in records written before it was watched)."""


class GgufConvert(Facts):
    kind: Literal["gguf-convert"] = "gguf-convert"
    step: ClassVar[str] = "gguf-convert"
    architecture: str
    tensor_types: dict[str, int]
    memory: StageMemory | None = None
    """Its child's peak RSS (None in records written before it was watched)."""


class StageMemory(BaseModel):
    """What a build stage's child process tree held at most (psutil, sampled every 0.2 s), beside what the
    pre-flight estimated for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peak_rss_bytes: int
    estimated_bytes: int | None


class LlmSurgeries(Facts):
    kind: Literal["llm-surgeries"] = "llm-surgeries"
    step: ClassVar[str] = "llm-surgeries"
    surgeries: list[str]
    kv_head_size: int
    memory: StageMemory | None = None
    """None in records from before it was measured."""


class LlmQuantize(Facts):
    kind: Literal["llm-quantize"] = "llm-quantize"
    step: ClassVar[str] = "llm-quantize"
    weights: str
    activations: str
    calibration_texts: int
    memory: StageMemory | None = None


class LlmStatic(Facts):
    kind: Literal["llm-static"] = "llm-static"
    step: ClassVar[str] = "llm-static"
    split_assignments: dict[str, int]
    pipeline: dict[str, str | list[str]]
    """Olive's llm_pipeline: which graph is the embeddings, each context and iterator graph, the lm_head."""
    memory: StageMemory | None = None


class StagePlacement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: dict[str, int]
    weight_bytes: dict[str, int]
    cpu_ops: dict[str, int]
    macs: dict[str, int] = {}
    """Execution provider -> multiply-accumulates of one run (empty in records made before they were counted)."""


class Placement(BaseModel):
    """Where a decoder-pipeline pack's nodes and weights run (Olive's compile stage reports it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_share: float
    """The pack's NPU coverage (runtime.placement.ContextBinary.npu_coverage says what it counts)."""
    weight_share: float
    stages: dict[str, StagePlacement]
    prefill_mac_share: float | None = None
    """Share of the MACs of one prefill window (context graphs, the prompt's lm_head, embeddings) on QNN."""
    decode_mac_share: float | None = None
    """Share of the MACs of one decoded token (iterator graphs and the token's lm_head, embeddings) on QNN."""

    def coverage(self) -> NpuCoverage:
        return NpuCoverage(nodes=self.node_share, macs=self.decode_mac_share)


class LlmCompile(Binary):
    kind: Literal["llm-compile"] = "llm-compile"
    step: ClassVar[str] = "compile"
    weight_sharing: bool
    placement: Placement
    memory: StageMemory | None = None


class PromptCheck(BaseModel):
    """One held-out prompt decoded greedily on the CPU by the quantized graph, against the fp32 one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    first_divergence: int
    cosine: float
    """Of the first generated token's logits, quantized vs fp32."""
    quantized_tokens: list[int]
    reference_tokens: list[int]
    """fp32's greedy tokens up to and including the first that differs from the quantized graph's (all of them
    when none does), not its whole answer: fp32 is run over the quantized graph's tokens, which past that point
    are not its own (npuctl.artifacts.llm.verify)."""


class LlmVerifyQuantized(Facts):
    """The quantized graph (QDQ, on the CPU) against the fp32 graph over every held-out prompt."""

    kind: Literal["llm-verify-quantized"] = "llm-verify-quantized"
    step: ClassVar[str] = "verify-quantized"
    checks: list[PromptCheck]
    first_divergence: int
    """The worst prompt's."""
    cosine: float
    """The lowest first-token logits cosine."""
    mean_cosine: float
    memory: StageMemory | None = None
    """Its child's peak RSS (None in records written before it was kept)."""


class PackSeconds(BaseModel):
    """Wall time of the pack check's parts: what the HTP (on this host, its simulator) costs in a build's verify."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    load: float
    """Creating the pipeline's sessions (the context binaries loaded)."""
    prefill: float
    """The prompt: the context graphs over the prefill window and the prompt's lm_head."""
    decode: float
    """The decoded tokens after the first: the iterator graphs and the token's lm_head, once per token."""


class PackCheck(BaseModel):
    """The compiled pack (on the NPU, or the HTP simulator) on one prompt, against the quantized graph on the CPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    tokens: list[int]
    """The pack's greedy tokens."""
    quantized_tokens: list[int]
    """The quantized graph's on the CPU, as many."""
    first_divergence: int
    cosine: float
    """Of the first generated token's logits, pack vs quantized graph on the CPU: how faithfully the HTP computes
    what the quantization says."""
    reference_cosine: float
    """Of the first generated token's logits, pack vs fp32."""
    seconds: PackSeconds | None = None
    """Where the check's time went (None in records made before it was measured)."""


class LlmVerify(Facts):
    kind: Literal["llm-verify"] = "llm-verify"
    step: ClassVar[str] = "verify"
    pack: PackCheck
    memory: StageMemory | None = None
    """Its child's peak RSS (None in records written before it was kept)."""

    def generation(self, quantized: LlmVerifyQuantized, placement: Placement, tokens: int,
                   matching_tokens: int, cpu_work: list[CpuException]) -> GenerationStatus:
        """Both greedy checks and where the pack runs, its CPU work named (`cpu_work`), as status shows them."""
        return GenerationStatus(tokens=tokens, first_divergence=quantized.first_divergence,
                                matching_tokens=matching_tokens, prompts=len(quantized.checks),
                                npu_tokens=len(self.pack.tokens), npu_first_divergence=self.pack.first_divergence,
                                npu_cosine=self.pack.cosine, coverage=placement.coverage(),
                                weight_share=placement.weight_share, prefill_mac_share=placement.prefill_mac_share,
                                stages={name: stage.model_dump() for name, stage in placement.stages.items()},
                                cpu_work=cpu_work)


AnyFacts = Annotated[
    Download | Export | Seq2SeqExport | StaticShapes | NpuFixes | Preprocess | DecoderStatic | Quantize | Compile
    | AihubCompile | CompileDecoder | ImportPack | Verify | GenaiBuilder | GgufConvert | LlmSurgeries | LlmQuantize
    | LlmStatic | LlmCompile | LlmVerifyQuantized | LlmVerify,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[AnyFacts] = TypeAdapter(AnyFacts)


def parse(data: object) -> AnyFacts:
    """The facts of a record's `details`. Raises ValueError (pydantic's ValidationError) naming what is wrong."""
    return _ADAPTER.validate_python(data)


def from_flat(step: str, flat: dict[str, object]) -> AnyFacts:
    """The facts of a record written before `details` existed, from the keys beside the record's own. Keys its
    model does not have are dropped; a missing fact raises ValueError (the step is then rebuilt)."""
    shared = next((model for model, told_by in _SHARED_NAMES if model.step == step and told_by in flat), None)
    model = shared or _KINDS.get(step)
    if model is None:
        raise ValueError(f"no facts of a step named {step!r}")
    return parse({k: v for k, v in flat.items() if k in model.model_fields} | {"kind": model.model_fields["kind"].default})


_KINDS: dict[str, type[Facts]] = {model.model_fields["kind"].default: model for model in get_args(get_args(AnyFacts)[0])}
_SHARED_NAMES: tuple[tuple[type[Facts], str], ...] = (
    (Seq2SeqExport, "layers"), (LlmCompile, "placement"), (LlmVerify, "pack"))
"""Kinds whose step name another kind has too, and the flat fact only they record."""
