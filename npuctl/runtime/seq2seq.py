"""Encoder-decoder text generation (T5-family) on ONNX Runtime: the encoder once per request (a context binary per
input bucket on the NPU, or the dynamic fp32 model on the CPU), then the decoder one token a step with a fixed-length
self-attention cache (see npuctl.artifacts.seq2seq.export for the graphs), greedy or sampled."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from npuctl.runtime.generation import Sampling, Step, step_of
from npuctl.runtime.prompts import PromptTokenizer
from npuctl.runtime.sessions import OpenedSession, RunInfo

DECODER_FILE = "decoder.onnx"
FloatArray = npt.NDArray[np.float32]
Choose = Callable[[npt.NDArray[np.floating]], int]


def cross_names(layers: int) -> list[str]:
    """The encoder's outputs (and the decoder's inputs): each decoder layer's cross-attention keys and values."""
    return [f"cross_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def self_names(layers: int, prefix: str) -> list[str]:
    """The decoder's self-attention cache inputs (`past`) or a step's new keys and values (`new`)."""
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


class Seq2SeqTokenizer(PromptTokenizer):
    """The model's tokenizer; chat messages go through its chat template, or, as T5 models have none, a plain one:
    each message on its own line, the user's as they are and the others after their role."""

    def chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> list[int]:
        if self.has_chat_template or tools:
            return super().chat(messages, tools)
        lines = [str(m["content"]) if m["role"] == "user" else f"{m['role']}: {m['content']}" for m in messages]
        return self.plain("\n".join(lines))


class Decoder:
    """The one-step decoder graph (CPU or NPU session) and the generation loop around it."""

    def __init__(self, opened: OpenedSession, start_id: int) -> None:
        self.session = opened.session
        self.opened = opened
        self.start_id = start_id
        inputs = {node.name: node for node in self.session.get_inputs()}
        self.layers = sum(1 for name in inputs if name.startswith("past_key_"))
        shape = inputs["past_key_0"].shape
        self.heads, self.length, self.d_kv = int(shape[1]), int(shape[2]), int(shape[3])
        """Most tokens one answer can have: the fixed length of the self-attention cache."""
        self._past = self_names(self.layers, "past")
        self._cross = cross_names(self.layers)

    def tokens(self, cross: Sequence[FloatArray], mask: npt.NDArray[np.int64], choose: Choose, limit: int,
               cancel: threading.Event | None = None) -> Iterator[int]:
        """Generated ids, one per step (the end token included; the caller stops on it), at most `limit`."""
        return (token for token, _ in self.steps(cross, mask, choose, limit, cancel))

    def steps(self, cross: Sequence[FloatArray], mask: npt.NDArray[np.int64], choose: Choose, limit: int,
              cancel: threading.Event | None = None) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """As `tokens`, each with the logits it was chosen from."""
        cache = [np.zeros((1, self.heads, self.length, self.d_kv), np.float32) for _ in self._past]
        feeds: dict[str, Any] = dict(zip(self._cross, cross, strict=True)) | {"encoder_attention_mask": mask}
        token = self.start_id
        for step in range(min(limit, self.length)):
            if cancel is not None and cancel.is_set():
                return
            feeds |= dict(zip(self._past, cache, strict=True))
            feeds |= {"input_ids": np.array([[token]], np.int64), "step": np.array([step], np.int64)}
            logits, *new = self.session.run(None, feeds)
            for kept, fresh in zip(cache, new, strict=True):
                kept[:, :, step : step + 1, :] = fresh
            token = choose(logits[0])
            yield token, logits[0]


class Encoder:
    """The encoder: one dynamic session (key None) or one static session per input bucket."""

    def __init__(self, sessions: dict[int | None, OpenedSession], pad_id: int) -> None:
        self.sessions = dict(sorted(sessions.items(), key=lambda kv: kv[0] or 0))
        self.pad_id = pad_id
        self.buckets = [length for length in self.sessions if length is not None]

    def run(self, ids: Sequence[int]) -> tuple[list[FloatArray], npt.NDArray[np.int64], int | None]:
        """Cross-attention keys and values for `ids` (at most the largest bucket), the attention mask, and the bucket
        (None on the dynamic model)."""
        length = next((b for b in self.buckets if b >= len(ids)), None) if self.buckets else len(ids)
        if length is None:
            raise ValueError(f"{len(ids)} input tokens: longer than the largest bucket ({self.buckets[-1]})")
        key = length if self.buckets else None
        opened = self.sessions[key]
        padded = np.full((1, length), self.pad_id, np.int64)
        padded[0, : len(ids)] = ids
        mask = np.zeros((1, length), np.int64)
        mask[0, : len(ids)] = 1
        types = {node.name: np.int32 if node.type == "tensor(int32)" else np.int64
                 for node in opened.session.get_inputs()}
        feeds = {"input_ids": padded.astype(types["input_ids"]), "attention_mask": mask.astype(types["attention_mask"])}
        return [np.asarray(o, np.float32) for o in opened.session.run(None, feeds)], mask, key


class Seq2SeqModel:
    """An encoder-decoder loaded for serving: the text-generation interface of GenerationModel."""

    def __init__(self, encoder: Encoder, decoders: dict[int | None, Decoder], tokenizer: Seq2SeqTokenizer,
                 eos_token_ids: frozenset[int], info: RunInfo, slots: int, max_input_tokens: int,
                 model_type: str = "t5") -> None:
        """`decoders`: by encoder bucket (static NPU decoders take that many encoder positions), or one under None
        that takes any (the CPU decoder)."""
        self.encoder = encoder
        self.model_type = model_type
        self.decoders = decoders
        self.decoder = next(iter(decoders.values()))
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.info = info
        self.slots = slots
        self.max_prompt_tokens = max_input_tokens
        """Longest prompt in tokens (the largest encoder bucket); answers have their own limit (`room`)."""
        self.context_length = max_input_tokens + self.decoder.length

    def room(self, prompt_tokens: int) -> int:
        """How many tokens an answer may have: the decoder's fixed length, whatever the prompt's."""
        return self.decoder.length if prompt_tokens <= self.max_prompt_tokens else 0

    guided = False
    """Grammar-constrained decoding is onnxruntime-genai's; encoder-decoders have none."""

    def tokens(self, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[int]:
        return (step.token for step in self.steps(prompt, sampling, cancel))

    def steps(self, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[Step]:
        """Generated tokens (with log probabilities when `sampling.logprobs` asks); the encoder runs before this
        returns."""
        cross, mask, bucket = self.encoder.run(prompt)
        decoder = self.decoders.get(bucket) or self.decoders[None]
        steps = decoder.steps(cross, mask, chooser(sampling, self.eos_token_ids, prompt), sampling.max_new_tokens,
                              cancel)
        return (Step(token) if sampling.logprobs is None else step_of(token, logits, sampling.logprobs)
                for token, logits in steps)

    def close(self) -> None:
        self.encoder.sessions = {}
        self.decoders = {}


def chooser(sampling: Sampling, eos_token_ids: frozenset[int], prompt: Sequence[int] = ()) -> Choose:
    """Next-token choice: argmax at temperature 0, else sampling with temperature, top_k and top_p (seeded), after
    the request's logit bias and penalties."""
    rng = np.random.default_rng(sampling.seed)
    banned = sorted(eos_token_ids) if sampling.ignore_eos else []
    chosen: list[int] = []

    def choose(logits: npt.NDArray[np.floating]) -> int:
        token = pick(logits)
        chosen.append(token)
        return token

    def pick(logits: npt.NDArray[np.floating]) -> int:
        values = np.asarray(logits, np.float64).copy()
        if sampling.penalties.active:
            sampling.penalties.apply(values, prompt, chosen)
        values[banned] = -np.inf
        if sampling.temperature == 0:
            return int(np.argmax(values))
        values /= sampling.temperature
        if sampling.top_k:
            cut = np.sort(values)[-min(sampling.top_k, len(values))]
            values[values < cut] = -np.inf
        probabilities = np.exp(values - np.max(values))
        probabilities /= probabilities.sum()
        if sampling.top_p < 1:
            order = np.argsort(-probabilities, kind="stable")
            keep = np.cumsum(probabilities[order]) - probabilities[order] < sampling.top_p
            probabilities[order[~keep]] = 0
            probabilities /= probabilities.sum()
        return int(rng.choice(len(probabilities), p=probabilities))

    return choose


def generation_ids(model_dir: Path) -> tuple[int, frozenset[int]]:
    """(decoder start id, end ids) from the model's config.json (T5: pad 0 starts, </s> 1 ends)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    start = config.get("decoder_start_token_id")
    eos = config.get("eos_token_id")
    ends = frozenset(eos if isinstance(eos, list) else [eos]) - {None}
    return int(start if start is not None else config.get("pad_token_id", 0)), frozenset(int(e) for e in ends)
