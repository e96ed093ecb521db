"""Prometheus metrics of one server, in its own CollectorRegistry (two servers in a process, as in
tests, never share counters). Per-model state (queue depth, provider, readiness) is read from the
served models at scrape time, so a removed model disappears from those gauges."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from npuctl.schema.cost import LoadCost
from npuctl.serve.batching import BatchObserver
from npuctl.serve.generation.queue import GenerationObserver, GenerationStats

if TYPE_CHECKING:
    from npuctl.serve.models import ServedModel

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:

    def __init__(self, models: Callable[[], list[ServedModel]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "npuctl_requests", "HTTP requests by model, API and status code.",
            ["model", "api", "code"], registry=self.registry,
        )
        self.errors = Counter(
            "npuctl_request_errors", "Requests answered with an error, by kind.",
            ["model", "api", "type"], registry=self.registry,
        )
        self.latency = Histogram(
            "npuctl_request_duration_seconds", "Time from request to response.",
            ["model", "api"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "npuctl_batch_size", "Rows per inference batch.",
            ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.inference = Histogram(
            "npuctl_inference_duration_seconds", "Time one batch spends in the sessions.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "npuctl_time_to_first_token_seconds", "Text generation: from request to the first generated token.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens_per_second = Histogram(
            "npuctl_generation_tokens_per_second", "Text generation: decode speed after the first token.",
            ["model"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000), registry=self.registry,
        )
        self.queue_wait = Histogram(
            "npuctl_generation_queue_wait_seconds", "Text generation: time waiting for a free generator slot.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.generated_tokens = Counter(
            "npuctl_generated_tokens", "Text generation: tokens generated (end-of-sequence tokens not counted).",
            ["model"], registry=self.registry,
        )
        self.generations = Counter(
            "npuctl_generations", "Text generations by how they ended: stop, length, cancelled (client gone), error.",
            ["model", "finish_reason"], registry=self.registry,
        )
        self.registry.register(_ModelState(models))

    def observe_request(self, model: str, api: str, code: int, seconds: float, error_type: str | None) -> None:
        self.requests.labels(model, api, str(code)).inc()
        self.latency.labels(model, api).observe(seconds)
        if error_type is not None:
            self.errors.labels(model, api, error_type).inc()

    def batch_observer(self, model: str) -> BatchObserver:
        size, inference = self.batch_size.labels(model), self.inference.labels(model)

        def observe(rows: int, seconds: float) -> None:
            size.observe(rows)
            inference.observe(seconds)

        return observe

    def generation_observer(self, model: str) -> GenerationObserver:
        ttft, speed, wait = (self.time_to_first_token.labels(model), self.tokens_per_second.labels(model),
                             self.queue_wait.labels(model))
        tokens = self.generated_tokens.labels(model)

        def observe(stats: GenerationStats) -> None:
            wait.observe(stats.queue_wait)
            if stats.time_to_first_token is not None:
                ttft.observe(stats.time_to_first_token)
            if stats.tokens_per_second is not None:
                speed.observe(stats.tokens_per_second)
            tokens.inc(stats.completion_tokens)
            self.generations.labels(model, stats.finish_reason).inc()

        return observe

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The samples and their content type, in the format the `Accept` header asks for: OpenMetrics when it
        names application/openmetrics-text (as Prometheus asks), else Prometheus' text format (prometheus_client's
        own negotiation)."""
        encode, kind = choose_encoder(accept)
        return encode(self.registry), kind


class _ModelState(Collector):
    def __init__(self, models: Callable[[], list[ServedModel]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily("npuctl_queue_depth", "Requests waiting for a batch (or a generator slot).", labels=["model"])
        ready = GaugeMetricFamily("npuctl_model_ready", "1 when the model serves on an acceptable provider.",
                                  labels=["model"])
        reason = GaugeMetricFamily("npuctl_model_readiness_info",
                                   "Why the model is (not) ready: 1 for its current reason (Serving, NoNPU, ...).",
                                   labels=["model", "reason"])
        provider = GaugeMetricFamily(
            "npuctl_model_provider", "1 for the execution provider and device each model runs on.",
            labels=["model", "provider", "device"],
        )
        coverage = GaugeMetricFamily("npuctl_model_npu_coverage_ratio", "Share of graph nodes on the QNN EP (0 to 1).",
                                     labels=["model"])
        cost = _CostGauges()
        for model in self._models():
            status = model.status
            if status.cost is not None:
                cost.add(model.name, status.cost)
            ready.add_metric([model.name], 1.0 if status.ready else 0.0)
            reason.add_metric([model.name, status.reason], 1.0)
            if model.waiting is not None:
                queue.add_metric([model.name], model.waiting)
            if status.provider is not None:
                provider.add_metric([model.name, status.provider, status.where or ""], 1.0)
            if status.npu_coverage is not None:
                coverage.add_metric([model.name], status.npu_coverage)
        yield from (queue, ready, reason, provider, coverage, *cost.families)


class _CostGauges:
    """What each loaded model costs (npuctl.schema.cost.LoadCost, measured when it loaded), one gauge per figure."""

    def __init__(self) -> None:
        def gauge(name: str, help_text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"npuctl_model_{name}", help_text, labels=["model"])

        self.host = gauge("host_memory_bytes", "Host memory the model's load took (resident set growth).")
        self.kv = gauge("kv_cache_bytes", "Text generation: the KV cache its slots hold at full context.")
        self.artifacts = gauge("artifact_bytes", "Bytes of the files its sessions were opened from.")
        self.context = gauge("context_binary_bytes", "Bytes of the QNN context binaries its NPU sessions hold.")
        self.npu_sessions = gauge("npu_sessions", "Its sessions on the QNN EP (HTP).")
        self.load = gauge("load_duration_seconds", "Cold start: how long its sessions took to open.")
        self.families = (self.host, self.kv, self.artifacts, self.context, self.npu_sessions, self.load)

    def add(self, model: str, cost: LoadCost) -> None:
        figures = (cost.host_bytes, cost.kv_cache_bytes, cost.artifact_bytes, cost.context_binary_bytes,
                   cost.npu_sessions, cost.load_seconds)
        for family, value in zip(self.families, figures, strict=True):
            family.add_metric([model], value)
