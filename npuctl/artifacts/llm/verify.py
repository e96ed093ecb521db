"""Greedy decoding of held-out prompts on a built decoder-pipeline pack (the QNN EP: the NPU, or the HTP
simulator on x86_64) and on the fp32 CPU reference of the same checkpoint, compared token by token.

The decoding runs in a child process (`python -m npuctl.artifacts.llm.verify <request.json> <result.json>`):
a context binary that crashes the QNN backend while loading must fail the build, not kill the agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npuctl.artifacts import children, facts, progress
from npuctl.artifacts.errors import BuildError

_LOG_TAIL = 1500


@dataclass(frozen=True)
class PromptCheck:
    prompt: str
    npu_tokens: tuple[int, ...]
    cpu_tokens: tuple[int, ...]
    cosine: float
    """Cosine of the first generated token's logits, pack vs reference."""
    tokens: int
    """How many tokens were asked for (fewer come when the model ends its answer)."""

    @property
    def first_divergence(self) -> int:
        """Index of the first differing greedy token (one answer ending before the other counts); `tokens`
        when both are the same, also when both end early at the same place."""
        if self.npu_tokens == self.cpu_tokens:
            return self.tokens
        for index, (npu, cpu) in enumerate(zip(self.npu_tokens, self.cpu_tokens)):
            if npu != cpu:
                return index
        return min(len(self.npu_tokens), len(self.cpu_tokens))

    def as_fact(self) -> facts.PromptCheck:
        return facts.PromptCheck(prompt=self.prompt, first_divergence=self.first_divergence, cosine=self.cosine,
                                 npu_tokens=list(self.npu_tokens), cpu_tokens=list(self.cpu_tokens))


def compare(pack: Path, reference: Path, prompts: list[str], tokens: int) -> list[PromptCheck]:
    """Greedy tokens of `pack` (a genai folder, loaded with the providers its config names: the QNN EP for a
    decoder-pipeline pack) against `reference` (on the CPU), in a child process; BuildError if it fails."""
    with tempfile.TemporaryDirectory(prefix="npuctl-verify-") as scratch:
        request, result = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request.write_text(json.dumps({"pack": str(pack), "reference": str(reference), "prompts": prompts,
                                       "tokens": tokens}), encoding="utf-8")
        done = children.run([sys.executable, "-m", "npuctl.artifacts.llm.verify", str(request), str(result)],
                            os.environ | {"HF_HUB_OFFLINE": "1"})
        if done.returncode < 0 or not result.is_file():
            raise BuildError("verify", _crash(done))
        answer = json.loads(result.read_text(encoding="utf-8"))
    if "error" in answer:
        raise BuildError("verify", answer["error"])
    return [PromptCheck(c["prompt"], tuple(c["npu_tokens"]), tuple(c["cpu_tokens"]), c["cosine"], tokens)
            for c in answer["checks"]]


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        with children.to_parent():
            checks = _run(Path(request["pack"]), Path(request["reference"]), request["prompts"], request["tokens"])
        result: dict[str, Any] = {"checks": [c.as_fact().model_dump(mode="json") for c in checks]}
    except Exception as exc:  # onnxruntime-genai raises plain RuntimeError; the parent names the step
        result = {"error": f"onnxruntime-genai could not run the pack: {exc}"}
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def _run(pack: Path, reference: Path, prompts: list[str], tokens: int) -> list[PromptCheck]:
    import onnxruntime_genai as og

    from npuctl.runtime import qnn
    from npuctl.runtime.prompts import PromptTokenizer

    qnn.register_genai(og)
    npu = og.Model(og.Config(str(pack)))
    config = og.Config(str(reference))
    config.clear_providers()
    cpu = og.Model(config)
    # As the server encodes a plain prompt: with the special tokens the tokenizer adds (BOS).
    tokenizer = PromptTokenizer(pack)
    room = int(json.loads((pack / "genai_config.json").read_text(encoding="utf-8"))["search"]["max_length"])
    checks = []
    total = 2 * tokens * len(prompts)
    for index, prompt in enumerate(prompts):
        ids = tokenizer.plain(prompt)
        if len(ids) + tokens > room:
            raise ValueError(f"prompt {prompt!r} ({len(ids)} tokens) + {tokens} generated tokens do not fit the "
                             f"KV cache of {room} (spec.generation.contextLength)")
        before = 2 * tokens * index
        where = f"prompt {index + 1}/{len(prompts)}"
        npu_tokens, npu_logits = _greedy(og, npu, ids, tokens, room,
                                         lambda n: progress.report(before + n, total, "tokens", f"{where}, the pack"))
        cpu_tokens, cpu_logits = _greedy(og, cpu, ids, tokens, room, lambda n: progress.report(
            before + tokens + n, total, "tokens", f"{where}, the fp32 reference"))
        cosine = float(npu_logits @ cpu_logits / (np.linalg.norm(npu_logits) * np.linalg.norm(cpu_logits) or 1.0))
        checks.append(PromptCheck(prompt, tuple(npu_tokens), tuple(cpu_tokens), cosine, tokens))
    return checks


def _greedy(og: Any, model: Any, prompt: list[int], tokens: int, room: int,
            generated: Callable[[int], None]) -> tuple[list[int], np.ndarray[Any, Any]]:
    """The greedy tokens after `prompt` and the first token's logits; `generated(n)` after each token."""
    params = og.GeneratorParams(model)
    # max_length is the pack's KV cache length: a pipeline given less than its prefill window aborts.
    params.set_search_options(do_sample=False, max_length=room)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    first = np.asarray(generator.get_logits(), dtype=np.float64).ravel()
    out: list[int] = []
    while len(out) < tokens and not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
        generated(len(out))
    return out, first


def _crash(done: subprocess.CompletedProcess[str]) -> str:
    tail = (done.stderr or done.stdout or "")[-_LOG_TAIL:].strip()
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.Signals._value2member_map_ else ""
        return (f"loading or running the pack crashed the QNN backend ({name or done.returncode}); with "
                "spec.generation.weightSharing: true this is what the HTP simulator does (set it to false)"
                + (f": {tail}" if tail else ""))
    return f"the verify process failed (exit {done.returncode}): {tail}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
