"""HTTP fuzzing with schemathesis, driven by the server's own OpenAPI description (/openapi.json), against
two real servers on 127.0.0.1: the serving app with MiniLM (embeddings) and a tensor model, and an agent
process (its control API, and a tiny tensor model it built). Whatever is sent: no 5xx, and every error
answer is a JSON body in the documented shape.

Besides the schema-driven cases, a hostile property sends what schemas do not generate: unicode corner strings
(lone surrogates, NUL, combining runs, bidi marks), integers at and past the int32/int64 limits in every integer
field, empty and zero-sized tensors, shapes that disagree with their data, deep nesting, and content types other
than JSON.

Default run: 25 cases per operation and server, 100 hostile cases; `NPUCTL_FUZZ=full`: 200 and 3,000."""

from __future__ import annotations

import itertools
import os
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from npuctl.runtime.placement import Artifacts
from npuctl.serve.app import create_app
from npuctl.serve.models import load_served
from npuctl.serve.openapi import openapi
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.server import BackgroundServer
from tests.agent.harness import Agent, manifest, tiny_model
from tests.fuzzing import FULL, HTTP_CASES, fuzz_settings
from tests.serve.conftest import deployment

schema = schemathesis.openapi.from_dict(openapi())
STATUSES: Counter[int] = Counter()
MODEL_NAMES = ["minilm", "tiny", "agent-tiny"]
_turn = itertools.count()
TOKEN: list[str] = []


@pytest.fixture(scope="module")
def servers(minilm_artifacts: Artifacts, tensor_artifacts: Artifacts,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    registry = ModelRegistry()
    registry.put(load_served(deployment("minilm", precision="fp32"), minilm_artifacts))
    registry.put(load_served(deployment("tiny", model={"source": "file:tensor.onnx", "task": "tensor"}),
                             tensor_artifacts))
    root = tmp_path_factory.mktemp("fuzz-agent")
    agent = Agent(root, root / "cache")
    tiny_model(agent.manifests / "tiny.onnx")
    (agent.manifests / "tiny.yaml").write_text(manifest("agent-tiny"))
    with BackgroundServer(create_app(registry)) as server:
        agent.start()
        try:
            agent.wait_phase("agent-tiny", "Ready")
            TOKEN.append(agent.token)
            yield [server.url, agent.url]
        finally:
            agent.stop()
            registry.close()


def errors_are_json(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.text[:200]
        json.loads(response.text)
    return True


CHECKS: list[Callable[..., object]] = [
    schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
    response_schema_conformance, errors_are_json,
]


@schema.parametrize()
@fuzz_settings(HTTP_CASES)
def test_no_5xx_and_errors_are_json(case: schemathesis.Case, servers: list[str]) -> None:
    # Half the cases name a model that serves, so inference paths run too, not only 404s.
    turn = next(_turn)
    if turn % 2:
        name = MODEL_NAMES[turn // 2 % len(MODEL_NAMES)]
        for key in ("name", "model"):
            if case.path_parameters and key in case.path_parameters:
                case.path_parameters[key] = name
        if isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = name
    for url in servers:
        response = case.call_and_validate(base_url=url, checks=CHECKS)
        STATUSES[response.status_code] += 1
    if case.method == "PUT":
        # Applying, with the token, as a dry run: the manifest goes through the loader and the planner
        # but nothing is written (the agent keeps serving its model for the other cases).
        case.query = {"dryRun": "true"}
        response = case.call_and_validate(base_url=servers[1], checks=CHECKS,
                                           headers={"Authorization": f"Bearer {TOKEN[0]}"})
        STATUSES[response.status_code] += 1


CORNER_STRINGS = ["\ud800", "a\udfffb", "\ud83d", "\x00", "nul\x00inside", "e" + "\u0301" * 2000, "\u202e\u2066rtl",
                  "\ufeffbom", "\U0001f600" * 50, "", " ", "\n" * 100, "x" * 20_000, "\u0000\ud800\u0301"]
INT_LIMITS = [0, -1, 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/xml", "application/json; charset=latin-1", "application/merge-patch+json", None]
corner = st.one_of(st.sampled_from(CORNER_STRINGS), st.text(max_size=40))
integer = st.one_of(st.sampled_from(INT_LIMITS), st.integers())
value = st.one_of(corner, integer, st.floats(allow_nan=True), st.booleans(), st.none())
names = st.sampled_from(MODEL_NAMES + ["", "\ud800", "x" * 300])


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, object]:
    """An OIP input whose name, datatype, shape and data may each be wrong, empty or at a limit."""
    shape = draw(st.one_of(st.lists(st.one_of(st.sampled_from([0, 1, 4, 8]), integer), max_size=3),
                           st.sampled_from([[], [0], [0, 4], [1, 8], [2, 4], [1, 0]])))
    data = draw(st.one_of(st.lists(value, max_size=12), st.lists(st.lists(value, max_size=4), max_size=3),
                          st.just([]), st.lists(integer, min_size=8, max_size=8), st.lists(corner, max_size=4)))
    return {"name": draw(st.sampled_from(["x", "mask", "text", "\ud800", ""])),
            "datatype": draw(st.sampled_from(["FP32", "INT64", "BYTES", "INT32", "UINT8", "BOOL", "FP16"])),
            "shape": shape, "data": data}


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, str, bytes, str | None]:
    """(method, path, body, content type) aimed at the APIs that take bodies."""
    name = draw(names)
    kind = draw(st.sampled_from(["embeddings", "chat", "completions", "infer", "deep", "apply"]))
    if kind == "embeddings":
        body: object = {"model": name, "input": draw(st.one_of(corner, st.lists(corner, max_size=4),
                                                                 st.lists(integer, max_size=4),
                                                                 st.lists(st.lists(integer, max_size=3), max_size=3))),
                        "dimensions": draw(st.one_of(st.none(), integer)),
                        "encoding_format": draw(st.sampled_from(["float", "base64", "\ud800"]))}
        path = "/v1/embeddings"
    elif kind in ("chat", "completions"):
        fields = {key: draw(st.one_of(st.none(), integer)) for key in ("max_tokens", "top_k", "seed", "n")}
        text = draw(st.one_of(corner, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": corner}),
                                               max_size=2)))
        body = {"model": name, **{k: v for k, v in fields.items() if v is not None}}
        if kind == "chat":
            body["messages"] = [{"role": draw(st.sampled_from(["user", "system", "\ud800"])), "content": text}]
            path = "/v1/chat/completions"
        else:
            body["prompt"] = text
            path = "/v1/completions"
    elif kind == "infer":
        body = {"inputs": draw(st.lists(tensors(), max_size=3)), "id": draw(corner)}
        # A lone surrogate in the path goes as the bytes it would be in UTF-8 (%ED%A0%80): not UTF-8 at all.
        path = f"/v2/models/{quote(name.encode('utf-8', 'surrogatepass'), safe='')}/infer"
    elif kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 5000, 100_000]))
        return "POST", f"/v2/models/{MODEL_NAMES[1]}/infer", b"[" * depth + b"]" * depth, "application/json"
    else:
        text = "apiVersion: npuctl.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\nspec:\n  model: {source: " \
               + json.dumps(draw(st.sampled_from(["hf:../../x", "hf:org/-bad-", "file:\x00", "hf:a/b@..", "pkg:"])
                                 )) + "}\n  serve: {maxBatch: " + str(draw(integer)) + "}\n"
        return "PUT", "/agent/v1/manifests/fuzz.yaml?dryRun=true", text.encode(), draw(st.sampled_from(CONTENT_TYPES))
    raw = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes, as a client sends them
    return "POST", path, raw, draw(st.one_of(st.just("application/json"), st.sampled_from(CONTENT_TYPES)))


