"""`npuctl bench`'s load: real HTTP requests to a deployment's endpoints, as its users send them, with the
serving process's CPU time and memory read around them. Each figure is measured in `rounds` interleaved rounds
and reported as the median with its spread. The load is bounded: at most `max(clients)` requests of this bench
are in flight, all to the benched model's own queue (never more clients than its serve.queueLimit)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from npuctl.errors import NpuctlError
from npuctl.schema.bench import (
    ChatFigures,
    LoadFigures,
    PromptFigures,
    RequestFigures,
    Spread,
)
from npuctl.schema.enums import Task

CHAT_PROMPT_TOKENS = (32, 512, 2048)
"""Prompt lengths aimed at, in the model's tokens: "hello" repeated, the count of words from two probes of the
model's tokenizer through the server; the server's own count is what is reported."""
PROBE_WORDS = (8, 16)
DECODE_TOKENS = 256
"""Default tokens of the decode run; a fast model needs more for its decode to outlast the host's jitter."""
"""Tokens generated after a short prompt, end-of-sequence ignored: the decode the tokens/s are over."""
WORD = "hello "
SAMPLE_SECONDS = 0.2

Progress = Callable[[str], None]


class BenchError(NpuctlError):
    """The bench cannot run: the model does not answer, or answers with errors."""


class ProcessProbe(Protocol):
    """The serving process's CPU seconds and resident size: the agent's API, or this process for `-f`."""

    async def read(self) -> tuple[float, int]: ...


@dataclass(frozen=True)
class Target:
    url: str
    """Base URL of the server (no trailing slash)."""
    model: str
    """The served model name."""
    task: Task
    queue_limit: int


@dataclass
class ProcessUse:
    cpu_seconds: float = 0.0
    peak_rss: int = 0


class Watch:
    """Samples the serving process's resident size while a bench runs, and its CPU time at both ends."""

    def __init__(self, probe: ProcessProbe) -> None:
        self.probe = probe
        self.use = ProcessUse()
        self._task: asyncio.Task[None] | None = None
        self._cpu_start = 0.0

    async def __aenter__(self) -> Watch:
        self._cpu_start, rss = await self.probe.read()
        self.use.peak_rss = rss
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        cpu, rss = await self.probe.read()
        self.use.cpu_seconds = cpu - self._cpu_start
        self.use.peak_rss = max(self.use.peak_rss, rss)

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            _, rss = await self.probe.read()
            self.use.peak_rss = max(self.use.peak_rss, rss)


def spread(values: Sequence[float]) -> Spread:
    middle = statistics.median(values)
    return Spread(median=middle, spread=(max(values) - min(values)) / middle if middle else 0.0)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# Requests of the request-kind tasks: one input each, so the server forms the batches.
def _request(task: Task, model: str, index: int) -> tuple[str, dict[str, Any]]:
    text = f"bench sentence {index}: the quick brown fox jumps over the lazy dog"
    if task is Task.EMBEDDINGS:
        return "/v1/embeddings", {"model": model, "input": text}
    if task is Task.RERANK:
        return "/v1/rerank", {"model": model, "query": "which animal jumps?", "documents": [text]}
    if task is Task.CLASSIFICATION:
        return "/v1/classify", {"model": model, "input": text}
    raise BenchError(f"npuctl bench measures chat, embeddings, rerank and classify models, not {task.value}")


async def bench_requests(http: httpx.AsyncClient, target: Target, clients: Sequence[int], requests: int,
                         rounds: int, progress: Progress) -> tuple[RequestFigures, int]:
    """Latency and throughput at each level of clients; rounds interleave the levels. Returns the figures and
    the requests answered."""
    levels = sorted({max(1, min(c, target.queue_limit)) for c in clients})
    per_level: dict[int, list[tuple[float, list[float], int]]] = {c: [] for c in levels}
    answered = 0
    for round_ in range(1, rounds + 1):
        for level in levels:
            progress(f"round {round_}/{rounds}: {level} client(s), {max(requests, level)} requests")
            result = await _level(http, target, level, max(requests, level))
            per_level[level].append(result)
            answered += len(result[1])
    figures = []
    for level, results in per_level.items():
        if any(not latencies for _, latencies, _ in results):
            raise BenchError(f"{target.model} answered no request at {level} client(s)")
        figures.append(LoadFigures(
            clients=level, requests=len(results[0][1]),
            requests_per_second=spread([len(lat) / seconds for seconds, lat, _ in results]),
            latency_p50_ms=spread([percentile(lat, 0.5) * 1000 for _, lat, _ in results]),
            latency_p95_ms=spread([percentile(lat, 0.95) * 1000 for _, lat, _ in results]),
            refused=sum(refused for _, _, refused in results)))
    return RequestFigures(levels=figures), answered


async def _level(http: httpx.AsyncClient, target: Target, clients: int, total: int) -> tuple[float, list[float], int]:
    """`clients` clients share `total` requests, each sending its next one when the last is answered."""
    latencies: list[float] = []
    refused = 0
    left = iter(range(total))

    async def client() -> None:
        nonlocal refused
        for index in left:
            path, body = _request(target.task, target.model, index)
            start = time.perf_counter()
            response = await http.post(target.url + path, json=body)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            elif response.status_code in (429, 503):
                refused += 1
            else:
                raise BenchError(f"{path} answered {response.status_code}: {response.text[:300]}")

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, latencies, refused


@dataclass(frozen=True)
class _Stream:
    prompt_tokens: int
    completion_tokens: int
    first: float
    """Seconds from the request to the first content."""
    total: float
    """Seconds from the request to the end of the stream."""
    gaps: list[float]
    """Seconds between content chunks (a chunk holds one or more tokens)."""


