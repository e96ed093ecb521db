"""GGUF sources: the trained tiny Llama written as Q8_0 and Q4_0 files with the `gguf` package, built on the CPU
path (onnxruntime-genai's builder, fp32) and the NPU path (w8a16 decoder-pipeline pack), and compared with the
checkpoint they came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from npuctl.artifacts import BuildError
from npuctl.artifacts.llm.decode import cosine
from npuctl.runtime.devices import NpuKind, detect_host
from npuctl.runtime.prompts import PromptTokenizer
from tests.tiny_chat import PROMPTS, TinyChat
from tests.tiny_gguf import write_gguf

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")]

# Measured on the trained tiny Llama (first-token logits cosine vs the original checkpoint, fp32 on the CPU, worst
# of 6 prompts): Q8_0 0.99997, Q4_0 0.992, all 16 greedy tokens equal for both; the bars leave room for other seeds.
AGREEMENT = {"Q8_0": 0.999, "Q4_0": 0.97}


@pytest.fixture(scope="module")
def gguf_files(tiny_chat: TinyChat, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    return {quant: write_gguf(tiny_chat.source("llama"), folder / f"tiny-{quant}.gguf", quant) for quant in AGREEMENT}


@pytest.mark.parametrize("quant", list(AGREEMENT))
def test_a_gguf_file_builds_for_the_cpu_and_agrees_with_its_checkpoint(
        tiny_chat: TinyChat, gguf_files: dict[str, Path], quant: str) -> None:
    cpu = {"precision": "fp32", "runtime": {"device": "cpu"}}
    from_gguf = tiny_chat.build(f"gguf-{quant[:2].lower()}-cpu", f"file:{gguf_files[quant]}", **cpu)
    assert [s.name for s in from_gguf.steps] == ["resolve", "gguf-convert", "genai-builder"]
    original = tiny_chat.build("tiny-llama-cpu", "llama", **cpu)
    converted, checkpoint = greedy(from_gguf.model_dir, 16), greedy(original.model_dir, 16)
    assert min(cosine(a[1], b[1]) for a, b in zip(converted, checkpoint)) >= AGREEMENT[quant]
    if quant == "Q8_0":
        assert [a[0] for a in converted] == [b[0] for b in checkpoint]


def greedy(folder: Path, tokens: int) -> list[tuple[list[int], np.ndarray[Any, Any]]]:
    """Each of PROMPTS decoded greedily by the onnxruntime-genai folder on the CPU: tokens, first-token logits."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.clear_providers()
    model = og.Model(config)
    answers = []
    for prompt in PROMPTS:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=256)
        generator = og.Generator(model, params)
        generator.append_tokens(PromptTokenizer(folder).plain(prompt))
        first = np.asarray(generator.get_logits()).ravel()
        out: list[int] = []
        while len(out) < tokens and not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        answers.append((out, first))
    return answers


@pytest.mark.parametrize("quant", list(AGREEMENT))
def test_a_gguf_file_builds_a_verified_npu_pack(tiny_chat: TinyChat, gguf_files: dict[str, Path], quant: str) -> None:
    built = tiny_chat.build(f"gguf-{quant[:2].lower()}", f"file:{gguf_files[quant]}")
    assert [s.name for s in built.steps][:3] == ["resolve", "gguf-convert", "genai-builder"]
    [artifact] = built.artifacts
    assert artifact.generation is not None and artifact.generation.first_divergence == 16


def test_an_unsupported_quant_type_is_refused_naming_the_tensor_and_the_types_taken(
        tiny_chat: TinyChat, tmp_path: Path) -> None:
    file = write_gguf(tiny_chat.source("llama"), tmp_path / "tiny-q5.gguf", "Q5_0")
    with pytest.raises(BuildError, match=r"tensor \S+ is Q5_0 .*use a F32 / F16 / BF16 / Q8_0 / Q4_0 file"):
        tiny_chat.build("gguf-q5", f"file:{file}")


def test_an_unsupported_gguf_architecture_is_refused_naming_it(tiny_chat: TinyChat, tmp_path: Path) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(BuildError, match=r"GGUF architecture 'gpt2' is not one npuctl converts"):
        tiny_chat.build("gguf-gpt2", f"file:{tmp_path / 'gpt2.gguf'}")
