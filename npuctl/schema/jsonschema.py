"""The manifest's JSON Schema, generated from the pydantic models, for editors (yaml-language-server) and validators."""

from __future__ import annotations

from typing import Any

from npuctl.schema.models import ModelDeployment
from npuctl.schema.targets import SOCS

SCHEMA_FILE = "modeldeployment.schema.json"
"""Name of the checked-in JSON Schema under the repository's top-level schema/ folder."""


def json_schema() -> dict[str, Any]:
    """JSON Schema of a manifest document, for editors (yaml-language-server) and validators."""
    schema = ModelDeployment.model_json_schema(by_alias=True)
    target = schema["$defs"]["Target"]
    short = {"type": "string", "enum": list(SOCS), "description": "A SoC alias, short for {alias: ...}."}
    schema["$defs"]["Target"] = {"description": target.pop("description"), "anyOf": [short, target]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://npuctl.dev/schema/{SCHEMA_FILE}",
        **schema,
    }
