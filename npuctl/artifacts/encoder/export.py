"""Export a transformers checkpoint folder to a dynamic-shape fp32 ONNX model (torch; the `export` extra)."""

from __future__ import annotations

import inspect
import shutil
import warnings
from pathlib import Path
from typing import Any

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.graphs import MODEL_FILE

OPSET = 17
OUTPUT = "last_hidden_state"
LOGITS = "logits"
"""The output of a sequence-classification head (rerankers, classifiers): [batch, labels]."""
ASSETS = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
)
"""Files the runtime needs beside the model (tokenizer, sentence-transformers pooling), copied into the step output."""


def tool_versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def export_transformers(source: Path, out: Path, *, head: bool = False) -> list[str]:
    """Write `out/model.onnx` (inputs [batch, sequence], output last_hidden_state; with `head`, the
    sequence-classification head's logits [batch, labels]) plus the source's tokenizer and pooling files.
    Returns the input names."""
    try:
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification
    except ImportError as exc:
        raise BuildError("export", "exporting a transformers model needs torch and transformers: "
                         "pip install 'npuctl[export]'") from exc

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a library prints nothing; callers get progress from step events
    # Eager attention exports the classic additive mask (one finfo.min constant that npu-fixes clamps);
    # SDPA exports IsNaN/-inf guards the QNN EP cannot take.
    loader = AutoModelForSequenceClassification if head else AutoModel
    model = loader.from_pretrained(str(source), attn_implementation="eager")
    model.eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
             if n in inspect.signature(model.forward).parameters]
    example = tuple(torch.ones(1, 8, dtype=torch.long) if n != "token_type_ids"
                    else torch.zeros(1, 8, dtype=torch.long) for n in names)
    output = LOGITS if head else OUTPUT
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch"} if head else {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about shape-dependent Python branches in mask building; they hold for every
        # input whose attention mask is as long as its input ids, which is the only way npuctl calls it.
        warnings.simplefilter("ignore")
        torch.onnx.export(_keyword_wrapper(model, names, output), example, str(out / MODEL_FILE), input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    copy_assets(source, out)
    return names


def copy_assets(source: Path, out: Path) -> None:
    for name in ASSETS:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    # sentence-transformers module folders (1_Pooling/config.json, ...) hold small JSON configs.
    for config in source.glob("*_*/config.json"):
        target = out / config.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(config, target)


def _keyword_wrapper(model: Any, names: list[str], output: str) -> Any:
    """A module taking positional tensors (what the exporter passes) and calling the model with keywords:
    transformers 5.x forwards are keyword-first."""
    import torch

    class KeywordCall(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return getattr(self.model(**dict(zip(names, tensors, strict=True))), output)

    return KeywordCall()
