"""The `ModelDeployment` manifest: what a user declares. These classes are the documentation;
their attribute docstrings become the JSON Schema descriptions editors show."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, Strict, field_validator, model_validator

# Re-exported: the enumerations are part of the manifest's models.
from npuctl.schema.enums import Api as Api
from npuctl.schema.enums import Device as Device
from npuctl.schema.enums import Fallback as Fallback
from npuctl.schema.enums import Format as Format
from npuctl.schema.enums import Metric as Metric
from npuctl.schema.enums import PerformanceMode as PerformanceMode
from npuctl.schema.enums import Pooling as Pooling
from npuctl.schema.enums import PowerPolicy as PowerPolicy
from npuctl.schema.enums import Precision as Precision
from npuctl.schema.enums import Residency as Residency
from npuctl.schema.enums import Strategy as Strategy
from npuctl.schema.enums import Task as Task
from npuctl.schema.sources import check_source
from npuctl.schema.spec import Spec as Spec
from npuctl.schema.targets import HTP_ARCH_BY_SOC, SOCS, SocInfo, soc_by_model

API_VERSION = "npuctl.dev/v1alpha1"
KIND = "ModelDeployment"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


_BY_VALUE = Strict(False)
"""Enums are given by their value (a YAML string); strict mode would want an enum instance."""


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Metadata(Spec):
    name: str
    """Deployment name: a DNS-1123 label (lowercase letters, digits, '-'; at most 63 characters).
    It is also the default public model name."""
    labels: dict[str, str] = {}
    """Free-form labels, for selection and grouping."""
    annotations: dict[str, str] = {}
    """Free-form notes that npuctl carries along and never interprets."""

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if not DNS_LABEL.match(name):
            raise ValueError(
                f"{name!r} is not a valid name: use at most 63 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit (a DNS-1123 label), e.g. 'minilm-embed'"
            )
        return name


class ModelSource(Spec):
    source: str
    """Where the model comes from: `file:<path>` (relative to the manifest), `pkg:<python package>/<path
    inside it>`, `hf:<org>/<repo>[@<revision>][/<path>]` or an `https:` URL."""
    sha256: dict[str, Sha256] = {}
    """Pins: file path (relative to the source) -> expected sha256. Required for `https:` sources,
    under the key of the downloaded file name."""
    insecure_skip_digest: bool = False
    """Allow an `https:` source without a sha256 pin. Not for production."""
    format: Annotated[Format, _BY_VALUE] = Format.AUTO
    """What the source holds. `auto` detects it: an .onnx file, a transformers folder (config.json +
    weights), an EPContext pack (wrapper ONNX + .bin), an onnxruntime-genai folder, or a .gguf file
    (text generation: F32, F16, BF16, Q8_0 or Q4_0 tensors, dequantized before building)."""
    task: Annotated[Task, _BY_VALUE] = Task.EMBEDDINGS
    """Served as: embeddings, text-generation, tensor, rerank (/v1/rerank), classification, text2text-generation (T5)."""
    tokenizer: str | None = None
    """Tokenizer file relative to the source (default: the source's tokenizer.json)."""
    pooling: Annotated[Pooling, _BY_VALUE] = Pooling.AUTO
    """How token states become one embedding (`auto`: from the sentence-transformers config, else mean)."""
    normalize: bool | None = None
    """L2-normalize embeddings (default: what the sentence-transformers config says, else true)."""

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, source: str) -> str:
        return check_source(source)

    @model_validator(mode="after")
    def _https_needs_pin(self) -> ModelSource:
        if self.source.startswith("https:") and not self.sha256 and not self.insecure_skip_digest:
            raise ValueError(
                "an https: source needs a sha256 pin (spec.model.sha256: {<file>: <hex>}) "
                "or insecureSkipDigest: true"
            )
        return self


class Shapes(Spec):
    batch: int = Field(1, ge=1, le=256)
    """Static batch size of the NPU graphs."""
    sequence_lengths: list[Annotated[int, Field(ge=1, le=32768)]] = Field([128], min_length=1)
    """Sequence-length buckets: one static NPU graph each. A request goes to the smallest bucket it fits."""
    max_output_tokens: int = Field(64, ge=1, le=4096)
    """text2text-generation: the most tokens one answer may have (the decoder's fixed self-attention length)."""

    @field_validator("sequence_lengths")
    @classmethod
    def _sorted_unique(cls, lengths: list[int]) -> list[int]:
        return sorted(set(lengths))


