"""Tiny chat models made on the spot (no download): a byte-level BPE tokenizer trained on a few sentences,
a 2-layer Llama, Qwen2 or Phi-3 config with hidden size 64, and a chat template. `make_tiny_llama` keeps random
weights; `make_tiny_decoder(..., train_steps=N)` trains the model briefly on npuctl's built-in calibration and
held-out sentences, so that its next-token predictions are peaked on them (a random model's are near-flat,
and quantization noise flips its argmax: same greedy tokens would mean nothing)."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, how are you today? I am a tiny model running on a laptop.",
    "Snapdragon PCs have a Hexagon NPU; npuctl serves models on it.",
    "Ünïcödé characters — and emoji 🙂 — must survive streaming.",
]
CONTEXT_LENGTH = 8192


def make_tiny_llama(folder: Path) -> Path:
    """Write the transformers folder (config, safetensors, tokenizer, chat template) into `folder`."""
    return make_tiny_decoder(folder)


def make_tiny_decoder(folder: Path, architecture: str = "llama", train_steps: int = 0,
                      context_length: int = CONTEXT_LENGTH) -> Path:
    """A tiny `llama`, `qwen2` or `phi3` checkpoint in `folder`; trained for `train_steps` full-corpus steps."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    taught = CORPUS + training_sentences() if train_steps else CORPUS
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(taught * 5, trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    shape = dict(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context_length,
        bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False,
    )
    if architecture == "phi3":  # fused qkv_proj and gate_up_proj, another attention layout
        from transformers import Phi3Config, Phi3ForCausalLM

        model = Phi3ForCausalLM(Phi3Config(**shape, pad_token_id=eos, original_max_position_embeddings=context_length))
    else:
        model = (LlamaForCausalLM(LlamaConfig(**shape)) if architecture == "llama"
                 else Qwen2ForCausalLM(Qwen2Config(**shape)))
    if train_steps:
        _train(model, [tokenizer.encode(s).ids + [eos] for s in taught], eos, train_steps)
    model.save_pretrained(folder)
    return folder


TRAINED_HELD_OUT = 4
"""The trained models learn the first held-out sentences npuctl checks generation with (a build of them sets
spec.accuracy.samples to this): only so many, so that training takes seconds."""


def training_sentences() -> list[str]:
    """What the trained models learn besides CORPUS."""
    from npuctl.artifacts.inputs import HELD_OUT_CORPUS

    return list(HELD_OUT_CORPUS[:TRAINED_HELD_OUT])


def _train(model: object, rows: list[list[int]], pad: int, steps: int) -> None:
    import torch

    batch = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True, padding_value=pad)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(r), dtype=torch.int64) for r in rows], batch_first=True)
    labels = batch.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)  # type: ignore[attr-defined]
    model.train()  # type: ignore[attr-defined]
    for _ in range(steps):
        loss = model(input_ids=batch, attention_mask=mask, labels=labels).loss  # type: ignore[operator]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()  # type: ignore[attr-defined]
