"""The two checks of a decoder-pipeline build, each in a child process
(`python -m npuctl.artifacts.llm.verify <request.json> <result.json>`):

- `check_quantized`: every held-out prompt decoded greedily by the quantized (QDQ) graph, then the fp32 graph it
  was made from run once over each prompt and those tokens (teacher-forced, in parts: its weights are never all
  in memory), both on the CPU (npuctl.artifacts.llm.decode). Up to the first position where fp32's argmax differs
  from the quantized graph's token the two greedy decodes are the same sequence: the first divergence, fp32's
  token there and the first-token logits are those of decoding fp32 greedily. It checks the quantization, over
  all of `spec.accuracy.samples`, at CPU speed, before static shapes and compile spend any time on it.
- `check_pack`: the compiled pack itself (its context binaries, on the NPU or the HTP simulator), on one prompt
  for a few tokens, against what the quantized graph did on the CPU for that prompt. Its cost does not grow with
  `spec.accuracy.samples`: on the simulator every token costs as much as a whole CPU check.

A context binary that crashes the QNN backend while loading must fail the build, not kill the agent: hence the
child process."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npuctl.artifacts import children, facts, progress
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm import decode

PROBE = "probe.npz"
"""Written by check_quantized: the first prompt's first-token logits, quantized and fp32, for check_pack."""
PACK_TOKENS = 2
"""Greedy tokens the pack decodes in check_pack: the first comes from the prompt (the context graphs and the
prompt's lm_head, once), the second from one decode step (the iterator graphs and the token's lm_head, once).
So every context binary of the pack runs once; more tokens would run the same binaries again, each costing a
whole pass on the simulator (8-9 s at SmolLM2-135M's shape, `bench/llm_build.py`)."""
DEADLINE_SECONDS = 6 * 3600.0
"""A check is stopped past this (a hung native library, the simulator stuck): the checks of bench/llm_build.py's
1B build take minutes."""


@dataclass(frozen=True)
class PromptCheck:
    prompt: str
    quantized_tokens: tuple[int, ...]
    reference_tokens: tuple[int, ...]
    cosine: float
    """Cosine of the first generated token's logits, quantized vs fp32."""
    tokens: int
    """How many tokens were asked for (fewer come when the model ends its answer)."""

    @property
    def first_divergence(self) -> int:
        return first_divergence(self.quantized_tokens, self.reference_tokens, self.tokens)

    def as_fact(self) -> facts.PromptCheck:
        return facts.PromptCheck(prompt=self.prompt, first_divergence=self.first_divergence, cosine=self.cosine,
                                 quantized_tokens=list(self.quantized_tokens),
                                 reference_tokens=list(self.reference_tokens))


def first_divergence(tokens: tuple[int, ...], expected: tuple[int, ...], asked: int) -> int:
    """Index of the first differing greedy token (one answer ending before the other counts); `asked` when both
    are the same, also when both end early at the same place."""
    if tokens == expected:
        return asked
    for index, (mine, theirs) in enumerate(zip(tokens, expected)):
        if mine != theirs:
            return index
    return min(len(tokens), len(expected))


def check_quantized(reference: Path, weights: Path, quantized: Path, prompts: list[str], tokens: int,
                    out: Path, needs: facts.Preflight | None = None
                    ) -> tuple[list[PromptCheck], facts.StageMemory]:
    """Greedy tokens of the QDQ graph `quantized/model.onnx` against the fp32 `reference/model.onnx` (the
    surgeries' graph, with its tokenizer and genai_config.json; its weights in the builder's folder `weights`),
    on the CPU; writes PROBE into `out`. `needs`: the build's pre-flight, what running out of memory is reported
    against. Also its child's peak memory."""
    answer, memory = _child(facts.LlmVerifyQuantized.step, needs,
                            {"check": "quantized", "reference": str(reference), "weights": str(weights),
                             "quantized": str(quantized), "prompts": prompts, "tokens": tokens, "out": str(out)})
    return [PromptCheck(c["prompt"], tuple(c["quantized_tokens"]), tuple(c["reference_tokens"]), c["cosine"], tokens)
            for c in answer["checks"]], memory


def check_pack(pack: Path, probe: Path, prompt: str, tokens: int,
               needs: facts.Preflight | None = None) -> tuple[facts.PackCheck, facts.StageMemory]:
    """`tokens` greedy tokens of `pack` (a genai folder, loaded with the providers its config names: the QNN EP)
    on `prompt`, and its first-token logits against the quantized and fp32 ones in `probe`; its child's peak
    memory. `needs`: the build's pre-flight, what running out of memory is reported against."""
    answer, memory = _child(facts.LlmVerify.step, needs,
                            {"check": "pack", "pack": str(pack), "probe": str(probe), "prompt": prompt,
                             "tokens": tokens})
    return facts.PackCheck.model_validate(answer["check"]), memory


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        with children.to_parent():
            result = _checked(request)
    except Exception as exc:  # onnxruntime(-genai) raise plain RuntimeErrors; the parent names the step
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def _child(step: str, needs: facts.Preflight | None,
           request: dict[str, Any]) -> tuple[dict[str, Any], facts.StageMemory]:
    with tempfile.TemporaryDirectory(prefix="npuctl-verify-") as scratch:
        request_file, result_file = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_file.write_text(json.dumps(request), encoding="utf-8")
        done = children.run(step, [sys.executable, "-m", "npuctl.artifacts.llm.verify", str(request_file),
                                   str(result_file)], os.environ | {"HF_HUB_OFFLINE": "1"}, DEADLINE_SECONDS)
        answer: dict[str, Any] = (json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file()
                                  else {})
    done.check_stopped(needs, answer.get("error"))
    if done.returncode < 0 or not answer:
        raise BuildError("verify", _crash(done, request["check"] == "pack"))
    if "error" in answer:
        what = "the quantized model" if request["check"] == "quantized" else "the pack"
        raise BuildError("verify", f"cannot run {what}: {answer['error']}")
    return answer, done.memory(needs)


