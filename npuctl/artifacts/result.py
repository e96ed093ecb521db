"""What a build hands to the runtime and the CLI: paths of the served models and the facts of each NPU artifact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from npuctl.artifacts import facts
from npuctl.artifacts.progress import Progress
from npuctl.artifacts.sources.context import ResolvedSource
from npuctl.artifacts.store import StoredFile
from npuctl.runtime.compat import CompatInfo
from npuctl.runtime.placement import Artifacts, ContextBinary
from npuctl.schema.models import Precision, Task
from npuctl.schema.placement import GenerationStatus
from npuctl.schema.status import ArtifactStatus, StepProgress, now


class StepState(StrEnum):
    RUNNING = "running"
    CACHED = "cached"
    DONE = "done"
    FETCHED = "fetched"
    """Copied from a published artifact store (verified by sha256) instead of run."""
    FAILED = "failed"


@dataclass(frozen=True)
class StepEvent:
    """One progress report: a step started, was found in the store, was fetched, finished, or failed; or,
    while it runs, how far it has got."""

    step: str
    state: StepState
    key: str
    target: str | None = None
    bucket: int | None = None
    seconds: float | None = None
    message: str | None = None
    """Why it failed, for FAILED; what a long step is doing, for repeated RUNNING events (AI Hub job status)."""
    progress: Progress | None = None
    """How far the step has got, for repeated RUNNING events of a long step (then `seconds` is the time so far)."""
    preflight: facts.Preflight | None = None
    """The estimate, on the pre-flight's events (the agent keeps it in the deployment's status)."""

    @property
    def where(self) -> str:
        """The step and what it is for: `compile x-elite/128`."""
        place = "/".join(str(part) for part in (self.target, self.bucket) if part is not None)
        return f"{self.step} {place}".strip()

    def running(self) -> StepProgress | None:
        """What status shows of a running step's event (None for the other states)."""
        if self.state is not StepState.RUNNING:
            return None
        counted = self.progress
        return StepProgress(step=self.where, done=counted.done if counted else None,
                            total=counted.total if counted else None, unit=counted.unit if counted else None,
                            message=self.message, seconds=None if self.seconds is None else round(self.seconds, 1),
                            time=now())

    def as_dict(self) -> dict[str, Any]:
        """One line of `npuctl build -o json` before its result."""
        progress = self.progress
        return {"step": self.step, "state": self.state.value, "key": self.key,
                "target": self.target, "bucket": self.bucket,
                "seconds": None if self.seconds is None else round(self.seconds, 3), "message": self.message,
                "progress": None if progress is None else
                {"done": progress.done, "total": progress.total, "unit": progress.unit},
                "preflight": None if self.preflight is None else self.preflight.model_dump(mode="json")}


ProgressCallback = Callable[[StepEvent], None]


