"""Dynamic batching: requests from the event loop are merged into batches that worker threads run,
and every result is handed back to the request that asked for it.

A lone request runs at once; under load (others already waiting, or the last batch held several
rows) a batch waits up to the window for more, so batching costs nothing at low load. A batch is
formed only when a worker is free, so it holds everyone who came while the others ran. An NPU model
has one worker (its session is single-stream); a CPU model has two, so that under load one batch runs
while the loop answers another and reads the next (README "Serving" has the figures).

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
    finished: int = 0
    """Rows whose outputs came back (slices of one request may run on two workers at once)."""
    parts: dict[int, Sequence[Out]] = field(default_factory=dict)
    """Outputs by the offset of the slice they answer."""

    def outputs(self) -> list[Out]:
        return [out for _, part in sorted(self.parts.items()) for out in part]


_STOP = object()
Slice = tuple[_Job[In, Out], int, int]
"""A job, the offset of its first row in the batch, and how many of its rows."""


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
        workers: int = 1,
    ) -> None:
        self.name = name
        self.max_batch = max_batch
        self.window_seconds = window_seconds
        self.queue_limit = queue_limit
        self.workers = workers
        self.observer: BatchObserver | None = None
        self._run = run
        self._queue: queue.SimpleQueue[_Job[In, Out] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # The workers take turns forming a batch (the one holding `_forming` owns the fields below it), then
        # each runs its own: a lone request costs one thread wake-up, not two.
        self._forming = threading.Lock()
        self._line: deque[_Job[In, Out]] = deque()
        self._unfinished: _Job[In, Out] | None = None
        self._stopping = False
        self._waiting = 0
        self._closed = False
        self._batch_seconds = 0.0
        self._last_rows = 0
        self._threads = [threading.Thread(target=self._work, name=f"batcher-{name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

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
        """Wait for the workers to finish; True when they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _retry_after(self) -> int:
        # Time to clear the queue at the recent pace, in whole seconds as Retry-After wants.
        batches = self._waiting / self.max_batch / self.workers
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
        while (batch := self._form()) is not None:
            if batch:
                self._run_batch(batch)

    def _form(self) -> list[Slice[In, Out]] | None:
        """The next batch, formed when this worker is free: it holds everyone who came while the others ran.
        Empty when its requests were all dropped; None once stopped."""
        with self._forming:
            line = self._line
            if not line and self._unfinished is None:
                if self._stopping:
                    return None
                first = self._queue.get()
                if first is _STOP:
                    # Requests queued behind the stop marker still get their answer.
                    self._stopping = True
                    return []
                assert isinstance(first, _Job)
                line.append(first)
            self._stopping = self._drain(line) or self._stopping
            # Who arrived while the last batch ran goes before the sliced request's next turn.
            if self._unfinished is not None:
                line.append(self._unfinished)
            busy = len(line) > 1 or self._last_rows > 1
            if busy and not self._stopping and self.window_seconds > 0:
                self._stopping = self._wait_for_more(line) or self._stopping
            batch, self._unfinished = self._next_batch(line)
            return batch

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

    def _next_batch(self, line: deque[_Job[In, Out]]) -> tuple[list[Slice[In, Out]], _Job[In, Out] | None]:
        """The slices of one batch of at most max_batch rows, from the front of `line`, and the request
        that was sliced and has rows left (it rejoins the line when the next batch is formed)."""
        batch: list[Slice[In, Out]] = []
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
            batch.append((job, job.done, take))
            job.done += take
            rows += take
            if take < left:
                return batch, job
        return batch, None

    def _run_batch(self, batch: list[Slice[In, Out]]) -> None:
        rows = [item for job, start, take in batch for item in job.items[start : start + take]]
        started = time.perf_counter()
        try:
            outputs = self._run(rows) if rows else []
        except Exception as exc:  # the model's failure belongs to the requests, not to the worker
            for job, _, _ in batch:
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
        for job, start, take in batch:
            with self._lock:
                job.parts[start] = outputs[offset : offset + take]
                job.finished += take
                complete = job.finished == len(job.items)
            offset += take
            if complete:
                answers.setdefault(job.loop, []).append((job.future, job.outputs()))
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
