"""OpenAI's request bodies (embeddings, chat and text completions) as models: what the server validates and
what /openapi.json shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from npuctl.serve.embedding import is_token_array
from npuctl.serve.generation.forms import Form, ResponseFormat, Tool, ToolChoice
from npuctl.serve.generation.logprobs import MAX_CHAT_TOP, MAX_COMPLETION_TOP
from npuctl.serve.generation.penalties import MAX_LOGIT_BIAS
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


class ChatTextPart(Body):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    """Text only: other part types need a multimodal model."""
    text: str


Content = str | list[ChatTextPart]


class _Message(Body):
    """Keys beyond role and content (a tool call's id, a name, an assistant's tool_calls) go to the chat template
    as sent."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: Content | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        """Every role in the error, not just those of the message kind the role's value fell to."""
        if not isinstance(value, str) or value not in ROLES:
            raise ValueError(f"is {value!r}; expected one of {', '.join(sorted(ROLES))}")
        return value

    def turn(self) -> dict[str, Any]:
        """The message as the chat template takes it: its content as one text."""
        content = self.content
        text = "" if content is None else content if isinstance(content, str) else "".join(p.text for p in content)
        return self.model_dump(exclude_unset=True) | {"content": text}


class OpenAIMessage(_Message):
    role: Literal["system", "developer", "user", "tool"]
    content: Content
    """A string, or a list of text parts."""


class OpenAIAssistantMessage(_Message):
    role: Literal["assistant"]
    content: Content | None = None
    """A string, or a list of text parts; none beside tool_calls."""


ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def _role_kind(value: Any) -> str:
    return "assistant-message" if isinstance(value, dict) and value.get("role") == "assistant" else "other-message"


ChatMessage = Annotated[Annotated[OpenAIMessage, Tag("other-message")]
                        | Annotated[OpenAIAssistantMessage, Tag("assistant-message")],
                        Discriminator(_role_kind)]


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
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]],
                          Field(max_length=MAX_LOGIT_BIAS)] | None = None
    """Token ids of the model's vocabulary (as strings) to a bias from -100 to 100 (the ids checked with the
    vocabulary)."""
    user: str = ""
    """Names the caller for OpenAI's abuse monitoring; it never changes an answer, here as there."""
    safety_identifier: str = ""
    """As user."""
    prompt_cache_key: str = ""
    """OpenAI's prompt cache's key; it never changes an answer, here as there."""
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = None

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _biases(cls, value: Any) -> Any:
        """Today's words for the cap (pydantic's name no count)."""
        if isinstance(value, dict) and len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"has {len(value)} entries; the limit is {MAX_LOGIT_BIAS}")
        return value

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
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_ROWS)]
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    """Needs tools (none: no call; auto: a call or text; required: a call; or the function to call)."""
    parallel_tool_calls: bool = True
    """An answer here is at most one call either way."""
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_CHAT_TOP)] | None = None
    """Needs logprobs: true."""

    @field_validator("messages", mode="before")
    @classmethod
    def _some(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise ValueError("must be a non-empty array of messages")
        return value

    @classmethod
    def _refusals(cls) -> dict[str, fields.Refused]:
        return fields.CHAT

    @property
    def form(self) -> Form:
        return Form(self.response_format, tuple(self.tools or ()), self.tool_choice)


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
