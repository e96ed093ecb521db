"""Rerankers and classifiers: a sequence-classification head on a BERT-style encoder. Token rows (a query-document
pair, or one text) in, the head's logits out; relevance scores and label probabilities from them, as the model's
config.json says (`id2label`, `problem_type`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from npuctl.runtime.bucketed import BucketedSessions
from npuctl.runtime.sessions import OpenedSession, RunInfo
from npuctl.runtime.text import TextEncoder, Tokens

Logits = npt.NDArray[np.float32]
MULTI_LABEL = "multi_label_classification"
CONFIG = "config.json"


class HeadError(ValueError):
    """The model's config.json does not say what its outputs mean."""


@dataclass(frozen=True)
class Head:
    """What the classification head's outputs are."""

    labels: tuple[str, ...]
    """Label names by output index (config.json's id2label)."""
    multi_label: bool
    """problem_type multi_label_classification: each label scored alone (sigmoid), else one choice (softmax)."""

    def probabilities(self, logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """[rows, labels] logits -> per-label scores in 0..1."""
        return sigmoid(logits) if self.multi_label else softmax(logits)


def read_head(model_dir: Path | None, *, need_labels: bool) -> Head:
    """The head described by `model_dir/config.json`. Raises HeadError naming the file and field when a classifier
    (`need_labels`) has no usable id2label; a reranker needs only its output count."""
    file = model_dir / CONFIG if model_dir else None
    try:
        config = json.loads(file.read_text(encoding="utf-8")) if file else {}
    except (OSError, ValueError) as exc:
        raise HeadError(f"{file}: cannot read the model's config ({exc})") from exc
    id2label = config.get("id2label") if isinstance(config, dict) else None
    if not isinstance(id2label, dict) or not id2label:
        if need_labels:
            raise HeadError(f"{file}: id2label is missing; a classification model needs its label names by output "
                            'index, e.g. "id2label": {"0": "negative", "1": "neutral", "2": "positive"}')
        return Head(("score",), False)
    try:
        by_index = {int(key): str(value) for key, value in id2label.items()}
    except ValueError:
        raise HeadError(f"{file}: id2label keys must be output indexes (\"0\", \"1\", ...), "
                        f"not {sorted(id2label)}") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise HeadError(f"{file}: id2label must number the outputs 0..{len(by_index) - 1}, not {sorted(by_index)}")
    return Head(tuple(by_index[i] for i in range(len(by_index))), config.get("problem_type") == MULTI_LABEL)


def relevance(logits: npt.NDArray[np.floating], raw: bool = False) -> npt.NDArray[np.float64]:
    """A cross-encoder's [rows, 1] (or [rows, 2]: not relevant / relevant) logits -> one score per row: sigmoid
    (or softmax of the relevant class) in 0..1, as sentence-transformers' CrossEncoder gives; `raw`: the logit."""
    values = np.asarray(logits, np.float64).reshape(len(logits), -1)
    if values.shape[1] == 1:
        return values[:, 0] if raw else sigmoid(values[:, 0])
    return values[:, -1] if raw else softmax(values)[:, -1]


def sigmoid(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    result: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.asarray(values, np.float64)))
    return result


def softmax(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    shifted = np.asarray(values, np.float64) - np.max(values, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


class ScoringModel:
    """Token rows in, the head's logits per row out. Thread-safe for one caller at a time (the batcher)."""

    def __init__(self, sessions: dict[int | None, OpenedSession], encoder: TextEncoder, head: Head,
                 info: RunInfo) -> None:
        """`sessions` maps bucket length -> static session, or holds one dynamic session under None."""
        self.encoder = encoder
        self.head = head
        self.info = info
        self._sessions = BucketedSessions(sessions, encoder.pad_id)
        outputs = self._sessions.first.get_outputs()[0].shape
        width = outputs[-1] if outputs and isinstance(outputs[-1], int) else None
        if width is not None and width != len(head.labels) and len(head.labels) > 1:
            raise HeadError(f"the model has {width} outputs but config.json's id2label names {len(head.labels)}")

    @property
    def buckets(self) -> list[int]:
        return self._sessions.buckets

    def logits(self, rows: Sequence[Tokens]) -> list[Logits]:
        ids = [row.ids for row in rows]
        types = [row.type_ids or [0] * len(row.ids) for row in rows]
        return [row.astype(np.float32, copy=False) for row in self._sessions.run(ids, types, _as_is)]

    def with_max_tokens(self, max_tokens: int) -> ScoringModel:
        return ScoringModel(self._sessions.sessions, TextEncoder(self.encoder.file, max_tokens), self.head, self.info)

    def close(self) -> None:
        self._sessions.sessions = {}


def _as_is(output: npt.NDArray[np.floating], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.floating]:
    return output
