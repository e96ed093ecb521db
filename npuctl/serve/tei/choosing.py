"""Which deployment a TEI or TGI request goes to: TEI's and TGI's clients send no model name (one server is one
model there), so the one model of the kind that serves here; or the `model` field when several do."""

from __future__ import annotations

from typing import Any

from npuctl.schema.models import Api, Task
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.errors import ApiError
from npuctl.serve.models import EmbeddingService, GenerationService, ScoringService, ServedModel

EMBED, PREDICT, GENERATE = "embed", "predict", "generate"
"""The kinds of request: what /embed, /predict and /generate do."""


def kind_of(model: ServedModel) -> str | None:
    if isinstance(model, EmbeddingService):
        return EMBED
    if isinstance(model, ScoringService) and model.task is Task.CLASSIFICATION:
        return PREDICT
    if isinstance(model, GenerationService):
        return GENERATE
    return None


def chosen(ctx: ServeContext, name: Any, kinds: tuple[str, ...]) -> str:
    """The name of the model the request goes to: `name` (the request's `model`) when given, else the one model of
    `kinds` that serves; 404 when none does, 400 naming them when several do."""
    if name is not None:
        if not isinstance(name, str) or not name:
            raise ApiError(400, "'model' must be a non-empty string", param="model")
        return name
    served = sorted(m.name for m in ctx.registry.models() if kind_of(m) in kinds and m.speaks(Api.OPENAI))
    if len(served) == 1:
        return served[0]
    what = " or ".join(kinds)
    if not served:
        raise ApiError(404, f"no model here can {what}", param="model", code="model_not_found")
    raise ApiError(400, f"{len(served)} models here can {what} ({', '.join(served)}): name one in 'model', or use "
                   f"the OpenAI or Ollama API", param="model")


def kind_named(ctx: ServeContext, name: str) -> str | None:
    model = next((m for m in ctx.registry.models() if m.name == name), None)
    return None if model is None else kind_of(model)
