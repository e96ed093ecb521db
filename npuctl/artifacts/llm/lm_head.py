"""lm_head on the HTP: Olive's StaticLLM leaves the lm_head graph with a symbolic sequence length, a CPU stage of
the decoder pipeline. The QNN EP compiles static shapes only, so the compile step makes two graphs of it, one over
the prefill window and one over a single token, compiles them like a context/iterator pair and gives them to
onnxruntime-genai as two stages: the prompt's (`run_on_token_gen: false`; `is_lm_head`, so genai runs it on the
last window of a prompt only) and the decoded tokens' (`run_on_prompt: false`).

The tied embedding is not stored once: the Gather of the token embeddings stays on the CPU (an HTP Gather over the
vocabulary would read a table the size of lm_head's weight per token), and a context binary's weights cannot be
read by a CPU graph. Without weight sharing each of the two lm_head graphs has its own binary, so the pack holds
the embedding table on the CPU plus two uint8 copies of the lm_head weight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from npuctl.artifacts.llm import compile as llm_compile

CONTEXT = "lm_head_context"
ITERATOR = "lm_head_iterator"
"""The two static graphs of lm_head; their compiled wrappers add `_ctx`, as the context/iterator graphs' do."""


def compile_pair(compiler: llm_compile.Compiler, source: Path, folder: Path, window: int) -> tuple[Path, Path]:
    """Compile `lm_head.onnx` of `source` over `window` tokens and over one (batch 1) into `folder`: the prompt's
    and the decoded tokens' EPContext wrappers, their binaries beside them."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    graphs = folder / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    pair = {}
    for name, tokens in ((CONTEXT, window), (ITERATOR, 1)):
        # Loaded with its weights: the fixed graph is saved away from its source's external data file.
        model = onnx.load(str(source / "lm_head.onnx"))
        batch, sequence = model.graph.input[0].type.tensor_type.shape.dim[:2]
        for dim, value in ((batch, 1), (sequence, tokens)):
            if dim.dim_param:
                make_dim_param_fixed(model.graph, dim.dim_param, value)
        path = graphs / f"{name}.onnx"
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{name}.onnx.data", size_threshold=1 << 20)
        pair[f"{name}_ctx"] = path
    prompt, token = compiler.compile_pair(pair, folder).values()
    return prompt, token


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
    stages[prompt.stem] = {"filename": prompt.name, **common, "run_on_token_gen": False}
    stages[token.stem] = {"filename": token.name, **common, "run_on_prompt": False}
    config_file.write_text(json.dumps(config, indent=4), encoding="utf-8")
