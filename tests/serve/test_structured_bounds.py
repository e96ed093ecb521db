"""The bounds on what a structured-output schema asks of the grammar compiler,
in-process: each size, the grammar-size estimate, patterns and depth are 400s naming the place and the limit,
schemas clients really send pass; timeoutSeconds holds while a grammar build that nothing interrupts runs; and
a server fault is logged once per kind and interval, with a count."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from npuctl.serve.endpoints import ServeContext
from npuctl.serve.generation.schema_bounds import (
    MAX_PATTERN_SIZE,
    MAX_SCHEMA_COST,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_VISITS,
    SchemaTooBig,
    check_schema,
    pattern_size,
)
from npuctl.serve.generation.structured import structure
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.faults import MAX_KINDS, MAX_REPORT_CHARS, FaultLog
from npuctl.serve.http.validation import parse
from npuctl.serve.models import ServedModel
from npuctl.serve.openai.requests import ChatRequest
from npuctl.serve.registry import ModelRegistry
from tests.serve.conftest import Serve

PLACE = "response_format.json_schema.schema"
LIMIT = f"at most {MAX_SCHEMA_COST:,}"


class City(BaseModel):
    name: str = Field(max_length=12)
    size: Literal["small", "big"]
    districts: list[str] = Field(min_length=1, max_length=40)
    sister: City | None = None


def refused(schema: Any) -> SchemaTooBig:
    with pytest.raises(SchemaTooBig) as caught:
        check_schema(schema, PLACE)
    return caught.value


@pytest.mark.parametrize(("schema", "place", "says"), [
    ({"type": "array", "minItems": 10**8}, "minItems", f"is 100,000,000; structured output allows {LIMIT}"),
    ({"type": "array", "maxItems": 10**6}, "maxItems", LIMIT),
    ({"type": "array", "minContains": 10**6, "contains": {}}, "minContains", LIMIT),
    ({"type": "object", "minProperties": 10**7}, "minProperties", LIMIT),
    ({"type": "object", "maxProperties": 1e300}, "maxProperties", "is 1e+300"),
    ({"type": "string", "maxLength": 10**9}, "maxLength", "at most 1,000,000"),
    ({"type": "string", "minLength": float("nan")}, "minLength", "is nan"),
    ({"type": "string", "pattern": "^(a{1000}){1000}$"}, "pattern", f"at most {MAX_PATTERN_SIZE:,}"),
    ({"type": "string", "pattern": "x{" + "9" * 5000 + "}"}, "pattern", f"at most {MAX_PATTERN_SIZE:,}"),
    ({"type": "array", "minItems": 101, "items": {"type": "array", "minItems": 100}}, "items",
     LIMIT),
    ({"type": "object", "properties": {"enum": {"type": "array", "minItems": 10**8}}}, "properties.enum.minItems",
     LIMIT),
    ({"$defs": {"a": {"type": "array", "maxItems": 10**6}}, "$ref": "#/$defs/a"}, "$defs.a.maxItems",
     LIMIT),
    ({"enum": list(range(30_000))}, "", LIMIT),
    ({"anyOf": [{}] * 500_000}, "", f"more than {MAX_SCHEMA_VISITS:,} parts"),
    ({"const": [[]] * 200_000}, "", f"more than {MAX_SCHEMA_VISITS:,} parts"),
    ({"type": "string", "pattern": "^" * 10_001}, "pattern", f"is 10,001 characters long; structured output allows "
                                                            f"at most {MAX_PATTERN_SIZE:,}"),
])
def test_each_size_is_refused_naming_its_place_and_the_limit(schema: dict[str, Any], place: str, says: str) -> None:
    error = refused(schema)
    assert error.status == 400 and error.place == (f"{PLACE}.{place}" if place else PLACE)
    assert error.message.startswith(error.place) and says in error.message, error.message


def test_depth_counts_nesting_and_ref_hops_without_recursing() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5_000):  # far past Python's recursion limit: the walk is iterative
        schema = {"type": "array", "items": schema}
    assert f"nested {MAX_SCHEMA_DEPTH + 1} levels deep" in refused(schema).message
    chain = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(3000)} | {"d3000": {"type": "string"}}
    error = refused({"$ref": "#/$defs/d0", "$defs": chain})
    assert error.place.startswith(f"{PLACE}.$defs.d") and "its $refs followed" in error.message
    diamonds = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 8} for i in range(40)} | {"d40": {}}
    error = refused({"$ref": "#/$defs/d0", "$defs": diamonds})
    assert "nested" in error.message or f"{MAX_SCHEMA_VISITS:,}" in error.message


@pytest.mark.parametrize("schema", [
    City.model_json_schema(),  # recursive through $defs: recursion is not a chain
    {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
    {"type": "array", "minItems": 50, "items": {"type": "array", "maxItems": 100}},
    {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(900)}},
    {"type": "string", "minLength": 10, "maxLength": 100_000},
    {"enum": ["a", {"minItems": 10**9}]},  # values, not schemas
])
def test_schemas_clients_send_pass(schema: dict[str, Any]) -> None:
    assert check_schema(schema, PLACE) <= MAX_SCHEMA_COST


def test_pattern_sizes_multiply_through_groups_and_add_alternatives() -> None:
    assert pattern_size(r"^\d{3}-\d{4}$") == 3 + 1 + 4
    assert pattern_size("(ab{10}){10}") == 110
    assert pattern_size("(a|b){5}x*") == 11
    assert pattern_size(r"[\]{]{4}\p{L}{2}") == 6
    assert pattern_size("((a{100}){100}){100}") == MAX_PATTERN_SIZE + 1  # saturated


def test_the_schemas_of_one_request_share_one_budget() -> None:
    tool = {"type": "array", "maxItems": 4_000}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": f"t{i}", "parameters": tool}} for i in range(3)]}
    with pytest.raises(SchemaTooBig) as caught:
        structure(parse(ChatRequest, body).form, True)
    assert caught.value.place == "tools[2].function.parameters"
    assert structure(parse(ChatRequest, body | {"tools": body["tools"][:2]}).form, True).may_call


def test_ollama_format_is_named_as_ollama_names_it() -> None:
    from npuctl.serve.ollama.bodies import OllamaGenerateRequest
    from npuctl.serve.ollama.generating import form

    asked = parse(OllamaGenerateRequest, {"model": "m", "format": {"type": "array", "items": {
        "type": "string", "maxLength": 10**8}}})
    with pytest.raises(ApiError) as caught:
        form(asked, True)
    assert caught.value.message.startswith("format.items.maxLength is 100,000,000")


# -- timeoutSeconds while a grammar build runs -----------------------------------------------------------------

BUILD_SECONDS = 3.0
"""A grammar build that holds its slot thread longer than the model's 1 s timeout, as a huge one did."""


