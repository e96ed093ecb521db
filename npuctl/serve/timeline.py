"""The last ten minutes of each served model, for the dashboard's charts: every couple of seconds the server's
own metric objects (not their Prometheus text) are read, and the change since the previous reading becomes
one sample (request rate, 429s, p50/p95 latency, queue depth; for text generation, time to first token and
decode speed). Kept in memory only, in a ring buffer per deployment."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram
from prometheus_client.samples import Sample as PromSample
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from npuctl.serve.models import GenerationService, ServedModel
from npuctl.serve.registry import ModelRegistry

INTERVAL_SECONDS = 2.0
WINDOW_SECONDS = 600.0


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class Sample(_Record):
    """What one model did between two readings of the metrics."""

    time: float
    """End of the interval, seconds since the epoch."""
    requests_per_second: float
    rejected_per_second: float
    """Requests answered 429 (queue full), per second."""
    latency_p50_ms: float | None
    """Median request latency in the interval (None when no request finished)."""
    latency_p95_ms: float | None
    queue_depth: int | None
    """Requests waiting at the end of the interval (None for a model with no queue)."""
    ttft_p50_ms: float | None = None
    """Text generation: median time to first token."""
    tokens_per_second: float | None = None
    """Text generation: mean decode speed of the generations that ended in the interval."""


class ModelSeries(_Record):
    deployment: str
    model: str
    """The public model name the metrics are labelled with."""
    chat: bool
    """A text-generation model (its samples carry TTFT and tokens/s)."""
    samples: list[Sample]


@dataclass
class _Reading:
    """Cumulative counts of one model at one moment."""

    at: float
    requests: float
    rejected: float
    latency: list[tuple[float, float]]
    ttft: list[tuple[float, float]]
    speed_sum: float
    speed_count: float


@dataclass
class _Track:
    model: str
    chat: bool
    last: _Reading | None = None
    samples: deque[Sample] = field(default_factory=deque)


class Timeline:
    """Per-deployment samples of `registry`'s models. `sample()` takes one reading; `start()` takes one
    every `interval` seconds on a daemon thread until `stop()`."""

    def __init__(self, registry: ModelRegistry, interval: float = INTERVAL_SECONDS,
                 window: float = WINDOW_SECONDS) -> None:
        self.registry = registry
        self.interval = interval
        self.size = max(1, round(window / interval))
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def series(self, recent: float | None = None, at: float | None = None) -> list[ModelSeries]:
        """Every model's samples; with `recent`, only those of the last `recent` seconds before `at` (now)."""
        since = ((time.time() if at is None else at) - recent) if recent is not None else -math.inf
        with self._lock:
            return [ModelSeries(deployment=name, model=track.model, chat=track.chat,
                                samples=[s for s in track.samples if s.time > since])
                    for name, track in sorted(self._tracks.items())]

    def sample(self, at: float | None = None) -> None:
        """Read the metrics now (or as of `at`, seconds since the epoch) and add a sample per model."""
        when = time.time() if at is None else at
        models = self.registry.models()
        metrics = self.registry.metrics
        # Each metric is collected once per reading, whatever the number of models.
        collected = _Collected(_by_model(metrics.requests), _by_model(metrics.latency),
                               _by_model(metrics.time_to_first_token), _by_model(metrics.tokens_per_second))
        with self._lock:
            for gone in set(self._tracks) - {m.deployment for m in models}:
                del self._tracks[gone]
            for model in models:
                self._sample(model, when, collected.reading(model.name, when))

    def start(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, name="npuctl-timeline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _sample(self, model: ServedModel, when: float, reading: _Reading) -> None:
        chat = isinstance(model, GenerationService)
        track = self._tracks.get(model.deployment)
        if track is None or track.model != model.name or track.chat != chat:
            track = self._tracks[model.deployment] = _Track(model.name, chat, samples=deque(maxlen=self.size))
        last, track.last = track.last, reading
        seconds = reading.at - last.at if last else 0.0
        if last is None or seconds <= 0 or reading.requests < last.requests:
            return  # the first reading (or a clock step back) only sets the baseline
        latency = _delta(reading.latency, last.latency)
        ttft = _delta(reading.ttft, last.ttft)
        speed_count = reading.speed_count - last.speed_count
        track.samples.append(Sample(
            time=when,
            requests_per_second=(reading.requests - last.requests) / seconds,
            rejected_per_second=(reading.rejected - last.rejected) / seconds,
            latency_p50_ms=_ms(quantile(latency, 0.5)),
            latency_p95_ms=_ms(quantile(latency, 0.95)),
            queue_depth=model.waiting,
            ttft_p50_ms=_ms(quantile(ttft, 0.5)) if chat else None,
            tokens_per_second=(reading.speed_sum - last.speed_sum) / speed_count if chat and speed_count > 0 else None,
        ))


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a histogram given as (upper bound, cumulative count) pairs, interpolated within its
    bucket as Prometheus' histogram_quantile does; None for an empty histogram."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the largest finite bound: that bound is all we know
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


@dataclass
class _Collected:
    """One collection of the metrics the timeline reads, each grouped by its `model` label."""

    requests: dict[str, list[PromSample]]
    latency: dict[str, list[PromSample]]
    ttft: dict[str, list[PromSample]]
    speed: dict[str, list[PromSample]]

    def reading(self, model: str, at: float) -> _Reading:
        requests = [s for s in self.requests.get(model, []) if s.name.endswith("_total")]
        speed = self.speed.get(model, [])
        return _Reading(at, sum(s.value for s in requests), sum(s.value for s in requests if s.labels["code"] == "429"),
                        _buckets(self.latency.get(model, [])), _buckets(self.ttft.get(model, [])),
                        sum(s.value for s in speed if s.name.endswith("_sum")),
                        sum(s.value for s in speed if s.name.endswith("_count")))


def _by_model(metric: Counter | Histogram) -> dict[str, list[PromSample]]:
    grouped: dict[str, list[PromSample]] = defaultdict(list)
    for family in metric.collect():
        for sample in family.samples:
            grouped[sample.labels.get("model", "")].append(sample)
    return grouped


def _buckets(samples: list[PromSample]) -> list[tuple[float, float]]:
    """Cumulative bucket counts summed over the model's label sets (APIs), by upper bound."""
    counts: dict[float, float] = defaultdict(float)
    for sample in samples:
        if sample.name.endswith("_bucket"):
            counts[float(sample.labels["le"])] += sample.value
    return sorted(counts.items())


def _delta(now: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    old = dict(before)
    return [(bound, count - old.get(bound, 0.0)) for bound, count in now]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
