"""The request fields that become a logits processor (npuctl.runtime.penalties): OpenAI's `logit_bias`,
`frequency_penalty` and `presence_penalty`, Ollama's `repeat_penalty`, `repeat_last_n`, `presence_penalty` and
`frequency_penalty` options. Their ranges are the request models'; what needs the model (a token id within its
vocabulary) is checked here, with a 400 naming the field."""

from __future__ import annotations

from collections.abc import Mapping

from npuctl.runtime.penalties import Penalties
from npuctl.serve.http.errors import ApiError

MAX_LOGIT_BIAS = 1024
"""Entries in one `logit_bias` (each is applied at every step)."""
OLLAMA_WINDOW = 64
"""Ollama's default repeat_last_n."""


def openai_penalties(logit_bias: Mapping[str, float] | None, frequency: float | None, presence: float | None,
                     vocabulary: int) -> Penalties:
    """`logit_bias` (token ids as strings, as OpenAI's) and the two penalties, counted over the answer."""
    return Penalties(_logit_bias(logit_bias or {}, vocabulary), frequency or 0.0, presence or 0.0)


def ollama_penalties(repeat_penalty: float | None, repeat_last_n: int | None, frequency: float | None,
                     presence: float | None) -> Penalties:
    """Ollama's options, as llama.cpp applies them: over the last `repeat_last_n` tokens of prompt and answer."""
    window = OLLAMA_WINDOW if repeat_last_n is None else repeat_last_n
    repetition = 1.0 if repeat_penalty is None else repeat_penalty
    return Penalties((), frequency or 0.0, presence or 0.0, repetition, window)


def _logit_bias(biases: Mapping[str, float], vocabulary: int) -> tuple[tuple[int, float], ...]:
    for key in biases:
        if not key.isdecimal() or not 0 <= int(key) < vocabulary:
            raise ApiError(400, f"'logit_bias' key {key[:40]!r} is not a token id of this model (0..{vocabulary - 1})",
                           param="logit_bias")
    return tuple((int(key), float(bias)) for key, bias in biases.items())
