"""HTTP fuzzing with schemathesis, driven by the server's own OpenAPI description (/openapi.json), against
two real servers on 127.0.0.1: the serving app with MiniLM (embeddings) and a tensor model, and an agent
process (its control API, and a tiny tensor model it built). Whatever is sent: no 5xx, and every error
answer is a JSON body in the documented shape.

Default run: 25 cases per operation and server; `NPUCTL_FUZZ=full`: 200."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
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
from tests.fuzzing import HTTP_CASES, fuzz_settings
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


def test_openapi_description_is_served_and_published(servers: list[str]) -> None:
    for url in servers:
        assert httpx.get(f"{url}/openapi.json").json() == openapi()
    published = Path(__file__).parents[2] / "schema" / "openapi.json"
    assert json.loads(published.read_text()) == openapi(), "regenerate schema/openapi.json (see tests/README.md)"


def test_fuzzing_saw_no_server_error() -> None:
    # The figures for tests/README.md (pytest -s shows them).
    print(f"\nHTTP fuzz: {sum(STATUSES.values())} requests, by status: {dict(sorted(STATUSES.items()))}")
    assert not [code for code in STATUSES if code >= 500]
