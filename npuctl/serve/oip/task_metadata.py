"""What `/v2/models/{name}` says of a model beyond its tensors: its task, where its requests go, and what the task
needs a client to know (a classifier's labels, an encoder-decoder's limits)."""

from __future__ import annotations

from typing import Any

from npuctl.runtime.seq2seq import Seq2SeqModel
from npuctl.schema.models import Task
from npuctl.serve.models import EmbeddingService, GenerationService, ScoringService, ServedModel, TensorService

ENDPOINTS = {
    Task.EMBEDDINGS: ["/v1/embeddings", "/v2/models/{name}/infer"],
    Task.TENSOR: ["/v2/models/{name}/infer"],
    Task.RERANK: ["/v1/rerank", "/rerank"],
    Task.CLASSIFICATION: ["/v1/classify", "/classify"],
    Task.TEXT_GENERATION: ["/v1/chat/completions", "/v1/completions"],
    Task.TEXT2TEXT_GENERATION: ["/v1/chat/completions", "/v1/completions"],
}


def task_metadata(model: ServedModel) -> dict[str, Any]:
    task = _task(model)
    if task is None:
        return {}
    found: dict[str, Any] = {"task": task.value, "endpoints": ENDPOINTS[task]}
    if isinstance(model, ScoringService):
        found["maxInputTokens"] = model.model.encoder.max_tokens
        if task is Task.CLASSIFICATION:
            found |= {"labels": list(model.model.head.labels), "multiLabel": model.model.head.multi_label}
    if isinstance(model, GenerationService):
        found["maxInputTokens"] = model.max_input_tokens
        if isinstance(model.model, Seq2SeqModel):
            found["maxOutputTokens"] = model.model.decoder.length
    return found


def _task(model: ServedModel) -> Task | None:
    if isinstance(model, ScoringService):
        return model.task
    if isinstance(model, GenerationService):
        return Task.TEXT2TEXT_GENERATION if isinstance(model.model, Seq2SeqModel) else Task.TEXT_GENERATION
    if isinstance(model, EmbeddingService):
        return Task.EMBEDDINGS
    if isinstance(model, TensorService):
        return Task.TENSOR
    return None