class Calibration(Spec):
    texts: list[str] = []
    """Calibration inputs written inline."""
    file: str | None = None
    """A text file, one calibration input per line (relative to the manifest)."""
    samples: int = Field(24, ge=1, le=10000)
    """How many calibration inputs to use (the built-in corpus is used when none are given)."""


class Accuracy(Spec):
    metric: Annotated[Metric, _BY_VALUE] | None = None
    """How the built model is compared to fp32: `cosine` of pooled embeddings (embeddings' default), `max_abs_error` of
    outputs, scores or probabilities (others'), `agreement`: share of identical greedy answers (text2text's)."""
    threshold: float | None = None
    """Minimum cosine or agreement, or maximum absolute error. Default: 0.98, 0.05 max_abs_error, 1.0 agreement."""
    min_agreement: float = Field(0.9, ge=0, le=1)
    """Rerank, classification: least share of held-out checks agreeing with fp32 (pairs' order; top label)."""
    samples: int = Field(8, ge=1, le=1000)
    """Held-out inputs (never the calibration inputs) to measure on."""
    tokens: int = Field(16, ge=1, le=1024)
    """Text generation: greedy tokens generated per held-out prompt, on the NPU pack and on the fp32 CPU
    reference, to compare."""
    matching_tokens: int | None = Field(None, ge=0, le=1024)
    """Text generation: how far the NPU pack's greedy tokens must agree with the reference's, in every
    held-out prompt, before the first difference (default: all `tokens`). The first-token logits must also
    reach `threshold` cosine (default 0.98)."""


NPU_ATTENTION_WINDOW = 128
CPU_ATTENTION_WINDOW = 64
"""The prefill window's defaults: attention on the HTP, attention on the CPU."""


class Generation(Spec):
    """Text generation on the NPU: the shapes of the decoder-pipeline pack (w8a16, w4a16)."""

    window: int = Field(NPU_ATTENTION_WINDOW, ge=1, le=4096)
    """Prefill window: the static sequence length of each context graph. A prompt is fed in chunks of this
    many tokens; one token at a time after it (the iterator graphs). Default 128 with `attention: npu` (the
    prompt graph Qualcomm's own packs have, AR-128), 64 with `attention: cpu` (Olive's recipe)."""
    context_length: int | None = Field(None, ge=2, le=131072)
    """KV cache length: most tokens (prompt + answer) one generation holds. Default: the model's
    max_position_embeddings, at most 4096. Must be longer than `window`."""
    splits: int | Literal["auto"] = "auto"
    """How many parts the transformer layers are cut into, each its own context/iterator graph pair.
    `auto` estimates each graph's weight bytes at the chosen precision (and, with `attention: npu`, its layers'
    KV cache as input and output) and takes the fewest parts that keep every graph under 1 GiB, half of QNN's
    ~2 GB finalize limit (error 1002)."""
    weight_sharing: bool = False
    """Compile each context/iterator pair into one `.bin` that holds their weights once. Off by default:
    such a binary crashes while loading on Qualcomm's HTP simulator (x86_64); on a Snapdragon it is unverified."""
    attention: Literal["npu", "cpu"] = "npu"
    """Where GroupQueryAttention with the KV cache runs. `npu`: on the HTP inside each context/iterator graph,
    the KV cache a fixed-size uint16 graph input and output of `contextLength` tokens with a fixed scale per layer
    (QNN SDK 2.48 or later). `cpu`:
    on the CPU between the HTP partitions, as Olive's recipe has it. A model whose attention the HTP cannot take
    is refused at build with the reason; `cpu` builds it."""

    @model_validator(mode="before")
    @classmethod
    def _window_of_the_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and "window" not in data and data.get("attention") == "cpu":
            return {**data, "window": CPU_ATTENTION_WINDOW}
        return data

    @field_validator("splits")
    @classmethod
    def _positive_splits(cls, splits: int | str) -> int | str:
        if isinstance(splits, int) and not 1 <= splits <= 64:
            raise ValueError(f"splits {splits} is out of range: give 1 to 64, or auto")
        return splits

    @model_validator(mode="after")
    def _window_fits(self) -> Generation:
        if self.context_length is not None and self.context_length <= self.window:
            raise ValueError(f"contextLength {self.context_length} must be longer than window {self.window}")
        return self


