"""The QNN execution provider plugin: registering it with ONNX Runtime, and what it reports."""

from __future__ import annotations

import threading
from importlib import metadata

EP_NAME = "QNNExecutionProvider"

_lock = threading.Lock()
_registered = False


class QnnUnavailable(RuntimeError):
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
        try:
            ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
        except Exception as exc:  # ORT raises its own Fail/RuntimeException types
            raise QnnUnavailable(f"cannot load the QNN EP library: {exc}") from exc
        _registered = True


def version() -> str | None:
    """The installed onnxruntime-qnn version, or None."""
    try:
        return metadata.version("onnxruntime-qnn")
    except metadata.PackageNotFoundError:
        return None
