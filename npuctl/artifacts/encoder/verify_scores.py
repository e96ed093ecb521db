"""Verify a reranker or classifier: the compiled model's relevance scores (or label probabilities) against the fp32
reference's on held-out inputs, and whether they agree on what matters to a user: the order of the documents
(rerank) or the top label (classification)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import numpy.typing as npt

from npuctl.artifacts.encoder.verify import Measurement, compare
from npuctl.artifacts.inputs import Feed
from npuctl.runtime import power, qnn, scoring
from npuctl.schema.models import Metric

Scores = npt.NDArray[np.float64]


def measure(context_model: Path, reference_model: Path, feeds: Sequence[Feed], *, soc_model: int, fp16: bool,
            metric: Metric, head: scoring.Head | None) -> Measurement:
    """Scores of both models on `feeds`. `head`: a classifier's (probabilities per label, agreement on the top
    label); None for a reranker (one relevance score per pair, agreement on the order of every two pairs)."""
    import onnxruntime as ort

    options = qnn.session_options(soc_model, fp16=fp16, config={qnn.RECORD_ASSIGNMENT: "1"})
    options.log_severity_level = 3
    npu = ort.InferenceSession(str(context_model), options)
    reference = ort.InferenceSession(str(reference_model), power.session_options(), providers=["CPUExecutionProvider"])
    got, want = [], []
    for feed in feeds:
        got.append(_scores(npu.run(None, feed)[0], head))
        want.append(_scores(reference.run(None, feed)[0], head))
    values = [v for g, w, feed in zip(got, want, feeds, strict=True) for v in compare([g], [w], feed, metric, None)]
    worst = min(values) if metric is Metric.COSINE else max(values)
    all_got, all_want = np.concatenate(got), np.concatenate(want)
    agreement = top_label_agreement(all_got, all_want) if head else rank_agreement(all_got, all_want)
    return Measurement(metric, float(worst), float(np.mean(values)), len(feeds), qnn.npu_coverage(npu), agreement)


def rank_agreement(got: Scores, want: Scores) -> float:
    """Share of every two inputs that both score in the same order (1.0 with fewer than two)."""
    pairs = list(combinations(range(len(want)), 2))
    if not pairs:
        return 1.0
    same = sum(np.sign(got[i] - got[j]) == np.sign(want[i] - want[j]) for i, j in pairs)
    return float(same / len(pairs))


def top_label_agreement(got: Scores, want: Scores) -> float:
    """Share of inputs given the same most likely label."""
    return float(np.mean(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))


def _scores(logits: npt.NDArray[np.floating], head: scoring.Head | None) -> Scores:
    return head.probabilities(logits) if head else scoring.relevance(logits)