class Target(Spec):
    """A device to build for. In YAML, a plain alias string (`x-elite`) is short for `{alias: x-elite}`."""

    alias: Literal["x-elite", "x-plus", "x2-elite", "8-elite", "8-gen-3", "8-gen-2"] | None = None
    """Friendly SoC name: x-elite, x-plus (soc 60, v73), x2-elite (soc 88, v81), 8-elite (69), 8-gen-3 (57), 8-gen-2 (43)."""
    soc_model: int | None = Field(None, ge=1)
    """QNN `soc_model` number, for SoCs without an alias."""
    htp_arch: int | None = None
    """HTP architecture (73, 75, 79, 81, ...); derived from the SoC when left out."""

    @model_validator(mode="before")
    @classmethod
    def _alias_string(cls, value: Any) -> Any:
        return {"alias": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _resolve(self) -> Target:
        if self.alias is None and self.soc_model is None:
            raise ValueError(f"give an alias ({', '.join(SOCS)}) or a socModel")
        if self.alias is not None:
            info = SOCS[self.alias]
            if self.soc_model not in (None, info.soc_model):
                raise ValueError(f"alias {self.alias} is soc {info.soc_model}, not socModel {self.soc_model}")
            object.__setattr__(self, "soc_model", info.soc_model)
        if self.htp_arch is None:
            object.__setattr__(self, "htp_arch", HTP_ARCH_BY_SOC.get(self.soc_model))  # type: ignore[arg-type]
        return self

    @property
    def name(self) -> str:
        """The alias, or `soc<N>` for SoCs named by number."""
        return self.alias or f"soc{self.soc_model}"

    @property
    def soc(self) -> SocInfo | None:
        return SOCS[self.alias] if self.alias else soc_by_model(self.soc_model or 0)


class AiHubBuild(Spec):
    device: str | None = None
    """AI Hub device name; default: the target's (e.g. "Snapdragon X Elite CRD")."""
    options: str = ""
    """Extra compile options passed to `submit_compile_job`."""
    qairt_version: str | None = None
    """`--qairt_version` for the compile job (default: AI Hub's default)."""
    project: str | None = None
    """AI Hub project to file the jobs under."""


class PrebuiltBuild(Spec):
    source: str | None = None
    """Where the prebuilt pack (EPContext wrapper ONNX + .bin per chipset) comes from, if not spec.model.source."""

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, source: str | None) -> str | None:
        return source if source is None else check_source(source)


class Build(Spec):
    strategy: Annotated[Strategy, _BY_VALUE] = Strategy.AUTO
    """`local` compiles with the QNN EP here; `aihub` sends the compile to Qualcomm AI Hub; `prebuilt` only
    uses published context binaries; `auto` uses prebuilt ones when compatible, else compiles locally."""
    aihub: AiHubBuild = AiHubBuild()
    """Options of the AI Hub builder."""
    prebuilt: PrebuiltBuild = PrebuiltBuild()
    """Options of the prebuilt strategy."""
    optimization_level: Literal[1, 2, 3] = 2
    """HTP graph finalization optimization (1 fastest to prepare, 3 best runtime)."""


class Runtime(Spec):
    device: Annotated[Device, _BY_VALUE] = Device.AUTO
    """Where to run: `npu`, `cpu`, or `auto` (the NPU when this host has one, else CPU)."""
    fallback: Annotated[Fallback, _BY_VALUE] = Fallback.CPU
    """What to do when the NPU can't be used: run on the `cpu`, or `none` (stay not-ready with a reason)."""
    allow_simulator: bool = False
    """Let `device: npu` run on Qualcomm's HTP simulator (x86_64 hosts). Slow; for verification only."""
    power: Annotated[PowerPolicy, _BY_VALUE] | None = None
    """What the deployment may burn, on every path that runs it: `burst` (CPU threads on every core, spinning
    during a run; HTP `burst`), `balanced` (half the cores; HTP `balanced`) or `efficient` (a quarter of the
    cores, no spinning; HTP `power_saver`). Default: the agent's `power` setting for the PC's power source
    (agent.yaml), else `burst`. Status and `npuctl bench` say what each path got and what it has no setting for."""
    performance_mode: Annotated[PerformanceMode, _BY_VALUE] | None = None
    """HTP performance mode (`htp_performance_mode`), any of the QNN EP's; replaces the one `power` maps to
    (default: the power policy's)."""
    provider_options: dict[str, str] = {}
    """Extra QNN EP provider options, passed through as given."""


