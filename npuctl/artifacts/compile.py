"""Compile a static ONNX model into a QNN context binary for one SoC (EPContext wrapper + .bin)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from npuctl.artifacts.errors import BuildError
from npuctl.runtime import qnn

CONTEXT_MODEL = "model_ctx.onnx"
CONTEXT_BINARY = "model_ctx_qnn.bin"
COMPAT_KEY = f"ep_compatibility_info.{qnn.EP_NAME}"


@dataclass(frozen=True)
class Compiled:
    coverage: qnn.Coverage
    """Where the source graph's nodes went during compilation."""
    compatibility: str | None
    """The wrapper's `ep_compatibility_info.QNNExecutionProvider`, e.g. v2:6:2.51.0:5.51.0:0:60:0:0."""


def compile_context(model: Path, out: Path, *, soc_model: int, fp16: bool, optimization_level: int) -> Compiled:
    """Write `out/model_ctx.onnx` + `out/model_ctx_qnn.bin`. `out` must be empty: ORT refuses to overwrite
    a context model. Every node must go to the QNN EP; otherwise the error names the ops that would not."""
    import onnxruntime as ort

    config = {
        "ep.context_enable": "1",
        "ep.context_file_path": str(out / CONTEXT_MODEL),
        "ep.context_embed_mode": "0",
        "session.disable_cpu_ep_fallback": "1",
        qnn.RECORD_ASSIGNMENT: "1",
    }
    options = qnn.session_options(soc_model, fp16=fp16, config=config, provider_options={
        "htp_graph_finalization_optimization_mode": str(optimization_level)})
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model), options)
    except Exception as exc:  # ORT's Fail/InvalidGraph/RuntimeException have no common public base
        raise BuildError("compile", _explain(model, soc_model, fp16, exc)) from exc
    coverage = qnn.npu_coverage(session)
    del session
    wrapper = out / CONTEXT_MODEL
    if not wrapper.is_file() or not (out / CONTEXT_BINARY).is_file():
        raise BuildError("compile", f"the QNN EP wrote no context binary for soc {soc_model} "
                         f"(found: {', '.join(p.name for p in out.iterdir()) or 'nothing'})")
    return Compiled(coverage, compatibility(wrapper))


def compatibility(wrapper: Path) -> str | None:
    props = onnx.load(str(wrapper), load_external_data=False).metadata_props
    return next((p.value for p in props if p.key == COMPAT_KEY), None)


def compat_soc(info: str | None) -> int | None:
    """The soc_model field of an `ep_compatibility_info` value (v2:<n>:<qnn sdk>:<api>:<?>:<soc>:...)."""
    parts = (info or "").split(":")
    return int(parts[5]) if len(parts) > 5 and parts[5].isdigit() else None


def _explain(model: Path, soc_model: int, fp16: bool, exc: Exception) -> str:
    """Why compiling failed: the ops the QNN EP would not take, found by a second try that allows CPU fallback."""
    import onnxruntime as ort

    try:
        options = qnn.session_options(soc_model, fp16=fp16, config={qnn.RECORD_ASSIGNMENT: "1"})
        options.log_severity_level = 3
        coverage = qnn.npu_coverage(ort.InferenceSession(str(model), options))
    except Exception:  # the diagnosis is best effort; the original error still explains the failure
        coverage = None
    if coverage is not None and coverage.other_ops:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(coverage.other_ops.items()))
        return (f"the QNN EP cannot take {coverage.total - coverage.nodes_by_ep.get(qnn.EP_NAME, 0)} of "
                f"{coverage.total} nodes for soc {soc_model}: {ops}")
    return f"compiling for soc {soc_model} failed: {exc}"
