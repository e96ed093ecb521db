"""A logits processor: OpenAI's `logit_bias`, `frequency_penalty` and `presence_penalty`, and Ollama's (llama.cpp's)
`repeat_penalty` over its `repeat_last_n` window, applied to the next token's logits before the grammar's mask
and the sampler's choice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Penalties:
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, value added to its logit); -100 bans a token, 100 all but forces it, as OpenAI's."""
    frequency: float = 0.0
    """Subtracted from a token's logit once per time it already appears."""
    presence: float = 0.0
    """Subtracted from a token's logit when it already appears at all."""
    repetition: float = 1.0
    """llama.cpp's repeat penalty: a token that already appears has a positive logit divided by this, a negative one
    multiplied by it."""
    window: int | None = None
    """Which tokens "already appear": None, those generated so far (OpenAI's penalties, as vLLM counts them); N, the
    last N of the prompt and the answer together (Ollama's repeat_last_n; -1 the whole context)."""

    @property
    def active(self) -> bool:
        return bool(self.logit_bias) or self.frequency != 0 or self.presence != 0 or self.repetition != 1

    def apply(self, logits: npt.NDArray[np.floating], prompt: Sequence[int], generated: Sequence[int]) -> None:
        """Change `logits` (the next token's, one row over the vocabulary) in place."""
        for token, bias in self.logit_bias:
            logits[token] += bias
        seen = self._seen(prompt, generated)
        if not seen:
            return
        counts = Counter(token for token in seen if 0 <= token < len(logits))
        ids = np.fromiter(counts, dtype=np.int64, count=len(counts))
        if self.repetition != 1:
            values = logits[ids]
            logits[ids] = np.where(values > 0, values / self.repetition, values * self.repetition)
        if self.frequency or self.presence:
            times = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            logits[ids] -= (times * self.frequency + self.presence).astype(logits.dtype)

    def _seen(self, prompt: Sequence[int], generated: Sequence[int]) -> Sequence[int]:
        if self.window is None:
            return generated
        if self.window == 0:
            return ()
        everything = [*prompt, *generated]
        return everything if self.window < 0 else everything[-self.window:]
