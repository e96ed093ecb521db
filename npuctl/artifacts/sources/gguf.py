"""GGUF sources: a .gguf file checked (architecture, tensor types) with the `gguf` package, then dequantized
to an fp32 transformers folder (weights, config, tokenizer, chat template) as a stored step. Both text-generation
paths (the CPU builder and the NPU pack) start from that folder; the NPU build's pre-flight reads the file's sizes
from its header first (`header`).

The conversion runs in a child process (npuctl.artifacts.sources.gguf_convert), a tensor at a time."""

from __future__ import annotations

import os
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npuctl.artifacts import children, facts
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.result import StepRun
from npuctl.artifacts.sources.context import ResolvedSource
from npuctl.artifacts.steps import StepRunner, dist_version
from npuctl.artifacts.store import Record
from npuctl.schema.models import Format

STEP = facts.GgufConvert.step
ARCHITECTURES = ("llama", "qwen2")
"""GGUF `general.architecture` values converted (Mistral GGUFs say llama). Both have been built and compared."""
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")
"""Tensor types dequantized; the tests write and compare Q8_0 and Q4_0 files."""
_TOOLS = ("gguf", "transformers", "torch")
DEADLINE_SECONDS = 3 * 3600.0
"""The conversion is stopped past this (a hung native library): it reads the GGUF a tensor at a time, minutes
for the 1.5B models users name."""


def convert_step(source: ResolvedSource, run_step: StepRunner, needs: facts.Preflight | None = None,
                 inspected: facts.GgufConvert | None = None) -> tuple[ResolvedSource, StepRun]:
    """The transformers folder of a GGUF source (checked before anything runs). `needs`: an NPU build's
    pre-flight, what running out of memory is reported against. `inspected`: the file's check when its header
    was read already (`Header.inspected`), so the file is not parsed twice."""
    inspected = inspected or inspect(source.path, source.uri)

    def work(out: Path) -> facts.GgufConvert:
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        # Its tensors dequantized so far are the step's progress (children.run relays them).
        done = children.run(STEP, [sys.executable, "-m", "npuctl.artifacts.sources.gguf_convert", str(source.path),
                                   str(out)], env, DEADLINE_SECONDS)
        done.check_stopped(needs)
        if done.returncode != 0:
            raise BuildError(STEP, f"transformers could not load {source.uri}: {done.tail()}")
        return inspected.model_copy(update={"memory": done.memory(needs)})

    record, run = run_step(facts.GgufConvert, {"source": source.digest}, {"tools": {n: dist_version(n) for n in _TOOLS}}, work)
    return _as_source(source, record), run


def inspect(path: Path, uri: str) -> facts.GgufConvert:
    """Architecture and tensor types of a GGUF file; BuildError when the project cannot take them."""
    with _readable(uri):
        return _checked(_open(path, uri), uri)


@dataclass(frozen=True)
class Header:
    """A GGUF file's sizes, read from its metadata and tensor shapes without its tensors' data: what the pre-flight
    needs before the conversion spends minutes."""

    config: dict[str, Any]
    """The sizes as the conversion's config.json will say them (transformers maps the same GGUF keys)."""
    parameters: int
    """Counted from the tensors' shapes (a tied embedding once: its GGUF has no output.weight)."""
    inspected: facts.GgufConvert
    """Its architecture and tensor types, checked as `inspect` checks them."""


def header(path: Path, uri: str) -> Header:
    """The sizes of a GGUF file the project converts (checked as `inspect` checks it)."""
    with _readable(uri):
        return _header(_open(path, uri), uri)


def _header(reader: Any, uri: str) -> Header:
    inspected = _checked(reader, uri)
    architecture = inspected.architecture
    config: dict[str, Any] = {"model_type": architecture, "dtype": "float32"}  # the conversion is fp32
    for name, key in _SIZES.items():
        field = reader.fields.get(f"{architecture}.{key}")
        value = field.contents() if field is not None else None
        if value is None and name in _OPTIONAL_SIZES:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BuildError("resolve", f"{uri}: GGUF metadata {architecture}.{key} must be a positive integer "
                             f"(the model's {name}), not {value!r}; the file is not one llama.cpp's converter wrote")
        config[name] = value
    tensors = {t.name: int(t.n_elements) for t in reader.tensors}
    embedding = tensors.get("token_embd.weight")
    if embedding is None:
        raise BuildError("resolve", f"{uri}: the GGUF file has no token_embd.weight tensor (the embedding)")
    config["vocab_size"] = embedding // config["hidden_size"]
    config["tie_word_embeddings"] = "output.weight" not in tensors
    return Header(config, sum(tensors.values()), inspected)


_SIZES = {"num_hidden_layers": "block_count", "hidden_size": "embedding_length",
          "intermediate_size": "feed_forward_length", "num_attention_heads": "attention.head_count",
          "num_key_value_heads": "attention.head_count_kv", "head_dim": "attention.key_length",
          "max_position_embeddings": "context_length"}
"""config.json's size -> the GGUF metadata key after `<architecture>.` (llama.cpp's names)."""
_OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")


def _open(path: Path, uri: str) -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise BuildError("resolve", "the gguf package is not installed: pip install 'npuctl[npu-llm]'") from exc
    return gguf.GGUFReader(str(path))


@contextmanager
def _readable(uri: str) -> Iterator[None]:
    """gguf's reader signals a damaged file as whatever its parsing hits (a fuzz found IndexError from reading
    past a truncated array): each is the file's BuildError."""
    try:
        yield
    except (OSError, ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error) as exc:
        raise BuildError("resolve", f"{uri}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def _checked(reader: Any, uri: str) -> facts.GgufConvert:
    field = reader.fields.get("general.architecture")
    architecture = str(field.contents()) if field is not None else "unknown"
    if architecture not in ARCHITECTURES:
        raise BuildError("resolve", f"{uri}: GGUF architecture {architecture!r} is not one npuctl converts "
                         f"(supported: {', '.join(ARCHITECTURES)}); use the original transformers checkpoint "
                         "with format: transformers if onnxruntime-genai's builder knows it")
    types = Counter(t.tensor_type.name for t in reader.tensors)
    unsupported = [t for t in reader.tensors if t.tensor_type.name not in TENSOR_TYPES]
    if unsupported:
        first = unsupported[0]
        raise BuildError("resolve", f"{uri}: tensor {first.name} is {first.tensor_type.name} "
                         f"({len(unsupported)} of {len(reader.tensors)} tensors have types npuctl cannot dequantize: "
                         f"{', '.join(sorted({t.tensor_type.name for t in unsupported}))}); use a {' / '.join(TENSOR_TYPES)} "
                         "file (llama.cpp: llama-quantize <in.gguf> <out.gguf> Q8_0) or the original checkpoint")
    return facts.GgufConvert(architecture=architecture, tensor_types=dict(types))


def _as_source(gguf_source: ResolvedSource, record: Record[facts.GgufConvert]) -> ResolvedSource:
    return ResolvedSource(f"{gguf_source.uri} (dequantized)", record.folder, Format.TRANSFORMERS, record.digest,
                          gguf_source.revision)
