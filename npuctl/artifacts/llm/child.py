"""A build stage's child process, watched: the peak RSS of its process tree (psutil, sampled), its progress
reports relayed (npuctl.artifacts.children), and whether it ended for want of memory (killed by the kernel's out-of-memory killer, a failed allocation) rather than for
another error."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from npuctl.artifacts import children

SAMPLE_SECONDS = 0.2
LOG_TAIL_BYTES = 64 << 10
"""What is kept of a child's output: its end, where the error is (onnxruntime's pre-processing logs megabytes)."""
_KILLED = -9
"""POSIX: the child died of SIGKILL, what the kernel's out-of-memory killer sends."""
_WINDOWS_NO_MEMORY = (0xC0000017, 0xC000012D)
"""Windows: STATUS_NO_MEMORY, STATUS_COMMITMENT_LIMIT (the commit charge, RAM + page file, is exhausted)."""
_NO_MEMORY_TEXT = ("MemoryError", "bad_alloc", "bad allocation", "Failed to allocate memory", "out of memory",
                   "Cannot allocate memory")
"""What a failed allocation says: Python, C++ (Linux, MSVC), onnxruntime's allocator, the C library."""


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    peak_rss_bytes: int
    """The largest RSS of the child and its descendants seen while it ran."""
    log: str
    """The last LOG_TAIL_BYTES of its stdout and stderr, interleaved."""
    timed_out: bool = False
    """Stopped at its deadline."""

    def out_of_memory(self, error: str | None) -> bool:
        """Whether it ended for want of memory: killed as the OOM killer kills, or an allocation that failed
        (in `error`, what the stage reported, or in its log when it could not report)."""
        if self.returncode == _KILLED and sys.platform != "win32":
            return True
        if sys.platform == "win32" and self.returncode & 0xFFFFFFFF in _WINDOWS_NO_MEMORY:
            return True
        text = error if error is not None else self.log[-4000:]
        return self.returncode != 0 and any(marker in text for marker in _NO_MEMORY_TEXT)


def run(command: Sequence[str], env: Mapping[str, str], deadline_seconds: float) -> ChildRun:
    """Run `command` to its end, sampling its process tree's RSS every SAMPLE_SECONDS; past
    `deadline_seconds` its tree is killed."""
    # Its output goes to a file: a pipe nobody reads while we sample would fill and stall the child.
    with tempfile.TemporaryFile() as log, children.relayed(env) as (child_env, forward):
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=child_env)
        try:
            watched: psutil.Process | None = psutil.Process(process.pid)
        except psutil.Error:
            watched = None  # it ended already
        peak = 0
        ends = time.monotonic() + deadline_seconds
        timed_out = False
        while True:
            if watched is not None:
                peak = max(peak, _tree_rss(watched))
            forward()
            try:
                returncode = process.wait(timeout=SAMPLE_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > ends and watched is not None:
                    timed_out = True
                    _kill_tree(watched)
        forward()
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - LOG_TAIL_BYTES))
        text = log.read(LOG_TAIL_BYTES).decode("utf-8", errors="replace")
    return ChildRun(returncode, peak, text, timed_out)


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


def _kill_tree(process: psutil.Process) -> None:
    try:
        members = [*process.children(recursive=True), process]
    except psutil.Error:
        return
    for member in members:
        try:
            member.kill()
        except psutil.Error:
            pass  # already ended
