"""Builds in a child process: a crash in a compiler, and the memory a compile or quantization takes,
stay out of the long-running agent, and a build stuck on a source that never answers (a hung mount or
server) can be stopped: at its step's deadline, or when its manifest changes or goes away. A fully
stored build is found in-process (no child needed)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from npuctl.agent.config import BuildDeadlines
from npuctl.artifacts import BuildError, BuildResult, NotBuiltError, StepEvent, Store, build_deployment
from npuctl.artifacts.result import StepState
from npuctl.schema import LoadedDeployment

# spawn everywhere: it is the only start method on Windows, and a forked child would inherit the
# agent's threads and onnxruntime state.
_context = multiprocessing.get_context("spawn")
_POLL_SECONDS = 0.25
"""How often a waiting build looks at its stop flag: the delay between a manifest's deletion and its
build process being stopped."""
_SOURCES = "sourcesSeconds"
_STEP = "stepSeconds"


class BuildDeadlineExceeded(BuildError):
    """A step ran past its deadline and the build process was stopped (temporary: retried after backoff)."""

    def __init__(self, step: str, seconds: float, key: str) -> None:
        super().__init__(step, f"still running after its deadline of {seconds:g} s (agent config buildDeadlines."
                         f"{key}); the build process was stopped, finished steps are kept", temporary=True)


class BuildCancelled(BuildError):
    """The build was stopped because what it builds is no longer declared."""

    def __init__(self) -> None:
        super().__init__("build", "stopped: its manifest changed or went away", temporary=True)


@dataclass(frozen=True)
class _Progress:
    """The child's build reported a step."""

    event: StepEvent


@dataclass(frozen=True)
class _Built:
    """The child's build ended with this result (its last message)."""

    result: BuildResult


@dataclass(frozen=True)
class _Failed:
    """The child's build failed (its last message). Sent as plain values: exception pickles need their
    constructors' arguments."""

    step: str
    message: str
    temporary: bool


_Message = _Progress | _Built | _Failed
"""What the build child sends the agent over the pipe."""


@dataclass(frozen=True)
class _Phase:
    """What the build is doing now, and until when it may."""

    step: str
    key: str
    """The buildDeadlines key that sets its deadline."""
    seconds: float
    until: float

    @classmethod
    def of(cls, step: str, key: str, deadlines: BuildDeadlines) -> _Phase:
        seconds = deadlines.sources_seconds if key == _SOURCES else deadlines.step_seconds
        return cls(step, key, seconds, time.monotonic() + seconds)

    def after(self, event: StepEvent, deadlines: BuildDeadlines) -> _Phase:
        if event.state is StepState.RUNNING:
            if event.step == self.step:
                return self  # a long step's status report (AI Hub) does not extend its deadline
            return _Phase.of(event.step, _SOURCES if event.step == "resolve" else _STEP, deadlines)
        # Between steps the build reads stored files (and resolves sources): the short deadline applies.
        return _Phase.of(f"reading stored files after {event.step}", _SOURCES, deadlines)


def build_isolated(loaded: LoadedDeployment, store: Store, progress: Callable[[StepEvent], None], *,
                   deadlines: BuildDeadlines, stop: threading.Event, **options: Any) -> BuildResult:
    """`build_deployment` in a child process, with progress forwarded. Raises BuildError, also when
    the child dies without an answer; BuildDeadlineExceeded past a step's deadline; BuildCancelled once
    `stop` is set."""
    stored = _stored(loaded, store, progress, deadlines, stop, options)
    if stored is not None:
        return stored
    receiver, sender = _context.Pipe(duplex=False)
    child = _context.Process(target=_child, args=(sender, loaded, store.root, options), daemon=True,
                             name=f"npuctl-build-{loaded.name}")
    child.start()
    sender.close()  # the child holds the only writer: EOF means it is gone
    try:
        return _receive(receiver, progress, deadlines, stop)
    except EOFError:
        child.join()
        raise BuildError("build", f"the build process died (exit code {child.exitcode}); finished steps are kept",
                         temporary=True) from None
    except (BuildDeadlineExceeded, BuildCancelled):
        # The store keeps only committed steps: killing the child mid-step loses that step's work, nothing else.
        child.kill()
        raise
    finally:
        receiver.close()
        child.join(timeout=30)


def _stored(loaded: LoadedDeployment, store: Store, progress: Callable[[StepEvent], None],
            deadlines: BuildDeadlines, stop: threading.Event, options: dict[str, Any]) -> BuildResult | None:
    """The build found whole in the store, looked for in-process; None when a step is missing, or when the
    look takes longer than the sources deadline (a hung mount: the child, which can be stopped, tries next)."""
    answer: list[BuildResult | BaseException] = []
    abandoned = threading.Event()

    def forward(event: StepEvent) -> None:
        if not abandoned.is_set():
            progress(event)

    def look() -> None:
        try:
            answer.append(build_deployment(loaded, store=store, progress=forward, cached_only=True, **options))
        except BaseException as exc:  # handed to the waiting thread, which raises it there
            answer.append(exc)

    # A thread, not a call: a read that never returns would otherwise hold this build worker for ever.
    looker = threading.Thread(target=look, daemon=True, name=f"npuctl-lookup-{loaded.name}")
    looker.start()
    until = time.monotonic() + deadlines.sources_seconds
    while looker.is_alive() and time.monotonic() < until and not stop.is_set():
        looker.join(_POLL_SECONDS)
    if not answer:
        abandoned.set()
        if stop.is_set():
            raise BuildCancelled()
        return None
    found = answer[0]
    if isinstance(found, NotBuiltError):
        return None
    if isinstance(found, BaseException):
        raise found
    return found


def _receive(receiver: Connection, progress: Callable[[StepEvent], None], deadlines: BuildDeadlines,
             stop: threading.Event) -> BuildResult:
    phase = _Phase.of("starting the build process", _SOURCES, deadlines)
    while True:
        if stop.is_set():
            raise BuildCancelled()
        left = phase.until - time.monotonic()
        if left <= 0:
            raise BuildDeadlineExceeded(phase.step, phase.seconds, phase.key)
        if not receiver.poll(min(left, _POLL_SECONDS)):
            continue
        message: _Message = receiver.recv()
        match message:
            case _Progress(event=event):
                phase = phase.after(event, deadlines)
                progress(event)
            case _Built(result=result):
                return result
            case _Failed(step=step, message=text, temporary=temporary):
                raise BuildError(step, text, temporary=temporary)


def _exit_with_parent() -> None:
    """End this build when the agent is gone: killed or stopped by a service manager, it cannot stop us,
    and a build stuck on a source would otherwise outlive it (on Windows too: the sentinel is a handle)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


def _child(sender: Connection, loaded: LoadedDeployment, root: Path, options: dict[str, Any]) -> None:
    threading.Thread(target=_exit_with_parent, daemon=True, name="npuctl-parent-watch").start()
    lock = threading.Lock()  # progress may come from the build's own threads

    def send(message: _Message) -> None:
        with lock:
            sender.send(message)

    try:
        result = build_deployment(loaded, store=Store(root), progress=lambda e: send(_Progress(e)), **options)
    except Exception as exc:  # anything else still reaches the agent as a build failure, with its type
        error = exc if isinstance(exc, BuildError) else BuildError.wrapping("build", exc)
        send(_Failed(error.step, error.message, error.temporary))
    else:
        send(_Built(result))
    finally:
        sender.close()
