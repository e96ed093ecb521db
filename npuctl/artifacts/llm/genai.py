"""Text-generation builds: an onnxruntime-genai folder is served as it is; a transformers folder is turned into
one by onnxruntime-genai's model builder, as a content-addressed step (key: the source, the precision, and the
versions of the builder and of what it converts with)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from npuctl.artifacts import children, facts
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.result import BuildResult, StepRun
from npuctl.artifacts.sources.context import ResolvedSource
from npuctl.artifacts.steps import StepRunner, dist_version
from npuctl.artifacts.store import Record
from npuctl.schema.models import Format, ModelDeployment, Precision

STEP = facts.GenaiBuilder.step
GENAI_CONFIG = "genai_config.json"
BUILDER_PRECISIONS = {Precision.FP32: "fp32", Precision.INT4: "int4"}
_TOOLS = ("onnxruntime-genai", "transformers", "torch", "onnx-ir", "onnxscript")
DEADLINE_SECONDS = 3 * 3600.0
"""The builder is stopped past this (a hung native library): it converts Llama-3.2-1B's shape in ~50 s on this
project's loaded 2-core host, a 3B model in a few minutes."""

def build_generation(deployment: ModelDeployment, source: ResolvedSource, earlier: tuple[StepRun, ...],
                     run_step: StepRunner) -> BuildResult:
    """The genai folder of a text-generation deployment for the CPU: the source itself, or the model builder's
    output. `earlier`: the steps that led to `source` (resolve; for GGUF also its conversion)."""
    spec = deployment.spec
    steps: tuple[StepRun, ...]
    if source.format is Format.GENAI:
        folder, steps = source.folder, earlier
    elif source.format is Format.TRANSFORMERS:
        record, run = builder_step(source, spec.precision, run_step)
        folder, steps = record.folder, (*earlier, run)
    else:
        raise BuildError("resolve", f"{source.uri} is {source.format.value}: a text-generation model needs an "
                         "onnxruntime-genai folder (format: genai) or a transformers folder (format: transformers)")
    if not (folder / GENAI_CONFIG).is_file():
        raise BuildError("resolve", f"{source.uri}: {folder} has no {GENAI_CONFIG}")
    tokenizer = folder / "tokenizer.json"
    return BuildResult(deployment.name, spec.model.task, spec.precision, None, folder,
                       tokenizer if tokenizer.is_file() else None, (), steps, (source,))


def builder_step(source: ResolvedSource, precision: Precision, run_step: StepRunner,
                 needs: facts.Preflight | None = None) -> tuple[Record[facts.GenaiBuilder], StepRun]:
    """onnxruntime-genai's CPU model builder on a transformers folder, as a stored step (`needs`: an NPU build's
    pre-flight, what running out of memory is reported against)."""
    if precision not in BUILDER_PRECISIONS:
        raise BuildError(STEP, f"spec.precision {precision.value} is not a precision of onnxruntime-genai's CPU "
                         f"model builder: use {' or '.join(p.value for p in BUILDER_PRECISIONS)}, or w8a16 / "
                         "w4a16 for a QNN decoder-pipeline pack")
    parameters: dict[str, Any] = {"precision": BUILDER_PRECISIONS[precision], "execution_provider": "cpu",
                                  "tools": {name: dist_version(name) for name in _TOOLS}}

    def work(out: Path) -> facts.GenaiBuilder:
        return facts.GenaiBuilder(precision=BUILDER_PRECISIONS[precision],
                                  memory=run_builder(source.path, out, BUILDER_PRECISIONS[precision], needs))

    return run_step(facts.GenaiBuilder, {"source": source.digest}, parameters, work)


def run_builder(source: Path, out: Path, precision: str, needs: facts.Preflight | None = None) -> facts.StageMemory:
    """onnxruntime-genai's model builder in a watched child process (it holds the torch model, which does not
    belong in the agent's process), its casts made a slice at a time and its log read as progress (genai_child).
    Returns its process tree's peak RSS beside `needs`' estimate. Raises BuildError with the end of its log;
    running out of memory, with its peak and that estimate."""
    if dist_version("onnxruntime-genai") is None:
        raise BuildError(STEP, "onnxruntime-genai is not installed: pip install 'npuctl[genai]'")
    with tempfile.TemporaryDirectory(prefix="npuctl-genai-") as cache:
        command = [sys.executable, "-m", "npuctl.artifacts.llm.genai_child", "-i", str(source), "-o", str(out),
                   "-p", precision, "-e", "cpu", "-c", cache]
        # The source is local; the builder must never reach for the Hub.
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = children.run(STEP, command, env, DEADLINE_SECONDS)
    done.check_stopped(needs)
    if done.returncode != 0:
        raise BuildError(STEP, f"the onnxruntime-genai model builder failed (exit {done.returncode}): {done.tail()}")
    return done.memory(needs)
