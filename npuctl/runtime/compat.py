"""Whether a context binary can run on this device: what it was built for (SoC, QNN SDK), read from its
EPContext wrapper, against the device's SoC and the QNN SDK onnxruntime-qnn bundles here.

A context binary is tied to the Hexagon generation it was compiled for, and loads only into a QNN runtime at
least as new as the SDK that wrote it. On a real NPU ONNX Runtime's own check (the QNN EP's
ValidateCompiledModelCompatibilityInfo) is asked as well; it needs an NPU device, so the simulator and
overridden device facts rely on the decoded fields alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from npuctl.runtime import qnn
from npuctl.runtime.devices import HostFacts, NpuKind
from npuctl.schema.targets import HTP_ARCH_BY_SOC, describe_soc

COMPAT_KEY = f"ep_compatibility_info.{qnn.EP_NAME}"


@dataclass(frozen=True)
class CompatInfo:
    """What a context binary was built for, as far as its wrapper says."""

    soc_model: int | None
    htp_arch: int | None
    qnn_sdk: str | None
    """QNN SDK (QAIRT) version that compiled it, e.g. "2.51.0"."""
    raw: str | None = None
    """The `ep_compatibility_info.QNNExecutionProvider` value, when the wrapper has one."""

    @classmethod
    def parse(cls, value: str) -> CompatInfo:
        """Decode `v2:<backend>:<qnn sdk>:<backend api>:<?>:<soc_model>:<htp arch, 0 = from soc>:<?>`,
        as onnxruntime-qnn 2.x writes it (e.g. v2:6:2.51.0:5.51.0:0:60:0:0)."""
        parts = value.split(":")
        soc = _int(parts, 5) or None
        arch = _int(parts, 6) or (HTP_ARCH_BY_SOC.get(soc) if soc else None)
        sdk = parts[2] if len(parts) > 2 and parts[2][:1].isdigit() else None
        return cls(soc, arch, sdk, value)

    @classmethod
    def of_wrapper(cls, wrapper: Path) -> CompatInfo:
        """From the wrapper's metadata, else from its EPContext node's ep_sdk_version (SoC then unknown)."""
        import onnx

        model = onnx.load(str(wrapper), load_external_data=False)
        raw = next((p.value for p in model.metadata_props if p.key == COMPAT_KEY), None)
        if raw:
            return cls.parse(raw)
        for node in model.graph.node:
            if node.op_type == "EPContext":
                version = next((onnx.helper.get_attribute_value(a) for a in node.attribute
                                if a.name == "ep_sdk_version"), b"")
                return cls(None, None, sdk_of(version.decode() if isinstance(version, bytes) else str(version)))
        return cls(None, None, None)


def problem(info: CompatInfo, host: HostFacts, runtime_sdk: str | None = None) -> str | None:
    """Why the binary can't run on `host`, or None when nothing known stands against it."""
    if info.soc_model is not None and host.soc_model is not None and info.soc_model != host.soc_model:
        return (f"built for {describe_soc(info.soc_model)}, this device is {describe_soc(host.soc_model)}: "
                f"a context binary runs only on the SoC it was compiled for")
    runtime_sdk = runtime_sdk or qnn.sdk_version()
    if info.qnn_sdk and runtime_sdk and _version(info.qnn_sdk) > _version(runtime_sdk):
        return (f"compiled with QNN SDK {info.qnn_sdk}, newer than the {runtime_sdk} onnxruntime-qnn "
                f"{qnn.version() or ''} bundles here: update onnxruntime-qnn, or rebuild it with QNN <= {runtime_sdk}")
    if host.npu is NpuKind.REAL and "socModel" not in host.overrides and info.raw:
        return _ort_verdict(info)
    return None


def _ort_verdict(info: CompatInfo) -> str | None:
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state

    check = getattr(_pybind_state, "get_model_compatibility_for_ep_devices", None)
    if check is None:  # onnxruntime < 1.23
        return None
    qnn.register()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == qnn.EP_NAME]
    try:
        verdict = check(devices, info.raw)
    except Exception:  # the EP can decline to judge (no NPU device); the decoded fields already passed
        return None
    if verdict.name == "EP_UNSUPPORTED":
        return f"ONNX Runtime's QNN EP reports this context binary ({info.raw}) unsupported on this device"
    return None


def _int(parts: list[str], index: int) -> int:
    return int(parts[index]) if len(parts) > index and parts[index].isdigit() else 0


def sdk_of(ep_sdk_version: str) -> str | None:
    """An EPContext ep_sdk_version or QNN build id ("v2.51.0.260929181845") -> the SDK version ("2.51.0")."""
    numbers = ep_sdk_version.lstrip("v").split(".")
    return ".".join(numbers[:3]) if len(numbers) >= 3 and all(n.isdigit() for n in numbers[:3]) else None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())
