"""A step's child process and its progress: the parent names a file in the child's environment, the child
appends each report to it as a JSON line, and the parent, while it waits, reads the lines that are whole and
reports them in the step it runs. A file, not a pipe: it works alike on Windows, and nothing the child's
libraries print on stdout can break it."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from queue import SimpleQueue
from typing import IO

from npuctl.artifacts import progress

PROGRESS_FILE = "NPUCTL_PROGRESS_FILE"
"""The environment variable that names the file a child writes its reports to."""
POLL_SECONDS = 0.25
"""How often the parent reads the file while the child runs."""
OUTPUT_CAP = 1 << 20
"""Characters of each output stream kept (the end): what an error message quotes of a child's log."""
DRAIN_SECONDS = 30.0
"""Once the child has exited, how long its output may take to end: a process it started may still hold the
pipes, and its parent's step must not wait on that for ever."""
_LINE_CAP = 4096
"""A report line longer than this is not one the child wrote: it is skipped."""


def run(command: list[str], env: dict[str, str], *,
        on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(command, capture_output=True, text=True, env=env)` that relays the child's progress
    reports as it runs, and hands each line of its stdout to `on_line` as it comes (for tools that print
    their progress). Keeps the last OUTPUT_CAP characters of each stream."""
    with tempfile.TemporaryDirectory(prefix="npuctl-progress-") as scratch:
        reports = Path(scratch) / "progress.jsonl"
        reports.touch()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 encoding="utf-8", errors="replace", env=env | {PROGRESS_FILE: str(reports)})
        try:
            assert child.stdout is not None and child.stderr is not None  # both are pipes, as asked
            out, err = _Tail(child.stdout, on_line is not None), _Tail(child.stderr, False)
            relay = _Relay(reports)
            while child.poll() is None:
                relay.forward()
                out.hand_lines(on_line)
                try:
                    child.wait(POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
            out.join()
            err.join()
            relay.forward()
            out.hand_lines(on_line)
        except BaseException:
            child.kill()  # as subprocess.run does: an interrupted parent leaves no child behind
            child.wait()
            raise
    return subprocess.CompletedProcess(command, child.returncode, out.text(), err.text())


@contextmanager
def relayed(env: Mapping[str, str]) -> Iterator[tuple[dict[str, str], Callable[[], None]]]:
    """For a child started by other means than `run`: the environment that names its report file, and the call
    that reports (in the caller's step) what it has written since the last call. Call it while waiting, and once
    after the child has ended."""
    with tempfile.TemporaryDirectory(prefix="npuctl-progress-") as scratch:
        reports = Path(scratch) / "progress.jsonl"
        reports.touch()
        yield dict(env) | {PROGRESS_FILE: str(reports)}, _Relay(reports).forward


@contextmanager
def to_parent() -> Iterator[None]:
    """In a child that `run` started: `progress.report` calls go to the parent (a few a second at most).
    Elsewhere (run by hand) they go nowhere."""
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
    """Reads a child's stream to its end in a thread (a full pipe would stop the child), keeping its end and,
    when asked, its new lines for the waiting thread (which reports in the step's context)."""

    def __init__(self, stream: IO[str], keep_lines: bool) -> None:
        self.stream = stream
        self.lines: SimpleQueue[str] | None = SimpleQueue() if keep_lines else None
        self.chunks: deque[str] = deque()
        self.size = 0
        self.thread = threading.Thread(target=self._read, daemon=True, name="npuctl-child-output")
        self.thread.start()

    def hand_lines(self, on_line: Callable[[str], None] | None) -> None:
        while on_line is not None and self.lines is not None and not self.lines.empty():
            on_line(self.lines.get())

    def _read(self) -> None:
        try:
            for line in self.stream:
                if self.lines is not None:
                    self.lines.put(line.rstrip("\n"))
                self.chunks.append(line)
                self.size += len(line)
                while self.size > OUTPUT_CAP and len(self.chunks) > 1:
                    self.size -= len(self.chunks.popleft())
        finally:
            # Here, not in `run`: closing a pipe another thread reads waits for that read to end.
            self.stream.close()

    def join(self) -> None:
        self.thread.join(DRAIN_SECONDS)

    def text(self) -> str:
        return "".join(self.chunks)[-OUTPUT_CAP:]
