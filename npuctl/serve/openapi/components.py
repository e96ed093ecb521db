"""Request bodies' schemas generated from their pydantic models (`model_json_schema`), in OpenAPI 3.0's dialect:
the server validates a body with the very model its description shows, so the two cannot drift."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def components(*models: type[BaseModel]) -> dict[str, Any]:
    """The components/schemas entries of `models` and of every model they use."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        for name, nested in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
            converted = _openapi(nested)
            if schemas.setdefault(name, converted) != converted:
                raise ValueError(f"two request models are named {name}: rename one (components share one namespace)")
    return schemas


def ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _openapi(schema: Any) -> Any:
    """JSON Schema 2020-12 as pydantic writes it, to OpenAPI 3.0: `X | None` as `nullable` (and `None` alone as
    a nullable `enum: [null]`), `const` as a one-value `enum`, numeric `exclusiveMinimum` as the boolean form;
    titles dropped (the names say it)."""
    if isinstance(schema, list):
        return [_openapi(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    members = schema.get("anyOf")
    if isinstance(members, list) and {"type": "null"} in members:
        rest = [member for member in members if member != {"type": "null"}]
        only = rest[0] if len(rest) == 1 else {"anyOf": rest}
        if "$ref" in only:
            only = {"allOf": [only]}  # 3.0 ignores a $ref's siblings
        schema = {**only, **{k: v for k, v in schema.items() if k != "anyOf"}, "nullable": True}
    out = {key: _openapi(value) for key, value in schema.items() if key not in ("title", "properties", "default")}
    if "default" in schema:
        out["default"] = schema["default"]
    if "properties" in schema:
        out["properties"] = {name: _openapi(value) for name, value in schema["properties"].items()}
    if out.get("type") == "null":  # a field that can only be null (3.0 has no null type)
        del out["type"]
        out |= {"nullable": True, "enum": [None]}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[inclusive] = out[bound]
            out[bound] = True
    return out
