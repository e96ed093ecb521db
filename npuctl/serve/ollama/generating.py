"""What Ollama's /api/chat and /api/generate bodies ask of a generation, from their models (bodies.py): the
`options` as sampling and lengths, and `format` and `tools` as the grammar the answer is held to."""

from __future__ import annotations

from dataclasses import dataclass

from npuctl.runtime.generation import Sampling
from npuctl.serve.generation.forms import Form, JsonSchemaFormat, JsonSchemaSpec, PlainFormat
from npuctl.serve.generation.penalties import ollama_penalties
from npuctl.serve.generation.structured import Structure, structure
from npuctl.serve.http.errors import ApiError
from npuctl.serve.ollama.bodies import OllamaChatRequest, OllamaGenerateRequest, Options


@dataclass(frozen=True)
class Settings:
    max_tokens: int | None
    """num_predict; None: until the end of the context (Ollama's -1 and -2)."""
    context: int | None
    """num_ctx: a smaller context than the model's."""
    sampling: Sampling
    stop: tuple[str, ...]


def settings(options: Options | None) -> Settings:
    """Ollama's `options`, with Ollama's defaults for those left out."""
    asked = options or Options()
    penalties = ollama_penalties(asked.repeat_penalty, asked.repeat_last_n, asked.frequency_penalty,
                                 asked.presence_penalty)
    sampling = Sampling(0, 1.0 if asked.temperature is None else asked.temperature,
                        1.0 if asked.top_p is None else asked.top_p, asked.top_k or None, asked.seed,
                        penalties=penalties)
    stop = (asked.stop,) if isinstance(asked.stop, str) else tuple(asked.stop or ())
    predict = asked.num_predict
    return Settings(predict if predict is not None and predict > 0 else None, asked.num_ctx, sampling, stop)


def form(asked: OllamaChatRequest | OllamaGenerateRequest, guided: bool) -> Structure:
    """`format` ("json" or a JSON Schema) and a chat's `tools` (the model chooses: Ollama has no tool_choice), as
    the grammar the answer is held to."""
    response_format: PlainFormat | JsonSchemaFormat | None = None
    if asked.format == "json":
        response_format = PlainFormat(type="json_object")
    elif isinstance(asked.format, dict):
        response_format = JsonSchemaFormat(type="json_schema", json_schema=JsonSchemaSpec.model_validate(
            {"name": "format", "schema": asked.format}))
    tools = tuple(asked.tools or ()) if isinstance(asked, OllamaChatRequest) else ()
    try:
        return structure(Form(response_format, tools), guided, schema_place="format")
    except ApiError as exc:  # named as Ollama names it
        raise ApiError(400, exc.message.replace("'response_format'", "'format'")) from exc
