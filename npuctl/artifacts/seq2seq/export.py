"""Export a T5-family encoder-decoder (T5, Flan-T5, mT5) as two ONNX graphs shaped for the NPU (torch; the `export`
extra). The encoder (`model.onnx`, what the build pipeline turns into a context binary per input bucket) takes
input_ids and attention_mask and gives every decoder layer's cross-attention keys and values. The decoder
(`decoder.onnx`) is one generation step with static shapes: one token, its position, the encoder's mask, a
self-attention cache of fixed length (spec.shapes.maxOutputTokens, keys and values per layer) and the cross-attention
keys and values as inputs; out come the next token's logits and the step's new keys and values, which the caller
writes into its cache at that position. Positions past the step are masked, so every step runs the same graph."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from npuctl.artifacts import facts
from npuctl.artifacts.encoder.export import OPSET, copy_assets
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.graphs import MASK_FLOOR, MODEL_FILE
from npuctl.runtime.seq2seq import DECODER_FILE, cross_names, self_names

MODEL_TYPES = ("t5", "mt5")


def export_seq2seq(source: Path, out: Path, max_output_tokens: int) -> facts.Seq2SeqExport:
    """Write `out/model.onnx` (encoder), `out/decoder.onnx` and the source's tokenizer and config files."""
    try:
        import torch
        from transformers import AutoModelForSeq2SeqLM
    except ImportError as exc:
        raise BuildError("export", "exporting a transformers model needs torch and transformers: "
                         "pip install 'npuctl[export]'") from exc
    from transformers.utils import logging as hf_logging

    model_type = _model_type(source)
    if model_type not in MODEL_TYPES:
        raise BuildError("export", f"{source / 'config.json'}: model_type {model_type!r}; text2text-generation exports "
                         f"T5-family models ({', '.join(MODEL_TYPES)}: T5, Flan-T5, mT5) so far")
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = AutoModelForSeq2SeqLM.from_pretrained(str(source), attn_implementation="eager")
    model.eval()
    config = model.config
    layers, heads, d_kv = config.num_decoder_layers, config.num_heads, config.d_kv
    encoder, decoder = _Encoder(model), _DecoderStep(model, max_output_tokens)
    ids = torch.ones(1, 8, dtype=torch.long)
    mask = torch.ones(1, 8, dtype=torch.long)
    cross = [torch.zeros(1, heads, 8, d_kv) for _ in range(2 * layers)]
    cache = [torch.zeros(1, heads, max_output_tokens, d_kv) for _ in range(2 * layers)]
    encoder_axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    encoder_axes |= {name: {0: "batch", 2: "sequence"} for name in cross_names(layers)}
    decoder_axes = {"encoder_attention_mask": {1: "sequence"}} | {name: {2: "sequence"} for name in cross_names(layers)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape-dependent branches that hold for every call here
        torch.onnx.export(encoder, (ids, mask), str(out / MODEL_FILE), input_names=list(encoder_axes)[:2],
                          output_names=cross_names(layers), dynamic_axes=encoder_axes, opset_version=OPSET, dynamo=False)
        torch.onnx.export(decoder, (torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long), mask,
                                    *cache, *cross), str(out / DECODER_FILE),
                          input_names=["input_ids", "step", "encoder_attention_mask", *self_names(layers, "past"),
                                       *cross_names(layers)],
                          output_names=["logits", *self_names(layers, "new")], dynamic_axes=decoder_axes,
                          opset_version=OPSET, dynamo=False)
    copy_assets(source, out)
    for name in ("generation_config.json", "spiece.model"):
        if (source / name).is_file():
            (out / name).write_bytes((source / name).read_bytes())
    return facts.Seq2SeqExport(layers=layers, heads=heads, d_kv=d_kv, max_output_tokens=max_output_tokens,
                               decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id)


def _model_type(source: Path) -> str | None:
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError("export", f"{source / 'config.json'}: cannot read it ({exc})") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) else None


def _Encoder(model: Any) -> Any:  # noqa: N802 - builds a torch module class on demand (torch is imported lazily)
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            outputs = []
            for block in self.model.decoder.block:
                attention = block.layer[1].EncDecAttention
                outputs += [_heads(attention.k(hidden), attention), _heads(attention.v(hidden), attention)]
            return tuple(outputs)

    return Encoder()


def _DecoderStep(model: Any, length: int) -> Any:  # noqa: N802
    import torch

    first = model.decoder.block[0].layer[0].SelfAttention
    # The relative position bias of query position p over key positions 0..length-1, for every p: a constant table
    # the step gathers its row from (no bucketing arithmetic in the graph).
    with torch.no_grad():
        table = first.compute_bias(length, length)[0].permute(1, 0, 2).contiguous()  # [length(query), heads, length]
    scale = model.model_dim ** -0.5 if model.config.scale_decoder_outputs else 1.0

    def table_of(module: Any) -> Any:
        return module.bias_table

    class DecoderStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("bias_table", table)
            self.register_buffer("positions", torch.arange(length))

        def forward(self, input_ids: Any, step: Any, encoder_attention_mask: Any, *caches: Any) -> Any:
            blocks = self.model.decoder.block
            past, cross = caches[: 2 * len(blocks)], caches[2 * len(blocks):]
            hidden = self.model.decoder.embed_tokens(input_ids)  # [1, 1, d_model]
            here = (self.positions == step).to(hidden.dtype)[None, None, :, None]  # [1, 1, length, 1]
            later = (self.positions > step).to(hidden.dtype) * MASK_FLOOR  # [length]
            self_bias = table_of(self)[step].unsqueeze(2) + later  # [1, heads, 1, length]
            cross_bias = ((1 - encoder_attention_mask.to(hidden.dtype)) * MASK_FLOOR)[:, None, None, :]
            new = []
            for i, block in enumerate(blocks):
                attention = block.layer[0].SelfAttention
                normed = block.layer[0].layer_norm(hidden)
                key, value = _heads(attention.k(normed), attention), _heads(attention.v(normed), attention)
                keys = past[2 * i] * (1 - here) + key * here
                values = past[2 * i + 1] * (1 - here) + value * here
                hidden = hidden + attention.o(_attend(_heads(attention.q(normed), attention), keys, values, self_bias))
                new += [key, value]
                cross_attention = block.layer[1].EncDecAttention
                normed = block.layer[1].layer_norm(hidden)
                query = _heads(cross_attention.q(normed), cross_attention)
                hidden = hidden + cross_attention.o(_attend(query, cross[2 * i], cross[2 * i + 1], cross_bias))
                hidden = block.layer[2](hidden)
            hidden = self.model.decoder.final_layer_norm(hidden) * scale
            return (self.model.lm_head(hidden)[:, 0, :], *new)

    return DecoderStep()


def _heads(projected: Any, attention: Any) -> Any:
    """[batch, tokens, heads * d_kv] -> [batch, heads, tokens, d_kv]."""
    batch, tokens = projected.shape[0], projected.shape[1]
    return projected.view(batch, tokens, attention.n_heads, attention.key_value_proj_dim).transpose(1, 2)


def _attend(query: Any, keys: Any, values: Any, bias: Any) -> Any:
    """T5 attention (no 1/sqrt(d) scaling: it is folded into the weights) -> [batch, tokens, heads * d_kv]."""
    import torch

    weights = torch.softmax(torch.matmul(query, keys.transpose(2, 3)) + bias, dim=-1)
    attended = torch.matmul(weights, values).transpose(1, 2)
    return attended.reshape(attended.shape[0], attended.shape[1], -1)
