"""Where a deployment runs: the NPU (a context binary for this host's SoC) or the CPU (the dynamic fp32
model), decided from `spec.runtime`, what this host has, and which artifacts exist. Pure: no sessions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from npuctl.errors import NpuctlError
from npuctl.runtime import compat
from npuctl.runtime.devices import HostFacts, NpuKind
from npuctl.schema.models import Device, Fallback, Runtime
from npuctl.schema.placement import CpuException
from npuctl.schema.status import Reason as Reason  # re-exported: the reasons NotServable gives
from npuctl.schema.targets import describe_soc


class Where(StrEnum):
    NPU = "npu"
    SIMULATOR = "npu-simulator"
    """Qualcomm's HTP simulator on an x86_64 host: the NPU code path, at a fraction of the speed."""
    CPU = "cpu"

    @property
    def on_npu(self) -> bool:
        """The NPU code path (the simulator included): context binaries on the QNN EP."""
        return self is not Where.CPU


class NotServable(NpuctlError):
    """A deployment cannot be served under its own rules; `reason` is a status Reason (why it cannot run where it
    asked to), `message` says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ContextBinary:
    """One compiled NPU graph: the EPContext wrapper ONNX (its .bin beside it)."""

    soc_model: int
    sequence_length: int | None
    """The static sequence length (bucket) it was compiled for; None for tensor models."""
    path: Path
    compat: compat.CompatInfo | None = None
    """What its wrapper says it was built for (SoC, QNN SDK), checked against the host before loading."""
    decoder: Path | None = None
    """text2text-generation: the wrapper of the one-step decoder compiled for this encoder bucket, if the HTP took it."""
    decoder_refused: str | None = None
    """text2text-generation: why the QNN EP did not compile the decoder, when it did not."""
    npu_coverage: float | None = None
    """The NPU coverage figure as the build measured it: the share of graph nodes (after onnxruntime's graph
    optimizations) the QNN EP took when the binary was compiled. For a decoder-pipeline pack it is over every graph
    of the pack, its CPU stages and CPU attention included, and status, get, describe, /v2/models and the dashboard
    show this number, not one counted on the loaded wrappers (an EPContext node is one node, however much it
    holds). None when no build measured it."""
    cpu_work: tuple[CpuException, ...] = ()
    """A decoder-pipeline pack's work that stays on the CPU per token, each with its reason, as its build named it."""


@dataclass(frozen=True)
class Artifacts:
    """What a build produced for one deployment, as the runtime needs it."""

    cpu_model: Path | None
    """The dynamic-shape fp32 ONNX model (CPU path)."""
    model_dir: Path | None = None
    """Folder with the sentence-transformers config (modules.json, 1_Pooling/config.json) of text models; the
    onnxruntime-genai model folder (genai_config.json) of text-generation models."""
    tokenizer: Path | None = None
    """The tokenizer.json of text models."""
    context_binaries: tuple[ContextBinary, ...] = ()
    """In the manifest's target order."""
    views: Path | None = None
    """Where a decoder-pipeline pack's host views go (the artifact store's `genai-views`, so that deleting the
    store frees them); None: the pack cannot be served on the NPU."""


@dataclass(frozen=True)
class Placement:
    where: Where
    binaries: tuple[ContextBinary, ...]
    """The context binaries to load, one per bucket, smallest bucket first (empty on the CPU)."""
    note: str
    """Why this placement, in words for status (e.g. why the NPU was not used)."""

    @property
    def on_npu(self) -> bool:
        return self.where.on_npu


def place(runtime: Runtime, host: HostFacts, artifacts: Artifacts) -> Placement:
    """Choose per `spec.runtime`; raise NotServable when the rules leave nowhere to run."""
    if runtime.device is Device.CPU:
        return cpu_placement(artifacts, "runtime.device is cpu")
    blocker = _npu_blocker(runtime, host)
    if blocker is None:
        binaries, incompatible = _binaries_for(host, artifacts)
        if binaries:
            where = Where.SIMULATOR if host.npu is NpuKind.SIMULATOR else Where.NPU
            return Placement(where, binaries, f"context binaries for {describe_soc(binaries[0].soc_model)}")
        wanted = describe_soc(host.soc_model) if host.soc_model else "any SoC"
        blocker = incompatible or (Reason.NO_CONTEXT_BINARY, f"no context binary was built for {wanted}")
    reason, why = blocker
    return fall_back(runtime, artifacts, reason, why)


def fall_back(runtime: Runtime, artifacts: Artifacts, reason: Reason, why: str) -> Placement:
    """The CPU placement when the NPU can't be used and the fallback allows it."""
    if runtime.fallback is Fallback.NONE:
        raise NotServable(reason, f"{why}; runtime.fallback is none, so it does not run on the CPU")
    if artifacts.cpu_model is None:  # the NPU's reason is the one to fix: keep it
        raise NotServable(reason, f"{why}; and there is no CPU-runnable model to fall back to (only context binaries)")
    return cpu_placement(artifacts, f"on the CPU: {why}")


def cpu_placement(artifacts: Artifacts, note: str) -> Placement:
    if artifacts.cpu_model is None:
        raise NotServable(Reason.NO_CPU_MODEL, f"{note}, but there is no CPU-runnable model (only context binaries)")
    return Placement(Where.CPU, (), note)


def _npu_blocker(runtime: Runtime, host: HostFacts) -> tuple[Reason, str] | None:
    if host.npu is NpuKind.REAL:
        return None
    if host.npu is NpuKind.NONE:
        return Reason.NO_NPU, f"this host has no usable NPU ({host.qnn_error or 'no QNN device'})"
    if runtime.allow_simulator:
        return None
    return (
        Reason.SIMULATOR_NOT_ALLOWED,
        "this host has only Qualcomm's HTP simulator, not a Hexagon NPU (runtime.allowSimulator: true runs on it)",
    )


def _binaries_for(host: HostFacts, artifacts: Artifacts) -> tuple[tuple[ContextBinary, ...], tuple[Reason, str] | None]:
    """The binaries to load, or none and why the ones there are can't run here."""
    # A device with a known SoC (a real NPU, or facts set by configuration) runs only binaries of its own SoC;
    # the simulator runs any, so it takes the first target's.
    socs = [b.soc_model for b in artifacts.context_binaries]
    if host.soc_model is not None:
        soc = host.soc_model if host.soc_model in socs else None
    else:
        soc = socs[0] if socs else None
    chosen = sorted((b for b in artifacts.context_binaries if b.soc_model == soc), key=lambda b: b.sequence_length or 0)
    if not chosen and artifacts.context_binaries and host.soc_model is not None:
        first = artifacts.context_binaries[0]
        why = compat.problem(first.compat or compat.CompatInfo(first.soc_model, None, None), host)
        return (), (Reason.NO_CONTEXT_BINARY, f"no context binary for {describe_soc(host.soc_model)}: {why}")
    for binary in chosen:
        if binary.compat is not None and (why := compat.problem(binary.compat, host)):
            return (), (Reason.INCOMPATIBLE_CONTEXT_BINARY, why)
    return tuple(chosen), None
