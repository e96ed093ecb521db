"""OpenAI's request bodies (embeddings, chat and text completions) as models: what the server validates and
what /openapi.json shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from npuctl.serve.embedding import is_token_array
from npuctl.serve.generation.logprobs import MAX_CHAT_TOP, MAX_COMPLETION_TOP
from npuctl.serve.http.limits import MAX_ROWS
from npuctl.serve.http.validation import Body
from npuctl.serve.openai import fields

Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
ModelName = Annotated[str, Field(min_length=1)]


class EmbeddingsRequest(Body):
    model: ModelName
    """The deployment's name (or one of its aliases): a non-empty string."""
    input: (Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_ROWS)] | TokenIds
            | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_ROWS)])
    """A string, strings, a token array, or token arrays (the model's complete input ids, special tokens included)."""
    encoding_format: Literal["float", "base64"] = "float"
    """base64: the little-endian float32 bytes of each vector (what the openai client asks for by default)."""
    dimensions: int | None = None
    """Must be the model's own: its vectors cannot be shortened."""
    user: str | None = None
    """Names the caller for OpenAI's abuse monitoring; it never changes an answer, here as there."""

    @field_validator("input", mode="before")
    @classmethod
    def _forms(cls, value: Any) -> Any:
        """Today's words for the input forms (a union's own error names each member it tried)."""
        if not isinstance(value, str | list) or value == []:
            raise ValueError("must be a string, a list of strings, or token arrays, and not empty")
        items = [value] if isinstance(value, str) else value
        if all(isinstance(item, str) for item in items) and not all(items):
            raise ValueError("must not contain empty strings")
        if not (all(isinstance(item, str) for item in items) or all(is_token_array(item) for item in items)
                or is_token_array(items)):
            raise ValueError("must be all strings or all token arrays (lists of integers)")
        return value


Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)] | None
StopText = Annotated[str, Field(min_length=1)]
AnySchema = dict[str, Any]
_TEXT_PARTS = {"type": "array", "items": {"type": "object", "properties": {
    "type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}, "required": ["type", "text"]}}
_CONTENT = {"oneOf": [{"type": "string"}, _TEXT_PARTS]}
_MESSAGE = {"oneOf": [
    {"type": "object", "properties": {"role": {"type": "string", "enum": ["system", "developer", "user", "tool"]},
                                      "content": _CONTENT}, "required": ["role", "content"]},
    {"type": "object", "properties": {"role": {"type": "string", "enum": ["assistant"]},
                                      "content": {**_CONTENT, "nullable": True}}, "required": ["role"]}]}
TOOL = {"type": "object", "properties": {
    "type": {"type": "string", "enum": ["function"]},
    "function": {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                                                  "description": {"type": "string"}, "parameters": {"type": "object"}},
                 "required": ["name"]}}, "required": ["type", "function"]}
_RESPONSE_FORMAT = {"oneOf": [
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}},
     "required": ["type"]},
    {"type": "object", "properties": {"type": {"type": "string", "enum": ["json_schema"]}, "json_schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "schema": {"type": "object"},
                                         "strict": {"type": "boolean"}}, "required": ["name"]}},
     "required": ["type", "json_schema"]}]}
"""Messages, tools and response_format are checked by the chat template's and structured output's own code
(npuctl/serve/generation/), which the Responses and Ollama APIs share; their schemas here say what that code takes."""


class StreamOptions(Body):
    include_usage: bool = False
    """A last chunk with the usage (and no choices)."""


class _Generation(Body):
    """The fields chat and text completions share."""

    model: ModelName
    """The deployment's name (or one of its aliases): a non-empty string."""
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    """As max_tokens (OpenAI's newer name); it wins when both are sent."""
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    """The most likely tokens sampled from (0: all), as vLLM takes it."""
    seed: int | None = None
    n: Literal[1] = 1
    """Only n=1: one choice per request."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    """Only with stream: true."""
    ignore_eos: bool = False
    """Generate past the end token, to max_tokens (as vLLM takes it)."""
    frequency_penalty: Penalty = None
    presence_penalty: Penalty = None
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]] | None,
                          Field(json_schema_extra={"maxProperties": 1024})] = None
    """Token ids of the model's vocabulary (as strings) to a bias; at most 1024 (checked with the vocabulary)."""
    user: str = ""
    """Names the caller for OpenAI's abuse monitoring; it never changes an answer, here as there."""
    safety_identifier: str = ""
    """As user."""
    prompt_cache_key: str = ""
    """OpenAI's prompt cache's key; it never changes an answer, here as there."""
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, body: Any) -> Any:
        """OpenAI's fields npuctl cannot honour: a 400 naming the field and why, unless set to their "not set"
        value (then taken out: the model and the description leave them out)."""
        table = cls._refusals()
        if isinstance(body, dict):
            fields.refuse(body, table)
            return {key: value for key, value in body.items() if key not in table}
        return body

    @classmethod
    def _refusals(cls) -> dict[str, fields.Refused]:
        return {}


class ChatRequest(_Generation):
    messages: Annotated[Any, WithJsonSchema({"type": "array", "items": _MESSAGE, "minItems": 1})]
    """Checked message by message by the chat route, which names the message and field that is wrong."""
    response_format: Annotated[AnySchema, WithJsonSchema(_RESPONSE_FORMAT)] | None = None
    tools: Annotated[list[AnySchema], WithJsonSchema({"type": "array", "items": TOOL})] | None = None
    tool_choice: Annotated[Any, WithJsonSchema({"description": "needs tools (none, auto, required, or a named "
                                                                "function)"})] = None
    parallel_tool_calls: bool = True
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_CHAT_TOP)] | None = None
    """Needs logprobs: true."""

    @classmethod
    def _refusals(cls) -> dict[str, fields.Refused]:
        return fields.CHAT


class CompletionRequest(_Generation):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]],
                                                             Field(min_length=1, max_length=1)]
    """One prompt per request (a list of one is taken too)."""
    echo: bool = False
    """The prompt before the answer."""
    logprobs: Annotated[int, Field(ge=0, le=MAX_COMPLETION_TOP)] | None = None
    """How many alternatives per token."""

    @classmethod
    def _refusals(cls) -> dict[str, fields.Refused]:
        return fields.COMPLETIONS
