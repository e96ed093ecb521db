"""Tiny BERT sequence-classification models made on the spot (no download): a WordPiece tokenizer over the words of a
few sentences, a 2-layer BertConfig with hidden size 32, trained a few steps so that scores are not flat — a
cross-encoder (one relevance logit) and a 3-label sentiment classifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

QUERIES = {
    "how do I reset my password": ["Open settings and choose reset password to get a new password by email.",
                                   "Forgot your password? Use the reset link on the sign in page."],
    "when does the train to berlin leave": ["The train to Berlin leaves from platform nine at noon.",
                                            "Trains to Berlin depart every hour from the central station."],
    "what is the capital of australia": ["Canberra is the capital city of Australia.",
                                         "The Australian capital is Canberra, not Sydney."],
}
SENTIMENT = {
    "negative": ["This is terrible and I hate it.", "The service was awful and slow.", "A bad, broken product."],
    "neutral": ["The meeting is on Thursday.", "The box contains three items.", "It is a laptop with a fan."],
    "positive": ["I love this, it is wonderful.", "Great service and a fantastic team.", "An excellent, happy day."],
}
LABELS = ["negative", "neutral", "positive"]


def make_cross_encoder(folder: Path, steps: int = 60) -> Path:
    """A BertForSequenceClassification with num_labels=1, trained to score (query, relevant document) above
    (query, another query's document)."""
    import torch

    pairs, targets = [], []
    for query, relevant in QUERIES.items():
        for other, documents in QUERIES.items():
            for document in documents:
                pairs.append((query, document))
                targets.append(1.0 if other == query else 0.0)
    corpus = [q for q in QUERIES] + [d for ds in QUERIES.values() for d in ds]
    tokenizer, model = _model(folder, corpus, num_labels=1)
    batch = tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    labels = torch.tensor(targets).unsqueeze(1)
    _train(model, batch, lambda logits: torch.nn.functional.binary_cross_entropy_with_logits(logits, labels), steps)
    model.save_pretrained(folder)
    return folder


def make_classifier(folder: Path, steps: int = 100) -> Path:
    """A 3-label (negative, neutral, positive) BertForSequenceClassification, trained on a few sentences."""
    import torch

    texts = [t for label in LABELS for t in SENTIMENT[label]]
    targets = torch.tensor([LABELS.index(label) for label in LABELS for _ in SENTIMENT[label]])
    tokenizer, model = _model(folder, texts, num_labels=3)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    _train(model, batch, lambda logits: torch.nn.functional.cross_entropy(logits, targets), steps)
    model.save_pretrained(folder)
    return folder


def without_labels(classifier: Path, out: Path) -> Path:
    """A copy of a classifier whose config.json lost its label names (id2label, label2id)."""
    shutil.copytree(classifier, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    config.pop("id2label", None)
    config.pop("label2id", None)
    (out / "config.json").write_text(json.dumps(config))
    return out


def _model(folder: Path, corpus: list[str], num_labels: int):  # type: ignore[no-untyped-def]
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # A vocabulary written out, not trained: tokenizers' trainers break frequency ties differently from run to run,
    # and a model trained on other token ids quantizes differently.
    pre = pre_tokenizers.BertPreTokenizer()
    words = sorted({w for text in corpus for w, _ in pre.pre_tokenize_str(text.lower())})
    letters = sorted({c for w in words for c in w})
    tokens = dict.fromkeys([*specials, *words, *letters, *(f"##{c}" for c in letters)])  # in order, once each
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: the same weights on every run (parallel sums round differently)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                        id2label={i: label for i, label in enumerate(LABELS)} if num_labels == 3 else None,
                        label2id={label: i for i, label in enumerate(LABELS)} if num_labels == 3 else None)
    return fast, BertForSequenceClassification(config)


def _train(model, batch, loss_of, steps: int) -> None:  # type: ignore[no-untyped-def]
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(model(**batch).logits).backward()
        optimizer.step()
    model.eval()
