"""Generation requests of one model: a bounded queue in front of a fixed number of slots (one for a
single-stream NPU pipeline), each running one generation on its own thread and handing text pieces to the
event loop. A slot is freed when its generation really stops: finished, failed, or cancelled because the
client went away."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from npuctl.runtime.generation import Sampling, TextGenerator
from npuctl.runtime.text_stream import TextStream
from npuctl.serve.batching import BatcherClosed, QueueFull


class FinishReason:
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class GenerationStats:
    """What one generation did, for metrics."""

    queue_wait: float
    time_to_first_token: float | None
    """From the request's arrival to the first generated token."""
    tokens_per_second: float | None
    """Decode speed after the first token (None below two tokens)."""
    completion_tokens: int
    finish_reason: str
    seconds: float
    """Time in the slot."""


GenerationObserver = Callable[[GenerationStats], None]


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    sampling: Sampling
    stop: Sequence[str] = ()


class Generation:
    """One request's generation. Iterate `pieces()` on the event loop; `cancel()` from anywhere stops it."""

    def __init__(self, queue: GenerationQueue, prompt: Prompt, loop: asyncio.AbstractEventLoop) -> None:
        self._queue = queue
        self._prompt = prompt
        self._loop = loop
        self._pieces: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self._cancel = threading.Event()
        self.arrived = time.perf_counter()
        self.queue_wait = 0.0
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        """Set once the generation has ended (before `pieces()` ends)."""

    def cancel(self) -> None:
        self._cancel.set()

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text, piece by piece; raises the model's error if generation fails."""
        while (item := await self._pieces.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def generate(self) -> None:
        """Run to the end in the calling thread (the queue's slot thread), handing pieces to the event loop."""
        started = time.perf_counter()
        model = self._queue.model
        stream = TextStream(model.tokenizer.decode, self._prompt.stop)
        reason = FinishReason.LENGTH
        first = last = None
        try:
            for token in model.tokens(self._prompt.ids, self._prompt.sampling, self._cancel):
                last = time.perf_counter()
                first = first or last
                if token in model.eos_token_ids:
                    reason = FinishReason.STOP
                    break
                self.completion_tokens += 1
                self._put(stream.push(token))
                if stream.stopped:
                    reason = FinishReason.STOP
                    break
            else:
                if self._cancel.is_set():
                    reason = FinishReason.CANCELLED
            self._put(stream.finish())
        except Exception as exc:  # the model's failure belongs to the request, not to the worker thread
            reason = FinishReason.ERROR
            self._put(exc)
        finally:
            self.finish_reason = reason
            self._queue.release()
            self._put(None)
        speed = (self.completion_tokens - 1) / (last - first) if first and last and last > first else None
        self._queue.observe(GenerationStats(self.queue_wait, first - self.arrived if first else None, speed,
                                            self.completion_tokens, reason, time.perf_counter() - started))

    def _put(self, item: str | BaseException | None) -> None:
        if item == "":
            return
        try:
            self._loop.call_soon_threadsafe(self._pieces.put_nowait, item)
        except RuntimeError:
            self._cancel.set()  # the event loop is gone: nobody reads this answer any more


class GenerationQueue:
    def __init__(self, name: str, model: TextGenerator, *, slots: int, queue_limit: int) -> None:
        self.name = name
        self.model = model
        self.slots = slots
        self.queue_limit = queue_limit
        self.observer: GenerationObserver | None = None
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._seconds = 0.0
        """Recent generation time, for Retry-After."""

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def start(self, prompt: Prompt) -> Generation:
        """Wait for a slot, then start generating. Raises QueueFull when `queue_limit` requests already wait,
        BatcherClosed after close(). Cancelling the wait gives up the place in the queue."""
        loop = asyncio.get_running_loop()
        generation = Generation(self, prompt, loop)
        await self._acquire(loop)
        generation.queue_wait = time.perf_counter() - generation.arrived
        thread = threading.Thread(target=self._run, args=(generation,), name=f"generate-{self.name}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return generation

    def close(self) -> None:
        """Accept no more requests; generations already running finish."""
        with self._lock:
            self._closed = True

    def join(self, timeout: float | None = None) -> None:
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def release(self) -> None:
        """Free a slot, or hand it straight to the first waiter (called from generation threads)."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.get_loop().call_soon_threadsafe(self._grant, waiter)
                    return
                except RuntimeError:
                    continue  # its event loop is closed
            self._free += 1

    def observe(self, stats: GenerationStats) -> None:
        self._seconds = 0.8 * self._seconds + 0.2 * stats.seconds
        if self.observer is not None:
            self.observer(stats)

    def _run(self, generation: Generation) -> None:
        try:
            generation.generate()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._closed:
                raise BatcherClosed(f"model {self.name} is shutting down")
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            if len(self._waiters) >= self.queue_limit:
                raise QueueFull(self.queue_limit, self._retry_after())
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            with self._lock:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            # Granted just before the cancel arrived: the slot is ours, so pass it on. (Not yet granted but
            # popped: _grant finds the future cancelled and passes it on itself.)
            if not queued and waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():
            self.release()
        else:
            waiter.set_result(None)

    def _retry_after(self) -> int:
        return max(1, math.ceil(len(self._waiters) / self.slots * self._seconds))
