"""The rerank and classify request bodies as models (what the server validates and /openapi.json shows), and
the checks both APIs share."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from npuctl.schema.models import Api, Task
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.validation import Body
from npuctl.serve.models import ScoringService

MAX_DOCUMENTS = 1000
"""Documents per request: Cohere's recommended maximum."""
MAX_INPUTS = 2048
"""Inputs per request, as infinity allows."""


Text = Annotated[str, Field(pattern=r"\S")]
ModelName = Annotated[str, Field(min_length=1)]
Document = Annotated[str | dict[str, Any], WithJsonSchema({"oneOf": [
    {"type": "string", "pattern": "\\S"},
    {"type": "object", "properties": {"text": {"type": "string", "pattern": "\\S"}}, "required": ["text"],
     "additionalProperties": True}]})]
"""A string, or an object whose `text` (or `rank_fields`) is ranked; the object comes back whole."""


def _query(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "'query' must be a non-empty string", param="query")
    return value


def _top_n(value: Any) -> Any:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ApiError(400, f"'top_n' must be a positive integer, not {value!r}", param="top_n")
    return value


Query = Annotated[Text, BeforeValidator(_query)]
TopN = Annotated[int, Field(ge=1), BeforeValidator(_top_n)]


def _given(field: str, kind: str) -> dict[str, Any]:
    """The schema of "`field` is sent and is not null"."""
    return {"required": [field], "properties": {field: {"type": kind}}}


class RerankRequest(Body):
    """Cohere's v1, Jina's and infinity's (`documents`), or TEI's (`texts`: answered as TEI's list)."""

    model: ModelName | None = None
    """Optional when one reranker serves (TEI's clients send none)."""
    query: Query
    documents: Annotated[list[Document], Field(min_length=1, max_length=MAX_DOCUMENTS)] | None = None
    """Cohere, Jina, infinity: strings, or objects with a `text`."""
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_DOCUMENTS)] | None = None
    """TEI: strings, answered as TEI's list."""
    top_n: TopN | None = None
    """The most relevant only."""
    return_documents: bool | None = None
    """With documents: each result carries its document."""
    return_text: bool | None = None
    """With texts: each result carries its text."""
    raw_scores: bool | None = None
    """Logits, not 0..1."""
    rank_fields: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    """With documents: the fields of each object ranked, in this order."""
    truncate: bool | None = None
    """Cut a query with its document at the model's limit, or refuse it; unset: spec.serve.truncate."""
    truncation_direction: Literal["right", "Right"] = "right"
    """Only the end is cut."""

    @model_validator(mode="after")
    def _one_shape(self) -> RerankRequest:
        """`documents` or `texts`, and each shape's own fields only (a field of the other would be ignored); null
        is as good as left out."""
        tei = self.texts is not None
        if tei == (self.documents is not None):
            field = "texts" if tei else "documents"
            raise ApiError(400, f"'{field}' must be a non-empty list of documents: send 'documents' (Cohere, "
                           "Jina, infinity) or 'texts' (TEI), one of them", param=field)
        misplaced = next((f for f in (("return_documents", "rank_fields") if tei else ("return_text",))
                          if getattr(self, f) is not None), None)
        if misplaced is not None:
            other = "'documents' (Cohere, Jina, infinity)" if tei else "'texts' (TEI)"
            raise ApiError(400, f"'{misplaced}' goes only with {other}", param=misplaced)
        return self

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {**_given("documents", "array"),
         "not": {"anyOf": [_given("texts", "array"), _given("return_text", "boolean")]}},
        {**_given("texts", "array"), "not": {"anyOf": [_given("documents", "array"),
                                                       _given("return_documents", "boolean"),
                                                       _given("rank_fields", "array")]}}]})


class RerankV2Request(Body):
    """Cohere's v2 (ClientV2.rerank): documents are strings, and no document comes back."""

    model: ModelName | None = None
    """Optional when one reranker serves."""
    query: Query
    documents: Annotated[list[Text], Field(min_length=1, max_length=MAX_DOCUMENTS)]
    top_n: TopN | None = None
    """The most relevant only."""
    max_tokens_per_doc: int | None = None
    """At least the model's input limit (documents are cut there)."""
    relevant_spans: Literal[False] | None = None
    """Relevant spans are not computed."""
    priority: None = None
    """Requests are served in the order they come."""


class ClassifyRequest(Body):
    """infinity's shape."""

    model: ModelName | None = None
    """Optional when one classifier serves."""
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]
    raw_scores: bool = False
    """Logits instead of probabilities."""
    truncate: bool | None = None
    """Cut an input at the model's limit, or refuse it; unset: spec.serve.truncate."""
    user: str | None = None
    """Names the caller (OpenAI's convention); it never changes an answer."""

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if value == [] or not isinstance(value, str | list):
            raise ApiError(400, "'input' must be a string or a non-empty list of strings", param="input")
        return value


def model_name(ctx: ServeContext, name: str | None, task: Task) -> str:
    """The request's `model`; without one (TEI's clients send none), the one model of `task` that serves."""
    if name is not None:
        return name
    served = [m.name for m in ctx.registry.models()
              if isinstance(m, ScoringService) and m.task is task and m.speaks(Api.OPENAI)]
    if len(served) == 1:
        return served[0]
    if not served:
        raise ApiError(404, f"no {task.value} model serves here", param="model", code="model_not_found")
    raise ApiError(400, f"'model' is required: {len(served)} {task.value} models serve here "
                        f"({', '.join(sorted(served))})", param="model")


def token_limit_error(what: str, limit: int, param: str) -> ApiError:
    return ApiError(400, f"{what} is longer than this model's limit of {limit} tokens (its longest sequence bucket, "
                         "or spec.serve.maxInputTokens); shorten it, or send truncate: true", param=param)
