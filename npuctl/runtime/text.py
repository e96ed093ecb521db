"""Text to token ids with the model's own tokenizer.json, cut to the longest input a deployment accepts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


@dataclass(frozen=True)
class Tokens:
    ids: list[int]
    truncated: bool
    """The input was longer than the limit and lost its tail."""
    type_ids: list[int] | None = None
    """Segment ids of a sentence pair (0 for the first text, 1 for the second); None for a single text."""


class TextEncoder:
    """Tokenizes inputs the way the model was trained (special tokens included), never padding:
    padding is the runtime's job, per batch or per bucket."""

    def __init__(self, tokenizer_file: Path, max_tokens: int) -> None:
        self.file = tokenizer_file
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        padding = self._tokenizer.padding
        self.pad_id: int = padding["pad_id"] if padding else (self._tokenizer.token_to_id("[PAD]") or 0)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_tokens)
        self.max_tokens = max_tokens
        self.vocab_size = self._tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> list[Tokens]:
        # The fast variant skips character offsets, which nothing here reads: a third of the cost.
        return [Tokens(e.ids, bool(e.overflowing)) for e in self._tokenizer.encode_batch_fast(list(texts))]

    def encode_pairs(self, first: str, seconds: Sequence[str]) -> list[Tokens]:
        """(first, second) pairs as one input each, as cross-encoders take them; the longer text loses its tail
        first (transformers' longest_first truncation)."""
        encodings = self._tokenizer.encode_batch([(first, second) for second in seconds])
        return [Tokens(e.ids, bool(e.overflowing), e.type_ids) for e in encodings]

    def clip(self, ids: Sequence[int]) -> Tokens:
        """Token ids given by a client, cut like text would be."""
        return Tokens(list(ids[: self.max_tokens]), len(ids) > self.max_tokens)