@dataclass(frozen=True)
class StepRun:
    """One step of a build: its key, and whether this build ran it or found it cached."""

    name: str
    key: str
    cached: bool
    seconds: float
    """Time spent in this build (looking up, for cached steps)."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "cached": self.cached, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Survey:
    """How far a deployment is built, found without running anything."""

    stored: tuple[StepRun, ...]
    """Steps found in the store, in build order."""
    next_step: str | None
    """The first step a build would run (later ones depend on its output); None when all is built."""


@dataclass(frozen=True)
class NpuArtifact:
    """A verified context binary for one (target, sequence bucket)."""

    target: str
    """The target's alias, or soc<N>."""
    built: facts.Binary
    """What the step that made the binary recorded (a compile here or on AI Hub, or a pack's import): the SoC,
    HTP arch, QNN SDK and compatibility string are read from it."""
    precision: Precision
    batch: int
    bucket: int
    """Static sequence length; 0 when the model has no sequence axis."""
    context_model: Path
    """The EPContext wrapper (`*_ctx.onnx`); load it with the QNN EP and this soc_model. Its .bin sits beside it."""
    context_binary: Path
    accuracy: facts.Accuracy | None
    """None when there is nothing to compare with: a prebuilt pack without a buildable spec.model.source."""
    npu_coverage: float
    """Share of graph nodes the QNN EP took (0..1), lowest of compile and verify sessions."""
    files: tuple[StoredFile, ...]
    """The wrapper and the binary, paths relative to their folder."""
    steps: tuple[StepRun, ...]
    generation: GenerationStatus | None = None
    """Text generation: the greedy comparison and the stage placement of the decoder-pipeline pack (whose
    first context wrapper is `context_model`)."""
    decoder: Path | None = None
    """text2text-generation: the one-step decoder's EPContext wrapper for this bucket (None: it runs on the CPU)."""
    decoder_refused: str | None = None
    """text2text-generation: why the QNN EP did not compile the decoder, when it did not."""

    @property
    def soc_model(self) -> int:
        return self.built.soc_model

    @property
    def htp_arch(self) -> int | None:
        return self.built.htp_arch

    @property
    def qnn_sdk(self) -> str | None:
        """The QNN SDK the binary was compiled with."""
        return self.built.compiled_with

    @property
    def compatibility(self) -> str | None:
        """The wrapper's `ep_compatibility_info.QNNExecutionProvider`, e.g. v2:6:2.51.0:5.51.0:0:60:0:0."""
        return self.built.ep_compatibility_info

    @property
    def origin(self) -> str:
        """Who compiled it: "local" (the QNN EP here), "aihub" (a Qualcomm AI Hub compile job) or "prebuilt" (a pack)."""
        if isinstance(self.built, facts.ImportPack):
            return "prebuilt"
        return "aihub" if isinstance(self.built, facts.AihubCompile) else "local"

    def status(self) -> ArtifactStatus:
        """What status shows of it."""
        return ArtifactStatus(
            target=self.target, soc_model=self.soc_model, bucket=self.bucket, precision=self.precision.value,
            sha256={f.path: f.sha256 for f in self.files}, npu_coverage=self.npu_coverage,
            accuracy=self.accuracy.status() if self.accuracy else None, generation=self.generation)

    def as_dict(self) -> dict[str, Any]:
        """The `npuctl build -o json` shape of one artifact."""
        folder = self.context_model.parent
        return {
            "target": self.target, "soc_model": self.soc_model, "precision": self.precision.value,
            "bucket": self.bucket, "origin": self.origin, "compatibility": self.compatibility,
            "files": [{"path": str(folder / f.path), "sha256": f.sha256, "size": f.size} for f in self.files],
            "accuracy": self.accuracy.as_dict() if self.accuracy else None, "npu_coverage": self.npu_coverage,
            "steps": [s.as_dict() for s in self.steps],
            **({"generation": self.generation.model_dump(by_alias=False)} if self.generation else {}),
        } | ({"decoder": str(self.decoder) if self.decoder else None, "decoder_refused": self.decoder_refused}
             if self.decoder or self.decoder_refused else {})


@dataclass(frozen=True)
class BuildResult:
    deployment: str
    task: Task
    precision: Precision
    cpu_model: Path | None
    """Dynamic-shape fp32 ONNX model: what the CPU EP serves (never the static NPU graphs); None for a
    prebuilt pack without a buildable spec.model.source."""
    model_dir: Path
    """Folder with tokenizer.json, config.json and the sentence-transformers configs
    (modules.json, 1_Pooling/config.json, config_sentence_transformers.json) when the source has them."""
    tokenizer: Path | None
    """The tokenizer.json to use (spec.model.tokenizer, else model_dir/tokenizer.json), if it exists."""
    artifacts: tuple[NpuArtifact, ...]
    """One per (target, bucket); empty for fp32 (CPU only)."""
    steps: tuple[StepRun, ...] = field(default=())
    """Every step of the build, each once, in order."""
    sources: tuple[ResolvedSource, ...] = ()
    """What the build read: spec.model.source, and the prebuilt pack when it is another source. Each with its
    digest and, for `hf:`, the commit a branch name resolved to."""

    @property
    def all_cached(self) -> bool:
        return all(s.cached for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        """The `npuctl build -o json` object."""
        return {"deployment": self.deployment, "sources": [s.as_dict() for s in self.sources],
                "artifacts": [a.as_dict() for a in self.artifacts]}


def artifacts_of(result: BuildResult, views: Path | None = None) -> Artifacts:
    """What the runtime needs of a build: the CPU model, the tokenizer and pooling config, the context binaries;
    `views`: where a decoder-pipeline pack's host views go (`Store.views_dir` of the store it was built in)."""
    binaries = tuple(
        ContextBinary(a.soc_model, a.bucket or None, a.context_model,
                      CompatInfo(a.soc_model, a.htp_arch, a.qnn_sdk, a.compatibility), a.decoder, a.decoder_refused,
                      a.npu_coverage, tuple(a.generation.cpu_work) if a.generation else ())
        for a in result.artifacts
    )
    return Artifacts(result.cpu_model, result.model_dir, result.tokenizer, binaries, views)