def _checked(request: dict[str, Any]) -> dict[str, Any]:
    if request["check"] == "quantized":
        checks = _quantized(Path(request["reference"]), Path(request["weights"]), Path(request["quantized"]),
                            request["prompts"], request["tokens"], Path(request["out"]))
        return {"checks": [c.as_fact().model_dump(mode="json") for c in checks]}
    check = _pack(Path(request["pack"]), Path(request["probe"]), request["prompt"], request["tokens"])
    return {"check": check.model_dump(mode="json")}


def _quantized(reference: Path, weights: Path, quantized: Path, prompts: list[str], tokens: int,
               out: Path) -> list[PromptCheck]:
    from npuctl.runtime.prompts import PromptTokenizer

    tokenizer = PromptTokenizer(reference)
    encoded = [tokenizer.plain(prompt) for prompt in prompts]
    counted = _TokenCount(tokens * len(prompts))
    qdq = decode.Decoder(quantized / "model.onnx", _eos(reference))
    got = qdq.greedy(encoded, tokens, counted.tick("the quantized model"))
    del qdq  # one model in memory at a time
    count = sum(len(ids) + len(answer.tokens) - 1 for ids, answer in zip(encoded, got, strict=True))
    logits = decode.teacher_forced(reference / "model.onnx", weights, encoded, [answer.tokens for answer in got],
                                   lambda done, parts: progress.report(count * done // parts, count, "tokens",
                                                                       f"the fp32 reference: part {done} of {parts}"))
    expected = [_reference(answer.tokens, rows) for answer, rows in zip(got, logits, strict=True)]
    first = [rows[0] for rows in logits]
    np.savez(out / PROBE, quantized=got[0].first_logits, reference=first[0], tokens=np.asarray(got[0].tokens, np.int64))
    return [PromptCheck(prompt, mine.tokens, theirs, decode.cosine(mine.first_logits, reference), tokens)
            for prompt, mine, theirs, reference in zip(prompts, got, expected, first, strict=True)]


def _reference(tokens: tuple[int, ...], logits: np.ndarray[Any, np.dtype[np.float32]]) -> tuple[int, ...]:
    """fp32's greedy tokens where it was fed the quantized graph's `tokens` (`logits[i]` chose token i), up to and
    including the first it chose otherwise: past that, fed tokens it would not have made, it says nothing."""
    chosen = [int(np.argmax(row)) for row in logits]
    diverges = next((i for i, (mine, theirs) in enumerate(zip(tokens, chosen)) if mine != theirs), len(tokens))
    return tuple(chosen[:diverges + 1])


def _pack(pack: Path, probe: Path, prompt: str, tokens: int) -> facts.PackCheck:
    import onnxruntime_genai as og

    from npuctl.runtime import qnn
    from npuctl.runtime.prompts import PromptTokenizer

    qnn.register_genai(og)
    started = time.perf_counter()
    model = og.Model(og.Config(str(pack)))
    # As the server encodes a plain prompt: with the special tokens the tokenizer adds (BOS).
    ids = PromptTokenizer(pack).plain(prompt)
    room = int(json.loads((pack / "genai_config.json").read_text(encoding="utf-8"))["search"]["max_length"])
    if len(ids) + tokens > room:
        raise ValueError(f"prompt {prompt!r} ({len(ids)} tokens) + {tokens} generated tokens do not fit the "
                         f"KV cache of {room} (spec.generation.contextLength)")
    loaded = time.perf_counter()
    params = og.GeneratorParams(model)
    # max_length is the pack's KV cache length: a pipeline given less than its prefill window aborts.
    params.set_search_options(do_sample=False, max_length=room)
    generator = og.Generator(model, params)
    prefill = time.perf_counter()
    generator.append_tokens(ids)
    first = np.asarray(generator.get_logits(), dtype=np.float32).ravel()
    prefilled = time.perf_counter()
    out: list[int] = []
    # The first token is chosen from the prompt's logits; each later one runs the iterator graphs once.
    while len(out) < tokens and not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
        progress.report(len(out), tokens, "tokens", "the pack")
    seconds = facts.PackSeconds(load=loaded - started, prefill=prefilled - prefill,
                                decode=time.perf_counter() - prefilled)
    with np.load(probe) as expected:
        quantized = tuple(int(t) for t in expected["tokens"][:tokens])
        return facts.PackCheck(
            prompt=prompt, tokens=out, quantized_tokens=list(quantized),
            first_divergence=first_divergence(tuple(out), quantized, tokens),
            cosine=decode.cosine(first, expected["quantized"]),
            reference_cosine=decode.cosine(first, expected["reference"]), seconds=seconds)


class _TokenCount:
    """Progress over every greedy token the quantized graph decodes (every prompt)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def tick(self, what: str) -> Callable[[], None]:
        def counted() -> None:
            self.done += 1
            progress.report(self.done, self.total, "tokens", what)
        return counted


def _eos(folder: Path) -> frozenset[int]:
    eos = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]["eos_token_id"]
    return frozenset(eos if isinstance(eos, list) else [eos])


def _crash(done: children.ChildRun, qnn: bool) -> str:
    tail = done.tail()
    if done.returncode < 0 and qnn:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.Signals._value2member_map_ else ""
        return (f"loading or running the pack crashed the QNN backend ({name or done.returncode}); with "
                "spec.generation.weightSharing: true this is what the HTP simulator does (set it to false)"
                + (f": {tail}" if tail else ""))
    return f"the verify process failed (exit {done.returncode}): {tail}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
