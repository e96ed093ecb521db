"""The reconcile loop's read of the manifest folders: in a worker thread, never on the event loop, so that a
file on a hung mount cannot stop serving; past a deadline the read is shown as late and goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from npuctl.agent.desired import Desired, DesiredState
from npuctl.agent.health import AgentHealth

READ_DEADLINE_SECONDS = 10.0
"""How long a pass waits for the manifests to be read before showing the read as late (it goes on). An
unchanged folder is re-read from its stamps in ~1 s for 5,000 files; a first read of 5,000 parses them all
(44 s on the 2-core test host under load), and is shown as late, as a hung share is."""


class ManifestReader:
    def __init__(self, desired_state: DesiredState, health: AgentHealth, wake: Callable[[], None]) -> None:
        self.desired_state = desired_state
        self.health = health
        self.wake = wake
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npuctl-read")
        self._reading: asyncio.Future[dict[str, Desired]] | None = None

    async def read(self) -> bool:
        """Whether the manifests were read. False while the read is past READ_DEADLINE_SECONDS; that read goes on,
        its end wakes the loop, and the next pass waits for it again rather than starting another."""
        if self._reading is None:
            self._reading = asyncio.get_running_loop().run_in_executor(self._reads, self.desired_state.refresh)
        reading = self._reading
        done, _ = await asyncio.wait({reading}, timeout=READ_DEADLINE_SECONDS)
        if not done:
            reading.add_done_callback(lambda _: self.wake())
            self.health.check_reading(self.desired_state, late=(
                f"reading the manifest folders has taken more than {READ_DEADLINE_SECONDS:.0f}s (many new files, or a "
                "disk or network share that does not answer); what they declared before stays in effect until it ends"))
            return False
        self._reading = None
        reading.result()  # a read that raised is the loop's failure
        return True

    def shutdown(self) -> None:
        self._reads.shutdown(wait=False, cancel_futures=True)
