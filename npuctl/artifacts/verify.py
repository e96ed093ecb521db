"""Measure a compiled model against the fp32 reference on held-out inputs, on the HTP (simulator or NPU)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npuctl.artifacts.inputs import Feed
from npuctl.runtime import pooling, qnn
from npuctl.schema.models import Metric


@dataclass(frozen=True)
class Measurement:
    metric: Metric
    value: float
    """Worst case over the samples: the lowest cosine, or the largest absolute error."""
    mean: float
    samples: int
    coverage: qnn.Coverage
    """Node assignment of the compiled model's session."""

    def passes(self, threshold: float) -> bool:
        return self.value >= threshold if self.metric is Metric.COSINE else self.value <= threshold


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
    reference = ort.InferenceSession(str(reference_model), providers=["CPUExecutionProvider"])
    scores: list[float] = []
    for feed in feeds:
        got, want = npu.run(None, feed), reference.run(None, feed)
        scores.extend(_scores(got, want, feed, metric, pool))
    worst = min(scores) if metric is Metric.COSINE else max(scores)
    return Measurement(metric, float(worst), float(np.mean(scores)), len(feeds), qnn.npu_coverage(npu))


def _scores(got: list[Any], want: list[Any], feed: Feed, metric: Metric, pool: pooling.PoolingConfig | None) -> list[float]:
    if pool is not None:
        mask = feed["attention_mask"]
        return [float(c) for c in pooling.cosine(pooling.pool(got[0], mask, pool), pooling.pool(want[0], mask, pool))]
    if metric is Metric.COSINE:
        flat_got = np.concatenate([np.asarray(g, np.float64).reshape(len(g), -1) for g in got], axis=1)
        flat_want = np.concatenate([np.asarray(w, np.float64).reshape(len(w), -1) for w in want], axis=1)
        return [float(c) for c in pooling.cosine(flat_got, flat_want)]
    return [max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)))) for g, w in zip(got, want, strict=True))]
