"""Per-request caps that hold on every API, so one request within the body limit cannot hold a model for
long: rows (embeddings inputs, OIP text elements or tensor batch rows, chat messages) and tokens."""

from __future__ import annotations

from npuctl.serve.errors import ApiError

MAX_ROWS = 2048
"""Rows per request: OpenAI's limit on embeddings inputs, applied to every API."""
MAX_REQUEST_TOKENS = 300_000
"""Tokens per embeddings request, summed over its inputs after truncation (OpenAI's limit)."""


def check_rows(count: int, what: str, param: str | None = None) -> None:
    """400 unless 1 <= count <= MAX_ROWS."""
    if count < 1:
        raise ApiError(400, f"{what} is empty; send at least one", param=param)
    if count > MAX_ROWS:
        raise ApiError(400, f"{what} holds {count} rows; at most {MAX_ROWS} are allowed per request "
                       "(split it into several requests)", param=param)


def check_tokens(count: int, what: str, param: str | None = None) -> None:
    if count > MAX_REQUEST_TOKENS:
        raise ApiError(400, f"{what} holds {count} tokens in all; at most {MAX_REQUEST_TOKENS} are allowed per "
                       "request (split it into several requests)", param=param)
