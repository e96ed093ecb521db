"""Structured-output fuzzing (issue 26): hypothesis builds JSON Schemas from the keywords that size a grammar
(`minItems`, `maxItems`, `minContains`, `maxContains`, `minProperties`, `maxProperties`, `minLength`,
`maxLength`, `enum`, `pattern` with counted repetitions) at values from 0 to 10^30 (negative, fractional, NaN,
1e300), nests them in arrays, objects and `anyOf`, wraps them 1 to 1,000 levels deep or behind `$ref` chains
of up to 3,000, and sends each to every structured-output entry point (OpenAI `response_format` and `tools`,
Ollama's `format` on /api/chat and /api/generate) of a real server on 127.0.0.1 holding the tiny Llama. The
property: 200, or 4xx with a JSON error; never a 5xx; never a hang (60 s per request).

Default run: 60 cases (240 requests); `NPUCTL_FUZZ=full`: 1,000 (`NPUCTL_FUZZ_SCHEMAS=N` for N)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npuctl.artifacts import BuildResult, artifacts_of
from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.models import load_served
from npuctl.serve.registry import ModelRegistry
from tests.fuzzing import FULL, fuzz_settings
from tests.serve.conftest import deployment

MODEL = "tiny-llama"
SIZES = [0, 1, 2, 3, 10, 100, 1000, 5_000, 10_000, 10_001, 20_001, 10**6, 10**8, 10**9, 2**31, 2**63, 10**30, -1, 1.5,
         1e300, float("nan")]
COUNTS = ["minItems", "maxItems", "minContains", "maxContains", "minProperties", "maxProperties"]
PATTERNS = ["^a{%d}$", "^(ab{%d}){3}$", "^((a{10}){10}){%d}$", "^[0-9]{1,%d}$", "^(x|y){%d,}$"]

size = st.one_of(st.sampled_from(SIZES), st.integers(0, 30_000))


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["string", "integer", "boolean", "enum", "pattern"]))
    if kind == "enum":
        return {"enum": list(range(draw(st.sampled_from([1, 3, 100, 5_000, 10_001, 30_000]))))}
    if kind == "pattern":
        return {"type": "string", "pattern": draw(st.sampled_from(PATTERNS)) % draw(st.sampled_from([1, 5, 100,
                                                                                                       10_000, 10**6]))}
    schema: dict[str, Any] = {"type": kind}
    if kind == "string":
        schema |= draw(st.dictionaries(st.sampled_from(["minLength", "maxLength"]), size, max_size=2))
    return schema


def containers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    array = st.builds(lambda items, sizes: {"type": "array", "items": items} | sizes, children,
                      st.dictionaries(st.sampled_from(COUNTS[:4]), size, max_size=2))
    obj = st.builds(lambda props, required, sizes: {"type": "object", "properties": props,
                                                    "required": sorted(props)[:required]} | sizes,
                    st.dictionaries(st.sampled_from(["a", "b", "c", "enum", "pattern"]), children, min_size=1,
                                    max_size=3),
                    st.integers(0, 3), st.dictionaries(st.sampled_from(COUNTS[4:]), size, max_size=1))
    any_of = st.builds(lambda options: {"anyOf": options}, st.lists(children, min_size=1, max_size=3))
    return st.one_of(array, obj, any_of)


def deepened(schema: dict[str, Any], levels: int) -> dict[str, Any]:
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def behind_refs(schema: dict[str, Any], length: int) -> dict[str, Any]:
    defs: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(length)}
    defs[f"d{length}"] = schema
    return {"$ref": "#/$defs/d0", "$defs": defs}


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema = draw(st.recursive(leaves(), containers, max_leaves=6))
    wrap = draw(st.sampled_from(["none", "deep", "refs"]))
    if wrap == "deep":
        return deepened(schema, draw(st.sampled_from([1, 10, 40, 63, 64, 65, 128, 250, 1000])))
    if wrap == "refs":
        return behind_refs(schema, draw(st.sampled_from([1, 10, 63, 64, 65, 3000])))
    return schema


def requests(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    chat = [{"role": "user", "content": "Hi."}]
    yield "/v1/chat/completions", {"model": MODEL, "messages": chat, "max_tokens": 2, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    yield "/v1/chat/completions", {"model": MODEL, "messages": chat, "max_tokens": 2, "tool_choice": "required",
                                   "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}
    yield "/api/chat", {"model": MODEL, "messages": chat, "stream": False, "options": {"num_predict": 2},
                        "format": schema}
    yield "/api/generate", {"model": MODEL, "prompt": "Hi.", "stream": False, "options": {"num_predict": 2},
                            "format": schema}


@pytest.fixture(scope="module")
def server(tiny_llama_build: BuildResult) -> Iterator[str]:
    registry = ModelRegistry()
    spec = {"model": {"source": "file:unused", "task": "text-generation", "format": "genai"},
            "runtime": {"device": "cpu"}}
    registry.put(load_served(deployment(MODEL, **spec), artifacts_of(tiny_llama_build)))
    with BackgroundServer(create_app(registry)) as running:
        yield running.url
    registry.close()


SEEN: Counter[int] = Counter()


@fuzz_settings(int(os.environ.get("NPUCTL_FUZZ_SCHEMAS", 1000 if FULL else 60)))
@given(schema=schemas())
def test_schema_sizes_and_depths_get_200_or_4xx_json_never_5xx(schema: dict[str, Any], server: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        for path, body in requests(schema):
            # allow_nan: NaN is what a hostile client sends, and Python's JSON parser takes it
            answer = client.post(path, content=json.dumps(body, allow_nan=True),
                                 headers={"Content-Type": "application/json"})
            SEEN[answer.status_code] += 1
            assert answer.status_code == 200 or 400 <= answer.status_code < 500, (path, answer.text[:300])
            if answer.status_code != 200:
                assert answer.headers["content-type"].startswith("application/json")
                assert answer.json()["error"], answer.text[:300]


def test_schema_fuzzing_reached_both_answers() -> None:
    if SEEN:
        print(f"\nschema fuzzing answers: {dict(sorted(SEEN.items()))}")
        assert SEEN[200] and SEEN[400], SEEN
