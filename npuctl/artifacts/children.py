"""A build step's child process, watched: the peak RSS of its process tree (psutil, sampled), a deadline past which
the tree is killed, the end of its output, whether it ended for want of memory (killed as the kernel's
out-of-memory killer kills, a failed allocation) and its progress reports.

Progress: the parent names a file in the child's environment, the child appends each report to it as a JSON
line, and the parent, while it waits, reads the lines that are whole and reports them in the step it runs. A
file, not a pipe: it works alike on Windows, and nothing the child's libraries print on stdout can break it.

Every step that runs a child (gguf-convert, genai-builder, the Olive stages, verify) runs it with `run`, so each
has a deadline, its peak, and the same out-of-memory report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from npuctl.artifacts import facts, progress
from npuctl.artifacts.errors import BuildError

PROGRESS_FILE = "NPUCTL_PROGRESS_FILE"
"""The environment variable that names the file a child writes its reports to."""
PARENT = "NPUCTL_PARENT"
"""The environment variable that names the parent, `pid:creation time`: the child ends when that process is gone."""
PARENT_POLL_SECONDS = 1.0
ORPHANED = 70
"""The exit code of a child that ended because its parent was gone."""
SAMPLE_SECONDS = 0.2
"""How often the parent samples the tree's memory and reads the reports while the child runs."""
LOG_TAIL_BYTES = 64 << 10
"""What is kept of a child's output (stdout and stderr, interleaved): its end, where the error is (onnxruntime's
pre-processing logs megabytes)."""
QUOTED_CHARS = 2000
"""What an error message quotes of the kept output."""
DRAIN_SECONDS = 30.0
"""Once the child has exited, how long its output may take to end: a process it started may still hold the
pipe, and its parent's step must not wait on that for ever. Also how long a killed tree may take to end."""
_READ_BYTES = 64 << 10
_LINE_CAP = 4096
"""A report line longer than this is not one the child wrote: it is skipped."""
_KILLED = -9
"""POSIX: the child died of SIGKILL, what the kernel's out-of-memory killer sends."""
_WINDOWS_NO_MEMORY = (0xC0000017, 0xC000012D)
"""Windows: STATUS_NO_MEMORY, STATUS_COMMITMENT_LIMIT (the commit charge, RAM + page file, is exhausted)."""
_NO_MEMORY_TEXT = ("MemoryError", "bad_alloc", "bad allocation", "Failed to allocate memory", "out of memory",
                   "Cannot allocate memory")
"""What a failed allocation says: Python, C++ (Linux, MSVC), onnxruntime's allocator, the C library."""
WHAT_TO_DO = ("build it on a host with more memory and publish it (`npuctl build --publish FOLDER` there, the "
              "folder in this agent's `artifactSources`), or serve a prebuilt NPU pack of the model (Qualcomm AI Hub "
              "exports them) as spec.model.source, or free memory and disk here (the window and the splits change "
              "the pack's graphs, not what the build needs)")
"""What a user can do when the build does not fit: the same advice when pre-flight refuses and when a step runs
out of memory."""


@dataclass(frozen=True)
class ChildRun:
    step: str
    returncode: int
    peak_rss_bytes: int
    """The largest RSS of the child and its descendants seen while it ran."""
    log: str
    """The last LOG_TAIL_BYTES of its stdout and stderr, interleaved."""
    timed_out: bool
    """Stopped at its deadline."""
    deadline_seconds: float

    def out_of_memory(self, error: str | None = None) -> bool:
        """Whether it ended for want of memory: killed as the OOM killer kills, or an allocation that failed (in
        `error`, the failure the child reported, or in its log when it reported none)."""
        if self.returncode == _KILLED and sys.platform != "win32":
            return True
        if sys.platform == "win32" and self.returncode & 0xFFFFFFFF in _WINDOWS_NO_MEMORY:
            return True
        if error is not None:
            return any(marker in error for marker in _NO_MEMORY_TEXT)
        return self.returncode != 0 and any(marker in self.log[-4000:] for marker in _NO_MEMORY_TEXT)

    def tail(self) -> str:
        """The end of its output, as error messages quote it."""
        return self.log[-QUOTED_CHARS:].strip()

    def memory(self, needs: facts.Preflight | None) -> facts.StageMemory:
        """Its peak beside the pre-flight's estimate for its step: what the step's facts keep."""
        return facts.StageMemory(peak_rss_bytes=self.peak_rss_bytes,
                                 estimated_bytes=needs.stage_rss_bytes.get(self.step) if needs is not None else None)

    def check_stopped(self, needs: facts.Preflight | None, error: str | None = None) -> None:
        """Raise the step's BuildError when the child was stopped at its deadline or ran out of memory, naming its
        peak and the pre-flight's estimate (`needs`); `error` is the failure the child reported, if any."""
        if self.timed_out:
            estimate = (f"; the pre-flight estimated ~{needs.seconds / 60:.0f} min for the whole build"
                        if needs is not None else "")
            raise BuildError(self.step, f"{self.step} was stopped at its deadline, after "
                             f"{self.deadline_seconds / 60:.0f} min{estimate}: {self.tail()}")
        if not self.out_of_memory(error):
            return
        estimated = self.memory(needs).estimated_bytes
        guess = f", pre-flight estimated {estimated / 2**30:.1f} GiB" if estimated is not None else ""
        available = (f" ({needs.available_memory_bytes / 2**30:.1f} GiB were available when the build started)"
                     if needs is not None else "")
        raise BuildError(self.step, f"{self.step} ran out of memory: peak {self.peak_rss_bytes / 2**30:.1f} GiB"
                         f"{guess}{available}; {WHAT_TO_DO}")


