"""The Snapdragon SoCs npuctl knows by name, and how they map to QNN's `soc_model` and HTP arch.

Source: QnnTypes.h `Qnn_SocModel_t`, onnxruntime-qnn soc_utils.cc and qai-hub-models
devices_and_chipsets.yaml (see shared/qnn-facts.md §1 and §A).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SocInfo:
    alias: str
    soc_model: int
    htp_arch: int
    product: str
    aihub_device: str | None
    """Device name for Qualcomm AI Hub's `hub.Device(name=...)`."""
    chipset: str | None
    """AI Hub chipset attribute; also the folder name of `precompiled/<chipset>/` packs."""


SOCS: dict[str, SocInfo] = {
    info.alias: info
    for info in (
        SocInfo("x-elite", 60, 73, "Snapdragon X Elite", "Snapdragon X Elite CRD", "qualcomm-snapdragon-x-elite"),
        SocInfo("x-plus", 60, 73, "Snapdragon X Plus", "Snapdragon X Plus 8-Core CRD", "qualcomm-snapdragon-x-plus-8-core"),
        SocInfo("x2-elite", 88, 81, "Snapdragon X2 Elite", "Snapdragon X2 Elite CRD", "qualcomm-snapdragon-x2-elite"),
        SocInfo("8-elite", 69, 79, "Snapdragon 8 Elite", "Snapdragon 8 Elite QRD", "qualcomm-snapdragon-8-elite"),
        SocInfo("8-gen-3", 57, 75, "Snapdragon 8 Gen 3", "Snapdragon 8 Gen 3 QRD", "qualcomm-snapdragon-8gen3"),
        SocInfo("8-gen-2", 43, 73, "Snapdragon 8 Gen 2", "Samsung Galaxy S23", "qualcomm-snapdragon-8gen2"),
    )
}

# soc_model -> HTP arch for SoCs without a friendly alias (qnn-facts.md §1 table).
HTP_ARCH_BY_SOC: dict[int, int] = {30: 68, 36: 69, 68: 75, 85: 79, 87: 81} | {
    info.soc_model: info.htp_arch for info in SOCS.values()
}


def soc_by_model(soc_model: int) -> SocInfo | None:
    """The first named SoC with this soc_model (X Elite and X Plus share 60; X Elite wins)."""
    return next((info for info in SOCS.values() if info.soc_model == soc_model), None)


def describe_soc(soc_model: int) -> str:
    """Human wording for messages: "soc 88 (Snapdragon X2 Elite)"."""
    info = soc_by_model(soc_model)
    return f"soc {soc_model} ({info.product})" if info else f"soc {soc_model}"
