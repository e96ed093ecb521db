"""The request fields that become a logits processor (npuctl.runtime.penalties): OpenAI's `logit_bias`,
`frequency_penalty` and `presence_penalty`, Ollama's `repeat_penalty`, `repeat_last_n`, `presence_penalty` and
`frequency_penalty` options, checked and refused with 400 naming the field."""

from __future__ import annotations

from typing import Any

from npuctl.runtime.penalties import Penalties
from npuctl.serve.http.errors import ApiError

MAX_LOGIT_BIAS = 1024
"""Entries in one `logit_bias` (each is applied at every step)."""
OLLAMA_WINDOW = 64
"""Ollama's default repeat_last_n."""


def openai_penalties(body: dict[str, Any], vocabulary: int) -> Penalties:
    """`logit_bias` (token ids as strings, as OpenAI's) and the two penalties (-2 to 2), counted over the answer."""
    return Penalties(_logit_bias(body.get("logit_bias"), vocabulary), _number(body, "frequency_penalty", -2, 2),
                     _number(body, "presence_penalty", -2, 2))


def ollama_penalties(options: dict[str, Any]) -> Penalties:
    """Ollama's options, as llama.cpp applies them: over the last `repeat_last_n` tokens of prompt and answer."""
    window = options.get("repeat_last_n")
    if window is None:
        window = OLLAMA_WINDOW
    elif isinstance(window, bool) or not isinstance(window, int) or window < -1:
        raise ApiError(400, f"options.repeat_last_n must be an integer of at least -1 (-1: the whole context, 0: "
                       f"off), not {window!r}")
    repetition = options.get("repeat_penalty")
    if repetition is None:
        repetition = 1.0
    elif isinstance(repetition, bool) or not isinstance(repetition, int | float) or not 0 < repetition <= 10:
        raise ApiError(400, f"options.repeat_penalty must be a number above 0 and at most 10 (1: off), "
                       f"not {repetition!r}")
    return Penalties((), _number(options, "frequency_penalty", -2, 2, "options."),
                     _number(options, "presence_penalty", -2, 2, "options."), float(repetition), window)


def _logit_bias(value: Any, vocabulary: int) -> tuple[tuple[int, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ApiError(400, "'logit_bias' must be an object mapping token ids to numbers from -100 to 100",
                       param="logit_bias")
    if len(value) > MAX_LOGIT_BIAS:
        raise ApiError(400, f"'logit_bias' has {len(value)} entries; the limit is {MAX_LOGIT_BIAS}",
                       param="logit_bias")
    entries = []
    for key, bias in value.items():
        if not key.isdecimal() or not 0 <= int(key) < vocabulary:
            raise ApiError(400, f"'logit_bias' key {key[:40]!r} is not a token id of this model (0..{vocabulary - 1})",
                           param="logit_bias")
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
            raise ApiError(400, f"'logit_bias' value for token {key} must be a number from -100 to 100, "
                           f"not {bias!r}", param="logit_bias")
        entries.append((int(key), float(bias)))
    return tuple(entries)


def _number(body: dict[str, Any], name: str, low: float, high: float, prefix: str = "") -> float:
    value = body.get(name)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        where = f"{prefix}{name}" if prefix else f"'{name}'"
        raise ApiError(400, f"{where} must be a number from {low:g} to {high:g}, not {value!r}",
                       param=None if prefix else name)
    return float(value)
