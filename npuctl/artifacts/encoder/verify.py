"""Measure a compiled model against the fp32 reference on held-out inputs, on the HTP (simulator or NPU)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npuctl.artifacts import progress
from npuctl.artifacts.errors import AccuracyError
from npuctl.artifacts.inputs import Feed
from npuctl.runtime import pooling, power, qnn
from npuctl.schema.models import DeploymentSpec, Metric, Task

DEFAULT_THRESHOLDS = {Metric.COSINE: 0.98, Metric.MAX_ABS_ERROR: 0.05, Metric.AGREEMENT: 1.0}
DEFAULT_METRICS = {Task.EMBEDDINGS: Metric.COSINE, Task.TEXT2TEXT_GENERATION: Metric.AGREEMENT}
"""Other tasks default to max_abs_error (of raw outputs, scores or probabilities)."""


@dataclass(frozen=True)
class Measurement:
    metric: Metric
    value: float
    """Worst case over the samples: the lowest cosine, or the largest absolute error."""
    mean: float
    samples: int
    coverage: qnn.Coverage
    """Node assignment of the compiled model's session."""
    agreement: float | None = None
    """Rerank, classification, text2text-generation: the share of held-out comparisons that agree with fp32 (the
    order of documents, the top label, identical greedy tokens)."""

    def passes(self, threshold: float) -> bool:
        return self.value <= threshold if self.metric is Metric.MAX_ABS_ERROR else self.value >= threshold


def bar(spec: DeploymentSpec) -> tuple[Metric, float]:
    """The metric and threshold a build of `spec` must clear (spec.accuracy, else the task's defaults)."""
    metric = spec.accuracy.metric or DEFAULT_METRICS.get(spec.model.task, Metric.MAX_ABS_ERROR)
    threshold = spec.accuracy.threshold
    return metric, DEFAULT_THRESHOLDS[metric] if threshold is None else threshold


def check(measured: Measurement, threshold: float, min_agreement: float, what: str) -> None:
    """Raise AccuracyError, naming both numbers and the manifest field, when `measured` misses the bar."""
    metric = measured.metric
    if not measured.passes(threshold):
        relation = "above the allowed" if metric is Metric.MAX_ABS_ERROR else "below the required"
        raise AccuracyError(f"{metric.value} {measured.value:.6f} on {what} is {relation} {threshold} "
                            "(spec.accuracy.threshold)", metric=metric.value, value=measured.value, threshold=threshold)
    if measured.agreement is not None and metric is not Metric.AGREEMENT and measured.agreement < min_agreement:
        raise AccuracyError(f"agreement with fp32 {measured.agreement:.3f} on {what} is below the required "
                            f"{min_agreement} (spec.accuracy.minAgreement)", metric="agreement",
                            value=measured.agreement, threshold=min_agreement)


def measure(
    context_model: Path,
    reference_model: Path,
    feeds: Sequence[Feed],
    *,
    soc_model: int,
    fp16: bool,
    metric: Metric,
    pool: pooling.PoolingConfig | None,
) -> Measurement:
    """Run both models on `feeds`. With `pool`, outputs are token states compared as pooled embeddings."""
    import onnxruntime as ort

    options = qnn.session_options(soc_model, fp16=fp16, config={qnn.RECORD_ASSIGNMENT: "1"})
    options.log_severity_level = 3
    npu = ort.InferenceSession(str(context_model), options)
    reference = ort.InferenceSession(str(reference_model), power.session_options(), providers=["CPUExecutionProvider"])
    scores: list[float] = []
    for index, feed in enumerate(feeds):
        got, want = npu.run(None, feed), reference.run(None, feed)
        scores.extend(compare(got, want, feed, metric, pool))
        progress.report(index + 1, len(feeds), "samples", "comparing with fp32")
    worst = min(scores) if metric is Metric.COSINE else max(scores)
    return Measurement(metric, float(worst), float(np.mean(scores)), len(feeds), qnn.npu_coverage(npu))


def compare(got: Sequence[Any], want: Sequence[Any], feed: Feed, metric: Metric,
            pool: pooling.PoolingConfig | None) -> list[float]:
    """Per-sample cosine (of pooled embeddings with `pool`) or the largest absolute error, of outputs `got` vs `want`."""
    if pool is not None:
        mask = feed["attention_mask"]
        return [float(c) for c in pooling.cosine(pooling.pool(got[0], mask, pool), pooling.pool(want[0], mask, pool))]
    if metric is Metric.COSINE:
        flat_got = np.concatenate([np.asarray(g, np.float64).reshape(len(g), -1) for g in got], axis=1)
        flat_want = np.concatenate([np.asarray(w, np.float64).reshape(len(w), -1) for w in want], axis=1)
        return [float(c) for c in pooling.cosine(flat_got, flat_want)]
    return [max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)))) for g, w in zip(got, want, strict=True))]
