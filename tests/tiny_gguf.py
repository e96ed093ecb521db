"""GGUF files of the tiny transformers checkpoints, written with the `gguf` package the way llama.cpp's
converter lays them out: its tensor names, Q/K rows permuted for Llama, 1-D tensors kept F32, the tokenizer
and chat template as metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_ARCHES = {"llama": "LLAMA", "qwen2": "QWEN2"}


def write_gguf(checkpoint: Path, out: Path, quant: str) -> Path:
    """`checkpoint` (a tiny llama/qwen2 folder) as one .gguf file whose 2-D tensors are `quant` (e.g. Q8_0)."""
    import gguf
    import torch
    from safetensors.torch import load_file

    config = json.loads((checkpoint / "config.json").read_text())
    arch = config["model_type"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(float((config.get("rope_parameters") or {}).get("rope_theta")
                                    or config.get("rope_theta") or 10000.0))
    _add_tokenizer(writer, checkpoint, config)
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, _ARCHES[arch]), config["num_hidden_layers"])
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    for name, tensor in load_file(str(checkpoint / "model.safetensors")).items():
        data = tensor.to(torch.float32).numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = _permute(data, heads, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = _permute(data, heads, kv_heads)
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if data.ndim == 1:
            writer.add_tensor(target, data)
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _add_tokenizer(writer: object, checkpoint: Path, config: dict[str, object]) -> None:
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {t["content"] for t in tokenizer["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")  # type: ignore[attr-defined]
    writer.add_tokenizer_pre("default")  # type: ignore[attr-defined]
    writer.add_token_list(tokens)  # type: ignore[attr-defined]
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # type: ignore[attr-defined]
    writer.add_token_merges(merges)  # type: ignore[attr-defined]
    writer.add_bos_token_id(config["bos_token_id"])  # type: ignore[attr-defined]
    writer.add_eos_token_id(config["eos_token_id"])  # type: ignore[attr-defined]
    writer.add_add_bos_token(True)  # type: ignore[attr-defined]
    template = checkpoint / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text())  # type: ignore[attr-defined]


def _permute(weights: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """llama.cpp's rotary layout for Q/K rows (convert_hf_to_gguf.LlamaModel.permute)."""
    if kv_heads != heads:
        heads = kv_heads
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))
