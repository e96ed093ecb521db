"""The build graph of a QNN decoder-pipeline pack (text generation at w8a16 or w4a16), step by step:

    genai-builder (fp32, the CPU reference) -> llm-surgeries -> llm-quantize
        -> verify-quantized (greedy tokens of every held-out prompt, quantized vs fp32, on the CPU) -> llm-static
        -> per target: compile (context binaries + compose) -> verify (the pack on one prompt vs the CPU run)

Each step is content-addressed in the store: the targets share every step up to compile; a precision change
reruns llm-quantize and what follows; serving options are in no key. The Olive stages run in child processes
(npuctl.artifacts.llm.olive_steps), the comparison too (npuctl.artifacts.llm.verify)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from npuctl.artifacts import children, facts, inputs
from npuctl.artifacts import compile as qnn_compile
from npuctl.artifacts.errors import AccuracyError, BuildError
from npuctl.artifacts.llm import attention as llm_attention
from npuctl.artifacts.llm import cpu_work as llm_cpu_work
from npuctl.artifacts.llm import genai, kv_cache, preflight
from npuctl.artifacts.llm import verify as llm_verify
from npuctl.artifacts.result import BuildResult, NpuArtifact, StepEvent, StepRun, StepState
from npuctl.artifacts.sources.context import ResolvedSource
from npuctl.artifacts.steps import Runner, dist_version
from npuctl.artifacts.store import Record
from npuctl.schema.models import ModelDeployment, Precision, Target

NPU_PRECISIONS = (Precision.W8A16, Precision.W4A16)
ARCHITECTURES = ("llama", "qwen2", "mistral", "phi3")
"""transformers `model_type`s whose genai-builder graph has GroupQueryAttention (what Olive's StaticLLM takes);
the tests build llama, qwen2 and phi3."""
DEFAULT_COSINE = {Precision.W8A16: 0.98, Precision.W4A16: 0.80}
"""Default first-token logits cosine bar. The tiny test models measured 0.9999 at w8a16, 0.92-0.99 at w4a16."""
DEFAULT_CONTEXT = 4096
FINALIZE_LIMIT = 2 << 30
"""Weight bytes past which QNN fails to finalize a graph on the device (error 1002)."""
GRAPH_BUDGET = FINALIZE_LIMIT // 2
"""Weight bytes one graph may hold with `splits: auto`: a margin under the limit for the estimate's error."""
_WEIGHT_BYTES = {Precision.W8A16: 1.0, Precision.W4A16: 0.5}
_SIZES = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
_OPTIONAL_SIZES = ("max_position_embeddings", "num_key_value_heads", "head_dim")
"""With _SIZES, the config.json sizes the shapes and the graph budget are computed from."""
_OLIVE = ("olive-ai", "onnxruntime-genai", "transformers", "torch")
STAGE_DEADLINE_FACTOR = 10
STAGE_DEADLINE_MARGIN = 1800.0
"""A stage is stopped after 10x the pre-flight's time for the whole build, plus 30 min: a hung child (a
deadlock in a native library) then fails the build instead of holding it forever."""
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Bar:
    """spec.accuracy with its defaults filled in."""

    tokens: int
    matching: int
    threshold: float
    precision: Precision


@dataclass(frozen=True)
class Shape:
    """The pack's static shapes, resolved against the checkpoint's config."""

    window: int
    context_length: int
    splits: int
    graph_bytes: int
    """Weight bytes of the largest context/iterator graph (what compile's memory follows)."""
    kv_cache_bytes: int
    """One generation's KV cache at the context length, in the HTP's precision (0 with attention on the CPU, whose
    float cache is not in the graphs)."""
    kv_element: str
    """The KV cache's element type at the context/iterator graphs' I/O."""


Plan = tuple[Shape, facts.Preflight]
"""A build's shapes and its pre-flight, made before any step runs."""


def build_npu_generation(deployment: ModelDeployment, source: ResolvedSource, earlier: tuple[StepRun, ...],
                         runner: Runner, targets: list[Target], base_dir: Path,
                         planned: Plan | None = None) -> BuildResult:
    """One verified decoder-pipeline pack per target, from a transformers folder; the fp32 genai folder (the
    reference) is the CPU model. `planned`: the pre-flight made before the steps that led to `source` (a GGUF's
    conversion), else made here from its config.json."""
    spec = deployment.spec
    config = model_config(source)
    shape, needs = planned if planned is not None else plan(deployment, config, source, runner)
    reference, reference_run = genai.builder_step(source, Precision.FP32, runner.run, needs)
    steps = [*earlier, reference_run]
    texts = inputs.calibration_texts(spec.calibration, base_dir)
    prompts = held_out_prompts(spec.accuracy.samples, texts)
    olive = {name: dist_version(name) for name in _OLIVE}

    def surgeries_work(out: Path) -> facts.LlmSurgeries:
        return run_stage("llm-surgeries", facts.LlmSurgeries, {"stage": "surgeries", "model_dir": str(reference.folder),
                                              "head_size": preflight.head_size(config)}, out, needs)

    graphs, run = runner.run(facts.LlmSurgeries, {"model": reference.digest}, {"tools": olive}, surgeries_work)
    steps.append(run)
    tokenizer = graphs.path("tokenizer.json")

    def quantize_work(out: Path) -> facts.LlmQuantize:
        return run_stage("llm-quantize", facts.LlmQuantize, {"stage": "quantize", "model_dir": str(graphs.folder),
                                                             "weights_dir": str(reference.folder), "texts": texts,
                                          "tokenizer": str(tokenizer), "window": shape.window,
                                          "precision": spec.precision.value}, out, needs)

    calibration = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    # The surgeries' output is a graph whose weights are the reference's: both are inputs.
    quantized, run = runner.run(facts.LlmQuantize, {"model": graphs.digest, "weights": reference.digest,
                                                    "calibration": calibration},
                                {"precision": spec.precision.value, "window": shape.window, "tools": olive},
                                quantize_work)
    steps.append(run)
    bar = _bar(deployment)
    checked, run = runner.run(facts.LlmVerifyQuantized, {"model": quantized.digest, "reference": graphs.digest,
                                                         "weights": reference.digest},
                              {"prompts": prompts, "tokens": bar.tokens, "matching_tokens": bar.matching,
                               "threshold": bar.threshold},
                              lambda out: _check_quantized(graphs.folder, reference.folder, quantized.folder, prompts,
                                                           bar, out, needs))
    steps.append(run)

    def static_work(out: Path) -> facts.LlmStatic:
        return run_stage("llm-static", facts.LlmStatic, {"stage": "static", "model_dir": str(quantized.folder),
                                        "hf_dir": str(source.folder), "splits": shape.splits,
                                        "window": shape.window, "context_length": shape.context_length,
                                        "attention": spec.generation.attention}, out, needs)

    static, run = runner.run(facts.LlmStatic, {"model": quantized.digest, "source": source.digest},
                             {"splits": shape.splits, "window": shape.window, "attention": spec.generation.attention,
                              "context_length": shape.context_length, "kv_cache": shape.kv_element, "tools": olive},
                             static_work)
    steps.append(run)
    artifacts = [_target(deployment, target, static, checked, bar, runner, tuple(steps), needs)
                 for target in targets]
    all_steps = {s.key: s for s in steps} | {s.key: s for a in artifacts for s in a.steps}
    return BuildResult(deployment.name, spec.model.task, spec.precision, reference.path("model.onnx"),
                       reference.folder, reference.path("tokenizer.json"), tuple(artifacts),
                       tuple(all_steps.values()), (source,))


def plan(deployment: ModelDeployment, config: dict[str, Any], source: ResolvedSource, runner: Runner,
         converted: bool = False, counted: int | None = None) -> Plan:
    """The pack's shapes and the pre-flight, from `config` (config.json's sizes, or a GGUF's header's before its
    conversion: `converted`, with its `counted` parameters), shown as the pre-flight's events; a BuildError when
    this host cannot do the build, before any step runs."""
    shape = resolve_shape(deployment, config, source.uri)
    needs = preflight.estimate(config, runner.store.root, shape.graph_bytes, converted=converted, counted=counted,
                               kv_cache_bytes=shape.kv_cache_bytes, kv_cache_element=shape.kv_element)
    runner.progress(StepEvent(preflight.STEP, StepState.RUNNING, source.digest, message=needs.summary(),
                              preflight=needs))
    preflight.check(needs, source.uri)
    runner.progress(StepEvent(preflight.STEP, StepState.DONE, source.digest, seconds=0.0, message=needs.summary()))
    return shape, needs


def model_config(source: ResolvedSource) -> dict[str, Any]:
    """The checkpoint's config.json, refused when its architecture is not one the NPU path builds."""
    try:
        config: dict[str, Any] = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError("resolve", f"{source.uri}: cannot read config.json ({exc})") from exc
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        names = ", ".join(config.get("architectures") or []) or "unnamed"
        raise BuildError("resolve", f"{source.uri}: architecture {kind!r} ({names}) cannot be built for the NPU "
                         f"(supported model_type: {', '.join(ARCHITECTURES)}); precision fp32 or int4 builds it "
                         "for the CPU, if onnxruntime-genai's model builder knows it")
    return config


def resolve_shape(deployment: ModelDeployment, config: dict[str, Any], uri: str) -> Shape:
    for key in _SIZES + _OPTIONAL_SIZES:
        value = config.get(key)
        if (value is not None or key in _SIZES) and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BuildError("resolve", f"{uri} config.json: {key} must be a positive integer, not {value!r}")
    generation = deployment.spec.generation
    limit = int(config.get("max_position_embeddings") or DEFAULT_CONTEXT)
    if generation.window >= limit:
        raise BuildError("resolve", f"spec.generation.window {generation.window} is not shorter than the model's "
                         f"context of {limit} tokens ({uri} config.json max_position_embeddings): lower "
                         "spec.generation.window")
    context = generation.context_length or max(min(limit, DEFAULT_CONTEXT), generation.window + 1)
    if context > limit:
        raise BuildError("resolve", f"spec.generation.contextLength {context} is longer than the model's context of "
                         f"{limit} tokens ({uri} config.json max_position_embeddings): lower it")
    layers = int(config["num_hidden_layers"])
    precision = deployment.spec.precision
    weights = preflight.layer_parameters(config) * _WEIGHT_BYTES[precision]
    on_htp = generation.attention == "npu"
    kv_layer = kv_cache.cache_bytes(1, int(config.get("num_key_value_heads") or config["num_attention_heads"]),
                                    preflight.head_size(config), context) if on_htp else 0
    # With attention on the HTP a graph's session holds its layers' KV cache twice, as its input and its output.
    per_layer = weights + 2 * kv_layer

    def held(count: int) -> str:
        cache = (f" and {2 * count * kv_layer / 2**30:.1f} GiB of its layers' {kv_cache.ELEMENT} KV cache as input "
                 f"and output at contextLength {context}") if on_htp else ""
        return (f"~{count * per_layer / 2**30:.1f} GiB ({count * weights / 2**30:.1f} GiB of {precision.value} "
                f"weights{cache})")

    if per_layer > FINALIZE_LIMIT:
        raise BuildError("resolve", f"one layer of {uri} is {held(1)} in a graph, over one HTP session's ~2 GB: set "
                         "a shorter spec.generation.contextLength", field=("spec", "generation", "contextLength"))
    fewest = min(layers, max(1, math.ceil(per_layer * layers / GRAPH_BUDGET)))
    splits = fewest if generation.splits == "auto" else generation.splits
    if splits > layers:
        raise BuildError("resolve", f"spec.generation.splits {splits} is more than the model's {layers} layers")
    # Refused here, before hours of quantizing, because the x86 prepare finalizes such a graph (2.3 GB was
    # measured to pass) and only the NPU's own finalize at load time refuses it.
    largest = math.ceil(layers / splits)
    if largest * per_layer > FINALIZE_LIMIT:
        raise BuildError("resolve", f"spec.generation.splits {splits} puts {held(largest)} in one graph, over QNN's "
                         f"~2 GB finalize limit (error 1002 when the NPU loads it): set spec.generation.splits to "
                         f"{fewest} or more, or auto"
                         + (", or a shorter spec.generation.contextLength" if on_htp else ""),
                         field=("spec", "generation", "splits"))
    return Shape(generation.window, context, int(splits), int(largest * weights), layers * kv_layer,
                 kv_cache.ELEMENT if on_htp else "float32")


def held_out_prompts(samples: int, calibration: list[str]) -> list[str]:
    """The first half of each held-out sentence (never calibrated on): the model is asked to go on."""
    sentences = inputs.held_out_texts(samples, calibration)
    if not sentences:
        raise BuildError("verify", "every built-in held-out sentence is in the calibration set; generation must "
                         "be checked on prompts that were not calibrated on")
    return [" ".join(s.split()[: max(2, len(s.split()) // 2)]) for s in sentences]


def run_stage(step: str, kind: type[M], request: dict[str, Any], out: Path, needs: facts.Preflight) -> M:
    """One olive_steps stage in a child process, what it reports read as `kind` with the child's peak memory;
    its error becomes this step's BuildError, running out of memory one that says so."""
    if dist_version("olive-ai") is None:
        raise BuildError(step, "olive-ai is not installed: pip install 'npuctl[npu-llm]'")
    deadline = STAGE_DEADLINE_FACTOR * needs.seconds + STAGE_DEADLINE_MARGIN
    with tempfile.TemporaryDirectory(prefix="npuctl-olive-") as scratch:
        request_file, result_file = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_file.write_text(json.dumps(request | {"out": str(out)}), encoding="utf-8")
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        done = children.run(step, [sys.executable, "-m", "npuctl.artifacts.llm.olive_steps", str(request_file),
                                   str(result_file)], env, deadline)
        result = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else {}
    error = result.get("error")
    done.check_stopped(needs, error)
    if error is not None:
        raise BuildError(step, error)
    if "details" not in result:
        raise BuildError(step, f"the Olive stage died (exit {done.returncode}): {done.tail()}")
    try:
        return kind.model_validate(result["details"] | {"memory": done.memory(needs)})
    except ValueError as exc:
        raise BuildError(step, f"the Olive stage reported what npuctl cannot read: {exc}") from exc


def _bar(deployment: ModelDeployment) -> Bar:
    accuracy, precision = deployment.spec.accuracy, deployment.spec.precision
    return Bar(accuracy.tokens, accuracy.tokens if accuracy.matching_tokens is None else accuracy.matching_tokens,
               DEFAULT_COSINE[precision] if accuracy.threshold is None else accuracy.threshold, precision)


def _check_quantized(reference: Path, weights: Path, quantized: Path, prompts: list[str], bar: Bar,
                     out: Path, needs: facts.Preflight) -> facts.LlmVerifyQuantized:
    checks, memory = llm_verify.check_quantized(reference, weights, quantized, prompts, bar.tokens, out, needs)
    worst = min(checks, key=lambda c: c.first_divergence)
    cosine = min(c.cosine for c in checks)
    if worst.first_divergence < bar.matching or cosine < bar.threshold:
        raise AccuracyError(
            f"the quantized model ({bar.precision.value}, on the CPU) first differs from the fp32 reference at greedy "
            f"token {worst.first_divergence} of {bar.tokens} (prompt {worst.prompt!r}; spec.accuracy.matchingTokens "
            f"wants {bar.matching}) and its lowest first-token logits cosine is {cosine:.5f} (spec.accuracy.threshold "
            f"wants {bar.threshold})", metric="greedy", value=cosine, threshold=bar.threshold)
    return facts.LlmVerifyQuantized(checks=[c.as_fact() for c in checks], first_divergence=worst.first_divergence,
                                    cosine=cosine, mean_cosine=sum(c.cosine for c in checks) / len(checks),
                                    memory=memory)


def _target(deployment: ModelDeployment, target: Target, static: Record[facts.LlmStatic],
            checked: Record[facts.LlmVerifyQuantized], bar: Bar, runner: Runner,
            steps: tuple[StepRun, ...], needs: facts.Preflight) -> NpuArtifact:
    spec = deployment.spec
    soc = target.soc_model or 0
    sharing = spec.generation.weight_sharing
    on = facts.Targeted(soc_model=soc, htp_arch=target.htp_arch, precision=spec.precision,
                        qnn_sdk=runner.tools["qnn-sdk"])

    def compile_work(out: Path) -> facts.LlmCompile:
        staged = run_stage("compile", facts.LlmCompile, {
            "stage": "compile", "model_dir": str(static.folder), "soc_model": soc, "weight_sharing": sharing,
            "optimization_level": spec.build.optimization_level, "attention": spec.generation.attention,
            "targeted": on.model_dump(mode="json")}, out, needs)
        return staged.model_copy(update={"ep_compatibility_info": qnn_compile.compatibility(_first_context(out))})

    # lm_head's key names what its prompt graph computes: packs compiled before it took the last position only
    # are compiled again.
    compiled, compile_run = runner.run(facts.LlmCompile, {"model": static.digest},
                                       on.model_dump(mode="json") | {"weight_sharing": sharing,
                                                                     "optimization_level": spec.build.optimization_level,
                                                                     "lm_head": "htp, last position"},
                                       compile_work, target=target.name)
    prompt = checked.details.checks[0].prompt
    tokens = min(llm_verify.PACK_TOKENS, bar.tokens)

    def verify_work(out: Path) -> facts.LlmVerify:
        check, memory = llm_verify.check_pack(compiled.folder, checked.path(llm_verify.PROBE), prompt, tokens, needs)
        if check.first_divergence < min(tokens, bar.matching) or check.reference_cosine < bar.threshold:
            raise AccuracyError(
                f"on {target.name} ({spec.precision.value}) the compiled pack's greedy tokens first differ from the "
                f"quantized model's on the CPU at token {check.first_divergence} of {tokens} (prompt {prompt!r}) and "
                f"its first-token logits cosine is {check.cosine:.5f} against the quantized model, "
                f"{check.reference_cosine:.5f} against fp32 (spec.accuracy.threshold wants {bar.threshold})"
                f"{llm_attention.verify_hint(spec.generation.attention)}",
                metric="greedy", value=check.reference_cosine, threshold=bar.threshold)
        return facts.LlmVerify(pack=check, memory=memory)

    verified, verify_run = runner.run(
        facts.LlmVerify, {"pack": compiled.digest, "quantized": checked.digest},
        {"prompt": prompt, "tokens": tokens, "matching_tokens": bar.matching, "threshold": bar.threshold},
        verify_work, target=target.name)
    quantized, pack = checked.details, verified.details.pack
    wrapper = _first_context(compiled.folder)
    return NpuArtifact(
        target=target.name, built=compiled.details, precision=spec.precision, batch=1, bucket=0,
        context_model=wrapper, context_binary=compiled.path(_binary_of(wrapper)),
        accuracy=facts.Accuracy(metric="cosine", value=min(quantized.cosine, pack.reference_cosine),
                                mean=quantized.mean_cosine, threshold=bar.threshold, samples=len(quantized.checks),
                                agreement=None),
        npu_coverage=compiled.details.placement.node_share, files=compiled.files,
        steps=(*steps, compile_run, verify_run),
        generation=verified.details.generation(quantized, compiled.details.placement, bar.tokens, bar.matching,
                                               llm_cpu_work.of(compiled.details.placement)))


def _first_context(pack: Path) -> Path:
    """The pack's first context-graph wrapper: what placement checks against the host."""
    pipeline = json.loads((pack / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]["pipeline"]
    for name, stage in pipeline[0].items():
        if stage.get("run_on_token_gen") is False:
            return pack / str(stage["filename"])
    raise BuildError("compile", f"{pack}: the pack's genai_config.json has no context stage")


def _binary_of(wrapper: Path) -> str:
    import onnx

    for node in onnx.load(str(wrapper), load_external_data=False).graph.node:
        for attribute in node.attribute:
            if node.op_type == "EPContext" and attribute.name == "ep_cache_context":
                return str(attribute.s.decode())
    raise BuildError("compile", f"{wrapper} has no EPContext node naming a context binary")
