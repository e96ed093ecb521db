"""What this host is: OS, architecture, memory, SoC, and whether QNN reaches a real Hexagon NPU,
only Qualcomm's HTP simulator (x86_64 build hosts), or nothing."""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from functools import cache
from typing import Any

import psutil

from npuctl.schema.targets import HTP_ARCH_BY_SOC, SOCS, SocInfo, soc_by_model

FACT_KEYS = ("soc", "socModel", "htpArch", "os", "arch", "memoryGiB", "npu")
"""Device facts, by the names selectors and overrides use."""


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
    overrides: tuple[str, ...] = ()
    """Facts set by configuration rather than detected (FACT_KEYS names)."""

    def with_overrides(self, facts: Mapping[str, Any]) -> HostFacts:
        """These facts with some replaced: a build host standing in for the PC it provisions, or a test.
        `soc` (an alias) or `socModel` also set the SoC's name and HTP arch. Raises ValueError on unknown keys
        or values."""
        check_facts(facts)
        changes: dict[str, Any] = {}
        soc = SOCS[str(facts["soc"])] if "soc" in facts else None
        soc_model = int(facts["socModel"]) if "socModel" in facts else (soc.soc_model if soc else None)
        if soc_model is not None:
            info = soc or soc_by_model(soc_model)
            changes |= {"soc_model": soc_model, "soc_name": info.product if info else None,
                        "htp_arch": HTP_ARCH_BY_SOC.get(soc_model)}
        if "htpArch" in facts:
            changes["htp_arch"] = int(facts["htpArch"])
        if "memoryGiB" in facts:
            changes["memory_gib"] = float(facts["memoryGiB"])
        if "npu" in facts:
            changes["npu"] = NpuKind(str(facts["npu"]))
        changes |= {name: str(facts[name]) for name in ("os", "arch") if name in facts}
        keys = set(facts) | ({"socModel"} if soc_model is not None else set())
        return replace(self, **changes, overrides=tuple(sorted(set(self.overrides) | keys)))

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


def check_facts(facts: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first fact override that is unknown or malformed."""
    for key, value in facts.items():
        if key not in FACT_KEYS:
            raise ValueError(f"unknown device fact {key!r} (known: {', '.join(FACT_KEYS)})")
        try:
            if key == "soc" and str(value) not in SOCS:
                raise ValueError(f"one of {', '.join(SOCS)}")
            if key in ("socModel", "htpArch"):
                int(value)
            if key == "memoryGiB":
                float(value)
            if key == "npu":
                NpuKind(str(value))
        except ValueError as exc:
            raise ValueError(f"device fact {key}: {value!r} is not valid ({exc})") from None


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
