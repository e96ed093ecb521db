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
from npuctl.artifacts.llm import attention, graph_refs, lm_head, olive_progress
from npuctl.artifacts.llm import compile as llm_compile
from npuctl.artifacts.llm import macs as llm_macs
from npuctl.artifacts.store import RECORD

PIPELINE_FILE = "llm_pipeline.json"
"""Written beside the components of a split/static/compiled model: which file is which stage."""


def surgeries(request: dict[str, Any], out: Path) -> facts.LlmSurgeries:
    """Olive's QNN graph surgeries on the genai builder's fp32 model, its weights left in place."""
    from npuctl.artifacts.llm import surgeries as graph_surgeries

    names = graph_surgeries.NAMES
    progress.report(0, len(names), "surgeries", "Olive's QNN surgeons, the weights left in place")
    graph_surgeries.apply(Path(request["model_dir"]), out, int(request["head_size"]))
    progress.report(len(names), len(names), "surgeries", "the KV cache's head size fixed")
    return facts.LlmSurgeries(surgeries=list(names), kv_head_size=int(request["head_size"]))


def quantize(request: dict[str, Any], out: Path) -> facts.LlmQuantize:
    """Static QDQ quantization for the QNN EP (npuctl.artifacts.llm.quantization), calibrated on the texts as Olive's
    data config feeds them: its dataset, dataloader and LLM input filling make the samples."""
    import onnx

    from npuctl.artifacts.llm import quantization
    from npuctl.artifacts.llm.weights import WeightsFolder

    texts = len(request["texts"])
    progress.report(0, texts, "calibration samples", "preparing the graph")
    model_dir, weights = Path(request["model_dir"]), WeightsFolder(Path(request["weights_dir"]), "llm-quantize")

    # The scratch folder is on the store's disk (in the step's work folder, under its lock, which gc's sweep of dead
    # builders' folders leaves alone): the folded tensors' data file may be as big as the embedding.
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=out) as scratch:
        prepared = quantization.prepare(model_dir / quantization.MODEL_FILE, weights, Path(scratch))
        graph = Path(scratch) / quantization.MODEL_FILE
        # Olive's reader reads the model's inputs from a file: the graph alone, its weights' references dangling.
        onnx.save(prepared, str(graph))
        samples = _calibration_samples(request, graph)
        quantization.quantize(prepared, weights, samples, request["precision"], out)
    for file in _extra_files(model_dir):
        if Path(file).name != RECORD:  # the surgeries' record; the store writes this step's
            shutil.copy2(file, out / Path(file).name)
    return facts.LlmQuantize(weights=quantization.WEIGHT_TYPES[request["precision"]], activations="uint16",
                             calibration_texts=texts)


def static(request: dict[str, Any], out: Path) -> facts.LlmStatic:
    """CaptureSplitInfo (on the transformers model's shape, no weights) -> SplitModel (on the graph, its weights
    references) with each split's weights copied tensor by tensor -> StaticLLM: embeddings, a context graph (the
    prefill window) and an iterator graph (one token) per split, lm_head; genai_config.json rewritten."""
    from olive.passes.onnx.static_llm import StaticLLM

    source = Path(request["model_dir"])
    progress.report(0, None, "splits", "finding where to split")
    assignments = split_assignments(Path(request["hf_dir"]), int(request["splits"]), out / "split-info")
    split = split_graph(source, assignments, out / "split")
    with olive_progress.splits_static(int(request["splits"])):
        model = _run(StaticLLM, {"context_length": request["window"], "batch_size": 1}, split, out / "static")
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


def split_assignments(hf_dir: Path, splits: int, out: Path) -> dict[str, int]:
    """Olive's CaptureSplitInfo: the module -> split map of the transformers model, computed on the model built
    on the meta device from config.json (module names only, no weights: the pass loads them all, in fp32, to
    read the names)."""
    import torch
    from olive.model import HfModelHandler
    from olive.passes.pytorch.capture_split_info import CaptureSplitInfo
    from transformers import AutoConfig, AutoModelForCausalLM

    handler = HfModelHandler(model_path=str(hf_dir))
    config = AutoConfig.from_pretrained(hf_dir)
    with torch.device("meta"):
        handler.model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    info = _run(CaptureSplitInfo, {"num_splits": splits, "unique_embeds_lm_head_splits": True}, handler, out)
    shutil.rmtree(out, ignore_errors=True)
    return {str(k): int(v) for k, v in info.model_attributes["split_assignments"].items()}


def split_graph(source: Path, assignments: dict[str, int], out: Path) -> Any:
    """Olive's SplitModel on `source`/model.onnx read without its weights (each initializer a reference to its
    bytes in the source's files), then each split given its own data file, tensor by tensor."""
    from olive.model import ONNXModelHandler
    from olive.passes.onnx.split import SplitModel

    class GraphOnly(ONNXModelHandler):  # type: ignore[misc]
        """What SplitModel loads (its only way in to the model): the graph, not the weights."""

        def load_model(self, rank: int | None = None, cache_model: bool = True) -> Any:
            return graph_refs.load_graph(Path(self.model_path))

    graph = GraphOnly(model_path=str(source), onnx_file_name="model.onnx",
                      model_attributes={"additional_files": _extra_files(source)})
    split = _run(SplitModel, {"split_assignments": assignments}, graph, out)
    components = list(split.get_model_components())
    for index, (_, component) in enumerate(components):
        progress.report(index, len(components), "splits", "writing each split's weights")
        graph_refs.localize(Path(component.model_path), source)
    progress.report(len(components), len(components), "splits", "split")
    return split


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


def _calibration_samples(request: dict[str, Any], graph: Path) -> list[dict[str, Any]]:
    """The feeds of `graph`'s inputs for each text, made as Olive's quantization pass makes them (its data config,
    then its LLM data loader: sequence lengths and an empty KV cache)."""
    from types import SimpleNamespace

    from olive.common.onnx_io import get_io_config
    from olive.passes.onnx.quantization import get_calibration_dataloader

    _register_corpus()
    data_config = {
        "name": "npuctl_corpus", "type": "DataContainer",
        "load_dataset_config": {"type": "npuctl_corpus", "params": {
            "tokenizer": request["tokenizer"], "texts": request["texts"], "window": request["window"]}},
        "pre_process_data_config": {"type": "skip_pre_process"},
        "dataloader_config": {"type": "no_auto_batch_dataloader"},
    }
    reader = get_calibration_dataloader(SimpleNamespace(data_config=data_config), str(graph),
                                        get_io_config(str(graph)))
    return list(iter(reader.get_next, None))


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
        return rows


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