def run(step: str, command: Sequence[str], env: Mapping[str, str], deadline_seconds: float) -> ChildRun:
    """Run `command` (the work of `step`) to its end: its process tree's RSS sampled every SAMPLE_SECONDS, its
    progress reports relayed into the step, the end of its output kept. Past `deadline_seconds` its whole tree
    is killed."""
    with tempfile.TemporaryDirectory(prefix="npuctl-progress-") as scratch:
        reports = Path(scratch) / "progress.jsonl"
        reports.touch()
        relay = _Relay(reports)
        process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=dict(env) | {PROGRESS_FILE: str(reports), PARENT: _identity()})
        try:
            watched: psutil.Process | None = psutil.Process(process.pid)
        except psutil.Error:
            watched = None  # it ended already
        try:
            assert process.stdout is not None  # a pipe, as asked
            output = _Tail(process.stdout)
            peak, timed_out = 0, False
            ends = time.monotonic() + deadline_seconds
            while True:
                if watched is not None:
                    peak = max(peak, _tree_rss(watched))
                relay.forward()
                try:
                    returncode = process.wait(SAMPLE_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if now > ends + DRAIN_SECONDS:
                        raise BuildError(step, f"{step}: its process {process.pid} did not end when it was killed "
                                         "at its deadline") from None
                    if now > ends and not timed_out:
                        timed_out = True
                        _kill_tree(watched, process)
            output.join()
            relay.forward()
        except BaseException:
            # As subprocess.run does: an interrupted parent leaves no child behind, here none of its tree either.
            _kill_tree(watched, process)
            with suppress(subprocess.TimeoutExpired):  # the interruption is what the caller must hear of
                process.wait(DRAIN_SECONDS)
            raise
    return ChildRun(step, returncode, peak, output.text(), timed_out, deadline_seconds)


@contextmanager
def to_parent() -> Iterator[None]:
    """In a child that `run` started: `progress.report` calls go to the parent (a few a second at most), and the
    child ends once the parent is gone (an agent killed mid-build would otherwise leave a quantization running
    for an hour, holding gigabytes). Elsewhere (run by hand) reports go nowhere."""
    parent = os.environ.get(PARENT)
    if parent:
        threading.Thread(target=_end_without, args=(parent,), name="npuctl-parent-watch", daemon=True).start()
    path = os.environ.get(PROGRESS_FILE)
    if not path:
        yield
        return
    throttle = progress.Throttle(interval=progress.INTERVAL / 2)
    with open(path, "a", encoding="utf-8") as file:

        def write(done: progress.Progress, message: str | None) -> None:
            if throttle.passes(done, message):
                file.write(json.dumps({"done": done.done, "total": done.total, "unit": done.unit,
                                       "message": message}) + "\n")
                file.flush()

        with progress.reporting(write):
            yield


class _Relay:
    """Reads the whole lines a child has appended since the last read, and reports each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def forward(self) -> None:
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += end
        for line in data[:end].splitlines():
            if len(line) <= _LINE_CAP:
                self._report(line)

    @staticmethod
    def _report(line: bytes) -> None:
        try:
            item = json.loads(line)
            done, total, unit, message = item["done"], item["total"], item["unit"], item["message"]
        except (ValueError, KeyError, TypeError):
            return  # progress is for people to watch; a damaged line costs one report, never the step
        if isinstance(done, int) and isinstance(unit, str) and (total is None or isinstance(total, int)) \
                and (message is None or isinstance(message, str)):
            progress.report(done, total, unit, message)


class _Tail:
    """Reads a child's output to its end in a thread (a full pipe would stop the child), a chunk at a time
    (one line may be megabytes), keeping its last LOG_TAIL_BYTES."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.thread = threading.Thread(target=self._read, daemon=True, name="npuctl-child-output")
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := self.stream.read1(_READ_BYTES):  # type: ignore[attr-defined]
                self.chunks.append(chunk)
                self.size += len(chunk)
                while self.size - len(self.chunks[0]) >= LOG_TAIL_BYTES:
                    self.size -= len(self.chunks.popleft())
        finally:
            # Here, not in `run`: closing a pipe another thread reads waits for that read to end.
            self.stream.close()

    def join(self) -> None:
        self.thread.join(DRAIN_SECONDS)

    def text(self) -> str:
        return b"".join(list(self.chunks))[-LOG_TAIL_BYTES:].decode("utf-8", errors="replace")


def _identity() -> str:
    """This process as a child's PARENT names it: a pid alone could be a new process's after this one ends."""
    return f"{os.getpid()}:{psutil.Process().create_time()!r}"


def _end_without(parent: str) -> None:
    """Poll the parent; once it is gone (or a zombie: dead, not yet reaped), end this process at once. psutil,
    not a signal or getppid(): alike on Windows, where an orphan keeps its dead parent's pid."""
    pid, created = parent.split(":", 1)
    while True:
        try:
            process = psutil.Process(int(pid))
            alive = repr(process.create_time()) == created and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive:
            os._exit(ORPHANED)  # the main thread may be deep in native code: no clean-up can be waited for
        time.sleep(PARENT_POLL_SECONDS)


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0  # it has ended
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass  # ended between listing and reading
    return total


def _kill_tree(watched: psutil.Process | None, process: subprocess.Popen[bytes]) -> None:
    """The child and every process it started (psutil: Windows has no process groups to signal)."""
    members: list[psutil.Process] = []
    if watched is not None:
        try:
            members = watched.children(recursive=True)
        except psutil.Error:
            pass  # it has ended; what it started was listed while it lived, or is no longer its
    process.kill()
    for member in members:
        try:
            member.kill()
        except psutil.Error:
            pass  # already ended
