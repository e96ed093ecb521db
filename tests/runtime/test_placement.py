"""Where a deployment runs, for every kind of host, device and fallback: pure decisions, no sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from npuctl.runtime.devices import HostFacts, NpuKind
from npuctl.runtime.placement import Artifacts, ContextBinary, NotServable, Reason, Where, place
from npuctl.schema.models import Runtime

CPU_MODEL = Path("model.onnx")
X_ELITE = tuple(ContextBinary(60, length, Path(f"x{length}_ctx.onnx")) for length in (256, 64))
X2_ELITE = (ContextBinary(88, 128, Path("x2_ctx.onnx")),)


def host(npu: NpuKind, soc_model: int | None = None) -> HostFacts:
    return HostFacts(
        os="Windows", os_version="11", arch="arm64" if npu is NpuKind.REAL else "x86_64", memory_gib=16.0,
        python="3.11", onnxruntime="1.32.0", onnxruntime_qnn="2.7.0", npu=npu, soc_model=soc_model,
        soc_name=None, htp_arch=None, qnn_error="onnxruntime-qnn is not installed" if npu is NpuKind.NONE else None,
    )


def runtime(**fields: object) -> Runtime:
    return Runtime.model_validate(fields)


def test_a_real_npu_takes_its_own_socs_binaries_smallest_bucket_first() -> None:
    placement = place(runtime(), host(NpuKind.REAL, 60), Artifacts(CPU_MODEL, context_binaries=X2_ELITE + X_ELITE))
    assert placement.where is Where.NPU
    assert [b.sequence_length for b in placement.binaries] == [64, 256]
    assert {b.soc_model for b in placement.binaries} == {60}


def test_a_real_npu_without_its_binary_falls_back_or_refuses() -> None:
    artifacts = Artifacts(CPU_MODEL, context_binaries=X_ELITE)
    fallen = place(runtime(), host(NpuKind.REAL, 88), artifacts)
    assert fallen.where is Where.CPU and "soc 88" in fallen.note
    with pytest.raises(NotServable) as refused:
        place(runtime(device="npu", fallback="none"), host(NpuKind.REAL, 88), artifacts)
    assert refused.value.reason is Reason.NO_CONTEXT_BINARY


@pytest.mark.parametrize("device", ["auto", "npu"])
def test_the_simulator_serves_on_the_cpu_unless_allowed(device: str) -> None:
    artifacts = Artifacts(CPU_MODEL, context_binaries=X_ELITE)
    default = place(runtime(device=device), host(NpuKind.SIMULATOR), artifacts)
    assert default.where is Where.CPU and "allowSimulator" in default.note
    allowed = place(runtime(device=device, allowSimulator=True), host(NpuKind.SIMULATOR), artifacts)
    assert allowed.where is Where.SIMULATOR and allowed.on_npu


def test_fallback_none_refuses_the_cpu_with_the_reason() -> None:
    with pytest.raises(NotServable) as simulator:
        place(runtime(device="npu", fallback="none"), host(NpuKind.SIMULATOR), Artifacts(CPU_MODEL, context_binaries=X_ELITE))
    assert simulator.value.reason is Reason.SIMULATOR_NOT_ALLOWED
    assert "fallback is none" in simulator.value.message
    with pytest.raises(NotServable) as nothing:
        place(runtime(fallback="none"), host(NpuKind.NONE), Artifacts(CPU_MODEL))
    assert nothing.value.reason is Reason.NO_NPU and "not installed" in nothing.value.message


def test_device_cpu_ignores_the_npu_and_needs_a_cpu_model() -> None:
    assert place(runtime(device="cpu"), host(NpuKind.REAL, 60), Artifacts(CPU_MODEL, context_binaries=X_ELITE)).where is Where.CPU
    with pytest.raises(NotServable) as missing:
        place(runtime(device="cpu"), host(NpuKind.REAL, 60), Artifacts(None, context_binaries=X_ELITE))
    assert missing.value.reason is Reason.NO_CPU_MODEL
