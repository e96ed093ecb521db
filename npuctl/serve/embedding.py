"""The one embedding use case behind every API's route (OpenAI's /v1/embeddings, Ollama's /api/embed and
/api/embeddings, TEI's /embed): input checked against the caps, tokenized off the event loop when it is large
(`limits.tokenized`), batched, and the vectors given back for the route to shape (as numpy arrays, which the fast
JSON path writes straight from their buffers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request

from npuctl.runtime.embeddings import Embedding
from npuctl.runtime.text import TextEncoder, Tokens
from npuctl.serve.http.body import answered
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.limits import check_rows, check_tokens, tokenized
from npuctl.serve.models import EmbeddingService

Input = str | list[str] | list[int] | list[list[int]]
"""OpenAI's four input forms: a string, strings, a token array, token arrays."""


@dataclass(frozen=True)
class Embedded:
    vectors: list[Embedding]
    tokens: int
    """Input tokens used, after truncation."""


async def embed(request: Request, model: EmbeddingService, value: Input, *, truncate: bool, dimensions: int | None,
                param: str = "input") -> Embedded:
    """The embeddings of `value` (a string, strings, a token array, token arrays). `truncate`: cut an input at the
    model's limit, or refuse it; `dimensions`: what the client asked for, which must be the model's (MiniLM-like
    models are not trained to give shortened vectors)."""
    if dimensions is not None and dimensions != model.model.dimensions:
        raise ApiError(400, f"'dimensions': this model only gives {model.model.dimensions}-dimensional embeddings",
                       param="dimensions")
    tokens = await tokenized(value, input_tokens, model.model.encoder, truncate, param)
    vectors = await answered(request, model.batcher.submit([t.ids for t in tokens]), model.timeout_seconds)
    return Embedded(vectors, sum(len(t.ids) for t in tokens))


def floats(vector: Embedding) -> Embedding:
    """`vector` to be written as JSON numbers by the fast JSON path (orjson, straight from the buffer)."""
    if not np.isfinite(vector).all():
        raise ValueError("the model gave a non-finite embedding")  # JSON has no NaN: a server fault, as before
    return np.ascontiguousarray(vector)


def input_tokens(value: Input, encoder: TextEncoder, truncate: bool, param: str = "input") -> list[Tokens]:
    """Tokens of OpenAI's four input forms (a string, strings, a token array, token arrays; the request model
    checked which), with the per-request caps. Token arrays are the model's complete input ids (special tokens
    included), as the model's tokenizer.json makes them."""
    items: list[Any] = [value] if isinstance(value, str) or is_token_array(value) else value
    check_rows(len(items), f"'{param}'", param=param)
    if all(isinstance(item, str) for item in items):
        tokens = encoder.encode(items)
    else:
        tokens = [_checked_ids(item, i, encoder, param) for i, item in enumerate(items)]
    check_tokens(sum(len(t.ids) for t in tokens), f"'{param}'", param=param)
    if not truncate:
        long = next((i for i, t in enumerate(tokens) if t.truncated), None)
        if long is not None:
            raise ApiError(
                400, f"{param}[{long}] is longer than the model's limit of {encoder.max_tokens} tokens", param=param
            )
    return tokens


def is_token_array(value: Any) -> bool:
    """A non-empty list of integers (not booleans)."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _checked_ids(ids: list[int], index: int, encoder: TextEncoder, param: str) -> Tokens:
    bad = next((t for t in ids if not 0 <= t < encoder.vocab_size), None)
    if bad is not None:
        raise ApiError(400, f"{param}[{index}] has token id {bad}, outside the vocabulary "
                       f"(0..{encoder.vocab_size - 1})", param=param)
    return encoder.clip(ids)
