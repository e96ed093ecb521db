"""The body of OpenAI's `POST /v1/responses`, checked: input as text or items (messages, function calls and their
outputs), instructions, function tools, `text.format`, sampling. Every field OpenAI documents is honoured or a 400
naming it; a field it does not document is a 400 too."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic.json_schema import SkipJsonSchema

from npuctl.serve.generation.forms import (
    NO_PARAMETERS,
    ChosenFunction,
    ChosenTool,
    Form,
    Function,
    JsonSchemaFormat,
    JsonSchemaSpec,
    PlainFormat,
    Tool,
    ToolChoice,
)
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.validation import description, place
from npuctl.serve.openai.fields import REASONING, TEXT_ONLY, Refused


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Loose(BaseModel):
    # Items clients send back as they got them carry output fields (ids, statuses) that do not matter here.
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Loose):
    type: Literal["input_text", "output_text", "text"]
    text: str


class InputMessage(_Loose):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionCall(_Loose):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutput(_Loose):
    type: Literal["function_call_output"]
    call_id: str
    output: str


_ITEM_TAGS = ("message", "function_call", "function_call_output")


def _kind(value: Any) -> str:
    return str(value.get("type", "message")) if isinstance(value, dict) else "message"


Item = Annotated[Annotated[InputMessage, Tag("message")] | Annotated[FunctionCall, Tag("function_call")]
                 | Annotated[FunctionCallOutput, Tag("function_call_output")], Discriminator(_kind)]


class FunctionTool(_Strict):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextOptions(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = Field(
        None, description="Only OpenAI's default: the answer's length is max_output_tokens' alone.")


class ResponsesRequest(_Strict):
    model: str = Field(min_length=1)
    input: str | list[Item]
    instructions: str | None = None
    stream: bool | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    previous_response_id: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # Documented by OpenAI, honoured only as "not set" (see REFUSED): out of the description.
    reasoning: SkipJsonSchema[dict[str, Any] | None] = None
    include: SkipJsonSchema[list[str] | None] = None
    top_logprobs: SkipJsonSchema[int | None] = None
    truncation: SkipJsonSchema[str | None] = None
    background: SkipJsonSchema[bool | None] = None
    service_tier: SkipJsonSchema[str | None] = None
    max_tool_calls: SkipJsonSchema[int | None] = None
    stream_options: SkipJsonSchema[dict[str, Any] | None] = None
    conversation: SkipJsonSchema[Any] = None
    prompt: SkipJsonSchema[Any] = None

    @property
    def streamed(self) -> bool:
        return bool(self.stream)

    def chat_form(self) -> Form:
        """`tools`, `tool_choice` and `text.format` in the chat API's types, for the grammar (structured.py)."""
        tools = tuple(Tool(type="function", function=Function.model_validate(
            {"name": tool.name, "parameters": tool.parameters or NO_PARAMETERS}
            | ({"description": tool.description} if tool.description else {}))) for tool in self.tools or [])
        choice: ToolChoice | None = ChosenTool(type="function", function=ChosenFunction(name=self.tool_choice.name)) \
            if isinstance(self.tool_choice, NamedFunction) else self.tool_choice
        text = self.text.format if self.text else None
        asked: PlainFormat | JsonSchemaFormat | None = None
        if text is not None and text.type == "json_schema":
            asked = JsonSchemaFormat(type="json_schema", json_schema=JsonSchemaSpec.model_validate(
                {"name": text.name or "answer", "schema": text.schema_ or {}}))
        elif text is not None:
            asked = PlainFormat(type="text" if text.type == "text" else "json_object")
        return Form(asked, tools, choice)


REFUSED = {
    "reasoning": Refused(REASONING, ({},)),
    "include": Refused("nothing can be included beyond the answer (no log probabilities, reasoning or tool "
                       "results here)", ([],)),
    "top_logprobs": Refused("log probabilities are given by the chat API (logprobs), not here", (0,)),
    "truncation": Refused("an input too long for the context is a 400, never cut", ("disabled",)),
    "background": Refused("answers are given while the request is open", (False,)),
    "service_tier": Refused("this server has one tier", ("auto", "default")),
    "max_tool_calls": Refused("an answer is at most one function call"),
    "stream_options": Refused("the stream has no options here", ({},)),
    "conversation": Refused("conversations are not kept; use previous_response_id"),
    "prompt": Refused("stored prompts are not kept; send input and instructions"),
}
"""OpenAI's fields this server cannot honour, and the values that mean "not set"."""


def parse(body: Any) -> ResponsesRequest:
    """The request, or a 400 naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = place(error["loc"], _ITEM_TAGS)
        unknown = error["type"] == "extra_forbidden"
        why = "is not a field of the Responses API" if unknown else error["msg"]
        about = description(ResponsesRequest, error["loc"])
        hint = f" ({TEXT_ONLY})" if where.startswith("input") and "content" in where else f" ({about})" if about else ""
        raise ApiError(400, f"'{where}' {why}{hint}", param=where or None) from None
    for name, refused in REFUSED.items():
        refused.check(name, getattr(request, name))
    return request


def messages(request: ResponsesRequest, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as the chat template takes it: `earlier` (previous_response_id's), instructions as the
    system message, then the input items."""
    conversation = [m for m in earlier if m["role"] != "system"]
    if request.instructions:
        conversation.insert(0, {"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        return [*conversation, {"role": "user", "content": request.input}]
    for item in request.input:
        if isinstance(item, InputMessage):
            conversation.append({"role": item.role, "content": item.text})
        elif isinstance(item, FunctionCall):
            conversation.append({"role": "assistant", "content": "", "tool_calls": [{
                "id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}]})
        else:
            conversation.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    if not any(m["role"] != "system" for m in conversation):
        raise ApiError(400, "'input' has no message", param="input")
    return conversation

