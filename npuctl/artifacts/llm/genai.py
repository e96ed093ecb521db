"""Text-generation builds: an onnxruntime-genai folder is served as it is; a transformers folder is turned into
one by onnxruntime-genai's model builder, as a content-addressed step (key: the source, the precision, and the
versions of the builder and of what it converts with)."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from npuctl.artifacts import children, facts, progress
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
_LOG_TAIL = 2000

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


def builder_step(source: ResolvedSource, precision: Precision,
                 run_step: StepRunner) -> tuple[Record[facts.GenaiBuilder], StepRun]:
    """onnxruntime-genai's CPU model builder on a transformers folder, as a stored step."""
    if precision not in BUILDER_PRECISIONS:
        raise BuildError(STEP, f"spec.precision {precision.value} is not a precision of onnxruntime-genai's CPU "
                         f"model builder: use {' or '.join(p.value for p in BUILDER_PRECISIONS)}, or w8a16 / "
                         "w4a16 for a QNN decoder-pipeline pack")
    parameters: dict[str, Any] = {"precision": BUILDER_PRECISIONS[precision], "execution_provider": "cpu",
                                  "tools": {name: dist_version(name) for name in _TOOLS}}

    def work(out: Path) -> facts.GenaiBuilder:
        run_builder(source.path, out, BUILDER_PRECISIONS[precision])
        return facts.GenaiBuilder(precision=BUILDER_PRECISIONS[precision])

    return run_step(facts.GenaiBuilder, {"source": source.digest}, parameters, work)


def run_builder(source: Path, out: Path, precision: str) -> None:
    """onnxruntime-genai's model builder in a child process (it prints progress and holds the torch model:
    neither belongs in the agent's process), its casts made a slice at a time (genai_child). Raises BuildError
    with the end of its log."""
    if dist_version("onnxruntime-genai") is None:
        raise BuildError(STEP, "onnxruntime-genai is not installed: pip install 'npuctl[genai]'")
    with tempfile.TemporaryDirectory(prefix="npuctl-genai-") as cache:
        command = [sys.executable, "-m", "npuctl.artifacts.llm.genai_child", "-i", str(source), "-o", str(out),
                   "-p", precision, "-e", "cpu", "-c", cache]
        # The source is local; the builder must never reach for the Hub. Unbuffered: its lines are its progress.
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        done = children.run(command, env, on_line=_BuilderLog(_layers(source)).read)
    if done.returncode != 0:
        log = (done.stderr or done.stdout)[-_LOG_TAIL:]
        raise BuildError(STEP, f"the onnxruntime-genai model builder failed (exit {done.returncode}): {log}")


class _BuilderLog:
    """The model builder's log read as progress: it prints `Reading layer N` as it converts each layer."""

    _LAYER = re.compile(r"Reading layer (\d+)")

    def __init__(self, layers: int | None) -> None:
        self.layers = layers
        self.read_layers = 0

    def read(self, line: str) -> None:
        if found := self._LAYER.match(line):
            self.read_layers = int(found.group(1))  # counted from 0: the number of layers read before it
            progress.report(self.read_layers, self.layers, "layers", "converting")
        elif line.startswith("Reading final norm"):
            self.read_layers = self.layers or self.read_layers + 1
            progress.report(self.read_layers, self.layers, "layers", "converting")
        elif line.startswith("Saving ONNX model"):
            progress.report(self.read_layers, self.layers, "layers", "saving the model")


def _layers(source: Path) -> int | None:
    """The checkpoint's layer count, if its config.json says (the builder's log does not)."""
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        layers = config.get("num_hidden_layers") or config.get("text_config", {}).get("num_hidden_layers")
    except (OSError, ValueError, AttributeError):
        return None
    return layers if isinstance(layers, int) and not isinstance(layers, bool) and layers > 0 else None
