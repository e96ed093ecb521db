"""The agent's status API: what `npuctl get` and `describe` show, the agent saves in its state folder
and its control API answers, for each deployment: a phase, conditions with reasons, where it really
runs, its artifacts, recent events. `status_schema()` is the JSON Schema of a deployment's status
(schema/status.schema.json). Plain pydantic models, camelCase on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel

from npuctl.schema.bench import BenchResult
from npuctl.schema.cost import LoadCost
from npuctl.schema.placement import AccuracyStatus, Fact, GenerationStatus
from npuctl.schema.power import PowerInForce
from npuctl.schema.preflight import Preflight

STATUS_SCHEMA_FILE = "status.schema.json"


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
    STANDBY = "Standby"
    """Built and verified, not loaded (`residency: onDemand`): it loads on its next request."""


class ConditionType(StrEnum):
    VALID = "Valid"
    SELECTED = "Selected"
    ARTIFACTS_READY = "ArtifactsReady"
    LOADED = "Loaded"
    ON_NPU = "OnNPU"
    SERVING = "Serving"
    RESIDENT = "Resident"
    """`residency: onDemand` deployments: whether the model is loaded now (False: Idle, Evicted, OverBudget
    or WaitingForRoom)."""
    STATE_SAVED = "StateSaved"
    """The agent's, not a deployment's: its state folder takes status writes."""
    MANIFESTS_READ = "ManifestsRead"
    """The agent's: its manifest folders were read within the deadline and no file is waiting to settle."""
    RECONCILING = "Reconciling"
    """The agent's: its reconcile loop runs (False while it is restarted after a failure)."""


class Reason(StrEnum):
    """Why a condition has its status: every reason a condition can give (scripts may match on them)."""

    VALID = "Valid"
    INVALID_MANIFEST = "InvalidManifest"
    """The manifest file is invalid now; the last valid version is kept."""
    SELECTED = "Selected"
    SELECTOR_MISMATCH = "SelectorMismatch"
    PENDING = "Pending"
    BUILDING = "Building"
    BUILT = "Built"
    BUILD_FAILED = "BuildFailed"
    BUILD_DEADLINE_EXCEEDED = "BuildDeadlineExceeded"
    """A build step ran past its deadline (agent config buildDeadlines); retried after a backoff."""
    LOADING = "Loading"
    LOAD_FAILED = "LoadFailed"
    SESSIONS_OPEN = "SessionsOpen"
    ON_NPU = "OnNPU"
    ON_CPU = "OnCPU"
    SERVING = "Serving"
    NAME_CONFLICT = "NameConflict"
    """A name it would be served under belongs to another deployment."""
    ON_DEMAND = "OnDemand"
    """Serving by loading on the first request (`residency: onDemand`)."""
    IDLE = "Idle"
    """Not loaded: not asked for since it was built, or unloaded after idleSeconds without requests."""
    EVICTED = "Evicted"
    """Not loaded: unloaded to make room within the agent's budget for another model."""
    OVER_BUDGET = "OverBudget"
    """Not loaded: asked for, but the agent's budget cannot fit it beside the models it may not evict."""
    WAITING_FOR_ROOM = "WaitingForRoom"
    """Not loaded: asked for; it fits once the requests in flight on the models it will evict end, and its
    requests wait for them."""
    RECONCILE_ERROR = "ReconcileError"
    """A fault of the agent itself while acting for this deployment; retried after a backoff."""
    # Where it cannot run (from the runtime's placement, npuctl.runtime.placement).
    NO_NPU = "NoNPU"
    SIMULATOR_NOT_ALLOWED = "SimulatorNotAllowed"
    NO_CONTEXT_BINARY = "NoContextBinary"
    INCOMPATIBLE_CONTEXT_BINARY = "IncompatibleContextBinary"
    NO_CPU_MODEL = "NoCPUModel"
    SESSION_FAILED = "SessionFailed"
    NOT_ON_NPU = "NotOnNPU"
    NO_TOKENIZER = "NoTokenizer"
    NO_LABELS = "NoLabels"
    """A classifier whose config.json does not name its labels (id2label)."""
    # The agent's own conditions.
    SAVED = "Saved"
    STATE_WRITE_FAILED = "StateWriteFailed"
    READ = "Read"
    MANIFESTS_NOT_READ = "ManifestsNotRead"
    MANIFEST_READ_TIMEOUT = "ManifestReadTimeout"
    MANIFEST_PENDING = "ManifestPending"
    RUNNING = "Running"
    RESTARTING = "Restarting"


