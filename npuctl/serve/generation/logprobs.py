"""Log probabilities: how many alternatives chat's `logprobs` and `top_logprobs` ask for (their ranges are the
request models'; the legacy completions' `logprobs` is a count already), and each token's entry in the answer."""

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


def chat_logprobs(wanted: bool | None, top: int | None) -> int | None:
    """How many alternatives per token (None: no log probabilities); `top` needs `wanted`."""
    if top is None:
        return 0 if wanted else None
    if not wanted:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return top
