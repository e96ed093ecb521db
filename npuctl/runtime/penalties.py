"""A logits processor: OpenAI's `logit_bias`, `frequency_penalty` and `presence_penalty`, Ollama's (llama.cpp's)
`repeat_penalty` over its `repeat_last_n` window, and TGI's `typical_p` (typical sampling), applied to the next
token's logits before the grammar's mask and the sampler's choice."""

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
    typical_p: float = 1.0
    """Typical sampling (Meister et al., 2022; TGI's and transformers' `typical_p`): only the tokens whose surprise
    is closest to the distribution's entropy, adding up to this probability mass, may be drawn (1: all)."""
    temperature: float = 1.0
    """The sampler's temperature: the typical set is chosen on the distribution drawn from, as TGI's warpers do."""

    @property
    def active(self) -> bool:
        return (bool(self.logit_bias) or self.frequency != 0 or self.presence != 0 or self.repetition != 1
                or self.typical_p < 1)

    def apply(self, logits: npt.NDArray[np.floating], prompt: Sequence[int], generated: Sequence[int]) -> None:
        """Change `logits` (the next token's, one row over the vocabulary) in place."""
        for token, bias in self.logit_bias:
            logits[token] += bias
        self._penalise(logits, self._seen(prompt, generated))
        if self.typical_p < 1:
            _keep_typical(logits, self.typical_p, self.temperature)

    def _penalise(self, logits: npt.NDArray[np.floating], seen: Sequence[int]) -> None:
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


def _keep_typical(logits: npt.NDArray[np.floating], mass: float, temperature: float) -> None:
    """Ban (-inf) every token outside the typical set, as transformers' TypicalLogitsWarper (at least one is kept)."""
    scores = logits.astype(np.float64) / (temperature or 1.0)
    scores -= scores.max()
    logp = scores - np.log(np.exp(scores).sum())
    p = np.exp(logp)
    entropy = -np.sum(np.where(p > 0, p * logp, 0.0))
    shifted = np.abs(-logp - entropy)
    order = np.argsort(shifted, kind="stable")
    last = min(int((np.cumsum(p[order]) < mass).sum()), len(order) - 1)
    logits[shifted > shifted[order[last]]] = -np.inf
