"""`npuctl up`'s console: the agent's events as they happen, then the endpoint and a curl line once
everything declared is Ready."""

from __future__ import annotations

import asyncio
import json

from rich.console import Console

from npuctl.agent.reconcile import Reconciler
from npuctl.agent.status import ConditionType, Phase

_tasks: set[asyncio.Task[None]] = set()


def follow(reconciler: Reconciler, console: Console) -> None:
    """Start printing progress in the running event loop."""
    task = asyncio.get_running_loop().create_task(_follow(reconciler, console))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _follow(reconciler: Reconciler, console: Console, interval: float = 0.3) -> None:
    printed = len(reconciler.book.events)
    announced: set[str] = set()
    while True:
        await asyncio.sleep(interval)
        events = list(reconciler.book.events)
        for event in events[printed:]:
            style = "yellow" if event.type == "Warning" else "cyan"
            console.print(f"[{style}]{event.deployment}[/{style}] {event.reason}: {event.message}")
        printed = len(events)
        for name, status in reconciler.book.deployments.items():
            if status.phase is Phase.READY and name not in announced:
                announced.add(name)
                _announce(reconciler, name, console)


def _announce(reconciler: Reconciler, name: str, console: Console) -> None:
    status = reconciler.book.deployments[name]
    want = reconciler.desired.get(name)
    public = want.deployment.deployment.public_name if want else name
    endpoint = reconciler.endpoint
    loaded = status.condition(ConditionType.LOADED)
    console.print(f"[bold green]{name} is Ready[/bold green] as {public!r} on {status.provider} "
                  f"(NPU coverage {status.npu_coverage or 0:.0%}; {loaded.message if loaded else ''})", soft_wrap=True)
    for artifact in status.artifacts:
        accuracy = artifact["accuracy"]
        console.print(f"  built for {artifact['target']} (soc {artifact['socModel']}, {artifact['precision']}, "
                      f"seq {artifact['bucket']}): {accuracy['metric']} {accuracy['value']:.4f} vs fp32, "
                      f"NPU coverage {artifact['npuCoverage']:.1%}", soft_wrap=True)
    body = json.dumps({"model": public, "input": "NPUs make local search fast"})
    console.print(f"  curl -s {endpoint}/v1/embeddings -H 'Content-Type: application/json' -d '{body}'", soft_wrap=True)
