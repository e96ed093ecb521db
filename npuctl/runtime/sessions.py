"""ONNX Runtime sessions on the CPU EP or the QNN EP, each with the provider it really got and its
NPU coverage (read from ORT's own node assignment, not assumed from what was asked)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from npuctl.runtime import power, qnn
from npuctl.runtime.placement import NotServable, Reason, Where
from npuctl.schema.enums import PowerPolicy
from npuctl.schema.models import Runtime
from npuctl.schema.placement import CpuException
from npuctl.schema.power import PowerInForce

CPU_EP = "CPUExecutionProvider"


@dataclass(frozen=True)
class OpenedSession:
    session: ort.InferenceSession
    provider: str
    """The execution provider that took most of the graph's nodes."""
    coverage: qnn.Coverage
    power: PowerInForce
    """The power policy's settings this session got."""


@dataclass(frozen=True)
class RunInfo:
    """Where a loaded model really runs: for status, readiness and the provider gauge."""

    where: Where
    provider: str
    npu_coverage: float
    """Share of graph nodes on the QNN EP, over all of the model's sessions."""
    note: str
    power: PowerInForce | None = None
    """The power settings of the model's first session (an encoder-decoder's other sessions follow the same policy)."""
    cpu_work: tuple[CpuException, ...] = ()
    """On the NPU, a decoder-pipeline pack's work that stays on the CPU, with reasons (ContextBinary.cpu_work)."""

    @classmethod
    def of(cls, where: Where, sessions: list[OpenedSession], note: str) -> RunInfo:
        on_qnn = sum(s.coverage.nodes_by_ep.get(qnn.EP_NAME, 0) for s in sessions)
        total = sum(s.coverage.total for s in sessions)
        return cls(where, sessions[0].provider, on_qnn / total if total else 0.0, note, sessions[0].power)


def open_cpu(model: Path, choice: power.Choice | None = None) -> OpenedSession:
    """A CPU EP session under `choice` (default `burst`, as builds and verification use)."""
    options = power.session_options()
    options.add_session_config_entry(qnn.RECORD_ASSIGNMENT, "1")
    applied = power.cpu_session(choice or power.Choice(PowerPolicy.BURST, None), options)
    session = ort.InferenceSession(str(model), options, providers=[CPU_EP])
    return _opened(session, applied)


def open_npu(model: Path, soc_model: int, runtime: Runtime, choice: power.Choice) -> OpenedSession:
    """A session on the QNN HTP backend; NotServable when it can't be created or nothing lands on QNN."""
    extra, applied = power.qnn_session(runtime, choice)
    try:
        options = qnn.session_options(soc_model, provider_options=extra, config={qnn.RECORD_ASSIGNMENT: "1"})
        session = ort.InferenceSession(str(model), options)
    except Exception as exc:  # ORT's error types derive straight from Exception
        raise NotServable(Reason.SESSION_FAILED, f"cannot open {model.name} on the QNN EP: {exc}") from exc
    opened = _opened(session, applied)
    if opened.provider != qnn.EP_NAME:
        raise NotServable(
            Reason.NOT_ON_NPU,
            f"{model.name}: the QNN EP took {opened.coverage.qnn_share:.0%} of the graph; it would run on {opened.provider}",
        )
    return opened


def _opened(session: ort.InferenceSession, applied: PowerInForce) -> OpenedSession:
    coverage = qnn.npu_coverage(session)
    provider = max(coverage.nodes_by_ep, key=coverage.nodes_by_ep.__getitem__, default=session.get_providers()[0])
    return OpenedSession(session, provider, coverage, applied)