class Serve(Spec):
    name: str | None = None
    """Public model name in the APIs (default: metadata.name)."""
    aliases: list[str] = []
    """Other names the model answers to."""
    apis: list[Annotated[Api, _BY_VALUE]] = [Api.OPENAI, Api.OIP, Api.OLLAMA]
    """Which HTTP APIs expose the model."""
    max_batch: int = Field(16, ge=1, le=1024)
    """Most requests merged into one inference."""
    batch_window_ms: float = Field(2.0, ge=0, le=1000)
    """How long a batch waits for more requests."""
    queue_limit: int = Field(64, ge=1)
    """Requests waiting beyond this are answered 429."""
    max_input_tokens: int | None = Field(None, ge=1)
    """Longest accepted input in tokens (default: the largest sequence bucket)."""
    truncate: bool = True
    """Cut inputs longer than maxInputTokens (true) or refuse them with 400 (false)."""
    timeout_seconds: float = Field(30.0, gt=0)
    """A request still unanswered after this gets 504."""
    residency: Annotated[Residency, _BY_VALUE] = Residency.ALWAYS
    """`always`: loaded while declared, never unloaded (pinned). `onDemand`: built ahead of time, loaded on the
    first request (requests wait while it loads, within timeoutSeconds and queueLimit), unloaded after
    idleSeconds without requests, or evicted to make room within the agent's budget."""
    idle_seconds: float = Field(300.0, ge=0)
    """`onDemand`: unloaded after this many seconds without requests (Ollama's per-request keep_alive may
    shorten it, never lengthen it)."""
    priority: int = Field(0, ge=-1000, le=1000)
    """When the agent's budget is full, idle onDemand models of the lowest priority are evicted first (the least
    recently used among equals)."""


class SelectorExpression(Spec):
    key: str
    """A device fact (`soc`, `socModel`, `htpArch`, `os`, `arch`, `memoryGiB`, `npu`) or `labels.<name>`."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the fact is compared with `values`."""
    values: list[str] = []
    """Values for In/NotIn; one number for Gt/Lt."""


class Selector(Spec):
    match_labels: dict[str, str] = {}
    """Agent labels that must all be equal."""
    match_expressions: list[SelectorExpression] = []
    """Device-fact expressions that must all hold."""


class DeploymentSpec(Spec):
    model: ModelSource
    """Which model to deploy, and how to read it."""
    shapes: Shapes = Shapes()
    """Static shapes for the NPU graphs."""
    precision: Annotated[Precision, _BY_VALUE] = Precision.W8A16
    """`w8a16` (uint8 weights, uint16 activations), `w8a8`, `fp16` on the HTP, or `fp32` (CPU only). Text generation
    from a transformers folder or a GGUF file: `w8a16` or `w4a16` (8- or 4-bit per-channel weights, 16-bit
    activations) build a QNN decoder-pipeline pack per target; `fp32` or `int4` build a CPU model with
    onnxruntime-genai's model builder. An onnxruntime-genai folder (`format: genai`) is served as it is, whatever
    this says."""
    calibration: Calibration = Calibration()
    """Inputs that set the quantization ranges."""
    accuracy: Accuracy = Accuracy()
    """The bar the built model must clear against the fp32 reference."""
    generation: Generation = Generation()
    """Text generation on the NPU: prefill window, KV cache length, splits."""
    targets: list[Target] = Field(default_factory=lambda: [Target(alias="x-elite")], min_length=1)
    """Devices to build context binaries for (aliases or socModel numbers)."""
    build: Build = Build()
    """How the NPU artifacts are produced."""
    runtime: Runtime = Runtime()
    """Where sessions run, and what to do without an NPU."""
    serve: Serve = Serve()
    """How the model is exposed over HTTP."""
    selector: Selector = Selector()
    """Which agents of a fleet deploy this (empty: all)."""

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, targets: list[Target]) -> list[Target]:
        seen: set[int | None] = set()
        for target in targets:
            if target.soc_model in seen:
                raise ValueError(f"soc {target.soc_model} is listed twice")
            seen.add(target.soc_model)
        return targets


class ModelDeployment(Spec):
    """One model, its precision, the devices it is built for, and how it is served."""

    api_version: Literal["npuctl.dev/v1alpha1"]
    """Schema version of this manifest: `npuctl.dev/v1alpha1`."""
    kind: Literal["ModelDeployment"]
    """Always `ModelDeployment`."""
    metadata: Metadata
    """Name, labels and annotations."""
    spec: DeploymentSpec
    """The desired state."""

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def public_name(self) -> str:
        return self.spec.serve.name or self.metadata.name

    def generation(self) -> str:
        """Content hash of the spec: the `observedGeneration` status reports."""
        return spec_digest(self.spec.model_dump(mode="json"))


def spec_digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


SCHEMA_FILE = "modeldeployment.schema.json"
"""Name of the checked-in JSON Schema under the repository's top-level schema/ folder."""
