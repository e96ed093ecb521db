"""The manifest's JSON Schema, for editors (yaml-language-server) and validators (check-jsonschema): pydantic's
schema of the models, plus every rule their validators enforce that JSON Schema can express, written from the
same constants the validators use: the name's DNS label, the source schemes, the https pin, a target's alias or
socModel (and their agreement), and no SoC listed twice."""

from __future__ import annotations

from typing import Any

from npuctl.schema.models import DNS_LABEL, SCHEMA_FILE, ModelDeployment
from npuctl.schema.sources import SOURCE_SCHEMES
from npuctl.schema.targets import SOCS

MAX_NAME = 63


def json_schema() -> dict[str, Any]:
    schema = ModelDeployment.model_json_schema(by_alias=True)
    definitions = schema["$defs"]
    definitions["Metadata"]["properties"]["name"] |= {"pattern": DNS_LABEL.pattern, "minLength": 1,
                                                      "maxLength": MAX_NAME}
    source = definitions["ModelSource"]
    source["properties"]["source"]["pattern"] = "^(" + "|".join(s.rstrip(":") for s in SOURCE_SCHEMES) + "):"
    source |= _https_needs_pin()
    target = definitions["Target"]
    short = {"type": "string", "enum": list(SOCS), "description": "A SoC alias, short for {alias: ...}."}
    full = target | {"anyOf": [{"required": ["alias"]}, {"required": ["socModel"]}], "allOf": _alias_agrees()}
    definitions["Target"] = {"description": full.pop("description"), "anyOf": [short, full]}
    definitions["DeploymentSpec"]["properties"]["targets"] |= {"uniqueItems": True, "allOf": _each_soc_once()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://npuctl.dev/schema/{SCHEMA_FILE}",
        **schema,
    }


def _https_needs_pin() -> dict[str, Any]:
    return {
        "if": {"required": ["source"], "properties": {"source": {"pattern": "^https:"}}},
        "then": {"anyOf": [{"required": ["sha256"], "properties": {"sha256": {"minProperties": 1}}},
                           {"required": ["insecureSkipDigest"], "properties": {"insecureSkipDigest": {"const": True}}}]},
    }


def _alias_agrees() -> list[dict[str, Any]]:
    """An alias with a socModel: the alias's own."""
    return [{"if": {"required": ["alias"], "properties": {"alias": {"const": alias}}},
             "then": {"properties": {"socModel": {"const": info.soc_model}}}} for alias, info in SOCS.items()]


def _each_soc_once() -> list[dict[str, Any]]:
    """No two targets of one named SoC, however each is written (alias string, alias, socModel)."""
    rules = []
    for soc in sorted({info.soc_model for info in SOCS.values()}):
        aliases = [alias for alias, info in SOCS.items() if info.soc_model == soc]
        same = {"anyOf": [{"type": "string", "enum": aliases},
                          {"type": "object", "required": ["alias"], "properties": {"alias": {"enum": aliases}}},
                          {"type": "object", "required": ["socModel"], "properties": {"socModel": {"const": soc}}}]}
        rules.append({"not": {"contains": same, "minContains": 2}})
    return rules
