"""Per-request caps that hold on every API, so one request within the body limit cannot hold a model for
long: rows (embeddings inputs, OIP text elements or tensor batch rows, chat messages) and tokens; and where
tokenizing a request runs, by its size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from npuctl.serve.http.errors import ApiError

T = TypeVar("T")

MAX_ROWS = 2048
"""Rows per request: OpenAI's limit on embeddings inputs, applied to every API."""
MAX_REQUEST_TOKENS = 300_000
"""Tokens per embeddings request, summed over its inputs after truncation (OpenAI's limit)."""
INLINE_INPUT = 2048
"""Input up to this many characters (or token ids) is tokenized on the event loop: a sentence takes 20–35 µs
there, and a hand-off to a thread and back cost more than that (c16 +14%, c64 +10% requests/s measured)."""


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


async def tokenized(value: Any, tokenize: Callable[..., T], *args: Any) -> T:
    """`tokenize(value, *args)`: on the event loop when `value` is short, else in a thread, so a request of
    megabytes (a second of tokenizing) does not hold up everyone else."""
    return tokenize(value, *args) if _is_short(value) else await run_in_threadpool(tokenize, value, *args)


def _is_short(value: Any) -> bool:
    """Whether `value` (a text, token ids, or a list of them) holds at most INLINE_INPUT characters or ids;
    anything else in a list counts as one."""
    items = value if isinstance(value, list) else [value]
    return len(items) <= INLINE_INPUT and sum(len(v) if isinstance(v, str | list) else 1 for v in items) <= INLINE_INPUT