class Condition(Fact):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: Reason
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


class StepProgress(Fact):
    """The step a build is running, and how far it has got, as it last reported (about once a second)."""

    step: str
    """The step and what it is for, as the build names it (`compile x-elite`, `llm-quantize`)."""
    done: int | None = None
    """How many of `unit` are done; None until the step reports (or when it cannot count)."""
    total: int | None = None
    """How many of `unit` there are, when the step knows."""
    unit: str | None = None
    """What is counted: `layers`, `surgeries`, `splits`, `graphs`, `calibration samples`, `samples`, `tokens`."""
    message: str | None = None
    """What the step is doing, in words (`calibrating`, `prompt 3/8, the pack`, an AI Hub job's state)."""
    seconds: float | None = None
    """How long the step has run."""
    time: str
    """When this was reported (RFC 3339, UTC)."""

    def line(self) -> str:
        """In words: `llm-quantize: 12/64 calibration samples, calibrating, 35.0 s`."""
        return f"{self.step}: {self.doing()}"

    def doing(self) -> str:
        """How far it has got, in words: `12/64 calibration samples, calibrating, 35.0 s`."""
        counted = None if self.done is None else (
            f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}")
        ran = None if self.seconds is None else f"{self.seconds:.1f} s"
        return ", ".join(part for part in (counted, self.message, ran) if part) or "running"


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
    cost: LoadCost | None = None
    """What it costs this host, measured when it loaded."""


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
    progress: StepProgress | None = None
    """While it builds: the step running and how far it has got (None between steps and once built)."""
    cost: LoadCost | None = None
    """What the loaded model costs this host (memory, KV cache, NPU sessions, cold start), measured when it loaded;
    absent while nothing is loaded."""
    preflight: Preflight | None = None
    """An NPU chat build's pre-flight, from its last build (refused or not): the estimated peak RAM, disk and time,
    and what the host had available."""

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def is_true(self, kind: ConditionType) -> bool:
        found = self.condition(kind)
        return found is not None and found.status == "True"

    def set_condition(self, kind: ConditionType, status: bool | None, reason: Reason, message: str = "") -> bool:
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


class BudgetUse(Fact):
    """What the agent itself and its loaded models take of its budget (agent config `budget`), as estimated."""

    memory: int
    """The memory budget, bytes: for the whole agent process."""
    memory_used: int
    """The agent's own memory and its loaded models' costs, bytes."""
    agent_memory: int = 0
    """The agent process's own memory (Python, onnxruntime, the server), measured at its start before any model
    loads, bytes: charged first, in memoryUsed."""
    npu_sessions: int
    npu_sessions_used: int
    npu_memory: int | None = None
    """The NPU memory budget, bytes (None: no limit)."""
    npu_memory_used: int = 0
    loaded: list[str] = []
    """The deployments loaded now, which count against it."""

    def line(self) -> str:
        """The use in words, for `npuctl get`."""
        mib = 1 << 20
        npu = f", NPU memory {self.npu_memory_used // mib}/{self.npu_memory // mib} MiB" if self.npu_memory else ""
        agent = f" (the agent itself {self.agent_memory // mib} MiB)" if self.agent_memory else ""
        return (f"budget: memory {self.memory_used // mib}/{self.memory // mib} MiB{agent}, NPU sessions "
                f"{self.npu_sessions_used}/{self.npu_sessions}{npu}; loaded: {', '.join(self.loaded) or 'none'}")


class BuildSteps(BaseModel):
    """What `apply --dry-run` and `diff` say of a deployment that would build: the steps found in the agent's
    store and the first that would run (`changes[].steps` in the control API's answer)."""

    stored: list[str] = []
    """Steps found in the store, in build order."""
    next: str | None = None
    """The first step a build would run; None when everything is stored."""
    error: str | None = None
    """Why a build would fail (a source that cannot be resolved), found without building."""

    def line(self) -> str:
        """The steps in words, for the CLI."""
        if self.error:
            return f"build would fail: {self.error}"
        stored = ", ".join(dict.fromkeys(self.stored)) or "nothing"
        return f"stored: {stored}; " + (f"builds from: {self.next}" if self.next else "nothing to build")


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


