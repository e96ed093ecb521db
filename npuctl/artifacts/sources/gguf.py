"""GGUF sources: a .gguf file checked (architecture, tensor types) with the `gguf` package, then dequantized
to an fp32 transformers folder (weights, config, tokenizer, chat template) by transformers' GGUF loader, as a
stored step. Both text-generation paths (the CPU builder and the NPU pack) start from that folder.

The conversion runs in a child process (`python -m npuctl.artifacts.sources.gguf <file.gguf> <out>`): it holds
the whole model in fp32."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from npuctl.artifacts import facts
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
_LOG_TAIL = 2000


def convert_step(source: ResolvedSource, run_step: StepRunner) -> tuple[ResolvedSource, StepRun]:
    """The transformers folder of a GGUF source (checked before anything runs)."""
    inspected = inspect(source.path, source.uri)

    def work(out: Path) -> facts.GgufConvert:
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "npuctl.artifacts.sources.gguf", str(source.path), str(out)],
                              capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise BuildError(STEP, f"transformers could not load {source.uri}: "
                             f"{(done.stderr or done.stdout)[-_LOG_TAIL:]}")
        return inspected

    record, run = run_step(facts.GgufConvert, {"source": source.digest}, {"tools": {n: dist_version(n) for n in _TOOLS}}, work)
    return _as_source(source, record), run


def inspect(path: Path, uri: str) -> facts.GgufConvert:
    """Architecture and tensor types of a GGUF file; BuildError when the project cannot take them."""
    try:
        import gguf
    except ImportError as exc:
        raise BuildError("resolve", "the gguf package is not installed: pip install 'npuctl[npu-llm]'") from exc
    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise BuildError("resolve", f"{uri}: not a readable GGUF file ({exc})") from exc
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


def main(argv: list[str]) -> int:
    """Dequantize argv[0] (a .gguf file) into the transformers folder argv[1]."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file, out = Path(argv[0]), Path(argv[1])
    model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    # Without GGUF matmul kernels transformers dequantizes every tensor, but still calls the model "quantized
    # with gguf" and refuses save_pretrained: the weights and the config are written as a plain checkpoint.
    weights = {name: tensor.detach().to(torch.float32).contiguous().clone()
               for name, tensor in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # onnxruntime-genai's builder picks its converter by config.architectures, which a GGUF does not carry.
    config.architectures = [type(model).__name__]
    config.save_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    tokenizer.save_pretrained(str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
