"""What this host is: OS, architecture, memory, SoC, and whether QNN reaches a real Hexagon NPU,
only Qualcomm's HTP simulator (x86_64 build hosts), or nothing."""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

import psutil

from npuctl.schema.targets import SocInfo, soc_by_model, SOCS


class NpuKind(StrEnum):
    REAL = "npu"
    """A QNN EP device of type NPU: a Hexagon NPU on a Snapdragon PC or phone."""
    SIMULATOR = "simulator"
    """The QNN EP loads, but its HTP backend is the x86_64 simulator (its device reports type CPU)."""
    NONE = "none"
    """No usable QNN EP."""


@dataclass(frozen=True)
class EpDevice:
    ep_name: str
    device_type: str
    vendor_id: int
    notes: str = ""


@dataclass(frozen=True)
class HostFacts:
    os: str
    os_version: str
    arch: str
    memory_gib: float
    python: str
    onnxruntime: str
    onnxruntime_qnn: str | None
    npu: NpuKind
    soc_model: int | None
    soc_name: str | None
    htp_arch: int | None
    qnn_error: str | None = None
    """Why the QNN EP is unusable, when it is."""
    ep_devices: list[EpDevice] = field(default_factory=list)

    @property
    def qnn_available(self) -> bool:
        return self.npu is not NpuKind.NONE

    @property
    def soc(self) -> SocInfo | None:
        return soc_by_model(self.soc_model) if self.soc_model else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["npu"] = self.npu.value
        data["qnn_available"] = self.qnn_available
        data["simulator"] = self.npu is NpuKind.SIMULATOR
        return data

    def summary(self) -> list[tuple[str, str]]:
        npu = {
            NpuKind.REAL: "Hexagon NPU",
            NpuKind.SIMULATOR: "HTP simulator only (no real NPU): builds and verifies, serving defaults to CPU",
            NpuKind.NONE: f"none ({self.qnn_error})",
        }[self.npu]
        soc = f"{self.soc_name} (soc {self.soc_model}, HTP v{self.htp_arch})" if self.soc_model else "unknown"
        return [
            ("os", f"{self.os} {self.os_version}"),
            ("arch", self.arch),
            ("memory", f"{self.memory_gib:.1f} GiB"),
            ("soc", soc),
            ("npu", npu),
            ("onnxruntime", self.onnxruntime),
            ("onnxruntime-qnn", self.onnxruntime_qnn or "not installed"),
        ]


@cache
def detect_host() -> HostFacts:
    """Facts about this machine. Cached: hardware does not change while the process runs."""
    import onnxruntime as ort

    from npuctl.runtime import qnn

    arch = _normalized_arch(platform.machine())
    ep_devices: list[EpDevice] = []
    qnn_error = None
    try:
        qnn.register()
    except qnn.QnnUnavailable as exc:
        qnn_error = str(exc)
    for device in ort.get_ep_devices():
        device_type = device.device.type.name
        notes = ""
        if device.ep_name == qnn.EP_NAME and device_type != "NPU":
            notes = "HTP simulator" if arch == "x86_64" else "QNN device without an NPU"
        ep_devices.append(EpDevice(device.ep_name, device_type, device.device.vendor_id, notes))
    qnn_types = {d.device_type for d in ep_devices if d.ep_name == qnn.EP_NAME}
    if "NPU" in qnn_types:
        npu = NpuKind.REAL
    elif qnn_types and arch == "x86_64":
        npu = NpuKind.SIMULATOR
    else:
        npu = NpuKind.NONE
        qnn_error = qnn_error or "the QNN EP reports no NPU device"
    soc = _soc_from_cpu_name(_cpu_name()) if npu is NpuKind.REAL else None
    return HostFacts(
        os=platform.system(),
        os_version=platform.release(),
        arch=arch,
        memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
        python=platform.python_version(),
        onnxruntime=ort.__version__,
        onnxruntime_qnn=qnn.version(),
        npu=npu,
        soc_model=soc.soc_model if soc else None,
        soc_name=soc.product if soc else None,
        htp_arch=soc.htp_arch if soc else None,
        qnn_error=None if npu is not NpuKind.NONE else qnn_error,
        ep_devices=ep_devices,
    )


def _normalized_arch(machine: str) -> str:
    machine = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}.get(machine, machine)


# Processor names as Windows reports them, e.g. "Snapdragon(R) X Elite - X1E78100 - Qualcomm(R) Oryon(TM) CPU".
_CPU_NAME_TO_SOC = (
    (re.compile(r"X2 Elite|X2E", re.I), "x2-elite"),
    (re.compile(r"X Elite|X1E", re.I), "x-elite"),
    (re.compile(r"X Plus|X1P", re.I), "x-plus"),
    (re.compile(r"8 Elite", re.I), "8-elite"),
    (re.compile(r"8 Gen 3", re.I), "8-gen-3"),
    (re.compile(r"8 Gen 2", re.I), "8-gen-2"),
)


def _soc_from_cpu_name(name: str) -> SocInfo | None:
    return next((SOCS[alias] for pattern, alias in _CPU_NAME_TO_SOC if pattern.search(name)), None)


def _cpu_name() -> str:
    if sys.platform == "win32":
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0") as key:
                return str(winreg.QueryValueEx(key, "ProcessorNameString")[0])
        except OSError:
            return platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
