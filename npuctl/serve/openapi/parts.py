"""Building blocks of the OpenAPI description: objects, bodies, parameters, error answers."""

from __future__ import annotations

from typing import Any

ANY_OBJECT: dict[str, Any] = {"type": "object"}
NAME: dict[str, Any] = {"type": "string", "minLength": 1}
_WORDS = {400: "the request is malformed", 401: "the token is missing or wrong",
          404: "no such model, version, deployment or route", 408: "the body did not arrive within the body timeout",
          409: "conflicts with another manifest", 413: "the body is over the size limit (after inflating)",
          415: "an unsupported Content-Encoding, or a body from another site's page not sent as application/json",
          422: "the manifest is invalid", 429: "the model's queue is full (Retry-After)",
          503: "the model is not ready", 504: "no answer within the model's timeout"}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def json_body(schema: dict[str, Any], description: str, *other_types: str) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}} | {kind: {"schema": {"type": "string"}} for kind in other_types}
    return {"description": description, "content": content}


def request(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def errors(kind: str, *codes: int) -> dict[str, Any]:
    return {str(code): json_body({"$ref": f"#/components/schemas/{kind}"}, _WORDS[code]) for code in codes}


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
