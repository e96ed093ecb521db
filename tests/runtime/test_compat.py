"""Whether a context binary can run here, as a user reads it: what its wrapper says it was built for (SoC, HTP
arch, QNN SDK), and the reason it is refused on another SoC or under an older QNN runtime than compiled it."""

from __future__ import annotations

import pytest

from npuctl.runtime.compat import CompatInfo, problem, sdk_of
from npuctl.runtime.devices import detect_host
from npuctl.schema.targets import HTP_ARCH_BY_SOC


def test_the_wrapper_s_compatibility_string_names_soc_arch_and_sdk() -> None:
    info = CompatInfo.parse("v2:6:2.51.0:5.51.0:0:60:0:0")
    assert (info.soc_model, info.htp_arch, info.qnn_sdk) == (60, HTP_ARCH_BY_SOC[60], "2.51.0")
    assert CompatInfo.parse("v2:6:2.51.0:5.51.0:0:60:81:0").htp_arch == 81, "an explicit arch wins over the SoC's"
    assert (CompatInfo.parse("not:a:version").soc_model, CompatInfo.parse("x").qnn_sdk) == (None, None)


@pytest.mark.parametrize(("version", "sdk"), [("v2.51.0.260929181845", "2.51.0"), ("2.40.0", "2.40.0"),
                                              ("2.40", None), ("unknown", None)])
def test_sdk_versions_come_from_build_ids(version: str, sdk: str | None) -> None:
    assert sdk_of(version) == sdk


def test_a_binary_for_another_soc_or_a_newer_sdk_is_refused_with_the_reason() -> None:
    host = detect_host().with_overrides({"socModel": 60, "npu": "simulator"})
    other = problem(CompatInfo(69, None, "2.40.0"), host, runtime_sdk="2.40.0")
    assert other is not None and other.startswith("built for ") and "runs only on the SoC it was compiled for" in other
    newer = problem(CompatInfo(60, None, "2.10.0"), host, runtime_sdk="2.9.0")  # numbers, not strings, compared
    assert newer is not None and "compiled with QNN SDK 2.10.0, newer than the 2.9.0" in newer
    assert "rebuild it with QNN <= 2.9.0" in newer
    assert problem(CompatInfo(60, None, "2.9.0"), host, runtime_sdk="2.10.0") is None
    assert problem(CompatInfo(None, None, None), host, runtime_sdk="2.40.0") is None, "nothing known stands against it"