@pytest.fixture
def slow_build(serve: Serve, tiny_llama: Callable[..., ServedModel]) -> Iterator[tuple[str, list[int], threading.Event]]:
    served: Any = tiny_llama(serve={"timeoutSeconds": 1})
    model = served.model
    real = model.steps
    tokens: list[int] = []
    built = threading.Event()

    def recorded(generated: Iterator[Any]) -> Iterator[Any]:
        for step in generated:
            tokens.append(step.token)
            yield step

    def steps(prompt: list[int], sampling: Any, cancel: threading.Event) -> Iterator[Any]:
        if not built.is_set():
            time.sleep(BUILD_SECONDS)  # the first request's build: a native call nothing interrupts
            built.set()
            return recorded(real(prompt, sampling, cancel))
        return real(prompt, sampling, cancel)  # type: ignore[no-any-return]

    model.steps = steps
    yield serve(served).url, tokens, built


def test_timeout_seconds_holds_while_a_grammar_builds_and_the_work_is_abandoned(
        slow_build: tuple[str, list[int], threading.Event]) -> None:
    url, tokens, built = slow_build
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
            "response_format": {"type": "json_object"}}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 504 and not built.is_set(), "the client got its 504 while the build still ran"
    assert built.wait(BUILD_SECONDS * 5)
    time.sleep(0.5)  # what an abandoned generation would have made meanwhile (a token takes ~1 ms here)
    assert tokens == [], "no token is generated for a request answered 504"
    again = httpx.post(f"{url}/api/generate", json={"model": "tiny-llama", "prompt": "hi", "stream": False,
                                                    "format": "json", "options": {"num_predict": 2}}, timeout=60)
    assert again.status_code == 200, again.text


# -- faults logged once per kind and interval ------------------------------------------------------------------

class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("npuctl.serve", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def recurse(depth: int) -> int:
    return recurse(depth + 1) + 1


def test_repeated_server_faults_are_logged_once_per_kind(serve: Serve, records: Records) -> None:
    ctx = ServeContext(ModelRegistry(), 1 << 20)

    async def handled(request: Request) -> Response:
        raise RuntimeError(f"{recurse(0)}")

    async def unhandled(request: Request) -> Response:
        raise ValueError("x" * 100_000)

    url = serve(routes=[Route("/handled", ctx.endpoint("openai", handled)), Route("/unhandled", unhandled)]).url
    for path in ("/handled", "/unhandled"):
        for _ in range(50):
            answer = httpx.get(f"{url}{path}")
            assert answer.status_code == 500 and answer.json()["error"]["message"] == "internal server error"
    assert len(records.texts) == 2, [text[:200] for text in records.texts]
    assert all(len(text) < MAX_REPORT_CHARS + 500 for text in records.texts), [len(t) for t in records.texts]
    assert "RecursionError" in records.texts[0] and "ValueError" in records.texts[1]


def test_only_the_latest_kinds_are_remembered() -> None:
    logger = logging.getLogger("tests.faults.kinds")
    handler = Records()
    logger.addHandler(handler)
    faults = FaultLog(logger, interval=60, clock=lambda: 0.0)
    kinds = [type(f"Fault{i}", (Exception,), {}) for i in range(MAX_KINDS + 1)]
    try:
        for kind in kinds:
            faults.report(kind("boom"), "GET /a")
        faults.report(kinds[-1]("boom"), "GET /a")  # remembered: counted
        faults.report(kinds[0]("boom"), "GET /a")  # forgotten for the newest: reported again
    finally:
        logger.removeHandler(handler)
    assert len(handler.texts) == MAX_KINDS + 2


def test_a_kind_is_reported_again_after_the_interval_with_the_count() -> None:
    now = [0.0]
    logger = logging.getLogger("tests.faults")
    handler = Records()
    logger.addHandler(handler)
    faults = FaultLog(logger, interval=60, clock=lambda: now[0])

    def fail(kind: type[Exception]) -> Exception:
        try:
            raise kind("boom")
        except Exception as exc:
            return exc

    try:
        for _ in range(10):
            faults.report(fail(KeyError), "GET /a")
        faults.report(fail(TypeError), "GET /b")  # another kind: its own report
        now[0] = 61
        faults.report(fail(KeyError), "GET /a")
    finally:
        logger.removeHandler(handler)
    assert len(handler.texts) == 3
    assert "and 9 more failures like it in the 60 s before" in handler.texts[2]
