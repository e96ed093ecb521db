"""Request bodies as pydantic models: each API declares its bodies as `Body` subclasses, and `parse` turns a
body that does not fit into today's 400 (OpenAI's error shape on /v1, `{"error": ...}` elsewhere) naming the
field as the body names it (`documents[2].text`). The same models give the OpenAPI description its schemas."""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from npuctl.serve.http.errors import ApiError

B = TypeVar("B", bound="Body")

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})
"""The names pydantic gives union members in an error's location (`input.list[str].3`): not the body's."""


class Body(BaseModel):
    """A request body, or an object in one: strict JSON types (no "1" for 1, no 1 for true), and no field it
    does not declare (a field the server would ignore is a 400 naming it)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


def parse(kind: type[B], body: Any, *, tags: Collection[str] = ()) -> B:
    """`body` as `kind`; a 400 naming the first field that is wrong. `tags`: a discriminated union's member tags,
    left out of the field's name."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        error = _telling(exc.errors())
        where = place(error["loc"], tags)
        _, owner = _walk(kind, error["loc"])
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(f.alias or name for name, f in owner.model_fields.items()))
            raise ApiError(400, f"unknown field '{where}' (it takes {known})", param=where) from None
        about = description(kind, error["loc"])
        span = _span(kind, error["loc"]) if error["type"] in _NUMERIC else None
        why = "is required" if error["type"] == "missing" else f"must be {span}, not {error['input']!r}" if span \
            else _why(error)
        message = (f"'{where}' {why}" if where else why) + (f" ({about})" if about else "")
        raise ApiError(400, message, param=where or None) from None


def _telling(errors: list[Any]) -> Any:
    """The error that says most: in a union, the one from the member whose JSON type the value has (a
    list's member, for a list), not "should be a valid string" from a member the value never was."""
    return next((e for e in errors if not str(e["type"]).endswith("_type")), errors[0])


def place(loc: tuple[int | str, ...], tags: Collection[str] = ()) -> str:
    """A pydantic error's location as the body names it (`input[2].content`), without the union members' tags."""
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif not _is_tag(part, tags):
            where += f".{part}" if where else part
    return where


def _is_tag(part: str, tags: Collection[str]) -> bool:
    return part in tags or part in _TYPE_TAGS or "[" in part or "-" in part


def description(kind: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The docstring of the field at `loc` as a clause (what it is for, or why a value cannot be honoured)."""
    field, _ = _walk(kind, loc)
    about = (field.description or "") if field is not None else ""
    return (about[:1].lower() + about[1:]).rstrip(".")


def _walk(kind: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[FieldInfo | None, type[BaseModel]]:
    """The field at `loc` (its docstring says what it is for, or why a value cannot be honoured) and the model
    that holds the place (whose fields an unknown one could have been)."""
    current: type[BaseModel] | None = kind
    owner, found = kind, None
    for part in loc:
        field = current.model_fields.get(part) if current is not None and isinstance(part, str) else None
        if field is not None and current is not None:
            owner, found, current = current, field, _model_in(field.annotation)
    if found is not None and current is not None and loc and loc[-1] not in owner.model_fields:
        owner = current  # an unknown field inside a nested object
    return found, owner


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (`Item`, `list[Item] | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in get_args(annotation) if (found := _model_in(arg)) is not None), None)


_NUMERIC = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_type", "float_type",
                      "int_from_float"})


def _span(kind: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """What a number at `loc` may be, from the model's own schema: "a number from 0 to 2", "a positive integer"."""
    schema = _schema(kind)
    node: Any = schema
    for part in loc:
        node = _deref(node, schema)
        if isinstance(part, str) and part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(part, int) and "items" in node:
            node = node["items"]
    members = [_deref(m, schema) for m in _deref(node, schema).get("anyOf", [node])]
    numeric = next((m for m in members if m.get("type") in ("integer", "number")), None)
    if numeric is None:
        return None
    what = "an integer" if numeric["type"] == "integer" else "a number"
    low, high = numeric.get("minimum", numeric.get("exclusiveMinimum")), numeric.get("maximum")
    above = "exclusiveMinimum" in numeric
    if numeric["type"] == "integer" and low == 1 and high is None:
        return "a positive integer"
    if low is not None and high is not None:
        return f"{what} {'above' if above else 'from'} {low:g} {'and at most' if above else 'to'} {high:g}"
    if low is not None:
        return f"{what} {'above' if above else 'of at least'} {low:g}"
    return f"{what} of at most {high:g}" if high is not None else what


@cache
def _schema(kind: type[BaseModel]) -> dict[str, Any]:
    return kind.model_json_schema()


def _deref(node: Any, schema: dict[str, Any]) -> Any:
    if isinstance(node, dict) and "$ref" in node:
        return schema.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[1], {})
    return node if isinstance(node, dict) else {}


def _why(error: Any) -> str:
    """Pydantic's message to follow the field's name: "'top_n' should be greater than or equal to 1"."""
    message = str(error["msg"])
    if message.startswith("Value error, "):  # a validator's own words
        return message.removeprefix("Value error, ")
    if error["type"] in ("none_required", "literal_error") and error.get("input") is not None and message in (
            "Input should be None", "Input should be False"):
        return "is not supported"
    if message.startswith("Input should"):
        return message.removeprefix("Input ")
    return message[:1].lower() + message[1:]
