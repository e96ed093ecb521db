"""A tiny T5 made on the spot (no download): a Unigram tokenizer trained on a few sentences (pad 0, </s> 1, unk 2,
</s> appended as T5's tokenizer does), a 2-layer gated-GELU T5Config (Flan-T5's layout, d_model 32), trained a few
steps to answer a few prompts, so greedy tokens are not one repeated token. It is also taught an answer (the
sentence's last word) to the held-out sentences a build verifies on: untaught, its greedy choices there are near ties
(logit gaps ~0.15) that fp16 on another CPU may flip, and verify demands identical answers."""

from __future__ import annotations

from pathlib import Path

PAIRS = {
    "translate English to German: hello world": "hallo welt",
    "translate English to German: good morning": "guten morgen",
    "question: what is the capital of France": "Paris",
    "summarize: the train to Berlin leaves from platform nine at noon": "train leaves at noon",
    "sentiment: I love this wonderful laptop": "positive",
    "sentiment: the service was awful and slow": "negative",
}



def _taught() -> dict[str, str]:
    from npuctl.artifacts.inputs import HELD_OUT_CORPUS

    return PAIRS | {text: text.rstrip(".?!").split()[-1].lower() for text in HELD_OUT_CORPUS[:8]}


def make_tiny_t5(folder: Path, steps: int = 120) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    taught = _taught()
    corpus = [*taught, *taught.values()]
    tokenizer.train_from_iterator(corpus * 5, trainers.UnigramTrainer(vocab_size=160, special_tokens=["<pad>", "</s>", "<unk>"],
                                                                      unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: the same weights on every run (parallel sums round differently)
    config = T5Config(vocab_size=tokenizer.get_vocab_size(), d_model=32, d_ff=64, d_kv=16, num_layers=2,
                      num_decoder_layers=2, num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0)
    model = T5ForConditionalGeneration(config)
    inputs = fast(list(taught), padding=True, return_tensors="pt")
    labels = fast(list(taught.values()), padding=True, return_tensors="pt").input_ids
    labels[labels == 0] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    return folder
