"""What `npuctl` reports of this host's capacity: memory total and available now (a configured `memoryGiB`
caps both, as for a host standing in for the PC it provisions), and how many 2 GiB HTP sessions fit."""

from __future__ import annotations

from npuctl.runtime.capacity import HTP_SESSION_BYTES, host_capacity
from npuctl.runtime.devices import NpuKind, detect_host

GIB = 2**30


def test_a_configured_memory_size_caps_total_and_available_and_sets_the_session_count() -> None:
    host = detect_host().with_overrides({"memoryGiB": 6, "npu": "simulator"})
    capacity = host_capacity(host)
    assert capacity.memory_total == 6 * GIB and 0 < capacity.memory_available <= 6 * GIB
    assert capacity.npu_session_bytes == HTP_SESSION_BYTES == 2 * GIB
    assert capacity.npu_sessions == capacity.memory_available // (2 * GIB) and capacity.npu_memory is None
    rows = dict(capacity.summary())
    assert rows["memory"].startswith("6.0 GiB total, ") and rows["memory"].endswith(" available now")
    assert rows["npu memory"].startswith("shared with the system")
    assert rows["htp sessions"] == (f"up to 2.0 GiB each; {capacity.npu_sessions} of that size fit in the memory "
                                    "available now")


def test_without_an_npu_no_session_figures_are_made_up() -> None:
    host = detect_host().with_overrides({"npu": "none"})
    assert host.npu is NpuKind.NONE
    capacity = host_capacity(host)
    assert capacity.npu_session_bytes is None and capacity.npu_sessions is None
    assert [name for name, _ in capacity.summary()] == ["memory"]
    assert capacity.as_dict()["npu_sessions"] is None
