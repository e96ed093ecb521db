"""The stages of a QNN decoder-pipeline build that Olive's passes do, each run in a child process
(`python -m npuctl.artifacts.llm.olive_steps <request.json> <result.json>`): Olive imports torch and
transformers, logs to stdout, and its passes hold whole models in memory; none of that belongs in the agent.

Olive 0.13 is driven pass by pass (`create_pass_from_dict(...).run(model, out)`), not through its workflow
engine, which refuses to start when `QNNExecutionProvider` is not in `ort.get_available_providers()` (a plugin
EP never is). The compile stage keeps Olive's pipeline bookkeeping (`process_llm_pipeline`) but compiles with
onnxruntime's own session options: Olive's EPContextBinaryGenerator unregisters the plugin library after each
session, so with weight sharing the second graph of a pair no longer finds the first's context."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from npuctl.artifacts import children, facts, progress
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm import attention, lm_head, olive_progress
from npuctl.artifacts.llm import compile as llm_compile
from npuctl.artifacts.llm import macs as llm_macs

PIPELINE_FILE = "llm_pipeline.json"
"""Written beside the components of a split/static/compiled model: which file is which stage."""
_CONTRIB_OPS = ["GatherBlockQuantized", "GroupQueryAttention", "MatMulNBits"]
"""Left unquantized: they run on the CPU and take float inputs."""
WEIGHT_TYPES = {"w8a16": "uint8", "w4a16": "uint4"}
"""Per-channel weight type of each NPU precision; activations are uint16 in both."""


def surgeries(request: dict[str, Any], out: Path) -> facts.LlmSurgeries:
    """Olive's QNN graph surgeries on the genai builder's fp32 model, its weights left in place."""
    from npuctl.artifacts.llm import surgeries as graph_surgeries

    names = graph_surgeries.NAMES
    progress.report(0, len(names), "surgeries", "Olive's QNN surgeons, the weights left in place")
    graph_surgeries.apply(Path(request["model_dir"]), out, int(request["head_size"]))
    progress.report(len(names), len(names), "surgeries", "the KV cache's head size fixed")
    return facts.LlmSurgeries(surgeries=list(names), kv_head_size=int(request["head_size"]))


def quantize(request: dict[str, Any], out: Path) -> facts.LlmQuantize:
    """OnnxStaticQuantization for the QNN EP: per-channel weights, uint16 activations, calibrated on the texts."""
    from olive.passes.onnx.quantization import OnnxStaticQuantization

    from npuctl.artifacts.llm import surgeries as graph_surgeries

    _register_corpus()
    progress.report(0, len(request["texts"]), "calibration samples", "preparing the model")
    data_config = {
        "name": "npuctl_corpus", "type": "DataContainer",
        "load_dataset_config": {"type": "npuctl_corpus", "params": {
            "tokenizer": request["tokenizer"], "texts": request["texts"], "window": request["window"]}},
        "pre_process_data_config": {"type": "skip_pre_process"},
        "dataloader_config": {"type": "no_auto_batch_dataloader"},
    }
    config = {"data_config": data_config, "precision": WEIGHT_TYPES[request["precision"]],
              "activation_type": "uint16", "per_channel": True, "quant_preprocess": True,
              "calibration_providers": ["CPUExecutionProvider"], "op_types_to_exclude": _CONTRIB_OPS}
    _lean_calibrater()
    # The scratch folder is inside the step's work folder (the store's disk, under the step's lock, so that
    # gc's sweep of dead builders' folders leaves it alone): the data file is as big as the fp32 model.
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="joined-", dir=out) as scratch:
        model = graph_surgeries.joined(Path(request["model_dir"]), Path(request["weights_dir"]), Path(scratch))
        _run(OnnxStaticQuantization, config, _onnx_model(model), out)
    return facts.LlmQuantize(weights=WEIGHT_TYPES[request["precision"]], activations="uint16",
                             calibration_texts=len(request["texts"]))


def static(request: dict[str, Any], out: Path) -> facts.LlmStatic:
    """CaptureSplitInfo (on the transformers model) -> SplitModel -> StaticLLM: embeddings, a context graph
    (the prefill window) and an iterator graph (one token) per split, lm_head; genai_config.json rewritten."""
    from olive.model import HfModelHandler
    from olive.passes.onnx.split import SplitModel
    from olive.passes.onnx.static_llm import StaticLLM
    from olive.passes.pytorch.capture_split_info import CaptureSplitInfo

    progress.report(0, None, "splits", "finding where to split")
    info = _run(CaptureSplitInfo, {"num_splits": request["splits"], "unique_embeds_lm_head_splits": True},
                HfModelHandler(model_path=request["hf_dir"]), out / "split-info")
    assignments = {str(k): int(v) for k, v in info.model_attributes["split_assignments"].items()}
    with olive_progress.splits_written(len(set(assignments.values()))):
        split = _run(SplitModel, {"split_assignments": assignments}, _onnx_model(Path(request["model_dir"])),
                     out / "split")
    with olive_progress.splits_static(int(request["splits"])):
        model = _run(StaticLLM, {"context_length": request["window"], "batch_size": 1}, split, out / "static")
    shutil.rmtree(out / "split-info", ignore_errors=True)
    _move_up(out / "static", out)
    shutil.rmtree(out / "split", ignore_errors=True)
    _save_pipeline(out, model.model_attributes["llm_pipeline"])
    if request["attention"] == "npu":
        pipeline = model.model_attributes["llm_pipeline"]
        attention.fix_kv_length(out, [*pipeline["context"], *pipeline["iterator"]], int(request["context_length"]))
    config_file = out / "genai_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    # The KV cache is as long as the manifest says: genai sizes it from max_length.
    model_config = config["model"]
    model_config["context_length"] = request["context_length"]
    config["search"]["max_length"] = request["context_length"]
    # The pipeline pads each prompt chunk to the window with pad_token_id: one outside the vocabulary (the
    # builder writes vocab_size when config.json has none, as for Qwen2) makes the embeddings' Gather fail.
    pad = model_config.get("pad_token_id")
    if not isinstance(pad, int) or not 0 <= pad < int(model_config["vocab_size"]):
        eos = model_config["eos_token_id"]
        model_config["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return facts.LlmStatic(split_assignments=assignments, pipeline=model.model_attributes["llm_pipeline"])


def compile_pack(request: dict[str, Any], out: Path) -> facts.LlmCompile:
    """Context binaries of every context/iterator graph for one SoC (onnxruntime's compiler, the plugin EP
    registered once), genai_config.json pointed at them, then ComposeOnnxModels chains each group."""
    from olive.model import CompositeModelHandler, ONNXModelHandler
    from olive.passes.onnx.common import process_llm_pipeline
    from olive.passes.onnx.compose import ComposeOnnxModels

    source = Path(request["model_dir"])
    pipeline = _load_pipeline(source)
    names = [pipeline["embeddings"], *pipeline["context"], *pipeline["iterator"], pipeline["lm_head"]]
    composite = CompositeModelHandler(
        [ONNXModelHandler(model_path=str(source), onnx_file_name=f"{name}.onnx") for name in names], names,
        model_path=str(source), model_attributes={"llm_pipeline": pipeline, "additional_files": _extra_files(source)})
    genai_config = json.loads((source / "genai_config.json").read_text(encoding="utf-8"))
    context_length = int(genai_config["model"]["context_length"])
    compiler = llm_compile.Compiler(int(request["soc_model"]), int(request["optimization_level"]),
                                    bool(request["weight_sharing"]), request["attention"], context_length)
    embeddings = pipeline["embeddings"]
    compiler.placement.stages[embeddings] = llm_compile.cpu_placement(source / f"{embeddings}.onnx")
    window = llm_macs.tokens_of(source / f"{pipeline['context'][0]}.onnx")

    def compile_groups(components: dict[str, Any], llm_pipeline: dict[str, Any], folder: Path) -> dict[str, Any]:
        groups: dict[str, dict[str, Any]] = {"context": {}, "iterator": {}}
        graphs = 2 * len(llm_pipeline["context"]) + 2
        for index, (context, iterator) in enumerate(zip(llm_pipeline["context"], llm_pipeline["iterator"],
                                                        strict=True)):
            progress.report(2 * index, graphs, "graphs", "compiling context binaries")
            pair = {f"{context}_ctx": Path(components[context].model_path),
                    f"{iterator}_ctx": Path(components[iterator].model_path)}
            for name, wrapper in compiler.compile_pair(pair, folder).items():
                group = "context" if name == f"{context}_ctx" else "iterator"
                groups[group][name] = ONNXModelHandler(model_path=str(folder), onnx_file_name=wrapper.name)
        return groups

    compiled = process_llm_pipeline(composite, pipeline, compile_groups, out / "compiled",
                                    group_session_options={"provider_options": [{"qnn": compiler.pack_options()}]})
    graphs = 2 * len(pipeline["context"]) + 2
    progress.report(graphs - 2, graphs, "graphs", "compiling lm_head")
    prompt_head, token_head = lm_head.compile_pair(compiler, source, out / "lm_head", window)
    progress.report(graphs, graphs, "graphs", "composing the pack")
    composed = _run(ComposeOnnxModels, {}, compiled, out / "pack")
    _move_up(out / "pack", out)
    shutil.rmtree(out / "compiled", ignore_errors=True)
    composed_pipeline = composed.model_attributes["llm_pipeline"]
    lm_head.into_pack([prompt_head, token_head], out, composed_pipeline["lm_head"])
    _save_pipeline(out, composed_pipeline | {"lm_head": [prompt_head.stem, token_head.stem]})
    placement = compiler.placement.report([*(f"{name}_ctx" for name in pipeline["context"]), prompt_head.stem],
                                          [*(f"{name}_ctx" for name in pipeline["iterator"]), token_head.stem], window)
    return facts.LlmCompile(**request["targeted"], weight_sharing=bool(request["weight_sharing"]),
                            placement=placement, ep_compatibility_info=None)


STAGES: dict[str, Callable[[dict[str, Any], Path], BaseModel]] = {
    "surgeries": surgeries, "quantize": quantize, "static": static, "compile": compile_pack}


def main(argv: list[str]) -> int:
    """Run the stage a request file names; write {"details": ...} or {"error": ...} to the result file."""
    request_file, result_file = Path(argv[0]), Path(argv[1])
    request = json.loads(request_file.read_text(encoding="utf-8"))
    logging.getLogger("olive").setLevel(logging.WARNING)
    try:
        with children.to_parent():
            details = STAGES[request["stage"]](request, Path(request["out"]))
        result: dict[str, Any] = {"details": details.model_dump(mode="json")}
    except BuildError as exc:
        result = {"error": exc.message}
    except Exception as exc:  # reported to the parent, which raises a BuildError naming the step
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result_file.write_text(json.dumps(result), encoding="utf-8")
    return 0 if "details" in result else 1


def _run(pass_type: Any, config: dict[str, Any], model: Any, out: Path) -> Any:
    from olive.hardware.accelerator import AcceleratorSpec, Device
    from olive.passes.olive_pass import create_pass_from_dict

    accelerator = AcceleratorSpec(accelerator_type=Device.NPU, execution_provider="QNNExecutionProvider")
    return create_pass_from_dict(pass_type, config, disable_search=True, accelerator_spec=accelerator).run(model, str(out))


def _onnx_model(folder: Path) -> Any:
    """An Olive model of `folder/model.onnx`, with the folder's other files (genai_config.json, tokenizer)
    carried along by every pass."""
    from olive.model import ONNXModelHandler

    return ONNXModelHandler(model_path=str(folder), onnx_file_name="model.onnx",
                            model_attributes={"additional_files": _extra_files(folder)})


def _extra_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir()
                  if p.is_file() and p.suffix not in (".onnx", ".data", ".bin") and p.name != PIPELINE_FILE)


def _lean_calibrater() -> None:
    """onnxruntime's MinMaxCalibrater keeps the whole fp32 model it augmented (weights included) while its
    session, which holds another copy, loads and runs the calibration texts; it never reads it again: the session
    loads the augmented model from its file, and the ranges come from the session's outputs. Its weights are
    dropped before the session loads: one fp32 copy less at the step's peak (the quantized model is the same)."""
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    original = MinMaxCalibrater.create_inference_session
    if getattr(original, "npuctl_lean", False):
        return

    def create_inference_session(self: Any) -> None:
        self.model.graph.ClearField("initializer")
        original(self)

    create_inference_session.npuctl_lean = True  # type: ignore[attr-defined]
    MinMaxCalibrater.create_inference_session = create_inference_session


