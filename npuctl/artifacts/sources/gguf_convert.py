"""A GGUF file dequantized to an fp32 transformers folder one tensor at a time (`python -m
npuctl.artifacts.sources.gguf_convert <file.gguf> <out>`, the gguf-convert step's child).

transformers' own GGUF loading holds the whole fp32 model and, to save it, a second copy: ~10 bytes per parameter
measured (4.9 GiB at Qwen2.5-0.5B's shape). Here the model is only a skeleton on the `meta` device (its parameter
names and shapes), transformers' name map and tensor processors (Llama's Q/K row order) turn each GGUF tensor into
its transformers tensor, and each is written, in slices of rows where it can be, into model.safetensors at the
offset its header gave it: a tensor's slice at a time beside the memory-mapped GGUF file."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np

from npuctl.artifacts import children, progress

SLICE_BYTES = 64 << 20
"""fp32 bytes dequantized at once from a tensor written in slices."""
_WHOLE = (".attn_q.", ".attn_k.")
"""GGUF tensors transformers' processors rewrite as a whole (Llama's Q/K rows), dequantized whole."""


def main(argv: list[str]) -> int:
    """Dequantize argv[0] (a .gguf file) into the transformers folder argv[1]."""
    import torch
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
    )

    file, out = Path(argv[0]), Path(argv[1])
    config = AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    parsed = load_gguf_checkpoint(str(file), return_tensors=False)  # type: ignore[no-untyped-call]
    architecture = str(parsed["config"].get("model_type"))
    processor_class = TENSOR_PROCESSORS.get(architecture, TensorProcessor)
    processor = processor_class(config=parsed["config"])  # type: ignore[no-untyped-call]
    names = get_gguf_hf_weights_map(skeleton, processor)
    shapes = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    tied = {"lm_head.weight": "model.embed_tokens.weight"} if config.tie_word_embeddings else {}
    out.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    tensors = GGUFReader(str(file)).tensors
    with (out / "model.safetensors").open("wb") as weights, children.to_parent():
        offsets = _write_header(weights, shapes)
        for index, tensor in enumerate(tensors):
            for name in _targets(tensor.name, names, tied):
                _write_tensor(weights, offsets[name], tensor, processor, shapes[name])
                written.add(name)
            progress.report(index + 1, len(tensors), "tensors", "dequantizing")
    missing = sorted(set(shapes) - written)
    if missing:
        raise SystemExit(f"{file.name} has no tensor for {', '.join(missing[:5])} "
                         f"({len(missing)} of the {len(shapes)} weights transformers' {type(skeleton).__name__} has)")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    # onnxruntime-genai's builder picks its converter by config.architectures, which a GGUF does not carry.
    config.architectures = [type(skeleton).__name__]
    config.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name).save_pretrained(str(out))
    return 0


def _targets(gguf_name: str, names: dict[str, str], tied: dict[str, str]) -> list[str]:
    """The transformers weights a GGUF tensor becomes: its own, and the lm_head tied to the embedding."""
    own = names.get(gguf_name)
    if own is None:
        return []
    return [own, *(head for head, embedding in tied.items() if embedding == own)]


def _write_header(file: IO[bytes], shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """safetensors' header (every tensor F32, at its offset) written first; the absolute offset of each tensor."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    start = 0
    for name, shape in shapes.items():
        end = start + 4 * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [start, end]}
        start = end
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    file.write(struct.pack("<Q", len(text)) + text)
    base = 8 + len(text)
    file.truncate(base + start)
    return {name: base + entry["data_offsets"][0] for name, entry in header.items() if name != "__metadata__"}


def _write_tensor(file: IO[bytes], offset: int, tensor: Any, processor: Any, shape: tuple[int, ...]) -> None:
    """One GGUF tensor dequantized to fp32 at `offset`: a slice of rows at a time unless it is processed whole."""
    from gguf import dequantize

    data = tensor.data
    whole = any(part in tensor.name for part in _WHOLE) or data.ndim < 2
    rows = data.shape[0] if whole else max(1, SLICE_BYTES // max(1, 4 * int(np.prod(shape[1:], dtype=np.int64))))
    if int(np.prod(shape, dtype=np.int64)) != int(tensor.n_elements):
        raise SystemExit(f"GGUF tensor {tensor.name} has {tensor.n_elements} values where transformers' weight of "
                         f"shape {list(shape)} has {int(np.prod(shape, dtype=np.int64))}")
    file.seek(offset)
    for start in range(0, data.shape[0], rows):
        values = dequantize(data[start:start + rows], tensor.tensor_type)
        values = processor.process(weights=values, name=tensor.name).weights
        file.write(np.ascontiguousarray(values, dtype=np.float32).tobytes())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
