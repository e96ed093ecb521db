"""Ollama's request bodies as models: what the server validates and what
/openapi.json shows. Validators that need today's words raise them as `ApiError` (pydantic lets it through)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator

from npuctl.serve.generation.forms import JsonSchema, Tool
from npuctl.serve.generation.logprobs import MAX_CHAT_TOP
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.limits import MAX_ROWS
from npuctl.serve.http.validation import Body
from npuctl.serve.ollama import requests as check
from npuctl.serve.openai.requests import StopText

DURATION = "^-?[0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h)?$"


def _kept(value: float | str) -> float | str:
    check.keep_alive(value)
    return value


def _no_options(value: dict[str, Any]) -> dict[str, Any]:
    check.no_options(value)
    return value


ModelName = Annotated[str, Field(min_length=1)]
Text = Annotated[str, Field(min_length=1)]
KeepAlive = Annotated[float | str, AfterValidator(_kept), WithJsonSchema({"oneOf": [
    {"type": "number"}, {"type": "string", "pattern": DURATION}]})]
"""How long the model stays loaded without requests: an `onDemand` deployment's idle time, within its manifest's
`idleSeconds` (0 unloads it now); on a deployment kept loaded (`residency: always`) 0 is a 400."""
NoOptions = Annotated[dict[str, Any], AfterValidator(_no_options), WithJsonSchema(
    {"type": "object", "maxProperties": 0, "description": "no option changes an embedding"})]
"""None of Ollama's options changes an embedding here (num_ctx would truncate: here `truncate` and the model's
limit do), so any one set is refused."""


class EmbedRequest(Body):
    model: ModelName
    """The deployment's name (or one of its aliases; Ollama's `:latest` tag may be added)."""
    input: Text | Annotated[list[Text], Field(min_length=1)]
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


class Options(Body):
    """The `options` npuctl honours (Ollama's others tune its own runtime: GPU layers, threads, mmap, ...)."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    seed: int | None = None
    num_predict: Annotated[int, Field(ge=-2), WithJsonSchema(
        {"type": "integer", "minimum": -2, "not": {"enum": [0]}})] | None = None
    """Tokens to generate; -1 or -2: to the context's end."""
    num_ctx: Annotated[int, Field(ge=2)] | None = None
    """A smaller context than the model's."""
    stop: StopText | Annotated[list[StopText], Field(max_length=16)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    """1: off."""
    repeat_last_n: Annotated[int, Field(ge=-1)] | None = None
    """The window the penalties look back over (-1: the whole context, 0: off)."""
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None

    @field_validator("num_predict")
    @classmethod
    def _not_zero(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("must be a positive integer, or -1 or -2 (to the context's end), not 0")
        return value


class _Generating(Body):
    """What /api/chat and /api/generate share."""

    model: ModelName
    """The deployment's name (or one of its aliases; Ollama's `:latest` tag may be added)."""
    stream: bool = True
    """Newline-delimited JSON objects as the answer grows (Ollama's default), or one."""
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    format: Literal["", "json"] | JsonSchema | None = None
    """"json", or a JSON Schema the answer is held to."""
    think: Literal[False] | None = None
    """This model does not think aloud."""
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_CHAT_TOP)] | None = None
    """Needs logprobs: true."""


class OllamaFunction(Body):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: dict[str, Any] = {}


class OllamaToolCall(Body):
    """A call an earlier answer made."""

    model_config = ConfigDict(extra="allow")

    function: OllamaFunction


class OllamaMessage(Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    """An earlier answer's reasoning, as Ollama's clients send their history back: not part of the prompt (this
    model does not think aloud, and a template would not show it)."""
    images: Annotated[list[Any], Field(max_length=0)] | None = None
    """This model takes text only."""
    tool_name: str | None = None
    """The tool whose answer this is."""
    tool_calls: list[OllamaToolCall] | None = None
    """An assistant's calls."""

    @field_validator("tool_calls")
    @classmethod
    def _assistant_calls(cls, calls: list[OllamaToolCall] | None, info: ValidationInfo) -> list[OllamaToolCall] | None:
        if calls and info.data.get("role") != "assistant":
            raise ValueError("is not allowed here: only an assistant message calls tools")
        return calls

    def turn(self) -> dict[str, Any]:
        """The message as the chat template takes it (a tool's answer carries the tool's name)."""
        turn: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_name is not None:
            turn["name"] = self.tool_name
        if self.tool_calls is not None:
            turn["tool_calls"] = [{"type": "function", "function": call.function.model_dump()}
                                  for call in self.tool_calls]
        return turn


class OllamaChatRequest(_Generating):
    messages: Annotated[list[OllamaMessage], Field(min_length=1, max_length=MAX_ROWS)]
    tools: list[Tool] | None = None


class OllamaGenerateRequest(_Generating):
    prompt: str = ""
    """Empty: only load the model (it is loaded already)."""
    system: str = ""
    raw: bool = False
    """The prompt as it is, without the chat template."""
    suffix: Literal[""] | None = None
    """This model does not fill in the middle."""
    template: Literal[""] | None = None
    """npuctl uses the model's own chat template."""
    images: Annotated[list[Any], Field(max_length=0)] | None = None
    """This model takes text only."""
    context: list[Annotated[int, Field(ge=0)]] | None = None
    """The token ids an earlier answer gave back, to continue from."""


class _Named(Body):
    model: ModelName | None = None
    """The model's name (hf.co/ORG/REPO for pull)."""
    name: ModelName | None = None
    """Ollama's older name for `model`."""

    @property
    def named(self) -> str:
        if self.model is None and self.name is None:
            raise ApiError(400, "'model' must be a non-empty string", param="model")
        return self.model or self.name or ""


class PullRequest(_Named):
    """An agent's /api/pull: writes a manifest declaring the model."""

    insecure: Literal[False] | None = None
    """Sources are fetched over verified TLS."""
    stream: bool = True
    """Progress lines as Ollama gives them, or only the last."""


class DeleteRequest(_Named):
    """An agent's /api/delete: removes the manifest that declares the model."""
