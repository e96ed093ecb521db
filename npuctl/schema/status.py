"""The agent's status API: what `npuctl get` and `describe` show, the agent saves in its state folder
and its control API answers, for each deployment: a phase, conditions with reasons, where it really
runs, its artifacts, recent events. `status_schema()` is the JSON Schema of a deployment's status
(schema/status.schema.json). Plain pydantic models, camelCase on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from npuctl.schema.bench import BenchResult
from npuctl.schema.power import PowerInForce

STATUS_SCHEMA_FILE = "status.schema.json"


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


class GenerationStatus(Fact):
    """A text-generation pack's greedy check against the fp32 CPU reference, and where its work runs."""

    tokens: int
    """Greedy tokens compared per held-out prompt."""
    first_divergence: int
    """Worst prompt: index of the first token that differs (`tokens` when none does)."""
    matching_tokens: int
    """The bar for firstDivergence (spec.accuracy.matchingTokens)."""
    prompts: int
    node_share: float
    """Share of the pack's graph nodes on the QNN EP."""
    weight_share: float
    """Share of the pack's weight bytes read by nodes on the QNN EP."""
    prefill_mac_share: float | None = None
    """Share of the multiply-accumulates of one prefill window on the QNN EP (None: not counted by this build)."""
    decode_mac_share: float | None = None
    """Share of the multiply-accumulates of one decoded token on the QNN EP (None: not counted by this build)."""
    stages: dict[str, StagePlacement]
    """Each graph of the pack, by stage name."""

    def lines(self) -> list[str]:
        """The check and each stage's placement, in words (for describe and build)."""
        lines = [f"greedy tokens match the fp32 reference through {self.first_divergence} of {self.tokens} "
                 f"(bar {self.matching_tokens}, {self.prompts} prompts); on QNN: {self.node_share:.0%} of "
                 f"nodes, {self.weight_share:.0%} of weight bytes"]
        if self.prefill_mac_share is not None and self.decode_mac_share is not None:
            lines[0] += (f", {self.prefill_mac_share:.1%} of MACs per prefill window, {self.decode_mac_share:.1%} per "
                         "decoded token")
        for name, stage in self.stages.items():
            nodes = ", ".join(f"{n} on {ep.removesuffix('ExecutionProvider')}" for ep, n in stage.nodes.items())
            cpu = ", ".join(f"{op} x{n}" for op, n in stage.cpu_ops.items())
            split = "QNNExecutionProvider" in stage.nodes and cpu
            lines.append(f"  {name}: {nodes}" + (f" (CPU: {cpu})" if split else ""))
        return lines


class ArtifactStatus(Fact):
    """One verified context binary: for which device, at what precision and sequence bucket, how accurate."""

    target: str
    """The target's alias, or soc<N>."""
    soc_model: int
    bucket: int
    """Static sequence length; 0 when the model has no sequence axis."""
    precision: str
    sha256: dict[str, str]
    """Digest of each file (the EPContext wrapper and its binary), by name."""
    accuracy: AccuracyStatus | None = None
    """None for a prebuilt pack with nothing to compare it with."""
    npu_coverage: float | None = None
    """Share of graph nodes the QNN EP took, 0..1."""
    generation: GenerationStatus | None = None
    """Text generation: the greedy check and the stage placement of the decoder-pipeline pack."""

    @property
    def measured(self) -> str:
        """The accuracy in words, `≥`/`≤` the bar by the metric's direction."""
        if self.accuracy is None:
            return "not measured (prebuilt)"
        bar = "≤" if self.accuracy.metric == "max_abs_error" else "≥"
        return f"{self.accuracy.metric} {self.accuracy.value:.4f} ({bar} {self.accuracy.threshold})"


class Phase(StrEnum):
    PENDING = "Pending"
    BUILDING = "Building"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    """Serving, but not what is declared now (an invalid edit, a failed rebuild, an unwanted provider)."""
    FAILED = "Failed"
    NOT_SELECTED = "NotSelected"


