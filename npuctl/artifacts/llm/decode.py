"""Greedy decoding of one decoder graph with onnxruntime on the CPU EP: the graph as Olive's surgeries leave it
(GroupQueryAttention fed `past_seq_len` and `total_seq_len` instead of an attention mask), fp32 or its QDQ
quantization. The QDQ graph on the CPU computes what its quantization scales say, in float: the stand-in for
the HTP that needs no NPU and no simulator, so every held-out prompt can be checked on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAST = "past_key_values."
PRESENT = "present."


@dataclass(frozen=True)
class Greedy:
    """One prompt decoded greedily."""

    tokens: tuple[int, ...]
    """The generated tokens, ending early at an end-of-sequence token (which is included)."""
    first_logits: np.ndarray[Any, np.dtype[np.float32]]
    """The logits the first token was chosen from."""


class Decoder:
    """A decoder graph in a CPU session, with its KV cache inputs read from the graph."""

    def __init__(self, model: Path, eos: frozenset[int], weights: Path | None = None) -> None:
        """`weights`: the folder of the graph's external data when it is not the graph's own (the surgeries write
        the graph only; its weights stay in the builder's folder, never copied)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if weights is None:
            self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        else:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(weights))
            self.session = ort.InferenceSession(model.read_bytes(), options, providers=["CPUExecutionProvider"])
        self.eos = eos
        self._past = {i.name: (int(i.shape[1]), int(i.shape[3])) for i in self.session.get_inputs()
                      if i.name.startswith(PAST)}
        """Cache input -> (KV heads, head size): fixed numbers after the surgeries."""

    def greedy(self, prompt: list[int], tokens: int, on_token: Callable[[], None] | None = None) -> Greedy:
        """The prompt in one pass, then one token per pass; `on_token` is called after each token."""
        past = {name: np.zeros((1, heads, 0, size), np.float32) for name, (heads, size) in self._past.items()}
        ids, total = list(prompt), 0
        out: list[int] = []
        first: np.ndarray[Any, np.dtype[np.float32]] | None = None
        while len(out) < tokens:
            total += len(ids)
            feed: dict[str, Any] = {"input_ids": np.asarray([ids], np.int64),
                                    "past_seq_len": np.asarray([[total - 1]], np.int32),
                                    "total_seq_len": np.asarray(total, np.int32), **past}
            names = [o.name for o in self.session.get_outputs()]
            values = dict(zip(names, self.session.run(names, feed), strict=True))
            logits = np.asarray(values["logits"][0, -1], np.float32)
            first = logits if first is None else first
            token = int(np.argmax(logits))
            out.append(token)
            if on_token is not None:
                on_token()
            if token in self.eos:
                break
            past = {PAST + name.removeprefix(PRESENT): value for name, value in values.items()
                    if name.startswith(PRESENT)}
            ids = [token]
        assert first is not None  # tokens >= 1: the loop ran
        return Greedy(tuple(out), first)


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
