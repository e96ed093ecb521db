"""A tokenizer folder for runtime tests that need real tokenizers without a model."""

from __future__ import annotations

from pathlib import Path

from npuctl.runtime.prompts import PromptTokenizer


def byte_tokenizer(folder: Path) -> PromptTokenizer:
    """A byte-level tokenizer without merges: every UTF-8 byte is a token, so characters split over tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(folder / "tokenizer.json"))
    return PromptTokenizer(folder)
