"""Builds in a child process: a crash in a compiler, and the memory a compile or quantization takes,
stay out of the long-running agent. A fully stored build is found in-process (no child needed)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from npuctl.artifacts import BuildError, BuildResult, NotBuiltError, StepEvent, Store, build_deployment
from npuctl.schema import LoadedDeployment

# spawn everywhere: it is the only start method on Windows, and a forked child would inherit the
# agent's threads and onnxruntime state.
_context = multiprocessing.get_context("spawn")


def build_isolated(
    loaded: LoadedDeployment, store: Store, progress: Callable[[StepEvent], None], **options: Any
) -> BuildResult:
    """`build_deployment` in a child process, with progress forwarded. Raises BuildError, also when
    the child dies without an answer."""
    try:
        return build_deployment(loaded, store=store, progress=progress, cached_only=True, **options)
    except NotBuiltError:
        pass
    receiver, sender = _context.Pipe(duplex=False)
    child = _context.Process(target=_child, args=(sender, loaded, store.root, options), daemon=True,
                             name=f"npuctl-build-{loaded.name}")
    child.start()
    sender.close()  # the child holds the only writer: EOF means it is gone
    try:
        return _receive(receiver, progress)
    except EOFError:
        child.join()
        raise BuildError("build", f"the build process died (exit code {child.exitcode}); finished steps are kept",
                         temporary=True) from None
    finally:
        receiver.close()
        child.join(timeout=30)


def _receive(receiver: Connection, progress: Callable[[StepEvent], None]) -> BuildResult:
    while True:
        kind, payload = receiver.recv()
        if kind == "progress":
            progress(payload)
        elif kind == "result":
            result: BuildResult = payload
            return result
        else:
            # Sent as plain values: exception pickles need their constructors' arguments.
            step, message, temporary = payload
            raise BuildError(step, message, temporary=temporary)


def _child(sender: Connection, loaded: LoadedDeployment, root: Path, options: dict[str, Any]) -> None:
    lock = threading.Lock()  # progress may come from the build's own threads

    def send(message: tuple[str, Any]) -> None:
        with lock:
            sender.send(message)

    try:
        result = build_deployment(loaded, store=Store(root), progress=lambda e: send(("progress", e)), **options)
    except Exception as exc:  # anything else still reaches the agent as a build failure, with its type
        error = exc if isinstance(exc, BuildError) else BuildError.wrapping("build", exc)
        send(("error", (error.step, error.message, error.temporary)))
    else:
        send(("result", result))
    finally:
        sender.close()
