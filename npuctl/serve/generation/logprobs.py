"""OpenAI's log-probability parameters, checked: chat's `logprobs` (true/false) with `top_logprobs` (0 to 20),
and the legacy completions' `logprobs` (0 to 5 alternatives)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from npuctl.runtime.generation import Step
from npuctl.serve.http.errors import ApiError

Decode = Callable[[Sequence[int]], str]

MAX_CHAT_TOP = 20
MAX_COMPLETION_TOP = 5


def token_entry(step: Step, decode: Decode) -> dict[str, Any]:
    """One token's log probability and its alternatives, in the shape OpenAI's chat and Ollama share."""
    text = decode([step.token])
    top = [{"token": (alt := decode([t])), "logprob": lp, "bytes": list(alt.encode())} for t, lp in step.top]
    return {"token": text, "logprob": step.logprob, "bytes": list(text.encode()), "top_logprobs": top}


def chat_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives per token (None: no log probabilities)."""
    wanted, top = body.get("logprobs", False), body.get("top_logprobs")
    if wanted is None:
        wanted = False
    if not isinstance(wanted, bool):
        raise ApiError(400, "'logprobs' must be true or false", param="logprobs")
    if top is None:
        return 0 if wanted else None
    if not _count(top, MAX_CHAT_TOP):
        raise ApiError(400, f"'top_logprobs' must be an integer from 0 to {MAX_CHAT_TOP}", param="top_logprobs")
    if not wanted:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return int(top)


def completion_logprobs(body: dict[str, Any]) -> int | None:
    top = body.get("logprobs")
    if top is None:
        return None
    if not _count(top, MAX_COMPLETION_TOP):
        raise ApiError(400, f"'logprobs' must be an integer from 0 to {MAX_COMPLETION_TOP}", param="logprobs")
    return int(top)


def _count(value: Any, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most
