"""Text generation with onnxruntime-genai: a model folder loaded where `spec.runtime` allows (a plain decoder
on the CPU, a QNN decoder-pipeline pack on the NPU), and token-by-token generation that stops when asked."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from npuctl.runtime import power, qnn
from npuctl.runtime.devices import HostFacts
from npuctl.runtime.genai_pack import GenaiPack, PackError, host_view, read_pack
from npuctl.runtime.penalties import Penalties
from npuctl.runtime.placement import Artifacts, NotServable, Placement, Reason, Where, place
from npuctl.runtime.prompts import PromptTokenizer
from npuctl.runtime.sessions import CPU_EP, RunInfo
from npuctl.schema.models import ModelDeployment

INSTALL_HINT = "onnxruntime-genai is not installed: pip install 'npuctl[genai]'"
_GRAMMAR_BUILDS = threading.Lock()
"""One grammar compiles at a time in this process: the compile holds the GIL for its whole native call, and
between two of them the event loop gets its turn (concurrent builds would hold it back for their sum)."""


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 1.0
    """0 is greedy."""
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    ignore_eos: bool = False
    """Generate max_new_tokens whatever the model says (vLLM's extension; for load tests and benchmarks)."""
    guidance: Guidance | None = None
    """Constrain the output to a grammar (constrained decoding)."""
    logprobs: int | None = None
    """Give each token's log probability and this many most likely alternatives (None: no log probabilities)."""
    penalties: Penalties = Penalties()
    """Logit bias and repetition penalties, applied to each step's logits."""


@dataclass(frozen=True)
class Guidance:
    """A grammar the output must follow, in one of onnxruntime-genai's (llguidance's) forms."""

    kind: str
    """json_schema, lark_grammar or regex."""
    data: str


class GuidanceError(ValueError):
    """The grammar cannot be used: it does not compile, or this onnxruntime-genai has no guidance."""


@dataclass(frozen=True)
class Step:
    """One generated token, with its log probability under the model and the most likely tokens at that
    place (when asked)."""

    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


class TextGenerator(Protocol):
    """What the generation queue and the chat API need of a loaded text generator (this module's GenerationModel,
    npuctl.runtime.seq2seq's encoder-decoders)."""

    @property
    def tokenizer(self) -> PromptTokenizer: ...

    @property
    def info(self) -> RunInfo: ...

    @property
    def slots(self) -> int:
        """Generations that may run at once."""
        ...

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt, in tokens."""
        ...

    @property
    def context_length(self) -> int:
        """Tokens of a prompt and its answer together."""
        ...

    def room(self, prompt_tokens: int) -> int:
        """How many tokens may be generated after a prompt this long."""
        ...

    @property
    def guided(self) -> bool:
        """Whether generation can be constrained to a grammar."""
        ...

    @property
    def model_type(self) -> str:
        """The architecture (config.json's model_type: llama, t5, ...)."""
        ...

    def tokens(self, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[int]: ...

    def steps(self, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[Step]: ...

    def close(self) -> None: ...


class GenerationModel:
    """One loaded onnxruntime-genai model. `slots` generators may run at once: one on a single-stream NPU
    pipeline, more on the CPU."""

    def __init__(self, model: Any, pack: GenaiPack, tokenizer: PromptTokenizer, info: RunInfo, slots: int) -> None:
        self._model = model
        self.pack = pack
        self.tokenizer = tokenizer
        self.info = info
        self.slots = slots
        self.context_length = pack.context_length
        self.eos_token_ids = frozenset(pack.eos_token_ids)
        self.max_prompt_tokens = pack.max_prompt_tokens
        self.model_type = pack.model_type

    def room(self, prompt_tokens: int) -> int:
        return self.context_length - prompt_tokens

    @property
    def guided(self) -> bool:
        """Whether this onnxruntime-genai can constrain generation to a grammar."""
        return hasattr(_genai().GeneratorParams, "set_guidance")

    def tokens(self, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[int]:
        """Generated token ids, the end-of-sequence token included when one ends the answer. Stops after
        `sampling.max_new_tokens`, at the context's end, or as soon as `cancel` is set."""
        return (step.token for step in self.steps(prompt, sampling, cancel))

    def steps(self, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[Step]:
        """As `tokens`, with log probabilities when `sampling.logprobs` asks. The generator is made before this
        returns: GuidanceError comes here, not from the first step."""
        og = _genai()
        params = og.GeneratorParams(self._model)
        # A decoder-pipeline pack gets its whole KV cache: given less than its prefill window, onnxruntime-genai
        # aborts the process. The loop below stops after max_new_tokens either way.
        room = self.context_length if self.pack.pipeline else min(self.context_length,
                                                                  len(prompt) + sampling.max_new_tokens)
        options: dict[str, Any] = {"max_length": room, "do_sample": sampling.temperature > 0}
        if sampling.temperature > 0:
            options |= {"temperature": sampling.temperature, "top_p": sampling.top_p}
            if sampling.top_k:
                options["top_k"] = sampling.top_k
        if sampling.seed is not None:
            options["random_seed"] = sampling.seed
        if sampling.ignore_eos:
            options["min_length"] = options["max_length"]  # onnxruntime-genai masks the end token until then
        params.set_search_options(**options)
        if sampling.guidance is not None:
            if not self.guided:
                raise GuidanceError("this onnxruntime-genai has no guidance (constrained decoding)")
            params.set_guidance(sampling.guidance.kind, sampling.guidance.data)
        try:
            with _GRAMMAR_BUILDS if sampling.guidance is not None else contextlib.nullcontext():
                if cancel.is_set():  # given up while waiting its turn: build nothing
                    return iter(())
                generator = og.Generator(self._model, params)
        except RuntimeError as exc:  # the grammar is compiled here
            if sampling.guidance is not None and "grammar" in str(exc).lower():
                raise GuidanceError(str(exc)) from exc
            raise
        return self._run(generator, prompt, sampling, cancel)

    def _run(self, generator: Any, prompt: list[int], sampling: Sampling, cancel: threading.Event) -> Iterator[Step]:
        try:
            generator.append_tokens(prompt)
            produced: list[int] = []
            penalties = sampling.penalties if sampling.penalties.active else None
            while len(produced) < sampling.max_new_tokens and not cancel.is_set() and not generator.is_done():
                # The logits the next token is drawn from (before the grammar's mask and the sampler's choice).
                logits = generator.get_logits()[0, -1] if sampling.logprobs is not None or penalties else None
                if penalties is not None and logits is not None:
                    logits = np.array(logits, copy=True)
                    penalties.apply(logits, prompt, produced)
                    generator.set_logits(logits[np.newaxis, np.newaxis, :])
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                produced.append(token)
                yield Step(token) if sampling.logprobs is None else step_of(token, logits, sampling.logprobs)
        finally:
            del generator  # frees its KV cache now, not at the next garbage collection

    def close(self) -> None:
        self._model = None


def step_of(token: int, logits: Any, top: int) -> Step:
    """A generated token with its log probability and the `top` most likely tokens, from the logits it was drawn from."""
    shifted = logits.astype(np.float64) - float(logits.max())
    logprobs = shifted - math.log(float(np.exp(shifted).sum()))
    best = np.argsort(-logprobs)[:top]
    return Step(token, float(logprobs[token]), tuple((int(i), float(logprobs[i])) for i in best))


def load_generator(deployment: ModelDeployment, artifacts: Artifacts, host: HostFacts) -> GenerationModel:
    """Load `artifacts.model_dir` (an onnxruntime-genai folder) under the deployment's runtime rules; when the
    build made decoder-pipeline packs (`artifacts.context_binaries`: each pack's first context wrapper), the
    pack for this host's SoC, else model_dir on the CPU as the fallback allows. A QNN pack is loaded through a
    host view of it in `artifacts.views`."""
    folder = artifacts.model_dir
    if folder is None:
        raise NotServable(Reason.NO_CPU_MODEL, "a text-generation deployment needs an onnxruntime-genai model folder")
    built = place(deployment.spec.runtime, host, artifacts) if artifacts.context_binaries else None
    if built is not None and built.on_npu:
        folder = built.binaries[0].path.parent
    try:
        pack = read_pack(folder)
    except PackError as exc:
        raise NotServable(Reason.SESSION_FAILED, str(exc)) from exc
    if not (folder / "tokenizer.json").is_file():
        raise NotServable(Reason.NO_TOKENIZER, f"{folder} has no tokenizer.json")
    runtime = deployment.spec.runtime
    placement = built if built is not None and not built.on_npu else _placement(deployment, pack, host)
    og = _genai()
    choice = power.choose(runtime)
    if placement.on_npu:
        try:
            qnn.register_genai(og)
        except qnn.QnnUnavailable as exc:
            raise NotServable(Reason.NO_NPU, str(exc)) from exc
        if artifacts.views is None:
            raise NotServable(Reason.SESSION_FAILED, f"{folder}: no folder was given for the pack's host views")
        options, applied = power.genai_qnn(runtime, choice)
        config = og.Config(str(host_view(pack, options, artifacts.views)))
    else:
        config = og.Config(str(folder))
        # Run where placement decided, whatever providers the folder's config names.
        config.clear_providers()
        overlay, applied = power.genai_cpu(choice)
        config.overlay(json.dumps(overlay))
    try:
        model = og.Model(config)
    except Exception as exc:  # onnxruntime-genai raises plain RuntimeError
        raise NotServable(Reason.SESSION_FAILED, f"onnxruntime-genai cannot load {folder}: {exc}") from exc
    if placement.on_npu:
        built_share = built.binaries[0].npu_coverage if built is not None else None
        info = RunInfo(placement.where, qnn.EP_NAME, pack.npu_share() if built_share is None else built_share,
                       placement.note, applied, built.binaries[0].cpu_work if built is not None else ())
        slots = 1
    else:
        info = RunInfo(Where.CPU, CPU_EP, 0.0, placement.note, applied)
        slots = deployment.spec.serve.max_batch
    return GenerationModel(model, pack, PromptTokenizer(folder), info, slots)


def _placement(deployment: ModelDeployment, pack: GenaiPack, host: HostFacts) -> Placement:
    runtime = deployment.spec.runtime
    if not pack.pipeline:
        # The model builder has no QNN target: a plain decoder runs on the CPU, when the rules allow it.
        return place(runtime, host, Artifacts(pack.stages[0].path))
    binaries = pack.context_binaries()
    if not binaries:
        raise NotServable(Reason.NO_CONTEXT_BINARY, f"{pack.folder}: the decoder-pipeline has no EPContext stage")
    placement = place(runtime, host, Artifacts(None, pack.folder, None, binaries))
    # Every NPU stage must be loadable here; a pipeline is not served by part of its stages.
    if placement.on_npu and len(placement.binaries) != len(binaries):
        raise NotServable(Reason.INCOMPATIBLE_CONTEXT_BINARY,
                          f"{pack.folder}: the pipeline's context binaries were built for different SoCs")
    return placement


def _genai() -> ModuleType:
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise NotServable(Reason.SESSION_FAILED, INSTALL_HINT) from exc
    module: ModuleType = onnxruntime_genai
    return module
