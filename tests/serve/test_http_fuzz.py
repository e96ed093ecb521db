"""HTTP fuzzing with schemathesis, driven by each process's own OpenAPI description (/openapi.json), against
two real servers on 127.0.0.1: the serving app with MiniLM (embeddings) and a tensor model (`npuctl serve`'s
document), and an agent process (its control API, and a tiny tensor model it built: the agent's document).
schemathesis runs all its default checks: no 5xx, status codes, content types and bodies as documented,
schema-invalid requests refused, schema-valid ones accepted (ST202), and every error is a JSON body. Where the
server refuses a schema-valid body for a rule no schema can state (the named model's signature, vocabulary or
context; a YAML manifest's content; a rule between two fields), the refusal must say so (`MODEL_DEPENDENT`).

Besides the schema-driven cases, a hostile property sends what schemas do not generate: unicode corner strings
(lone surrogates, NUL, combining runs, bidi marks), integers at and past the int32/int64 limits in every integer
field, empty and zero-sized tensors, shapes that disagree with their data, deep nesting, and content types other
than JSON.

Default run: 25 cases per operation and server, 100 hostile cases; `NPUCTL_FUZZ=full`: 200 and 3,000."""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from npuctl.runtime.placement import Artifacts
from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.models import load_served
from npuctl.serve.openapi.document import openapi
from npuctl.serve.registry import ModelRegistry
from tests.agent.harness import Agent, manifest, tiny_model
from tests.fuzzing import FULL, HTTP_CASES, fuzz_settings
from tests.serve.conftest import deployment

serve_schema = schemathesis.openapi.from_dict(openapi())
agent_schema = schemathesis.openapi.from_dict(openapi(control=True))
BODY_DEPENDS_ON_THE_MODEL = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat",
                             "/api/generate", "/api/embed", "/api/embeddings", "/v2/models/{name}/infer",
                             "/v2/models/{name}/versions/{version}/infer", "/agent/v1/manifests/{file}",
                             "/v1/rerank", "/rerank", "/v1/classify", "/classify", "/v1/responses", "/v2/rerank",
                             "/embed", "/predict", "/generate", "/generate_stream", "/"}
MODEL_DEPENDENT = (
    # the model's signature (tensor names, datatypes, shapes), vocabulary, context and dimensions
    "not an input of this model", "is missing", "has shape", "has datatype", "values; shape", "needs 'data'",
    "BYTES", "binary_data_size", "not an output of this model", "does not take tensors", "tokens;",
    "context is", "outside the vocabulary", "is not a token id of this model", "-dimensional", "longer than",
    "'data' is not a list", "'data' holds",
    # the per-request caps (npuctl/serve/limits.py)
    "rows; at most", "is empty; send at least one", "tokens in all",
    # a rule between fields
    "only allowed with stream: true", "needs 'logprobs'", "needs 'tools'", "with tools the model may call",
    "is given twice", "names a function twice", "not in 'tools'", "cannot be followed",
    "would need the prompt's log probabilities", "is not kept here", "has no message",
    "must be an integer of at least", "POST / answers as the model here", "models here can",
    "normalized (spec.model.normalize)", "is not a classifier",
    "only an assistant message calls tools", "needs string fields", "models serve here",
    # keep_alive 0 unloads only an onDemand deployment (spec.serve.residency)
    "spec.serve.residency: always",
    # the path's own choice (/generate answers whole, /generate_stream streams: one body schema for both)
    "asks for /generate",
    # a manifest's YAML content (placed at file:line:col)
    "error(s) in",
)
STATUSES: Counter[int] = Counter()
MODEL_NAMES = ["minilm", "tiny", "agent-tiny"]
_turns: defaultdict[str, itertools.count[int]] = defaultdict(itertools.count)
"""A count per operation: adding an operation to the description does not change the cases of the others."""
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


