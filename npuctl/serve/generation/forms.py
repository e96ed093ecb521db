"""What a chat request may ask of its answer's form, as request models: OpenAI's `tools`, `tool_choice` and
`response_format`. OpenAI's chat body declares them as they are; the Responses and Ollama bodies say the same in
their own words and hand structured.py a `Form`, so one set of types holds every API's tools and formats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag

from npuctl.serve.http.validation import Body

JsonSchema = dict[str, Any]
"""A JSON Schema object; its size is checked against the grammar compiler's bounds (schema_bounds.py)."""
NO_PARAMETERS: JsonSchema = {"type": "object", "properties": {}}


class Function(Body):
    """A function the model may call. Keys beyond these go to the chat template as sent (OpenAI's `strict`,
    a template's own)."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    """1 to 64 letters, digits, '_' or '-'."""
    description: str | None = None
    parameters: JsonSchema | None = None
    """The arguments' JSON Schema (no arguments, when left out)."""

    def template(self) -> dict[str, Any]:
        """The function as the chat template takes it: as sent, its parameters filled in."""
        sent = self.model_dump(exclude_unset=True)
        return sent | {"parameters": NO_PARAMETERS if self.parameters is None else self.parameters}


class Tool(Body):
    type: Literal["function"]
    """Only function tools."""
    function: Function


class ChosenFunction(Body):
    name: str


class ChosenTool(Body):
    """The one tool the answer must call."""

    type: Literal["function"]
    function: ChosenFunction


ToolChoice = Literal["none", "auto", "required"] | ChosenTool


class PlainFormat(Body):
    type: Literal["text", "json_object"]


class JsonSchemaSpec(Body):
    name: str
    schema_: Annotated[JsonSchema, Field(alias="schema")] = {}
    """The answer's JSON Schema (any JSON, when left out)."""
    description: str | None = None
    strict: bool | None = None
    """The answer always follows the schema here (by constrained decoding)."""


class JsonSchemaFormat(Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


def _format_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return "json-schema-format" if kind == "json_schema" else "text-format" if kind in ("text", "json_object") \
        else None


ResponseFormat = Annotated[Annotated[PlainFormat, Tag("text-format")]
                           | Annotated[JsonSchemaFormat, Tag("json-schema-format")],
                           Discriminator(_format_kind, custom_error_type="response_format",
                                         custom_error_message="must be an object whose type is text, json_object "
                                                              "or json_schema")]
"""The tags hold a '-', so an error's place leaves them out (validation.place): `response_format.json_schema.name`."""


@dataclass(frozen=True)
class Form:
    """What one request asks of the answer's form, in any API's words."""

    response_format: PlainFormat | JsonSchemaFormat | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    """None: `auto` with tools, else `none`."""
