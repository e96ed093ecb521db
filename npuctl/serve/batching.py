"""Dynamic batching: requests from the event loop are merged into batches that one worker thread
runs, and every result is handed back to the request that asked for it.

A lone request runs at once; under load (others already waiting, or the last batch held several
rows) a batch waits up to the window for more, so batching costs nothing at low load. Each model
has exactly one worker, which is what a single-stream NPU session needs and what keeps CPU
inference from oversubscribing the cores.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


_STOP = object()


class Batcher(Generic[In, Out]):
    """Runs `run(rows) -> outputs` (one output per row, same order) on merged requests.

    A request is a list of rows (an embeddings request with five inputs is five rows); requests are
    merged while the batch holds at most `max_batch` rows; a request larger than that runs alone,
    in `max_batch`-row slices.
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
        a request already running finishes and its outputs are dropped.
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
        carry: _Job[In, Out] | None = None
        stopping = False
        while not stopping:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            assert isinstance(first, _Job)
            batch = [first] if self._take(first) else []
            rows = len(first.items) if batch else 0
            busy = not self._queue.empty() or self._last_rows > 1
            deadline = time.monotonic() + (self.window_seconds if busy else 0.0)
            while rows < self.max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) if busy else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                assert isinstance(nxt, _Job)
                if rows + len(nxt.items) > self.max_batch:
                    carry = nxt
                    break
                if self._take(nxt):
                    batch.append(nxt)
                    rows += len(nxt.items)
            if batch:
                self._run_batch(batch)
        # Requests queued behind the stop marker still get their answer.
        if carry is not None:
            self._queue.put(carry)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if isinstance(job, _Job) and self._take(job):
                self._run_batch([job])

    def _run_batch(self, jobs: list[_Job[In, Out]]) -> None:
        rows = [item for job in jobs for item in job.items]
        started = time.perf_counter()
        try:
            outputs: list[Out] = []
            for start in range(0, len(rows), self.max_batch):
                outputs.extend(self._run(rows[start : start + self.max_batch]))
        except Exception as exc:  # the model's failure belongs to the requests, not to the worker
            for job in jobs:
                _deliver_error(job, exc)
            return
        seconds = time.perf_counter() - started
        self._last_rows = len(rows)
        self._batch_seconds = seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * seconds
        if self.observer is not None:
            self.observer(len(rows), seconds)
        # One wake-up of each event loop per batch, not one per request.
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[Out]], list[Out]]]] = {}
        offset = 0
        for job in jobs:
            answers.setdefault(job.loop, []).append((job.future, list(outputs[offset : offset + len(job.items)])))
            offset += len(job.items)
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
