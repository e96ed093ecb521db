"""The base of every manifest object (npuctl.schema.models)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Spec(BaseModel):
    """Base of every manifest object: camelCase keys in YAML, unknown keys refused, and values of the type the
    schema says (strict: "16" is not an integer, "yes" and 1 are not booleans), as editors check them."""

    model_config = ConfigDict(
        strict=True,
        alias_generator=to_camel,
        validate_by_name=False,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )
