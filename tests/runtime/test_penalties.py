"""OpenAI's `logit_bias`, `frequency_penalty` and `presence_penalty` and Ollama's `repeat_penalty` over
`repeat_last_n`, as npuctl's logits processor applies them to the next token's logits (typical_p is in
test_typical.py)."""

from __future__ import annotations

import numpy as np

from npuctl.runtime.penalties import Penalties


def logits(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_logit_bias_adds_to_the_named_tokens_only() -> None:
    row = logits(1, 1, 1, 1)
    Penalties(logit_bias=((1, -100.0), (2, 5.0))).apply(row, prompt=[], generated=[])
    assert row.tolist() == [1, -99, 6, 1]


def test_frequency_and_presence_count_the_answer_not_the_prompt() -> None:
    # OpenAI's penalties (as vLLM counts them): token 1 twice in the answer, token 2 once, token 3 only in the prompt.
    row = logits(0, 0, 0, 0)
    Penalties(frequency=0.5, presence=1.0).apply(row, prompt=[3, 3], generated=[1, 1, 2])
    assert row.tolist() == [0, -2.0, -1.5, 0]


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits_within_the_window() -> None:
    prompt, generated = [0, 1], [2]
    row = logits(4, 4, -4, 4)
    Penalties(repetition=2.0, window=2).apply(row, prompt, generated)  # the last two: tokens 1 and 2
    assert row.tolist() == [4, 2, -8, 4]
    whole = logits(4, 4, -4, 4)
    Penalties(repetition=2.0, window=-1).apply(whole, prompt, generated)  # -1: the whole context
    assert whole.tolist() == [2, 2, -8, 4]
    none = logits(4, 4, -4, 4)
    Penalties(repetition=2.0, window=0).apply(none, prompt, generated)  # 0: Ollama's "disabled"
    assert none.tolist() == [4, 4, -4, 4]


def test_tokens_outside_the_vocabulary_are_not_counted() -> None:
    # A context may hold ids the logits row does not cover (added special tokens): nothing fails, nothing moves.
    row = logits(1, 1, 1)
    Penalties(presence=1.0).apply(row, prompt=[], generated=[7, -1, 2])
    assert row.tolist() == [1, 1, 0]


def test_only_penalties_that_change_something_are_active() -> None:
    assert not Penalties().active and not Penalties(window=64).active
    assert all(p.active for p in (Penalties(logit_bias=((0, 1.0),)), Penalties(frequency=0.1),
                                  Penalties(presence=-0.1), Penalties(repetition=1.1), Penalties(typical_p=0.9)))
