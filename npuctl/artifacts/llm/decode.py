"""Greedy decoding of one decoder graph with onnxruntime on the CPU EP: the graph as Olive's surgeries leave it
(GroupQueryAttention fed `past_seq_len` and `total_seq_len` instead of an attention mask), fp32 or its QDQ
quantization. The QDQ graph on the CPU computes what its quantization scales say, in float: the stand-in for
the HTP that needs no NPU and no simulator, so every held-out prompt can be checked on it.

The fp32 reference is not decoded: `teacher_forced` runs it once per prompt over the prompt and the quantized
graph's tokens, in parts of ~256 MB of weights (npuctl.artifacts.llm.calibration), so its weights are never all
in memory. Its argmax at each position is its own greedy token there as long as the two agree before it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npuctl.artifacts.llm import calibration
from npuctl.artifacts.llm.weights import WeightsFolder

STEP = "verify-quantized"
"""What the fp32 pass's errors name (it reads its weights as llm-quantize's calibration does)."""
PAST = "past_key_values."
PRESENT = "present."
BATCH = 8
"""Prompts decoded in one batch by `Decoder.greedy` (the default accuracy.samples): its logits, the largest
tensor of a pass ([BATCH, longest prompt, vocabulary] in the first), stay a few tens of MB at a 128k vocabulary."""


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

    def greedy(self, prompts: list[list[int]], tokens: int, on_token: Callable[[], None] | None = None,
               ) -> list[Greedy]:
        """Each prompt decoded greedily, BATCH prompts at a time: the prompts in one pass (padded on the right),
        then one token per prompt per pass; `on_token` is called after each token of each prompt.

        A pass costs about as much for a batch as for one prompt: the weights' DequantizeLinear (onnxruntime does
        not fold it, which keeps the quantized weights small in memory) and the matmuls' reads of them are most
        of it. GroupQueryAttention takes each row's own length (past_seq_len is per row), so a row decodes as it
        would alone, up to float rounding: a batch's matmuls may sum in another order than one row's, which can
        only matter at a near-tie of the logits."""
        out: list[Greedy] = []
        for start in range(0, len(prompts), BATCH):
            out.extend(self._batch(prompts[start:start + BATCH], tokens, on_token))
        return out

    def _batch(self, prompts: list[list[int]], tokens: int, on_token: Callable[[], None] | None) -> list[Greedy]:
        rows = len(prompts)
        lengths = np.asarray([len(p) for p in prompts], np.int32)
        ids = np.zeros((rows, int(lengths.max())), np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, :len(prompt)] = prompt
        past = {name: np.zeros((rows, heads, 0, size), np.float32) for name, (heads, size) in self._past.items()}
        # Row r's logits in the first pass are at its last prompt token; after it, at the one token fed.
        at = lengths - 1
        out: list[list[int]] = [[] for _ in prompts]
        first: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        names = [o.name for o in self.session.get_outputs()]
        total = ids.shape[1]
        for step in range(tokens):
            feed = {"input_ids": ids, "past_seq_len": (lengths - 1 + step).reshape(rows, 1),
                    "total_seq_len": np.asarray(total, np.int32)} | past
            values = dict(zip(names, self.session.run(names, feed), strict=True))
            logits = np.asarray(values["logits"][np.arange(rows), at], np.float32)
            if step == 0:
                first = list(logits)
            chosen = logits.argmax(axis=-1)
            for row, token in enumerate(chosen):
                if len(out[row]) == step and (step == 0 or out[row][-1] not in self.eos):
                    out[row].append(int(token))
                    if on_token is not None:
                        on_token()
            if all(answer[-1] in self.eos for answer in out):
                break
            past = {PAST + name.removeprefix(PRESENT): value for name, value in values.items()
                    if name.startswith(PRESENT)}
            ids, at, total = chosen.reshape(rows, 1).astype(np.int64), np.zeros(rows, np.intp), total + 1
        return [Greedy(tuple(answer), logits_) for answer, logits_ in zip(out, first, strict=True)]


def teacher_forced(model: Path, weights: Path, prompts: list[list[int]], answers: list[tuple[int, ...]],
                   on_part: Callable[[int, int], None]) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """For each prompt, the logits [len(answer), vocabulary] that `model` (a graph whose external data is in the
    folder `weights`) gives at each answer token fed the prompt and the answer before it: one pass from an empty KV
    cache over the prompt and the answer but its last token (so row 0 is what `Decoder.greedy`'s first pass gives).
    The graph runs in parts of ~calibration.PART_BYTES of weights over every prompt; `on_part(done, parts)` after each part."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False)
    empty = {i.name: np.zeros((1, _dims(i)[1], 0, _dims(i)[3]), np.float32) for i in graph.graph.input
             if i.name.startswith(PAST)}
    fed = [ids + list(answer[:-1]) for ids, answer in zip(prompts, answers, strict=True)]
    parts = calibration.plan(graph.graph, set(), STEP, calibration.PART_BYTES, outputs={"logits"})
    logits: list[np.ndarray[Any, np.dtype[np.float32]]] = [np.empty(0, np.float32)] * len(fed)
    for index, number, values in calibration.run(graph, WeightsFolder(weights, STEP), parts,
                                                 [_feed(ids, len(ids)) | empty for ids in fed]):
        if "logits" in values:
            logits[number] = np.array(values["logits"][0, len(prompts[number]) - 1:], np.float32)
        if number == len(fed) - 1:
            on_part(index + 1, len(parts))
    return logits


def _dims(value: Any) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def _feed(ids: list[int], total: int) -> dict[str, np.ndarray[Any, Any]]:
    """The inputs besides the KV cache of a pass over `ids` that ends at position `total` (GroupQueryAttention's
    seqlens_k is the last position, total_seq_len the count)."""
    return {"input_ids": np.asarray([ids], np.int64), "past_seq_len": np.asarray([[total - 1]], np.int32),
            "total_seq_len": np.asarray(total, np.int32)}


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
