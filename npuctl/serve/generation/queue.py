"""Generation requests of one model: a bounded queue in front of a fixed number of slots (one for a
single-stream NPU pipeline), each running one generation on its own thread and handing text pieces to the
event loop. A slot is freed when its generation really stops: finished, failed, or cancelled because the
client went away."""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from npuctl.runtime.generation import Sampling, Step, TextGenerator
from npuctl.runtime.text_stream import TextStream
from npuctl.serve.batching import BatcherClosed, QueueFull

HANDOFF_STEP_SECONDS = 0.001
"""A token step longer than this is worth a hand-off (~0.1 ms) to get its piece to the client at once."""
HANDOFF_TIMEOUT_SECONDS = 0.02
"""Longest a generation waits for its reader (one that stopped reading is cancelled anyway)."""

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
class Piece:
    """A piece of the answer's text, and the generated tokens it came from (with log probabilities if asked)."""

    text: str
    steps: tuple[Step, ...] = ()


Item = Piece | BaseException | None
"""What the generation thread hands the loop: a piece, the model's failure, or the end."""


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
        self._pieces: asyncio.Queue[Item] = asyncio.Queue()
        # Items wait in the outbox until the loop drains it: one loop wake-up per burst, not per piece.
        self._outbox: list[Item] = []
        self._outbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._taken = threading.Event()
        self._handed_off = False
        self._begun: asyncio.Future[None] = loop.create_future()
        self._steps: list[Step] = []
        """Tokens not yet handed over with a piece (their text is held back: a partial character, a stop string)."""
        self._cancel = threading.Event()
        self.arrived = time.perf_counter()
        self.queue_wait = 0.0
        self.completion_tokens = 0
        self.token_ids: list[int] = []
        """The generated tokens so far (the end-of-sequence token not included)."""
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        """perf_counter() times of the first and the latest token."""
        self.finish_reason: str | None = None
        """Set once the generation has ended (before `pieces()` ends)."""

    def cancel(self) -> None:
        self._cancel.set()

    async def begun(self) -> None:
        """Wait until the model has taken the request; raises what refused it (a grammar that does not compile)."""
        await asyncio.shield(self._begun)

    async def pieces(self) -> AsyncIterator[str]:
        """The answer's text, piece by piece; raises the model's error if generation fails."""
        async for piece in self.chunks():
            if piece.text:
                yield piece.text

    def ready(self) -> bool:
        """Whether the next piece (or the end) is already here: a reader need not wait for it."""
        return not self._pieces.empty()

    async def chunks(self) -> AsyncIterator[Piece]:
        """As `pieces`, each with the tokens it came from."""
        while (item := await self._pieces.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            self._taken.set()  # back for more: the piece is out, a hand-off may end

    def generate(self) -> None:
        """Run to the end in the calling thread (the queue's slot thread), handing pieces to the event loop."""
        started = time.perf_counter()
        model = self._queue.model
        reason = FinishReason.LENGTH
        try:
            try:
                stream = TextStream(model.tokenizer.detokenizer(), self._prompt.stop)
                steps = model.steps(self._prompt.ids, self._prompt.sampling, self._cancel)
            except Exception as exc:
                self._call(self._begin, exc)
                raise
            self._call(self._begin, None)
            for step in steps:
                token = step.token
                now = time.perf_counter()
                took, self.last_token_at = now - (self.last_token_at or started), now
                self.first_token_at = self.first_token_at or self.last_token_at
                if token in model.eos_token_ids:
                    reason = FinishReason.STOP
                    break
                self.completion_tokens += 1
                self.token_ids.append(token)
                self._steps.append(step)
                self._put_text(stream.push(token), took=took)
                if stream.stopped:
                    reason = FinishReason.STOP
                    break
            else:
                if self._cancel.is_set():
                    reason = FinishReason.CANCELLED
            self._put_text(stream.finish(), final=True)
        except Exception as exc:  # the model's failure belongs to the request, not to the worker thread
            reason = FinishReason.ERROR
            self._put(exc)
        finally:
            self.finish_reason = reason
            self._queue.release()
            self._put(None)
        first, last = self.first_token_at, self.last_token_at
        speed = (self.completion_tokens - 1) / (last - first) if first and last and last > first else None
        self._queue.observe(GenerationStats(self.queue_wait, first - self.arrived if first else None, speed,
                                            self.completion_tokens, reason, time.perf_counter() - started))

    def _put_text(self, text: str, *, final: bool = False, took: float = 0.0) -> None:
        if not text and not (final and self._steps):
            return  # held back: the tokens go with the text they make
        piece = Piece(text, tuple(self._steps))
        self._steps = []
        self._put(piece, handoff=not self._handed_off or took > HANDOFF_STEP_SECONDS)

    def _put(self, item: Item, *, handoff: bool = False) -> None:
        """Hand `item` to the event loop. onnxruntime-genai holds the GIL through each native call, so a loop
        woken for a piece would wait for the whole next step (or Python's 5 ms switch interval): after the first
        piece, and after a step slower than a hand-off, this thread waits until the reader has sent it on and
        comes back for more (at most HANDOFF_TIMEOUT_SECONDS)."""
        with self._outbox_lock:
            self._outbox.append(item)
            schedule, self._drain_scheduled = not self._drain_scheduled, True
            if handoff:
                self._taken.clear()
        if schedule:
            self._call(lambda _: self._drain(), None)
        if handoff and not self._cancel.is_set():
            self._handed_off = True
            self._taken.wait(HANDOFF_TIMEOUT_SECONDS)

    def _drain(self) -> None:
        with self._outbox_lock:
            items, self._outbox, self._drain_scheduled = self._outbox, [], False
        for item in items:
            self._pieces.put_nowait(item)

    def _begin(self, error: BaseException | None) -> None:
        if self._begun.done():
            return
        if error is None:
            self._begun.set_result(None)
        else:
            self._begun.set_exception(error)

    def _call(self, function: Callable[[Any], None], argument: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(function, argument)
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
        self._jobs: queue.SimpleQueue[Generation | None] = queue.SimpleQueue()
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
        # A slot's thread outlives its generation: starting a thread per request made the event loop wait for
        # the new thread, which then held the GIL inside onnxruntime-genai (milliseconds of time to first token).
        with self._lock:
            self._jobs.put(generation)
            if len(self._threads) < self.slots:
                thread = threading.Thread(target=self._work, name=f"generate-{self.name}", daemon=True)
                self._threads.add(thread)
                thread.start()
                if self._closed:  # admitted just before close(), which only stopped the threads it saw
                    self._jobs.put(None)
        return generation

    def close(self) -> None:
        """Accept no more requests; generations already running finish, then the slot threads end."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)

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

    def _work(self) -> None:
        while (generation := self._jobs.get()) is not None:
            generation.generate()

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