async def _chat(http: httpx.AsyncClient, target: Target, words: int, max_tokens: int) -> _Stream | None:
    """One streamed chat completion; None when the prompt does not fit the model's context."""
    body = {"model": target.model, "messages": [{"role": "user", "content": WORD * words}], "stream": True,
            "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    stamps: list[float] = []
    usage: dict[str, Any] = {}
    async with http.stream("POST", target.url + "/v1/chat/completions", json=body) as response:
        if response.status_code == 400:
            error = json.loads(await response.aread()).get("error", {})
            if error.get("code") == "context_length_exceeded":
                return None
        if response.status_code != 200:
            raise BenchError(f"/v1/chat/completions answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise BenchError(f"the generation failed: {event['error'].get('message')}")
            if event.get("usage"):
                usage = event["usage"]
            choices = event.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                stamps.append(time.perf_counter())
    if not stamps or not usage:
        raise BenchError(f"{target.model} streamed no content or no usage")
    return _Stream(int(usage["prompt_tokens"]), int(usage["completion_tokens"]), stamps[0] - start,
                   time.perf_counter() - start, [b - a for a, b in zip(stamps, stamps[1:])])


async def _fitting(http: httpx.AsyncClient, target: Target, words: int, max_tokens: int) -> tuple[int, _Stream]:
    """The longest prompt up to `words` that fits the context (halving), and its stream."""
    while words >= 1:
        stream = await _chat(http, target, words, max_tokens)
        if stream is not None:
            return words, stream
        words //= 2
    raise BenchError(f"{target.model} accepts no prompt with {max_tokens} tokens to generate")


async def bench_chat(http: httpx.AsyncClient, target: Target, rounds: int, decode_tokens: int,
                     progress: Progress) -> tuple[ChatFigures, int]:
    """Prefill at each prompt length, then decode after the shortest; rounds interleave them. One request in flight
    at a time. Decode is timed as the whole request with `decode_tokens` tokens less the same request with one (its
    median over the rounds): a server may send tokens that are ready together in one write, so the client's arrival times
    say little about a fast model's decode. Returns the figures and the tokens generated (the warm-up's too: the
    agent's CPU time covers it)."""
    progress("warming up, fitting the prompts to the model's tokens and context")
    generated = 0
    probes = []
    for words in PROBE_WORDS:
        stream = await _chat(http, target, words, 1)
        if stream is None:
            raise BenchError(f"{target.model}'s context cannot hold a prompt of {words} words")
        probes.append(stream.prompt_tokens)
        generated += stream.completion_tokens
    per_word = max(1e-9, (probes[1] - probes[0]) / (PROBE_WORDS[1] - PROBE_WORDS[0]))
    template = probes[0] - per_word * PROBE_WORDS[0]
    lengths: list[int] = []
    for aimed in CHAT_PROMPT_TOKENS:
        fitted, warm = await _fitting(http, target, max(1, round((aimed - template) / per_word)), 1)
        generated += warm.completion_tokens
        if fitted in lengths:
            break  # the context limit: longer prompts would measure the same one again
        lengths.append(fitted)
    decode_words, warm = await _fitting(http, target, lengths[0], decode_tokens)
    generated += warm.completion_tokens
    prefill: dict[int, list[_Stream]] = {w: [] for w in lengths}
    one: list[_Stream] = []
    decode: list[_Stream] = []
    for round_ in range(1, rounds + 1):
        for length in lengths:
            progress(f"round {round_}/{rounds}: prefill of {length} words")
            prefill[length].append(await _still_fitting(http, target, length, 1))
        progress(f"round {round_}/{rounds}: decode of {decode_tokens} tokens")
        one.append(await _still_fitting(http, target, decode_words, 1))
        decode.append(await _still_fitting(http, target, decode_words, decode_tokens))
        generated += sum(runs[-1].completion_tokens for runs in prefill.values())
        generated += one[-1].completion_tokens + decode[-1].completion_tokens
    prompts = [PromptFigures(words=words, prompt_tokens=runs[0].prompt_tokens,
                             time_to_first_token_ms=spread([s.first * 1000 for s in runs]),
                             prefill_tokens_per_second=spread([s.prompt_tokens / s.first for s in runs]))
               for words, runs in prefill.items()]
    tokens = decode[0].completion_tokens
    baseline = statistics.median(o.total for o in one)
    if any(s.completion_tokens != tokens or s.total <= baseline for s in decode):
        raise BenchError(f"{target.model} did not generate {decode_tokens} tokens in a measurable time in every "
                         "round: bench again with more --decode-tokens")
    figures = ChatFigures(
        prompts=prompts, decode_tokens=tokens - 1,
        decode_tokens_per_second=spread([(s.completion_tokens - 1) / (s.total - baseline) for s in decode]),
        inter_token_p50_ms=spread([percentile(s.gaps or [0.0], 0.5) * 1000 for s in decode]),
        inter_token_p95_ms=spread([percentile(s.gaps or [0.0], 0.95) * 1000 for s in decode]))
    return figures, generated


async def _still_fitting(http: httpx.AsyncClient, target: Target, words: int, max_tokens: int) -> _Stream:
    stream = await _chat(http, target, words, max_tokens)
    if stream is None:
        raise BenchError(f"a prompt of {words} words stopped fitting {target.model}'s context")
    return stream


async def guarded(step: Awaitable[Any]) -> Any:
    """httpx's transport errors as BenchErrors that name the server."""
    try:
        return await step
    except httpx.TransportError as exc:
        raise BenchError(f"the server stopped answering during the bench ({exc})") from exc
