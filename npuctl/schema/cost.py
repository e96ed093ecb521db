"""What a loaded model costs this host: memory, KV cache, NPU sessions and the time its load took. Measured
once when the model loads, or estimated from its artifacts' sizes before it does (for admission)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class LoadCost(BaseModel):
    """One loaded model's cost. Deployments that share sessions (same artifacts and session options) show the
    cost of the one set of sessions they share: count it once."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True,
                              use_attribute_docstrings=True, frozen=True)

    host_bytes: int
    """Host memory the load took: the agent process's resident set growth over the load (its working set on
    Windows); estimated from the artifacts' sizes when `estimated`."""
    peak_host_bytes: int = 0
    """The resident set's highest growth while the load ran (sampled every few milliseconds; 0 when `estimated`):
    what the load took at once (graphs read whole, then optimized into new buffers), which may exceed hostBytes.
    The agent admits the model's next load against it."""
    artifact_bytes: int
    """Bytes of the files the sessions were opened from (ONNX graphs, their external weights, context binaries):
    what hostBytes is checked against."""
    kv_cache_bytes: int = 0
    """Text generation: the KV cache its generation slots hold at full context (2 x layers x KV heads x head size
    x context length x the cache's element size x slots), allocated as generations start, not at load. 0 for
    other models."""
    context_binary_bytes: int = 0
    """Bytes of the QNN context binaries its NPU sessions hold (0 when it runs on the CPU)."""
    npu_sessions: int = 0
    """Sessions on the QNN EP (the HTP): each holds one context binary, and a process has room for only a few."""
    sessions: int = 0
    """All its sessions (NPU and CPU)."""
    load_seconds: float = 0.0
    """Cold start: the time its sessions took to open (0 when `estimated`)."""
    estimated: bool = False
    """Estimated from the artifacts before loading (hostBytes from their sizes), not measured."""

    @property
    def memory_bytes(self) -> int:
        """What the model may hold at most: its host memory and its full KV cache."""
        return self.host_bytes + self.kv_cache_bytes

    def summary(self) -> str:
        """The cost in words, for describe and the dashboard."""
        parts = [f"{_size(self.memory_bytes)} memory ({_size(self.host_bytes)} host"
                 + (f" + {_size(self.kv_cache_bytes)} KV cache" if self.kv_cache_bytes else "") + ")",
                 f"artifacts {_size(self.artifact_bytes)}"]
        if self.peak_host_bytes > self.host_bytes:
            parts.insert(1, f"{_size(self.peak_host_bytes)} at the load's peak")
        if self.npu_sessions:
            parts.append(f"{self.npu_sessions} NPU session(s), context binaries {_size(self.context_binary_bytes)}")
        parts.append("estimated before loading" if self.estimated else f"loaded in {self.load_seconds:.2f} s")
        return ", ".join(parts)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(count) >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
