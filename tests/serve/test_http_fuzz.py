"""HTTP fuzzing with schemathesis, driven by each process's own OpenAPI description (/openapi.json), against
two real servers on 127.0.0.1: the serving app with MiniLM (embeddings) and a tensor model (`npuctl serve`'s
document), and an agent process (its control API, and a tiny tensor model it built: the agent's document).
schemathesis runs all its default checks: no 5xx, status codes, content types and bodies as documented,
schema-invalid requests refused, schema-valid ones accepted (ST202), and every error is a JSON body. Where the
server refuses a schema-valid body for a rule no schema can state (the named model's signature, vocabulary or
context; a YAML manifest's content; a rule between two fields), the refusal must say so (`MODEL_DEPENDENT`).

Default run: 25 cases per operation and server; `NPUCTL_FUZZ=full`: 200."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from npuctl.runtime.placement import Artifacts
from npuctl.serve.app import create_app
from npuctl.serve.models import load_served
from npuctl.serve.openapi import openapi
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.server import BackgroundServer
from tests.agent.harness import Agent, manifest, tiny_model
from tests.fuzzing import HTTP_CASES, fuzz_settings
from tests.serve.conftest import deployment

serve_schema = schemathesis.openapi.from_dict(openapi())
agent_schema = schemathesis.openapi.from_dict(openapi(control=True))
BODY_DEPENDS_ON_THE_MODEL = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat",
                             "/api/generate", "/api/embed", "/api/embeddings", "/v2/models/{name}/infer",
                             "/v2/models/{name}/versions/{version}/infer", "/agent/v1/manifests/{file}",
                             "/v1/rerank", "/rerank", "/v1/classify", "/classify"}
MODEL_DEPENDENT = (
    # the model's signature (tensor names, datatypes, shapes), vocabulary, context and dimensions
    "not an input of this model", "is missing", "has shape", "has datatype", "values; shape", "needs 'data'",
    "BYTES", "binary_data_size", "not an output of this model", "does not take tensors", "tokens;",
    "context is", "outside the vocabulary", "-dimensional", "longer than", "'data' is not a list",
    # a rule between fields
    "only allowed with stream: true", "needs 'logprobs'", "needs 'tools'", "with tools the model may call",
    "is given twice", "names a function twice", "not in 'tools'", "cannot be followed",
    "would need the prompt's log probabilities",
    "only an assistant message calls tools", "needs string fields", "models serve here",
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


def test_the_documented_manifest_file_names_are_the_agents() -> None:
    from npuctl.agent.files import SAFE_FILE
    from npuctl.serve.openapi_v2 import MANIFEST_FILE

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


def test_fuzzing_saw_no_server_error() -> None:
    # The figures for tests/README.md (pytest -s shows them).
    print(f"\nHTTP fuzz: {sum(STATUSES.values())} requests, by status: {dict(sorted(STATUSES.items()))}")
    assert not [code for code in STATUSES if code >= 500]