class ConditionType(StrEnum):
    VALID = "Valid"
    SELECTED = "Selected"
    ARTIFACTS_READY = "ArtifactsReady"
    LOADED = "Loaded"
    ON_NPU = "OnNPU"
    SERVING = "Serving"
    STATE_SAVED = "StateSaved"
    """The agent's, not a deployment's: its state folder takes status writes."""
    MANIFESTS_READ = "ManifestsRead"
    """The agent's: its manifest folders were read within the deadline and no file is waiting to settle."""
    RECONCILING = "Reconciling"
    """The agent's: its reconcile loop runs (False while it is restarted after a failure)."""


class Condition(Fact):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str
    """CamelCase, for scripts: `Built`, `BuildFailed`, `NameConflict`, `SimulatorNotAllowed`, ..."""
    message: str = ""
    """The reason in words, for people."""
    last_transition_time: str
    """When `status` last changed (RFC 3339, UTC)."""


class Event(Fact):
    time: str
    deployment: str
    """The deployment it concerns (a manifest file's path, for a file that declares none)."""
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


class RunFacts(Fact):
    """Where a loaded model really runs."""

    provider: str | None = None
    """The execution provider the sessions really got."""
    npu_coverage: float | None = None
    """Share of graph nodes the QNN EP took, 0..1."""
    on_npu: bool = False
    """On the NPU code path (the HTP simulator included)."""
    note: str = ""
    """Why it runs there (e.g. why not on the NPU)."""
    power: PowerInForce | None = None
    """The power policy's settings its sessions got."""


class DeploymentStatus(Fact):
    """The status of one deployment, as the agent saves it and its control API answers."""

    name: str
    phase: Phase = Phase.PENDING
    conditions: list[Condition] = []
    observed_generation: str | None = None
    """Hash of the spec this status reflects."""
    serving_generation: str | None = None
    """Hash of the spec whose artifacts are serving now (differs from observedGeneration during an update)."""
    provider: str | None = None
    """The execution provider the session really got."""
    npu_coverage: float | None = None
    """Share of graph nodes the QNN EP took, 0..1."""
    artifacts: list[ArtifactStatus] = []
    """The context binaries serving (or about to serve) this deployment."""
    endpoint: str | None = None
    """The agent's URL the deployment is served at."""
    file: str | None = None
    """The manifest file that declares it."""
    events: list[Event] = []
    """Its most recent events, oldest first."""
    power: PowerInForce | None = None
    """The power policy the loaded model runs under: what each option was set to, and what its path has no
    setting for."""
    last_bench: BenchResult | None = None
    """The last `npuctl bench` of this deployment on this agent."""

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def is_true(self, kind: ConditionType) -> bool:
        found = self.condition(kind)
        return found is not None and found.status == "True"

    def set_condition(self, kind: ConditionType, status: bool | None, reason: str, message: str = "") -> bool:
        """Set a condition; its transition time moves only when its status flips. True if anything changed."""
        value = {True: "True", False: "False", None: "Unknown"}[status]
        old = self.condition(kind)
        if old and (old.status, old.reason, old.message) == (value, reason, message):
            return False
        when = old.last_transition_time if old and old.status == value else now()
        new = Condition(type=kind, status=value, reason=reason, message=message, last_transition_time=when)
        self.conditions = [c for c in self.conditions if c.type != kind] + [new]
        self.conditions.sort(key=lambda c: list(ConditionType).index(c.type))
        return True


class FileProblem(Fact):
    """A manifest file that declares no deployment: invalid, unreadable, or naming a deployment another
    file declared first."""

    file: str
    reason: str
    """`InvalidManifest` or `DuplicateName`."""
    message: str
    errors: list[str]
    """Each error as file:line:col: field: message."""


class PendingFile(Fact):
    """A manifest file saved since it was last read: it is read once unchanged for `settleSeconds`, and
    until then what it declared before (nothing, for a new file) stays declared."""

    file: str
    applies_at: str
    """When it is read if it does not change again (RFC 3339, UTC)."""


def status_schema() -> dict[str, Any]:
    """JSON Schema of one deployment's status (`status` in the control API's answers, and each entry of
    `deployments` in the state folder's status.json)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://npuctl.dev/schema/{STATUS_SCHEMA_FILE}",
        **DeploymentStatus.model_json_schema(by_alias=True),
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


