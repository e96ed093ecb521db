"""Which build a text-generation deployment gets: a GGUF file is first dequantized into a transformers folder;
then w8a16 / w4a16 build QNN decoder-pipeline packs, and fp32 / int4 a CPU model with onnxruntime-genai's
builder (an onnxruntime-genai folder is served as it is)."""

from __future__ import annotations

from pathlib import Path

from npuctl.artifacts.llm import genai
from npuctl.artifacts.llm import pack as decoder_pack
from npuctl.artifacts.result import BuildResult, StepRun
from npuctl.artifacts.sources import gguf as gguf_source
from npuctl.artifacts.sources.context import ResolvedSource
from npuctl.artifacts.steps import Runner
from npuctl.schema.models import Format, ModelDeployment, Target


def build(deployment: ModelDeployment, source: ResolvedSource, resolve_run: StepRun, runner: Runner,
          targets: list[Target], base_dir: Path) -> BuildResult:
    earlier: tuple[StepRun, ...] = (resolve_run,)
    # An onnxruntime-genai folder is built already (its precision is its own): served as it is, whatever
    # spec.precision says (the NPU precisions are for packs built from transformers or GGUF weights).
    npu = source.format is not Format.GENAI and deployment.spec.precision in decoder_pack.NPU_PRECISIONS
    planned, sizes = None, None
    if source.format is Format.GGUF:
        if npu:  # from the file's header: a host that cannot build it is refused before the conversion
            sizes = gguf_source.header(source.path, source.uri)
            planned = decoder_pack.plan(deployment, sizes.config, source, runner, converted=True,
                                        counted=sizes.parameters)
        source, convert_run = gguf_source.convert_step(source, runner.run, planned[1] if planned else None,
                                                       sizes.inspected if sizes else None)
        earlier += (convert_run,)
    if npu:
        return decoder_pack.build_npu_generation(deployment, source, earlier, runner, targets, base_dir, planned)
    return genai.build_generation(deployment, source, earlier, runner.run)
