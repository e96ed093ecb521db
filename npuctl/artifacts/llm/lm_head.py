"""lm_head on the HTP: Olive's StaticLLM leaves the lm_head graph with a symbolic sequence length, a CPU stage of
the decoder pipeline. The QNN EP compiles static shapes only, so the compile step makes two graphs of it, one that
takes the prefill window and computes the logits of its last real position only (`last_position`) and one over a
single token, compiles them like a context/iterator pair and gives them to onnxruntime-genai as two stages: the
prompt's (`run_on_token_gen: false`; `is_lm_head`, so genai runs it on the last window of a prompt only) and the
decoded tokens' (`run_on_prompt: false`).

The tied embedding is not stored once: the Gather of the token embeddings stays on the CPU, and a context binary's
weights cannot be read by a CPU graph. On the HTP it would not be one copy either: QNN prepares each op's weight in
a layout of its own, so a Gather and lm_head's FullyConnected over one initializer store it twice even in one graph
(bench/tied_embedding.py). Without weight sharing each of the two lm_head graphs has its own binary, so the pack
holds the embedding table on the CPU plus two uint8 copies of the lm_head weight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from npuctl.artifacts.llm import compile as llm_compile

CONTEXT = "lm_head_context"
ITERATOR = "lm_head_iterator"
"""The two static graphs of lm_head; their compiled wrappers add `_ctx`, as the context/iterator graphs' do."""
INPUT_IDS = "input_ids"
"""genai's managed input the prompt's lm_head reads to find the window's last real position."""


def compile_pair(compiler: llm_compile.Compiler, source: Path, folder: Path, window: int) -> tuple[Path, Path]:
    """Compile `lm_head.onnx` of `source` for the prompt (its last real position picked from a window of
    `window` hidden states, `last_position`) and for one token (batch 1) into `folder`: the prompt's and the
    decoded tokens' EPContext wrappers, their binaries beside them."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    graphs = folder / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    # The graph is read without its weights and both static graphs point at one copy of its data file beside
    # them: a stored step's files are hard links, which onnx refuses to read external data from, and the
    # weights (vocabulary x hidden) are the largest of the model's tensors.
    source_graph = onnx.load(str(source / "lm_head.onnx"), load_external_data=False)
    for location in {e.value for t in source_graph.graph.initializer for e in t.external_data if e.key == "location"}:
        shutil.copyfile(source / location, graphs / location)
    pad = int(json.loads((source / "genai_config.json").read_text(encoding="utf-8"))["model"]["pad_token_id"])
    pair = {}
    for name in (CONTEXT, ITERATOR):
        model = onnx.ModelProto()
        model.CopyFrom(source_graph)
        batch, sequence = model.graph.input[0].type.tensor_type.shape.dim[:2]
        for dim in (batch, sequence):
            if dim.dim_param:
                make_dim_param_fixed(model.graph, dim.dim_param, 1)
        if name == CONTEXT:
            last_position(model, window, pad)
        path = graphs / f"{name}.onnx"
        onnx.save(model, str(path))
        pair[f"{name}_ctx"] = path
    prompt, token = compiler.compile_pair(pair, folder).values()
    return prompt, token


def last_position(model: Any, window: int, pad: int) -> None:
    """Make the one-token lm_head graph `model` the prompt's: it takes the window's hidden states and `input_ids`
    and computes the logits of the last real position only. genai reads no other (the logits of a prompt's last
    window at its last token that is not `pad`: `Logits::Update`; a graph whose logits have one position it
    takes as they are, "trimmed prefill logits"), so lm_head over the other window - 1 positions was wasted:
    a fifth to a quarter of a prefill window's MACs at 0.1-1B parameters (lm_head's share of the weights).
    The window is filled from the left and padded with `pad` (genai's `sliding_window.alignment: left`), so the
    position is the last one whose token is not `pad`: argmax of (position + 1) where the token is real. The
    Gather takes the dequantized hidden states and is quantized again with the same scale: a QDQ Gather, which
    the HTP takes (a bare uint16 Gather it refuses, and then lm_head's MatMul with it), and exact."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    hidden = graph.input[0]
    hidden.type.tensor_type.shape.dim[1].dim_value = window
    dequantize = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == hidden.name)
    full = dequantize.output[0]
    last = f"{full}_last_position"
    for node in graph.node:
        node.input[:] = [last if name == full else name for name in node.input]
    graph.input.append(helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, [1, window]))
    graph.initializer.extend([numpy_helper.from_array(np.asarray(pad, np.int64), "last_position_pad"),
                              numpy_helper.from_array(np.arange(1, window + 1, dtype=np.int64), "last_position_rank")])
    scale = list(dequantize.input[1:])
    picked = [
        helper.make_node("Equal", [INPUT_IDS, "last_position_pad"], ["last_position_is_pad"],
                         name="last_position_is_pad"),
        helper.make_node("Not", ["last_position_is_pad"], ["last_position_real"], name="last_position_real"),
        helper.make_node("Cast", ["last_position_real"], ["last_position_real_int"], name="last_position_real_int",
                         to=TensorProto.INT64),
        helper.make_node("Mul", ["last_position_real_int", "last_position_rank"], ["last_position_ranked"],
                         name="last_position_ranked"),
        helper.make_node("ArgMax", ["last_position_ranked"], ["last_position_index"], name="last_position_index",
                         axis=1, keepdims=0),
        helper.make_node("Gather", [full, "last_position_index"], ["last_position_gathered"],
                         name="last_position_gather", axis=1),
        helper.make_node("QuantizeLinear", ["last_position_gathered", *scale], ["last_position_quantized"],
                         name="last_position_quantize"),
        helper.make_node("DequantizeLinear", ["last_position_quantized", *scale], [last],
                         name="last_position_dequantize"),
    ]
    position = list(graph.node).index(dequantize) + 1
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes[:position], *picked, *nodes[position:]])


def into_pack(compiled: list[Path], pack: Path, cpu_stage: str) -> None:
    """Move the compiled lm_head wrappers (the prompt's first) and their binaries into the composed `pack`, in
    place of its CPU stage `cpu_stage`: its graph deleted, its genai_config.json stage replaced by the two, with
    the QNN session options of the pack's other compiled stages."""
    import onnx

    folder = compiled[0].parent
    for item in [*compiled, *folder.glob("*.bin")]:
        shutil.move(str(item), str(pack / item.name))
    shutil.rmtree(folder)
    cpu_graph = pack / f"{cpu_stage}.onnx"
    external = {e.value for t in onnx.load(str(cpu_graph), load_external_data=False).graph.initializer
                for e in t.external_data if e.key == "location"}
    for name in {cpu_graph.name, *external}:
        (pack / name).unlink()
    config_file = pack / "genai_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    [stages] = config["model"]["decoder"]["pipeline"]
    cpu = stages.pop(cpu_stage)
    options = next(s["session_options"] for s in stages.values() if "session_options" in s)
    common: dict[str, Any] = {"inputs": cpu["inputs"], "outputs": cpu["outputs"], "session_options": options,
                              "is_lm_head": True}
    prompt, token = compiled
    stages[prompt.stem] = {"filename": prompt.name, **common, "inputs": [*cpu["inputs"], INPUT_IDS],
                           "run_on_token_gen": False}
    stages[token.stem] = {"filename": token.name, **common, "run_on_prompt": False}
    config_file.write_text(json.dumps(config, indent=4), encoding="utf-8")
