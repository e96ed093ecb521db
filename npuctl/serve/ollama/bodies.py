"""Ollama's embedding and model-command request bodies as models: what the server validates and what
/openapi.json shows. Validators that need today's words raise them as `ApiError` (pydantic lets it through)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema, field_validator

from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.validation import Body
from npuctl.serve.ollama import requests as check

DURATION = "^-?[0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h)?$"
ZERO = "^-?0+([.]0+)?(ns|us|µs|ms|s|m|h)?$"


def _kept(value: float | str) -> float | str:
    check.keep_alive(value)
    return value


def _no_options(value: dict[str, Any]) -> dict[str, Any]:
    check.no_options(value)
    return value


ModelName = Annotated[str, Field(min_length=1)]
KeepAlive = Annotated[float | str, AfterValidator(_kept), WithJsonSchema({"oneOf": [
    {"type": "number", "not": {"enum": [0]}}, {"type": "string", "pattern": DURATION, "not": {"pattern": ZERO}}]})]
"""Any keep-alive but 0 (every deployed model stays loaded; unloading is the manifest's business)."""
NoOptions = Annotated[dict[str, Any], AfterValidator(_no_options), WithJsonSchema(
    {"type": "object", "maxProperties": 0, "description": "no option changes an embedding"})]
"""None of Ollama's options changes an embedding here (num_ctx would truncate: here `truncate` and the model's
limit do), so any one set is refused."""


class EmbedRequest(Body):
    model: ModelName
    """The deployment's name (or one of its aliases; Ollama's `:latest` tag may be added)."""
    input: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    """A string or strings to embed."""
    truncate: bool = True
    """Cut an input at the model's limit (when the deployment allows it), or refuse it."""
    options: NoOptions | None = None
    keep_alive: KeepAlive | None = None
    dimensions: int | None = None
    """Must be the model's own: its vectors cannot be shortened."""

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(t, str) and t for t in items):
            raise ApiError(400, "'input' must be a non-empty string or a list of them", param="input")
        return value


class PromptEmbeddingRequest(Body):
    """The older /api/embeddings: one prompt, one vector (an empty prompt gets an empty one)."""

    model: ModelName
    """The deployment's name (or one of its aliases; Ollama's `:latest` tag may be added)."""
    prompt: str = ""
    options: NoOptions | None = None
    keep_alive: KeepAlive | None = None


class ShowRequest(Body):
    model: ModelName
    """The deployment's name (or one of its aliases; Ollama's `:latest` tag may be added)."""
    verbose: bool = False
    """Ollama's tensor-level details; the answer here is the same either way (it has no such details)."""
