"""OpenAI's embeddings request body as a model: what the server validates and what /openapi.json shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from npuctl.serve.http.limits import MAX_ROWS
from npuctl.serve.http.validation import Body

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
        if not (all(isinstance(item, str) for item in items) or all(_is_ids(item) for item in items)
                or _is_ids(items)):
            raise ValueError("must be all strings or all token arrays (lists of integers)")
        return value


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
