"""What this host offers models now: its memory (total, available), and what its NPU takes: how much one HTP
session can hold and how many such sessions the memory available now would hold. Read when asked, not cached:
available memory moves."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psutil

from npuctl.runtime.devices import HostFacts

HTP_SESSION_BYTES = 2 * 2**30
"""The most one HTP session holds: QNN refuses to finalize a graph estimated over 2 GiB ("limit is 2097152 KB",
error 1002), so a larger model is split into several context binaries, each in its own session. Newer QNN runtimes
give a session up to ~3.75 GiB of address space; 2 GiB holds on all of them."""


@dataclass(frozen=True)
class HostCapacity:
    memory_total: int
    """Bytes of system memory."""
    memory_available: int
    """Bytes of memory available to new allocations now, without swapping (psutil's `available`)."""
    npu_memory: int | None
    """Bytes of the NPU's own memory, where the device reports one; None on Snapdragon, whose NPU shares system
    memory (and on hosts without an NPU)."""
    npu_session_bytes: int | None
    """The most one HTP session holds (None without a QNN HTP backend)."""
    npu_sessions: int | None
    """HTP sessions of that size the memory available now would hold (None without a QNN HTP backend)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> list[tuple[str, str]]:
        rows = [("memory", f"{_gib(self.memory_total)} total, {_gib(self.memory_available)} available now")]
        if self.npu_session_bytes is not None:
            rows.append(("npu memory", _gib(self.npu_memory) if self.npu_memory is not None
                         else "shared with the system (the device reports none of its own)"))
            rows.append(("htp sessions", f"up to {_gib(self.npu_session_bytes)} each; {self.npu_sessions} of that "
                                         f"size fit in the memory available now"))
        return rows


def host_capacity(host: HostFacts) -> HostCapacity:
    """This host's capacity now; a `memoryGiB` fact set by configuration (a host standing in for the PC it
    provisions) caps the memory."""
    memory = psutil.virtual_memory()
    total = int(host.memory_gib * 2**30) if "memoryGiB" in host.overrides else int(memory.total)
    available = min(int(memory.available), total)
    session = HTP_SESSION_BYTES if host.qnn_available else None
    return HostCapacity(memory_total=total, memory_available=available, npu_memory=None, npu_session_bytes=session,
                        npu_sessions=available // session if session is not None else None)


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"
