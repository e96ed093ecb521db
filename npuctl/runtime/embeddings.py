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

from npuctl.runtime.bucketed import BucketedSessions
from npuctl.runtime.pooling import PoolingConfig, pool
from npuctl.runtime.sessions import OpenedSession, RunInfo
from npuctl.runtime.text import TextEncoder

Embedding = npt.NDArray[np.float32]


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
        self._sessions = BucketedSessions(sessions, encoder.pad_id)
        self.dimensions = _dimensions(self._sessions.first.get_outputs()[0].shape) or len(self.embed([[encoder.pad_id]])[0])

    @property
    def buckets(self) -> list[int]:
        """The static sequence lengths, smallest first (empty when serving the dynamic model)."""
        return self._sessions.buckets

    def embed(self, rows: Sequence[Sequence[int]]) -> list[Embedding]:
        return [vector.astype(np.float32, copy=False) for vector in self._sessions.run(rows, None, self._pool)]

    def with_max_tokens(self, max_tokens: int) -> EmbeddingModel:
        """The same sessions behind an encoder with another input limit."""
        encoder = TextEncoder(self.encoder.file, max_tokens)
        return EmbeddingModel(self._sessions.sessions, encoder, self.pooling, self.info)

    def close(self) -> None:
        """Drop this model's hold on its sessions: released now unless another model shares them."""
        self._sessions.sessions = {}

    def session(self, length: int | None) -> ort.InferenceSession:
        """The session of a bucket (None: the dynamic model's)."""
        return self._sessions.sessions[length].session

    def feeds(self, rows: Sequence[Sequence[int]], length: int) -> tuple[dict[str, npt.NDArray[np.integer]], npt.NDArray[np.int64]]:
        """What a session gets for `rows`: padded to `length` and to the graph's static batch; and their mask."""
        return self._sessions.feeds(rows, None, length)

    def _pool(self, hidden: npt.NDArray[np.floating], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.floating]:
        return pool(hidden, mask, self.pooling)


def _dimensions(shape: Sequence[object]) -> int | None:
    return shape[-1] if shape and isinstance(shape[-1], int) else None
