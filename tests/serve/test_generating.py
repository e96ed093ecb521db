"""The generation queue: one slot on a single-stream model, a bounded wait line, 429 past it, and a slot that
frees when a generation is cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from npuctl.runtime.generation import Sampling, Step
from npuctl.serve.batching import QueueFull
from npuctl.serve.generation.queue import FinishReason, GenerationQueue, Prompt


class GatedModel:
    """Yields token 1 until `cancel` is set or the gate opens (then ends)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.tokenizer = SimpleNamespace(detokenizer=lambda: lambda token: "x")
        self.eos_token_ids = frozenset({0})

    def steps(self, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[Step]:
        while not cancel.is_set() and not self.gate.wait(0.005):
            yield Step(1)


PROMPT = Prompt([1], Sampling(10**6))


def test_a_full_queue_refuses_and_a_cancelled_generation_frees_its_slot() -> None:
    async def scenario() -> None:
        model: Any = GatedModel()
        queue = GenerationQueue("m", model, slots=1, queue_limit=1)
        first = await queue.start(PROMPT)
        second = asyncio.ensure_future(queue.start(PROMPT))
        await asyncio.sleep(0.05)
        assert queue.waiting == 1 and not second.done()
        with pytest.raises(QueueFull):
            await queue.start(PROMPT)
        first.cancel()
        async for _ in first.pieces():
            pass
        assert first.finish_reason == FinishReason.CANCELLED
        follower = await asyncio.wait_for(second, 2)
        assert queue.waiting == 0
        model.gate.set()
        async for _ in follower.pieces():
            pass
        assert follower.finish_reason == FinishReason.LENGTH

    asyncio.run(scenario())


def test_giving_up_a_place_in_the_line_does_not_leak_the_slot() -> None:
    async def scenario() -> None:
        model: Any = GatedModel()
        queue = GenerationQueue("m", model, slots=1, queue_limit=4)
        first = await queue.start(PROMPT)
        waiting = asyncio.ensure_future(queue.start(PROMPT))
        await asyncio.sleep(0.02)
        waiting.cancel()
        await asyncio.sleep(0.02)
        assert queue.waiting == 0
        first.cancel()
        async for _ in first.pieces():
            pass
        model.gate.set()
        again = await asyncio.wait_for(queue.start(PROMPT), 2)
        async for _ in again.pieces():
            pass

    asyncio.run(scenario())
