"""Sentence embeddings from token ids: BERT-style ONNX sessions, then pooling and normalization.

On the CPU one dynamic-shape session runs each batch padded only to its longest input. On the NPU
every sequence bucket has its own static-shape session; each input goes to the smallest bucket it
fits, padded to that length and, in groups, to the graph's static batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from npuctl.runtime.pooling import PoolingConfig, pool
from npuctl.runtime.sessions import OpenedSession, RunInfo
from npuctl.runtime.text import TextEncoder

Embedding = npt.NDArray[np.float32]

_INT_TYPES: dict[str, type[np.integer]] = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class EmbeddingModel:
    """Token ids in, one embedding per input out. Thread-safe for one caller at a time (the batcher)."""

    def __init__(
        self,
        sessions: dict[int | None, OpenedSession],
        encoder: TextEncoder,
        pooling: PoolingConfig,
        info: RunInfo,
    ) -> None:
        """`sessions` maps bucket length -> static session, or holds one dynamic session under None."""
        self.encoder = encoder
        self.pooling = pooling
        self.info = info
        self._sessions = dict(sorted(sessions.items(), key=lambda kv: kv[0] or 0))
        first = next(iter(self._sessions.values())).session
        self._feeds = _feed_layout(first.get_inputs())
        self._static_batch = _static_batch(first.get_inputs()[0].shape)
        self.dimensions = _dimensions(first.get_outputs()[0].shape) or len(self.embed([[encoder.pad_id]])[0])

    @property
    def buckets(self) -> list[int]:
        """The static sequence lengths, smallest first (empty when serving the dynamic model)."""
        return [length for length in self._sessions if length is not None]

    def embed(self, rows: Sequence[Sequence[int]]) -> list[Embedding]:
        if None in self._sessions:
            return list(self._run(self._sessions[None], rows, max(len(r) for r in rows)))
        out: list[Embedding | None] = [None] * len(rows)
        by_bucket: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            by_bucket.setdefault(self._bucket(len(row)), []).append(index)
        for length, indexes in by_bucket.items():
            step = self._static_batch or len(indexes)
            for start in range(0, len(indexes), step):
                chunk = indexes[start : start + step]
                vectors = self._run(self._sessions[length], [rows[i] for i in chunk], length)
                for i, vector in zip(chunk, vectors):
                    out[i] = vector
        return [vector for vector in out if vector is not None]

    def with_max_tokens(self, max_tokens: int) -> EmbeddingModel:
        """The same sessions behind an encoder with another input limit."""
        encoder = TextEncoder(self.encoder.file, max_tokens)
        return EmbeddingModel(self._sessions, encoder, self.pooling, self.info)

    def close(self) -> None:
        """Drop this model's hold on its sessions: released now unless another model shares them."""
        self._sessions = {}

    def _bucket(self, tokens: int) -> int:
        # The encoder cuts inputs to the largest bucket, so one always fits.
        return next(length for length in self._sessions if length is not None and length >= tokens)

    def session(self, length: int | None) -> ort.InferenceSession:
        """The session of a bucket (None: the dynamic model's)."""
        return self._sessions[length].session

    def feeds(self, rows: Sequence[Sequence[int]], length: int) -> tuple[dict[str, npt.NDArray[np.integer]], npt.NDArray[np.int64]]:
        """What a session gets for `rows`: padded to `length` and to the graph's static batch; and their mask."""
        batch = max(len(rows), self._static_batch or 0)
        ids = np.full((batch, length), self.encoder.pad_id, dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {name: values[role].astype(dtype, copy=False) for name, (role, dtype) in self._feeds.items()}, mask

    def _run(self, opened: OpenedSession, rows: Sequence[Sequence[int]], length: int) -> Embedding:
        feeds, mask = self.feeds(rows, length)
        hidden = opened.session.run(None, feeds)[0]
        return pool(hidden, mask, self.pooling)[: len(rows)].astype(np.float32, copy=False)


def _feed_layout(inputs: Sequence[ort.NodeArg]) -> dict[str, tuple[str, type[np.integer]]]:
    """Input name -> (role, dtype): which of ids / mask / token types each graph input is."""
    layout: dict[str, tuple[str, type[np.integer]]] = {}
    for node in inputs:
        role = next((r for r in ("attention_mask", "token_type_ids", "input_ids") if r in node.name), None)
        if role is None:
            raise ValueError(f"graph input {node.name!r} is none of input_ids, attention_mask, token_type_ids")
        layout[node.name] = (role, _INT_TYPES.get(node.type, np.int64))
    return layout


def _static_batch(shape: Sequence[object]) -> int | None:
    return shape[0] if shape and isinstance(shape[0], int) else None


def _dimensions(shape: Sequence[object]) -> int | None:
    return shape[-1] if shape and isinstance(shape[-1], int) else None
