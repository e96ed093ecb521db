"""The QNN execution provider plugin: registering it, session options for the HTP backend, and what it reports."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from npuctl.errors import NpuctlError

if TYPE_CHECKING:
    import onnxruntime as ort

EP_NAME = "QNNExecutionProvider"
RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
"""Session config key: keep per-EP node lists, read back with `npu_coverage(session)`."""

_lock = threading.Lock()
_registered = False
_genai_registered = False


class QnnUnavailable(NpuctlError, RuntimeError):
    """The QNN EP cannot be used on this host (not installed, or its library failed to load)."""


def register() -> None:
    """Register onnxruntime-qnn's plugin EP once per process (it is not listed until registered)."""
    global _registered
    with _lock:
        if _registered:
            return
        import onnxruntime as ort

        try:
            import onnxruntime_qnn
        except ImportError as exc:
            raise QnnUnavailable("onnxruntime-qnn is not installed (pip install onnxruntime-qnn)") from exc
        # Someone else in the process (onnxruntime-genai, a test) may have registered it already.
        if not any(d.ep_name == EP_NAME for d in ort.get_ep_devices()):
            try:
                ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
            except Exception as exc:  # ORT raises its own Fail/RuntimeException types
                raise QnnUnavailable(f"cannot load the QNN EP library: {exc}") from exc
        _registered = True


def register_genai(og: Any) -> None:
    """Register the plugin with onnxruntime-genai (module `og`), once per process: genai keeps its own list of
    EP libraries, separate from the onnxruntime Python API's."""
    global _genai_registered
    with _lock:
        if _genai_registered:
            return
        try:
            import onnxruntime_qnn
        except ImportError as exc:
            raise QnnUnavailable("onnxruntime-qnn is not installed (pip install onnxruntime-qnn)") from exc
        try:
            og.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
        except Exception as exc:  # genai raises RuntimeError with ORT's message
            raise QnnUnavailable(f"onnxruntime-genai cannot load the QNN EP library: {exc}") from exc
        _genai_registered = True


def version() -> str | None:
    """The installed onnxruntime-qnn version, or None."""
    try:
        return metadata.version("onnxruntime-qnn")
    except metadata.PackageNotFoundError:
        return None


def sdk_version() -> str | None:
    """The QNN SDK (QAIRT) version bundled with onnxruntime-qnn, e.g. "2.51.0", or None."""
    try:
        from onnxruntime_qnn import build_and_package_info
    except ImportError:
        return None
    return getattr(build_and_package_info, "qnn_version", None)


def tool_versions() -> dict[str, str]:
    """Versions that change what a build produces: part of every build step's key."""
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "onnxruntime-qnn": version() or "none", "qnn-sdk": sdk_version() or "none"}


def htp_options(soc_model: int, *, fp16: bool = False, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Provider options for the HTP backend. `soc_model` is always set: without it the HTP backend guesses
    a SoC and quantized graphs fail to finalize (QNN_COMMON_ERROR_MEM_ALLOC); fp16 also requires it."""
    import onnxruntime_qnn

    options = {"backend_path": onnxruntime_qnn.get_qnn_htp_path(), "soc_model": str(soc_model)}
    if fp16:
        options["enable_htp_fp16_precision"] = "1"
    return options | dict(extra or {})


def session_options(
    soc_model: int,
    *,
    fp16: bool = False,
    provider_options: Mapping[str, str] | None = None,
    config: Mapping[str, str] | None = None,
) -> ort.SessionOptions:
    """Session options with the QNN EP (HTP backend) added for `soc_model`, plus session config entries."""
    import onnxruntime as ort

    register()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise QnnUnavailable("the QNN EP is registered but reports no device")
    from npuctl.runtime import power

    options = power.session_options()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.add_provider_for_devices(devices, htp_options(soc_model, fp16=fp16, extra=provider_options))
    return options


@dataclass(frozen=True)
class Coverage:
    """Which execution providers took the nodes of a session's graph (after ORT's graph optimizations)."""

    nodes_by_ep: dict[str, int]
    other_ops: dict[str, int] = field(default_factory=dict)
    """Op types of the nodes that did not go to the QNN EP, with counts."""

    @property
    def total(self) -> int:
        return sum(self.nodes_by_ep.values())

    @property
    def qnn_share(self) -> float:
        return self.nodes_by_ep.get(EP_NAME, 0) / self.total if self.total else 0.0


def npu_coverage(session: ort.InferenceSession) -> Coverage:
    """Node assignment of a session created with `RECORD_ASSIGNMENT` = "1"."""
    by_ep: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for subgraph in session.get_provider_graph_assignment_info():
        nodes = subgraph.get_nodes()
        by_ep[subgraph.ep_name] += len(nodes)
        if subgraph.ep_name != EP_NAME:
            other.update(node.op_type for node in nodes)
    return Coverage(dict(by_ep), dict(other))