HOSTILE: Counter[int] = Counter()


@fuzz_settings(int(os.environ.get("NPUCTL_FUZZ_HOSTILE", 3000 if FULL else 100)))
@given(sent=hostile_requests())
def test_hostile_bodies_get_4xx_json_never_5xx(sent: tuple[str, str, bytes, str | None], servers: list[str]) -> None:
    method, path, body, kind = sent
    headers = {"Authorization": f"Bearer {TOKEN[0]}"} | ({"content-type": kind} if kind else {})
    for url in servers if not path.startswith("/agent") else servers[1:]:
        answer = httpx.request(method, f"{url}{path}", content=body, headers=headers, timeout=60)
        HOSTILE[answer.status_code] += 1
        assert answer.status_code < 500, (path, body[:300], answer.text[:300])
        if answer.status_code >= 400:
            assert answer.headers["content-type"].startswith("application/json"), answer.text[:200]
            json.loads(answer.text)


def test_openapi_description_is_served_and_published(servers: list[str]) -> None:
    for url in servers:
        assert httpx.get(f"{url}/openapi.json").json() == openapi()
    published = Path(__file__).parents[2] / "schema" / "openapi.json"
    assert json.loads(published.read_text()) == openapi(), "regenerate schema/openapi.json (see tests/README.md)"


def test_fuzzing_saw_no_server_error() -> None:
    # The figures for tests/README.md (pytest -s shows them).
    print(f"\nHTTP fuzz: {sum(STATUSES.values())} requests, by status: {dict(sorted(STATUSES.items()))}")
    print(f"hostile HTTP fuzz: {sum(HOSTILE.values())} requests, by status: {dict(sorted(HOSTILE.items()))}")
    assert not [code for code in [*STATUSES, *HOSTILE] if code >= 500]
