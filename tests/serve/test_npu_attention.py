"""Attention on the HTP (spec.generation.attention: npu, the default) served: prompts of several prefill windows
and up to the KV cache's limit stream through the openai client the same greedy tokens as the CPU reference;
longer ones are refused naming the limit."""

from __future__ import annotations

import openai
import pytest
from tokenizers import Tokenizer

from npuctl.artifacts import artifacts_of
from npuctl.runtime.devices import NpuKind, detect_host
from npuctl.serve.models import load_served
from tests.serve.conftest import Serve
from tests.tiny_chat import TinyChat
from tests.tiny_llama import CORPUS

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")]

WINDOW, CONTEXT = 64, 256
"""The tiny packs' prefill window (tests/tiny_chat.py's 64) and KV cache (tests/tiny_chat.py's contextLength)."""


def prompt_of(tokenizer: Tokenizer, tokens: int) -> str:
    """The longest run of whole words of the taught sentences that encodes to at most `tokens` tokens."""
    words = " ".join(CORPUS * 40).split()
    count = 1
    while len(tokenizer.encode(" ".join(words[: count + 1])).ids) <= tokens:
        count += 1
    return " ".join(words[:count])


def test_prompts_over_several_windows_and_at_the_cache_limit_match_the_cpu_reference(
        tiny_chat: TinyChat, serve: Serve) -> None:
    name = "tiny-llama"
    built = tiny_chat.build(name, "llama")
    [artifact] = built.artifacts
    assert artifact.generation is not None and not artifact.generation.stages["context_ctx"].cpu_ops
    npu = load_served(tiny_chat.manifest(name, "llama").deployment, artifacts_of(built, tiny_chat.store.views_dir))
    cpu = load_served(tiny_chat.manifest(f"{name}-cpu", "llama", runtime={"device": "cpu"}).deployment,
                      artifacts_of(built))
    api = openai.OpenAI(base_url=f"{serve(npu, cpu).url}/v1", api_key="unused", max_retries=0)
    tokenizer = Tokenizer.from_file(str(tiny_chat.source("llama") / "tokenizer.json"))
    # Two windows; and the longest prompt the pack takes: onnxruntime-genai pads the last chunk to a whole window,
    # so the prompt's windows must leave one window of the cache for the answer.
    for size in (WINDOW + 30, CONTEXT - WINDOW - 1):
        prompt = prompt_of(tokenizer, size)
        assert WINDOW < len(tokenizer.encode(prompt).ids) + 1 <= size + 1  # + the BOS the server adds
        on_npu = api.completions.create(model=name, prompt=prompt, max_tokens=16, temperature=0, stream=True)
        text = "".join(c.choices[0].text for c in on_npu if c.choices)
        on_cpu = api.completions.create(model=f"{name}-cpu", prompt=prompt, max_tokens=16, temperature=0)
        assert text == on_cpu.choices[0].text, size
    # Longer, up to the context: a 400 naming the limit (genai would fail the request, the cache full of padding).
    limit = rf"accepts at most {CONTEXT - WINDOW} input tokens \(its context is {CONTEXT} tokens\)"
    for size in (CONTEXT - WINDOW + 20, CONTEXT + 10):
        with pytest.raises(openai.BadRequestError, match=limit):
            api.completions.create(model=name, prompt=prompt_of(tokenizer, size), max_tokens=4, temperature=0)
