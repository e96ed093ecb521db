"""Dynamic batching: requests from the event loop are merged into batches that one worker thread
runs, and every result is handed back to the request that asked for it.

A lone request runs at once; under load (others already waiting, or the last batch held several
rows) a batch waits up to the window for more, so batching costs nothing at low load. Each model
has exactly one worker, which is what a single-stream NPU session needs and what keeps CPU
inference from oversubscribing the cores.

A session run cannot be interrupted, so no batch holds more than `max_batch` rows: a request larger
than that runs in slices, and the requests that arrived meanwhile go before its next slice. A small
request behind the largest one waits for one batch, not for all of it; and once the large request's
client has left (or its timeout passed), its remaining slices never run.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

BatchObserver = Callable[[int, float], None]
"""Called after every batch with (rows in the batch, seconds it ran)."""


class QueueFull(Exception):
    """The model's queue is at its limit; the caller should come back after `retry_after` seconds."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"the queue is full ({limit} requests waiting)")
        self.retry_after = retry_after


class BatcherClosed(Exception):
    """The batcher was closed; no more requests are accepted."""


class _State(Enum):
    WAITING = 1
    RUNNING = 2
    DROPPED = 3


@dataclass(eq=False)
class _Job(Generic[In, Out]):
    items: Sequence[In]
    future: asyncio.Future[list[Out]]
    loop: asyncio.AbstractEventLoop
    state: _State = _State.WAITING
    done: int = 0
    """Rows already taken into a batch."""
    outputs: list[Out] = field(default_factory=list)


_STOP = object()


class Batcher(Generic[In, Out]):
    """Runs `run(rows) -> outputs` (one output per row, same order) on merged requests.

    A request is a list of rows (an embeddings request with five inputs is five rows); requests are
    merged while the batch holds at most `max_batch` rows; a request larger than that runs in
    `max_batch`-row slices, taking turns with the requests that arrive meanwhile.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch: int,
        window_seconds: float,
        queue_limit: int,
    ) -> None:
        self.name = name
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        self.queue_limit = queue_limit
        self.observer: BatchObserver | None = None
        self._run = run
        self._queue: queue.SimpleQueue[_Job[In, Out] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = False
        self._batch_seconds = 0.0
        self._last_rows = 0
        self._worker = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        """Requests queued and not yet running."""
        return self._waiting

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """Queue one request and wait for its outputs.

        Cancelling the awaiting task (client gone, timeout) frees the request's queue slot at once;
        a request already running stops after its current slice and its outputs are dropped.
        """
        loop = asyncio.get_running_loop()
        job: _Job[In, Out] = _Job(items, loop.create_future(), loop)
        with self._lock:
            if self._closed:
                raise BatcherClosed(f"model {self.name} is shutting down")
            if self._waiting >= self.queue_limit:
                raise QueueFull(self.queue_limit, self._retry_after())
            self._waiting += 1
        self._queue.put(job)
        try:
            return await job.future
        finally:
            self._drop(job)

    def close(self) -> None:
        """Stop after the requests already queued; returns without waiting for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish; True when it has."""
        self._worker.join(timeout)
        return not self._worker.is_alive()

    def _retry_after(self) -> int:
        # Time to clear the queue at the recent pace, in whole seconds as Retry-After wants.
        batches = self._waiting / self.max_batch
        return max(1, math.ceil(batches * self._batch_seconds))

    def _drop(self, job: _Job[In, Out]) -> None:
        with self._lock:
            if job.state is _State.WAITING:
                self._waiting -= 1
            job.state = _State.DROPPED

    def _take(self, job: _Job[In, Out]) -> bool:
        with self._lock:
            if job.state is not _State.WAITING:
                return False
            job.state = _State.RUNNING
            self._waiting -= 1
            return True

    def _work(self) -> None:
        line: deque[_Job[In, Out]] = deque()
        stopping = False
        while True:
            if not line:
                if stopping:
                    return
                first = self._queue.get()
                if first is _STOP:
                    # Requests queued behind the stop marker still get their answer.
                    stopping = True
                    continue
                assert isinstance(first, _Job)
                line.append(first)
            stopping = self._drain(line) or stopping
            busy = len(line) > 1 or self._last_rows > 1
            if busy and not stopping and self.window_seconds > 0:
                stopping = self._wait_for_more(line)
            batch, unfinished = self._next_batch(line)
            if batch:
                self._run_batch(batch)
            # Who arrived while that batch ran goes before the sliced request's next turn.
            stopping = self._drain(line) or stopping
            if unfinished is not None:
                line.append(unfinished)

    def _drain(self, line: deque[_Job[In, Out]]) -> bool:
        """Move everything queued into `line`; True if the stop marker was among it."""
        stop = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return stop
            if item is _STOP:
                stop = True
            else:
                assert isinstance(item, _Job)
                line.append(item)

    def _wait_for_more(self, line: deque[_Job[In, Out]]) -> bool:
        """Under load, wait up to the window for the batch to fill; True if the stop marker came."""
        rows = sum(len(job.items) - job.done for job in line)
        deadline = time.monotonic() + self.window_seconds
        while rows < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            assert isinstance(item, _Job)
            line.append(item)
            rows += len(item.items)
        return False

    def _next_batch(self, line: deque[_Job[In, Out]]) -> tuple[list[tuple[_Job[In, Out], int]], _Job[In, Out] | None]:
        """(job, rows) pairs for one batch of at most max_batch rows, from the front of `line`, and the
        request that was sliced and has rows left (it rejoins the line after the batch)."""
        batch: list[tuple[_Job[In, Out], int]] = []
        rows = 0
        while line and rows < self.max_batch:
            job = line[0]
            if job.state is _State.DROPPED or (job.state is _State.WAITING and not self._take(job)):
                line.popleft()  # its client left: none of its rows run
                continue
            left = len(job.items) - job.done
            room = self.max_batch - rows
            if left > room and len(job.items) <= self.max_batch:
                break  # a request that fits in one batch is never split: it goes first in the next
            take = min(left, room)
            line.popleft()
            batch.append((job, take))
            rows += take
            if take < left:
                return batch, job
        return batch, None

    def _run_batch(self, batch: list[tuple[_Job[In, Out], int]]) -> None:
        rows = [item for job, take in batch for item in job.items[job.done : job.done + take]]
        started = time.perf_counter()
        try:
            outputs = self._run(rows) if rows else []
        except Exception as exc:  # the model's failure belongs to the requests, not to the worker
            for job, _ in batch:
                self._drop(job)
                _deliver_error(job, exc)
            return
        seconds = time.perf_counter() - started
        self._last_rows = len(rows)
        self._batch_seconds = seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * seconds
        if self.observer is not None:
            self.observer(len(rows), seconds)
        offset = 0
        # One wake-up of each event loop per batch, not one per request.
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[Out]], list[Out]]]] = {}
        for job, take in batch:
            job.outputs.extend(outputs[offset : offset + take])
            job.done += take
            offset += take
            if job.done == len(job.items):
                answers.setdefault(job.loop, []).append((job.future, job.outputs))
        for loop, results in answers.items():
            _in_loop(loop, _set_results, results)


def _deliver_error(job: _Job[In, Out], exc: Exception) -> None:
    _in_loop(job.loop, _set_exception, job.future, exc)


def _in_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass  # the loop is closed: nobody waits for this answer any more


def _set_results(results: list[tuple[asyncio.Future[list[Out]], list[Out]]]) -> None:
    for future, outputs in results:
        if not future.done():
            future.set_result(outputs)


def _set_exception(future: asyncio.Future[list[Out]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
