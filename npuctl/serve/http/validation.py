"""Request bodies as pydantic models: each API declares its bodies as `Body` subclasses, and `parse` turns a
body that does not fit into today's 400 (OpenAI's error shape on /v1, `{"error": ...}` elsewhere) naming the
field as the body names it (`documents[2].text`). The same models give the OpenAPI description its schemas."""

from __future__ import annotations

from collections.abc import Collection
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
        field, owner = _walk(kind, error["loc"])
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(f.alias or name for name, f in owner.model_fields.items()))
            raise ApiError(400, f"unknown field '{where}' (it takes {known})", param=where) from None
        about = (field.description or "") if field is not None else ""
        about = (about[:1].lower() + about[1:]).rstrip(".")
        why = "is required" if error["type"] == "missing" else _why(error)
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
