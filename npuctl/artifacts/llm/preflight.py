"""What an NPU chat build will need, estimated from config.json's sizes (a GGUF's header's) before any step runs,
against this host; and the refusal when the host cannot do it.

The figures are linear in the parameter count (compile's in its largest graph's weight bytes), from
bench/llm_build.py's builds of random-weight checkpoints of real configurations (SmolLM2-135M and Llama-3.2-1B's;
the README has the table): each stage runs in its own child process, so the build's peak is its largest stage's,
not their sum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from npuctl.artifacts import children, facts
from npuctl.artifacts.errors import BuildError

GiB = 2**30
STEP = "pre-flight"
"""The name its progress events carry (it is no stored step)."""
STAGE_MEMORY: dict[str, tuple[int, float]] = {
    "genai-builder": (int(0.6 * GiB), 0.4),  # and the checkpoint (CHECKPOINT_BYTES)
    "llm-surgeries": (int(0.6 * GiB), 0.1),
    "llm-quantize": (int(1.2 * GiB), 3.5),
    "llm-static": (int(0.7 * GiB), 0.1),
    "verify-quantized": (int(0.7 * GiB), 2.9),
}
"""Step -> (peak RSS of its process tree at zero parameters, bytes more per parameter), measured by
bench/llm_build.py at 134.5M, 494M and 1.236B parameters (SmolLM2-135M, Qwen2.5-0.5B and Llama-3.2-1B with its
own 128k vocabulary), rounded up. The imports (torch, transformers, Olive, onnxruntime) are most of the constant.
llm-quantize reads the weights a tensor at a time (npuctl.artifacts.llm.quantization): 1.24, 2.69 and 4.82 GiB
(least squares: 0.93 GiB + 3.43 bytes per parameter), mostly the quantized weights it holds until it writes them
and the embedding in fp32 with the quantizer's temporaries. llm-static reads the graphs without their weights and
copies each split's tensor by tensor: 0.61, 0.70 and 0.63 GiB at 134.5M, 494M and 1.007B.
verify-quantized decodes with the QDQ graph (its weights stay quantized: onnxruntime does not fold their
DequantizeLinear, 0.93 GiB after creating the session at 1.236B), then runs the fp32 graph in parts
(npuctl.artifacts.llm.decode.teacher_forced), whose largest is a tied embedding's with its Transpose: measured
by bench/llm_build.py (the step re-run alone, its record deleted): 0.82, 1.92 and 3.88 GiB at 134.5M, 494M and
1.236B (least squares: 0.49 GiB + 2.96 bytes per parameter; 2.70 and 6.77 GiB at 494M and 1.236B when it decoded
the whole fp32 graph), rounded up so that each measured figure is covered."""
CHECKPOINT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
"""Bytes per parameter of a checkpoint by config.json's dtype (4 when it says none). genai-builder holds the
checkpoint memory-mapped in its own dtype and adds these to its 0.4 bytes per parameter: bench/llm_build.py
measured 2.31 bytes per parameter over bf16 SmolLM2-135M, Qwen2.5-0.5B and Llama-3.2-1B shapes (0.85, 1.57 and
3.21 GiB), 1.9 more at 135M in fp32 (a GGUF's conversion is fp32)."""
GGUF_CONVERT: tuple[int, float] = (int(0.6 * GiB), 1.2)
"""gguf-convert's peak (as STAGE_MEMORY's): bench/llm_build.py --gguf Q4_0 measured 0.71 GiB at SmolLM2-135M's
shape and 1.11 GiB at Qwen2.5-0.5B's, 1.19 bytes per parameter (the GGUF memory-mapped, one tensor dequantized
at a time); it adds an fp32 copy to the store."""
COMPILE_MEMORY = (int(0.5 * GiB), 5.0)
"""compile: (peak RSS at zero, bytes more per weight byte of the largest context/iterator graph). It compiles one
graph at a time, each session released before the next, so its peak follows the largest graph, not the model:
the QNN EP holds ~3 copies of a graph's weights while it builds it and ~2 more while it writes the context
binary. Measured 1.11, 2.17 and 4.62 GiB for graphs of 128 MB, 366 MB and 1.0 GB; `splits: auto` keeps graphs
under 1 GiB, so ~5.5 GiB at most at any model size."""
DISK_BYTES_PER_PARAMETER = 10.0
"""What a build adds to the store at its peak: the fp32 reference (4), the quantized model, the static splits and
the pack: 8.3-8.6 bytes per parameter measured; while llm-quantize runs, a scratch file of the tensors it folds
(a tied embedding's transpose: 0.85 byte per parameter at Llama-3.2-1B)."""
SECONDS_PER_PARAMETER = 4e-7
"""Wall time of the steps up to compile on this project's 2-core x86 host, shared (load average 8-13): 456 s at
134.5M, 627 s at 1.007B (verify is not counted)."""
SECONDS_AT_ZERO = 400.0
"""Each stage's child importing torch, transformers and Olive on a loaded host."""


def head_size(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def layer_parameters(config: dict[str, Any]) -> int:
    """Weights of one decoder layer's attention and MLP projections (norms and biases are noise)."""
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    attention = hidden * head_size(config) * (2 * heads + 2 * kv_heads)
    return attention + 3 * hidden * int(config["intermediate_size"])


def parameters(config: dict[str, Any]) -> int:
    """The decoder's parameters: the layers, the embedding, and the lm_head unless it is tied."""
    embedding = int(config.get("vocab_size") or 0) * int(config["hidden_size"])
    tied = bool(config.get("tie_word_embeddings", False))
    return int(config["num_hidden_layers"]) * layer_parameters(config) + embedding * (1 if tied else 2)


def estimate(config: dict[str, Any], store_root: Path, graph_bytes: int,
             converted: bool = False, counted: int | None = None, kv_cache_bytes: int = 0,
             kv_cache_element: str | None = None) -> facts.Preflight:
    """The build's needs, from `config` (config.json) and the weight bytes of the largest context/iterator graph
    the splits make, and what this host has: available memory, free disk where the store is. `converted`: the
    checkpoint is a GGUF's conversion (its step is counted too). `counted`: the parameters counted from the
    weights' shapes where they are known before any step (a GGUF's header), else `config`'s. `kv_cache_bytes`:
    the pack's KV cache and its element type, shown."""
    count = counted if counted is not None else parameters(config)
    stages = {step: int(base + per * count) for step, (base, per) in STAGE_MEMORY.items()}
    stages["genai-builder"] += CHECKPOINT_BYTES.get(str(config.get("dtype") or config.get("torch_dtype")), 4) * count
    if converted:
        stages["gguf-convert"] = int(GGUF_CONVERT[0] + GGUF_CONVERT[1] * count)
    stages["compile"] = int(COMPILE_MEMORY[0] + COMPILE_MEMORY[1] * graph_bytes)
    folder = store_root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the store may not exist yet: the disk it will be on
    return facts.Preflight(
        parameters=count, peak_rss_bytes=max(stages.values()), stage_rss_bytes=stages,
        disk_bytes=int((DISK_BYTES_PER_PARAMETER + (4 if converted else 0)) * count), seconds=SECONDS_AT_ZERO + SECONDS_PER_PARAMETER * count,
        available_memory_bytes=int(psutil.virtual_memory().available),
        free_disk_bytes=int(psutil.disk_usage(str(folder)).free), kv_cache_bytes=kv_cache_bytes,
        kv_cache_element=kv_cache_element if kv_cache_bytes else None)


def check(preflight: facts.Preflight, uri: str) -> None:
    """Refuse, before any step runs, a build this host cannot do, naming the figures and what to do."""
    short = preflight.shortfall()
    if short is not None:
        raise BuildError("resolve", f"{uri}: building {preflight.parameters / 1e9:.2f}B parameters for the NPU "
                         f"needs {short}: {children.WHAT_TO_DO}")
