"""What an NPU chat build will need, estimated from config.json's sizes before any step runs, against this host;
and the refusal when the host cannot do it.

The figures are linear in the parameter count, from bench/llm_build.py's builds of random-weight checkpoints
of real configurations (SmolLM2-135M and Llama-3.2-1B's; the README has the table): each stage runs in its own
child process, so the build's peak is its largest stage's, not their sum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from npuctl.artifacts import facts
from npuctl.artifacts.errors import BuildError

GiB = 2**30
STEP = "pre-flight"
"""The name its progress events carry (it is no stored step)."""
STAGE_MEMORY: dict[str, tuple[int, float]] = {
    "genai-builder": (int(0.7 * GiB), 5.2),
    "llm-surgeries": (int(0.6 * GiB), 0.1),
    "llm-quantize": (int(1.2 * GiB), 3.5),
    "llm-static": (int(0.8 * GiB), 6.5),
    "compile": (int(0.8 * GiB), 4.5),
}
"""Step -> (peak RSS of its process tree at zero parameters, bytes more per parameter), measured by
bench/llm_build.py at 134.5M, 1.007B and 1.236B parameters (SmolLM2-135M; Llama-3.2-1B with a 16k and with its
own 128k vocabulary), rounded up. The imports (torch, transformers, Olive, onnxruntime) are most of the constant.
llm-quantize reads the weights a tensor at a time (npuctl.artifacts.llm.quantization): 1.24 GiB at SmolLM2-135M,
2.69 GiB at Qwen2.5-0.5B, 4.82 GiB at Llama-3.2-1B with its 128k vocabulary (least squares: 0.93 GiB + 3.43 bytes
per parameter), mostly the quantized weights it holds until it writes them and the embedding in fp32 with the
quantizer's temporaries."""
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


def estimate(config: dict[str, Any], store_root: Path) -> facts.Preflight:
    """The build's needs, from `config` (config.json), and what this host has: available memory, free disk
    where the store is."""
    count = parameters(config)
    stages = {step: int(base + per * count) for step, (base, per) in STAGE_MEMORY.items()}
    folder = store_root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the store may not exist yet: the disk it will be on
    return facts.Preflight(
        parameters=count, peak_rss_bytes=max(stages.values()), stage_rss_bytes=stages,
        disk_bytes=int(DISK_BYTES_PER_PARAMETER * count), seconds=SECONDS_AT_ZERO + SECONDS_PER_PARAMETER * count,
        available_memory_bytes=int(psutil.virtual_memory().available),
        free_disk_bytes=int(psutil.disk_usage(str(folder)).free))


def check(preflight: facts.Preflight, uri: str) -> None:
    """Refuse, before any step runs, a build this host cannot do, naming the figures and what to do."""
    short = []
    if preflight.peak_rss_bytes > preflight.available_memory_bytes:
        short.append(f"~{preflight.peak_rss_bytes / GiB:.1f} GiB of RAM at its peak and this host has "
                     f"{preflight.available_memory_bytes / GiB:.1f} GiB available")
    if preflight.disk_bytes > preflight.free_disk_bytes:
        short.append(f"~{preflight.disk_bytes / 1e9:.1f} GB of disk in the store and it has "
                     f"{preflight.free_disk_bytes / 1e9:.1f} GB free")
    if short:
        raise BuildError("resolve", f"{uri}: building {preflight.parameters / 1e9:.2f}B parameters for the NPU "
                         f"needs {' and '.join(short)}: {WHAT_TO_DO}")


WHAT_TO_DO = ("build it on a host with more memory and publish it (`npuctl build --publish FOLDER` there, the "
              "folder in this agent's `artifactSources`), or serve a prebuilt NPU pack of the model (Qualcomm AI Hub "
              "exports them) as spec.model.source, or free memory and disk here (the window and the splits change "
              "the pack's graphs, not what the build needs)")
"""What a user can do when the build does not fit: the same advice when pre-flight refuses and when a stage runs
out of memory."""