def _register_corpus() -> None:
    """An Olive dataset of tokenized texts (its registry is the extension point for data a recipe doesn't know)."""
    from olive.data.registry import Registry

    @Registry.register_dataset("npuctl_corpus")  # type: ignore[untyped-decorator]
    def npuctl_corpus(tokenizer: str, texts: list[str], window: int, **_: Any) -> Sequence[Any]:
        import torch
        from tokenizers import Tokenizer

        encoder = Tokenizer.from_file(tokenizer)
        rows = []
        for text in texts:
            ids = encoder.encode(text).ids[:window]
            rows.append(({"input_ids": torch.tensor([ids]),
                          "attention_mask": torch.ones(1, len(ids), dtype=torch.int64)}, 0))
        return olive_progress.CalibrationRows(rows)


def _move_up(folder: Path, parent: Path) -> None:
    for item in folder.iterdir():
        shutil.move(str(item), str(parent / item.name))
    folder.rmdir()


def _save_pipeline(folder: Path, pipeline: dict[str, Any]) -> None:
    (folder / PIPELINE_FILE).write_text(json.dumps(pipeline), encoding="utf-8")


def _load_pipeline(folder: Path) -> dict[str, Any]:
    pipeline: dict[str, Any] = json.loads((folder / PIPELINE_FILE).read_text(encoding="utf-8"))
    return pipeline


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
