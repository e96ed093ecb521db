"""What `npuctl bench` measures of one deployment on one PC, as it prints it (`-o json`) and as the agent keeps
the last one in the deployment's status (`lastBench`). Every figure is a median over the bench's rounds, with
its spread: (largest - smallest) / median over those rounds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from npuctl.schema.power import PowerInForce

BENCH_ROUNDS = 3
CLIENT_LEVELS = (1, 16, 64)
"""Concurrent clients of the request-kind benches (at most the deployment's serve.queueLimit)."""


class Figure(BaseModel):
    """One field of bench output: camelCase JSON, field docstrings as schema descriptions."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True,
                              use_attribute_docstrings=True)


class Spread(Figure):
    median: float
    spread: float
    """(largest - smallest) / median over the rounds: 0.1 means the rounds differed by 10% of the median."""


class PromptFigures(Figure):
    """One prompt length of a chat bench: the prefill."""

    words: int
    """The prompt: one user message of "hello " this many times, in the model's chat template."""
    prompt_tokens: int
    """The prompt's tokens as the model's tokenizer counts them (the server's `usage.prompt_tokens`)."""
    time_to_first_token_ms: Spread
    prefill_tokens_per_second: Spread
    """prompt_tokens / time to first token."""


class ChatFigures(Figure):
    prompts: list[PromptFigures]
    """~32, ~512 and ~2,048 tokens (fewer when the context holds less: the longest that fits ends the list)."""
    decode_tokens: int
    """Tokens generated per round after the first (the decode the tokens/s are over): the request generating
    them all less the same request generating one, so the server's write batching does not skew it."""
    decode_tokens_per_second: Spread
    inter_token_p50_ms: Spread
    """Between streamed chunks as the client reads them (a chunk holds the tokens ready at once)."""
    inter_token_p95_ms: Spread


class LoadFigures(Figure):
    """One level of concurrent clients, each sending one request after the other."""

    clients: int
    requests: int
    """Requests answered per round."""
    requests_per_second: Spread
    latency_p50_ms: Spread
    latency_p95_ms: Spread
    refused: int
    """Answers other than 200 (429 when the queue was full), over all rounds."""


class RequestFigures(Figure):
    """Embeddings, rerank or classify: one input per request, so the server forms the batches."""

    levels: list[LoadFigures]
    """Batch 1 (one client) first, then more clients."""


class ProcessFigures(Figure):
    """The agent process while the bench ran (its other deployments included)."""

    cpu_seconds: float
    """User + system CPU seconds the agent's process used during the bench."""
    cpu_seconds_per_unit: float
    """cpu_seconds / units."""
    unit: str
    """`token` (chat: generated tokens) or `request`."""
    units: int
    peak_rss_bytes: int
    """The largest resident set size seen (sampled every 0.2 s, and the OS's own peak where it keeps one)."""


class HostFigures(Figure):
    soc: str | None
    os: str
    arch: str
    npu: str
    """`npu`, `simulator` or `none`."""
    versions: dict[str, str]
    """npuctl, Python, onnxruntime, onnxruntime-qnn and onnxruntime-genai where installed."""


class BenchResult(Figure):
    """One `npuctl bench` of a deployment."""

    model: str
    """The served model name benched."""
    task: str
    time: str
    """When the bench finished (UTC, ISO 8601)."""
    seconds: float
    """How long the bench ran."""
    rounds: int
    max_in_flight: int
    """The most requests the bench had in flight at once: its load on the agent, bounded so that other
    deployments' queues see no more than this one's clients."""
    where: str | None
    """npu, npu-simulator or cpu."""
    provider: str | None
    npu_coverage: float | None
    power: PowerInForce | None
    """The power policy in force during the bench."""
    host: HostFigures
    process: ProcessFigures
    chat: ChatFigures | None = None
    requests: RequestFigures | None = None

    def headline(self) -> str:
        """One line for tables and the dashboard: the figure users compare PCs by, and when it was taken."""
        if self.chat is not None:
            figure = (f"{self.chat.decode_tokens_per_second.median:.1f} tok/s, TTFT "
                      f"{self.chat.prompts[0].time_to_first_token_ms.median:.0f} ms")
        elif self.requests is not None:
            one = self.requests.levels[0]
            most = max(self.requests.levels, key=lambda level: level.requests_per_second.median)
            figure = (f"{one.latency_p50_ms.median:.1f} ms p50, {most.requests_per_second.median:.1f} req/s "
                      f"@{most.clients}")
        else:
            figure = "-"
        return f"{figure} ({self.time[:16].replace('T', ' ')})"
