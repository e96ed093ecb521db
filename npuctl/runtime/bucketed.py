"""BERT-style encoder sessions run on token rows: one dynamic-shape session (CPU) padding each batch to its longest
row, or one static-shape session per sequence bucket (NPU), each row going to the smallest bucket it fits and the
rows of a bucket grouped to the graph's static batch size. Shared by embeddings, rerankers and classifiers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from npuctl.runtime.sessions import OpenedSession

Rows = Sequence[Sequence[int]]
IntArray = npt.NDArray[np.int64]
Post = Callable[[npt.NDArray[np.floating], IntArray], npt.NDArray[np.floating]]
"""(first output of a batch, its attention mask) -> one result row per input row."""

_INT_TYPES: dict[str, type[np.integer]] = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class BucketedSessions:
    def __init__(self, sessions: dict[int | None, OpenedSession], pad_id: int) -> None:
        """`sessions` maps bucket length -> static session, or holds one dynamic session under None."""
        self.sessions = dict(sorted(sessions.items(), key=lambda kv: kv[0] or 0))
        self.pad_id = pad_id
        first = self.first
        self._feeds = _feed_layout(first.get_inputs())
        self.static_batch = _static_batch(first.get_inputs()[0].shape)

    @property
    def first(self) -> ort.InferenceSession:
        return next(iter(self.sessions.values())).session

    @property
    def buckets(self) -> list[int]:
        """The static sequence lengths, smallest first (empty when serving the dynamic model)."""
        return [length for length in self.sessions if length is not None]

    def run(self, ids: Rows, type_ids: Rows | None, post: Post) -> list[npt.NDArray[np.floating]]:
        """`post` applied to each batch, one result per row, in the rows' order. `type_ids` (segment ids of
        sentence pairs) default to zeros."""
        if None in self.sessions:
            return list(self._run(self.sessions[None], ids, type_ids, max(len(r) for r in ids), post))
        out: list[npt.NDArray[np.floating] | None] = [None] * len(ids)
        by_bucket: dict[int, list[int]] = {}
        for index, row in enumerate(ids):
            by_bucket.setdefault(self._bucket(len(row)), []).append(index)
        for length, indexes in by_bucket.items():
            step = self.static_batch or len(indexes)
            for start in range(0, len(indexes), step):
                chunk = indexes[start : start + step]
                types = [type_ids[i] for i in chunk] if type_ids is not None else None
                results = self._run(self.sessions[length], [ids[i] for i in chunk], types, length, post)
                for i, result in zip(chunk, results):
                    out[i] = result
        return [result for result in out if result is not None]

    def _bucket(self, tokens: int) -> int:
        # The encoder cuts inputs to the largest bucket, so one always fits.
        return next(length for length in self.sessions if length is not None and length >= tokens)

    def feeds(self, rows: Rows, type_rows: Rows | None, length: int
              ) -> tuple[dict[str, npt.NDArray[np.integer]], IntArray]:
        """What a session gets for `rows`: padded to `length` and to the graph's static batch; and their mask."""
        batch = max(len(rows), self.static_batch or 0)
        ids = np.full((batch, length), self.pad_id, dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.int64)
        types = np.zeros((batch, length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
            if type_rows is not None:
                types[i, : len(type_rows[i])] = type_rows[i]
        values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: values[role].astype(dtype, copy=False) for name, (role, dtype) in self._feeds.items()}, mask

    def _run(self, opened: OpenedSession, rows: Rows, type_rows: Rows | None, length: int,
             post: Post) -> npt.NDArray[np.floating]:
        feeds, mask = self.feeds(rows, type_rows, length)
        return post(opened.session.run(None, feeds)[0], mask)[: len(rows)]


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