def refused_only_for_what_no_schema_states(ctx: object, response: schemathesis.Response,
                                           case: schemathesis.Case) -> bool:
    """ST202 for bodies whose validity depends on the model they name: a schema-valid one refused with 400/422
    only by a rule in MODEL_DEPENDENT."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return True
    text = response.text
    assert any(phrase in text for phrase in MODEL_DEPENDENT), f"schema-valid request refused: {text[:300]}"
    return True


def check(case: schemathesis.Case, url: str, headers: dict[str, str] | None = None) -> None:
    model_dependent = case.path in BODY_DEPENDS_ON_THE_MODEL
    response = case.call_and_validate(
        base_url=url, headers=headers,
        additional_checks=[errors_are_json, *([refused_only_for_what_no_schema_states] if model_dependent else [])],
        excluded_checks=[positive_data_acceptance] if model_dependent else [])
    STATUSES[response.status_code] += 1


def name_a_served_model(case: schemathesis.Case) -> None:
    """Half the schema-valid cases name a model that serves, so inference paths run too, not only 404s (a
    schema-invalid case keeps its invalid name)."""
    turn = next(_turns[f"{case.method} {case.path}"])
    if turn % 2 and case.meta is not None and case.meta.generation.mode.is_positive:
        name = MODEL_NAMES[turn // 2 % len(MODEL_NAMES)]
        for key in ("name", "model"):
            if case.path_parameters and key in case.path_parameters:
                case.path_parameters[key] = name
        if isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = name


@serve_schema.parametrize()
@fuzz_settings(HTTP_CASES)
def test_serve_no_5xx_and_answers_as_documented(case: schemathesis.Case, servers: list[str]) -> None:
    name_a_served_model(case)
    check(case, servers[0])


@agent_schema.parametrize()
@fuzz_settings(HTTP_CASES)
def test_agent_no_5xx_and_answers_as_documented(case: schemathesis.Case, servers: list[str]) -> None:
    name_a_served_model(case)
    check(case, servers[1])
    if case.method == "PUT" and case.meta is not None and case.meta.generation.mode.is_positive:
        # Applying, with the token, as a dry run: the manifest goes through the loader and the planner
        # but nothing is written (the agent keeps serving its model for the other cases).
        case.query = {"dryRun": "true"}
        check(case, servers[1], headers={"Authorization": f"Bearer {TOKEN[0]}"})


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
               + json.dumps(draw(st.sampled_from(["hf:../../x", "hf:org/-bad-", "file:\x00", "hf:a/b@..", "pkg:"]
                                                 + HOSTILE_LOCAL_SOURCES))) + "}\n  serve: {maxBatch: " \
               + str(draw(integer)) + "}\n"
        return "PUT", "/agent/v1/manifests/fuzz.yaml?dryRun=true", text.encode(), draw(st.sampled_from(CONTENT_TYPES))
    raw = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes, as a client sends them
    return "POST", path, raw, draw(st.one_of(st.just("application/json"), st.sampled_from(CONTENT_TYPES)))


HOSTILE: Counter[int] = Counter()
HOSTILE_LOCAL_SOURCES = ["file:/dev/zero", "file:/proc/self/fd/0", "file:../../../../etc/passwd", "file:/etc",
                         "pkg:npuctl/../../../../etc/passwd", "pkg:npuctl/../.."]
"""Issue 26: devices, the agent's own stdin, paths out of the manifests folder and out of a package, sent to the
agent's dry run (which resolves sources): refused at once, never read."""


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


def test_the_documented_manifest_file_names_are_the_agents() -> None:
    from npuctl.agent.files import SAFE_FILE
    from npuctl.serve.openapi.others import MANIFEST_FILE

    assert MANIFEST_FILE == SAFE_FILE.pattern


def test_each_process_serves_and_publishes_its_own_description(servers: list[str]) -> None:
    serve, agent = servers
    assert httpx.get(f"{serve}/openapi.json").json() == openapi()
    assert httpx.get(f"{agent}/openapi.json").json() == openapi(control=True)
    assert not [path for path in openapi()["paths"] if path.startswith("/agent/")]
    published = Path(__file__).parents[2] / "schema"
    for file, document in (("openapi.json", openapi()), ("openapi-agent.json", openapi(control=True))):
        assert json.loads((published / file).read_text()) == document, \
            f"regenerate schema/{file} (see tests/README.md)"


def test_each_description_is_valid_openapi_3_0() -> None:
    # Request bodies' schemas come from pydantic (JSON Schema 2020-12): converted, they must still be OpenAPI 3.0.
    serve_schema.validate()
    agent_schema.validate()


def test_fuzzing_saw_no_server_error() -> None:
    # The figures for tests/README.md (pytest -s shows them).
    print(f"\nHTTP fuzz: {sum(STATUSES.values())} requests, by status: {dict(sorted(STATUSES.items()))}")
    print(f"hostile HTTP fuzz: {sum(HOSTILE.values())} requests, by status: {dict(sorted(HOSTILE.items()))}")
    assert not [code for code in [*STATUSES, *HOSTILE] if code >= 500]
