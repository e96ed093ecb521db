"""Model inputs for calibration and accuracy checks: texts (the manifest's or a built-in corpus) or seeded tensors."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.graphs import InputSpec
from npuctl.schema.models import Calibration, DeploymentSpec, Task

Feed = dict[str, np.ndarray[Any, Any]]
Text = str | tuple[str, str]
"""One text, or a (query, document) pair for a cross-encoder."""
TEXT_TASKS = (Task.EMBEDDINGS, Task.RERANK, Task.CLASSIFICATION, Task.TEXT2TEXT_GENERATION)
"""Tasks whose models take tokenized text: calibrated and verified on sentences, not random tensors."""

CALIBRATION_SEED, HELD_OUT_SEED = 0, 1

CALIBRATION_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "How do I reset my password if I forgot my email address?",
    "Neural processing units accelerate on-device inference.",
    "The meeting has been moved to Thursday afternoon.",
    "She ordered a large coffee with oat milk and no sugar.",
    "Quarterly revenue grew by twelve percent year over year.",
    "Please attach the signed contract before Friday.",
    "The patient reported mild headaches after the new medication.",
    "Rain is expected across the northern region tonight.",
    "Install the driver, then restart the computer.",
    "Our team won the championship after a dramatic final.",
    "The recipe calls for two cups of flour and three eggs.",
    "Photosynthesis converts light energy into chemical energy.",
    "What is the capital city of Australia?",
    "The library extends its opening hours during exam season.",
    "Battery life improved significantly with the latest update.",
    "He translated the novel from Portuguese into English.",
    "Stock markets fell sharply after the announcement.",
    "The museum displays paintings from the eighteenth century.",
    "Can you recommend a good hotel near the airport?",
    "The function returns an empty list when no match is found.",
    "Migrating birds travel thousands of kilometres each year.",
    "Customer support is available twenty-four hours a day.",
    "The court ruled in favour of the defendant.",
    "Vaccines train the immune system to recognise pathogens.",
    "The train to Berlin departs from platform nine.",
    "Our quarterly security audit found no critical issues.",
    "Children learn languages faster than adults.",
    "Turn left at the second traffic light.",
    "The telescope captured images of a distant galaxy.",
    "Sales of electric vehicles doubled last year.",
)
"""The built-in calibration inputs: short, varied English sentences."""

HELD_OUT_CORPUS = (
    "Where is the nearest train station?",
    "I love eating pizza on Friday evenings.",
    "The spacecraft entered orbit around Mars.",
    "Interest rates remain unchanged this quarter.",
    "My laptop fan is making a strange noise.",
    "The orchestra performed Beethoven's ninth symphony.",
    "Drink plenty of water during hot weather.",
    "The software update fixes several security vulnerabilities.",
    "A cat is sleeping on the warm windowsill.",
    "Volunteers planted three hundred trees in the park.",
    "The invoice is overdue by two weeks.",
    "Earthquakes are measured on the moment magnitude scale.",
    "He forgot his umbrella at the restaurant.",
    "The new bridge will reduce traffic in the city centre.",
    "Sleep is essential for memory consolidation.",
    "The committee approved the budget for next year.",
)
"""Accuracy is measured on these: never used for calibration (checked against the calibration set)."""


def calibration_texts(calibration: Calibration, base_dir: Path) -> list[str]:
    texts = list(calibration.texts)
    if calibration.file:
        file = (base_dir / calibration.file).resolve()
        try:
            texts += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise BuildError("quantize", f"calibration file {file}: {exc.strerror or exc}") from exc
    return (texts or list(CALIBRATION_CORPUS))[: calibration.samples]


def held_out_texts(samples: int, calibration: Sequence[str]) -> list[str]:
    used = set(calibration)
    return [t for t in HELD_OUT_CORPUS if t not in used][:samples]


def text_feeds(tokenizer_file: Path, specs: Sequence[InputSpec], texts: Sequence[Text]) -> list[Feed]:
    """Tokenize into feeds of the static model's inputs (input_ids, attention_mask, token_type_ids), padded to
    its sequence length. The last batch is filled up by repeating its first text."""
    from tokenizers import Tokenizer

    if not tokenizer_file.is_file():
        raise BuildError("quantize", f"{tokenizer_file} not found: an embeddings model needs a tokenizer.json "
                         "(set spec.model.tokenizer)")
    by_name = {spec.name: spec for spec in specs}
    batch, length = by_name["input_ids"].shape[:2] if "input_ids" in by_name else (0, 0)
    if not (isinstance(batch, int) and isinstance(length, int) and batch > 0 and length > 0):
        raise BuildError("quantize", "text inputs need a static input_ids input [batch, sequence]")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(length=length)
    feeds = []
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        chunk += [chunk[0]] * (batch - len(chunk))
        encodings = tokenizer.encode_batch(chunk)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feed: Feed = {}
        for spec in specs:
            if spec.name not in columns:
                raise BuildError("quantize", f"input {spec.name!r} can't be made from text "
                                 "(known: input_ids, attention_mask, token_type_ids); use task: tensor")
            feed[spec.name] = np.asarray(columns[spec.name], dtype=spec.dtype)
        feeds.append(feed)
    return feeds


def random_feeds(specs: Sequence[InputSpec], count: int, seed: int) -> list[Feed]:
    """Seeded inputs for tensor models: standard normal floats, 0/1 integers."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed: Feed = {}
        for spec in specs:
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            if np.issubdtype(spec.dtype, np.floating):
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            else:
                feed[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
        feeds.append(feed)
    return feeds


def feeds_digest(feeds: Sequence[Feed]) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def calibration_texts_for(spec: DeploymentSpec, base_dir: Path) -> list[str]:
    """The texts a text model is calibrated on; none for tensor models (seeded random inputs)."""
    if spec.model.task not in TEXT_TASKS:
        if spec.calibration.texts or spec.calibration.file:
            raise BuildError("quantize", "calibration texts need a text task (embeddings, rerank, classification, "
                             "text2text-generation); tensor models are calibrated with seeded random inputs")
        return []
    return calibration_texts(spec.calibration, base_dir)


def calibration_feeds(spec: DeploymentSpec, specs: list[InputSpec], tokenizer: Path | None,
                      texts: list[str]) -> list[Feed]:
    return _feeds(spec, specs, tokenizer, texts, spec.calibration.samples, CALIBRATION_SEED, "quantize")


def held_out_feeds(spec: DeploymentSpec, specs: list[InputSpec], tokenizer: Path | None,
                   calibration: list[str]) -> list[Feed]:
    """Inputs for verify, none of them calibrated on."""
    samples = spec.accuracy.samples
    texts = held_out_texts(samples, calibration)
    if spec.model.task in TEXT_TASKS and not texts:
        raise BuildError("verify", "every built-in held-out sentence is in the calibration set; "
                         "accuracy must be measured on inputs that were not calibrated on")
    return _feeds(spec, specs, tokenizer, texts, samples, HELD_OUT_SEED, "verify")


def _feeds(spec: DeploymentSpec, specs: list[InputSpec], tokenizer: Path | None, texts: list[str], count: int,
           seed: int, step: str) -> list[Feed]:
    if spec.model.task not in TEXT_TASKS:
        return random_feeds(specs, count, seed)
    if tokenizer is None:
        raise BuildError(step, f"no tokenizer.json in the model folder: a {spec.model.task.value} model needs one "
                         "(set spec.model.tokenizer)")
    return text_feeds(tokenizer, specs, pairs(texts) if spec.model.task is Task.RERANK else texts)


def pairs(texts: Sequence[str]) -> list[Text]:
    """Query-document pairs for a cross-encoder: each text with the next one (the last with the first)."""
    return [(text, texts[(i + 1) % len(texts)]) for i, text in enumerate(texts)]
