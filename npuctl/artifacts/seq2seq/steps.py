"""The NPU steps of an encoder-decoder's one-step decoder: its graph with static shapes for one encoder bucket
(`decoder-static`), then a context binary per target (`compile-decoder`, fp16: its inputs are attention caches, which
no calibration set of sentences covers). If the HTP refuses the graph, the step records why and the decoder runs on
the CPU beside the NPU encoder."""

from __future__ import annotations

from pathlib import Path

import onnx

from npuctl.artifacts import compile as qnn_compile
from npuctl.artifacts import facts, graphs
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.result import StepRun
from npuctl.artifacts.steps import Runner
from npuctl.artifacts.store import Record
from npuctl.runtime.seq2seq import DECODER_FILE


def static_decoder(runner: Runner, export: Record[facts.Seq2SeqExport],
                   bucket: int) -> tuple[Record[facts.DecoderStatic], StepRun]:
    """The decoder with every encoder-length axis fixed to `bucket` (the rest of its shapes are static already)."""

    def work(out: Path) -> facts.DecoderStatic:
        from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

        model = onnx.load(str(export.path(DECODER_FILE)))
        for spec in graphs.inputs_of(model):
            make_input_shape_fixed(model.graph, spec.name, [d if isinstance(d, int) and d > 0 else bucket
                                                            for d in spec.shape])
        fix_output_shapes(model)
        graphs.save(model, out / graphs.MODEL_FILE)
        return facts.DecoderStatic(clamped_mask_constants=graphs.clamp_mask_constants(model))

    return runner.run(facts.DecoderStatic, {"model": export.digest}, {"sequence": bucket}, work, bucket=bucket)


def compile_decoder(runner: Runner, static: Record[facts.DecoderStatic], on: facts.Targeted, target: str, bucket: int,
                    optimization_level: int) -> tuple[Record[facts.CompileDecoder], StepRun]:
    """A context binary of the static decoder, or a record of why the QNN EP refused it (`refused`)."""

    def work(out: Path) -> facts.CompileDecoder:
        try:
            compiled = qnn_compile.compile_context(static.path(graphs.MODEL_FILE), out, soc_model=on.soc_model,
                                                   fp16=True, optimization_level=optimization_level)
        except BuildError as exc:
            for leftover in out.iterdir():
                leftover.unlink()
            return facts.CompileDecoder(**on.model_dump(), refused=exc.message)
        return facts.CompileDecoder(**on.model_dump(), ep_compatibility_info=compiled.compatibility,
                                    npu_coverage=compiled.coverage.qnn_share)

    return runner.run(facts.CompileDecoder, {"model": static.digest},
                      on.model_dump(mode="json") | {"fp16": True, "optimization_level": optimization_level},
                      work, target=target, bucket=bucket)


def decoder_context(record: Record[facts.CompileDecoder] | None) -> Path | None:
    """The compiled decoder's wrapper, None when there is none (not an encoder-decoder, or the HTP refused it)."""
    if record is None or record.details.refused is not None:
        return None
    return record.path(qnn_compile.CONTEXT_MODEL)
