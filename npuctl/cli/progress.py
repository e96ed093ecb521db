"""`npuctl up`'s console: the agent's events as they happen, then the endpoint and a curl line once
everything declared is Ready."""

from __future__ import annotations

import asyncio
import json

from rich.console import Console
from rich.markup import escape

from npuctl.agent.reconcile import Reconciler
from npuctl.agent.status import ConditionType, Phase
from npuctl.schema import Task
from npuctl.schema.placement import coverage_text

_tasks: set[asyncio.Task[None]] = set()


def follow(reconciler: Reconciler, console: Console) -> None:
    """Start printing progress in the running event loop."""
    task = asyncio.get_running_loop().create_task(_follow(reconciler, console))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _follow(reconciler: Reconciler, console: Console, interval: float = 0.3) -> None:
    printed = len(reconciler.book.events)
    announced: set[str] = set()
    reported: dict[str, tuple[object, ...]] = {}
    """Per deployment, the running step's last report printed (its time aside)."""
    while True:
        await asyncio.sleep(interval)
        events = list(reconciler.book.events)
        for event in events[printed:]:
            style = "yellow" if event.type == "Warning" else "cyan"
            console.print(f"[{style}]{escape(event.deployment)}[/{style}] {escape(event.reason)}: {escape(event.message)}",
                          soft_wrap=True)
        printed = len(events)
        for name, status in reconciler.book.deployments.items():
            running = status.progress
            said = (running.step, running.done, running.total, running.unit, running.message) if running else ()
            if running is not None and reported.get(name) != said:
                console.print(f"[dim]{escape(name)} {escape(running.line())}[/dim]", soft_wrap=True)
            reported[name] = said
            if status.phase is Phase.READY and name not in announced:
                announced.add(name)
                _announce(reconciler, name, console)


def _announce(reconciler: Reconciler, name: str, console: Console) -> None:
    status = reconciler.book.deployments[name]
    want = reconciler.desired.get(name)
    public = want.deployment.deployment.public_name if want else name
    endpoint = reconciler.endpoint
    loaded = status.condition(ConditionType.LOADED)
    console.print(f"[bold green]{name} is Ready[/bold green] as {escape(repr(public))} on {status.provider} "
                  f"(NPU coverage {coverage_text(status.npu_coverage)}; {escape(loaded.message) if loaded else ''})",
                  soft_wrap=True)
    for artifact in status.artifacts:
        accuracy = artifact.accuracy
        measured = f"{accuracy.metric} {accuracy.value:.4f} vs fp32" if accuracy else "prebuilt, not measured here"
        console.print(f"  built for {artifact.target} (soc {artifact.soc_model}, {artifact.precision}, "
                      f"seq {artifact.bucket}): {measured}, NPU coverage {coverage_text(artifact.npu_coverage)}",
                      soft_wrap=True)
    task = want.deployment.deployment.spec.model.task if want else Task.EMBEDDINGS
    console.print(f"  {_try_it(endpoint, public, task)}", soft_wrap=True, markup=False)
    console.print(f"  dashboard: {endpoint}/ (open it in a browser)", soft_wrap=True, markup=False)


def _try_it(endpoint: str, model: str, task: Task) -> str:
    """A curl line to paste, for the deployment's API."""
    if task is Task.TENSOR:
        return f"curl -s {endpoint}/v2/models/{model}  # its inputs; then POST tensors to /v2/models/{model}/infer"
    path, body = (("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
                  if task is Task.TEXT_GENERATION else
                  ("/v1/embeddings", {"model": model, "input": "NPUs make local search fast"}))
    return f"curl -s {endpoint}{path} -H 'Content-Type: application/json' -d '{json.dumps(body)}'"
