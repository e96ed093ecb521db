"""Bundle bodies too big or too slow, on a real agent process: a bundle server that sends 600 MB, and one that
sends a byte every half second. The agent's RSS (from /proc) stays bounded, health answers within 1 s throughout, and the slow
source shows `Stalled` in the control API and in `npuctl get`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from npuctl.agent import bundles
from npuctl.cli import cli
from tests.agent.harness import Agent
from tests.agent.hostile_server import HostileServer, RssGuard, endless, trickle, wait_until

MiB = 1 << 20
RSS_GROWTH_BOUND_MIB = 96
"""What the agent may grow by while the hostile polls run: the 8 MiB cap, buffers, and the 5 s of a sample."""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.stop()


def test_a_600_mb_bundle_and_a_trickling_one_leave_the_agent_small_responsive_and_say_why(
        tmp_path: Path, hostile: HostileServer) -> None:
    _, public = bundles.generate_key()
    hostile.routes["/big.json"] = endless(600 * MiB)  # no Content-Length: only reading tells the size
    hostile.routes["/slow.json"] = trickle(0.5)
    config = {"sources": [
        {"name": "big", "url": f"{hostile.origin}/big.json", "publicKey": public, "intervalSeconds": 2},
        {"name": "slow", "url": f"{hostile.origin}/slow.json", "publicKey": public, "intervalSeconds": 2,
         "pollTimeoutSeconds": 3},
    ]}
    (tmp_path / "agent.yaml").write_text(json.dumps(config))
    agent = Agent(tmp_path, tmp_path / "cache", config=tmp_path / "agent.yaml")
    agent.start()
    try:
        assert agent.process is not None
        guard = RssGuard(agent.process.pid)
        baseline = guard.sample()
        late: list[str] = []

        def every() -> None:
            guard.sample()
            try:
                if httpx.get(f"{agent.url}/v2/health/live", timeout=1).status_code != 200:
                    late.append("not 200")
            except httpx.TimeoutException:
                late.append("no answer within 1 s")

        def states() -> dict[str, dict[str, str]]:
            items = httpx.get(f"{agent.url}/agent/v1/sources", timeout=5).json()["items"]
            return {s["name"]: s for s in items}

        def settled() -> bool:
            found = states()
            # Two polls of each: the big one refused at least twice, the slow one stalled.
            return found["big"]["state"] == "Rejected" and found["big"]["polls"] >= 2 and \
                found["slow"]["state"] == "Stalled"

        done = wait_until(settled, timeout=60, every=every)
        growth_mib = (guard.peak_kib - baseline) / 1024
        print(f"\nagent RSS {baseline / 1024:.0f} MiB at start, peak {guard.peak_kib / 1024:.0f} MiB; "
              f"server sent {hostile.sent / MiB:.0f} MiB")
        assert growth_mib < RSS_GROWTH_BOUND_MIB, f"RSS grew {growth_mib:.0f} MiB"
        assert not late, late
        assert done, states()
        found = states()
        assert f"over {bundles.MAX_BUNDLE_BYTES} bytes, the limit" in found["big"]["message"]
        assert "within 3 s (pollTimeoutSeconds)" in found["slow"]["message"]
        shown = CliRunner().invoke(cli, ["get", "--agent", agent.url])
        assert "source slow: Stalled" in shown.stderr and "source big: Rejected" in shown.stderr, shown.output
    finally:
        agent.stop()
