"""The request-field audit (issue 27): every field the OpenAPI description documents for the generation and
embedding APIs is sent to a real server, and each must change the answer in the way its documentation says, or be
refused with a 400 naming it. The fields OpenAI documents that npuctl cannot honour must be 400s naming them. A
field added to the description without a check here fails `test_every_documented_field_is_audited`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from npuctl.artifacts import BuildResult, artifacts_of
from npuctl.runtime.placement import Artifacts
from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.models import load_served
from npuctl.serve.openai.fields import CHAT, COMPLETIONS
from npuctl.serve.openai.responses_request import REFUSED as RESPONSES_REFUSED
from npuctl.serve.openapi.document import openapi
from npuctl.serve.registry import ModelRegistry
from tests.serve import field_checks as checks
from tests.serve import field_checks_responses as responses
from tests.serve import field_checks_tasks as tasks
from tests.serve.conftest import deployment
from tests.serve.field_audit import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    OLLAMA_CHAT,
    OLLAMA_EMBED,
    OLLAMA_EMBEDDINGS,
    OLLAMA_GENERATE,
    RESPONSES_PATH,
    Post,
    base,
    refused,
    with_option,
)
from tests.serve.test_scoring_api import built, served  # noqa: F401  (`built` builds the reranker and classifier)


@pytest.fixture(scope="module")
def post(tiny_llama_build: BuildResult, minilm_artifacts: Artifacts) -> Iterator[Post]:
    registry = ModelRegistry()
    registry.put(
        load_served(
            deployment(
                "tiny-llama",
                model={"source": "file:unused", "task": "text-generation", "format": "genai"},
                runtime={"device": "cpu"},
            ),
            artifacts_of(tiny_llama_build),
        )
    )
    registry.put(load_served(deployment("minilm", precision="fp32"), minilm_artifacts))
    server = BackgroundServer(create_app(registry)).start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield lambda path, body: client.post(path, json=body)
    server.stop()
    registry.close()


@dataclass(frozen=True)
class Audit:
    fields: dict[str, Callable[[Post, str], None]]
    options: dict[str, Callable[[Post, str], None]] | None = None
    """Ollama's `options` object, field by field."""


_GENERATION = {
    "model": checks.check_model,
    "max_tokens": checks.check_max_tokens("max_tokens"),
    "max_completion_tokens": checks.check_max_tokens("max_completion_tokens"),
    "temperature": checks.check_temperature,
    "top_p": checks.check_narrowing("top_p", 0.001),
    "top_k": checks.check_narrowing("top_k", 1),
    "seed": checks.check_seed,
    "n": checks.check_n,
    "stream": checks.check_stream,
    "stream_options": checks.check_stream_options,
    "ignore_eos": checks.check_ignore_eos,
    "stop": checks.check_stop,
    "frequency_penalty": checks.check_penalty("frequency_penalty"),
    "presence_penalty": checks.check_penalty("presence_penalty"),
    "logit_bias": checks.check_logit_bias,
    "user": checks.check_identifier("user"),
    "safety_identifier": checks.check_identifier("safety_identifier"),
    "prompt_cache_key": checks.check_identifier("prompt_cache_key"),
    "logprobs": checks.check_logprobs,
}
_OLLAMA_OPTIONS = {
    "temperature": checks.check_temperature,
    "top_p": checks.check_narrowing("top_p", 0.001),
    "top_k": checks.check_narrowing("top_k", 1),
    "seed": checks.check_seed,
    "num_predict": checks.check_num_predict,
    "num_ctx": lambda post, path: refused(post, path, with_option(path, num_ctx=4), "context is 4 tokens"),
    "stop": checks.check_stop,
    "repeat_penalty": checks.check_penalty("repeat_penalty"),
    "repeat_last_n": checks.check_repeat_last_n,
    "presence_penalty": checks.check_penalty("presence_penalty"),
    "frequency_penalty": checks.check_penalty("frequency_penalty"),
}
_OLLAMA_TEXT = {
    "model": checks.check_model,
    "stream": checks.check_stream,
    "keep_alive": checks.check_keep_alive,
    "format": checks.check_format,
    "think": checks.check_think,
    "logprobs": checks.check_logprobs,
    "top_logprobs": checks.check_top_logprobs,
}
AUDITS = {
    CHAT_PATH: Audit(
        _GENERATION
        | {
            "messages": checks.check_messages,
            "response_format": checks.check_response_format,
            "tools": checks.check_tools,
            "tool_choice": checks.check_tool_choice,
            "parallel_tool_calls": checks.check_parallel_tool_calls,
            "top_logprobs": checks.check_top_logprobs,
            **{name: checks.check_refused_unless_empty(name, "x") for name in CHAT},
        }
    ),
    COMPLETIONS_PATH: Audit(
        _GENERATION
        | {
            "prompt": checks.check_prompt,
            "echo": checks.check_echo,
            **{name: checks.check_refused_unless_empty(name, "x") for name in COMPLETIONS},
        }
    ),
    RESPONSES_PATH: Audit(
        {
            "model": checks.check_model,
            "input": responses.check_input_of_responses,
            "instructions": responses.check_instructions,
            "stream": responses.check_responses_stream,
            "tools": responses.check_responses_tools,
            "tool_choice": responses.check_responses_tool_choice,
            "parallel_tool_calls": responses.check_responses_parallel,
            "text": responses.check_text_format,
            "max_output_tokens": checks.check_max_tokens("max_output_tokens"),
            "temperature": responses.check_responses_temperature,
            "top_p": responses.check_responses_top_p,
            "previous_response_id": responses.check_previous_response_id,
            "store": responses.check_store,
            "metadata": responses.check_metadata,
            "user": responses.check_responses_identifier("user"),
            "safety_identifier": responses.check_responses_identifier("safety_identifier"),
            "prompt_cache_key": responses.check_responses_identifier("prompt_cache_key"),
            **{name: checks.check_refused_unless_empty(name, "x") for name in RESPONSES_REFUSED},
        }
    ),
    EMBEDDINGS_PATH: Audit(
        {
            "model": checks.check_model,
            "input": checks.check_input,
            "dimensions": checks.check_dimensions,
            "encoding_format": checks.check_encoding_format,
            "user": checks.check_embedding_identifier,
        }
    ),
    OLLAMA_CHAT: Audit(
        _OLLAMA_TEXT | {"messages": checks.check_messages, "tools": checks.check_ollama_tools}, _OLLAMA_OPTIONS
    ),
    OLLAMA_GENERATE: Audit(
        _OLLAMA_TEXT
        | {
            "prompt": checks.check_prompt,
            "context": checks.check_context,
            "raw": checks.check_raw,
            "system": checks.check_system,
            "images": checks.check_refused_unless_empty("images", ["aGk="]),
            "suffix": checks.check_refused_unless_empty("suffix", "x"),
            "template": checks.check_refused_unless_empty("template", "x"),
        },
        _OLLAMA_OPTIONS,
    ),
    OLLAMA_EMBED: Audit(
        {
            "model": checks.check_model,
            "input": checks.check_input,
            "dimensions": checks.check_dimensions,
            "truncate": checks.check_truncate,
            "keep_alive": checks.check_keep_alive,
            "options": checks.check_embedding_options,
        }
    ),
    OLLAMA_EMBEDDINGS: Audit(
        {
            "model": checks.check_model,
            "prompt": checks.check_input,
            "keep_alive": checks.check_keep_alive,
            "options": checks.check_embedding_options,
        }
    ),
}
CASES = [(path, name) for path, audit in AUDITS.items() for name in audit.fields] + [
    (path, f"options.{name}") for path, audit in AUDITS.items() for name in audit.options or {}
]


def resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$ref` (or a nullable `allOf: [$ref]`) followed into the components."""
    schema = schema["allOf"][0] if "allOf" in schema else schema
    if "$ref" in schema:
        return dict(openapi()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    return schema


def body_schema(path: str) -> dict[str, Any]:
    return resolved(openapi()["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])


def documented(path: str) -> tuple[set[str], set[str]]:
    """The body fields of POST `path` in the OpenAPI description, and those of its `options` object."""
    properties = body_schema(path)["properties"]
    options = resolved(properties.get("options", {})).get("properties", {})
    return set(properties), set(options) if path not in (OLLAMA_EMBED, OLLAMA_EMBEDDINGS) else set()


def documented_with_parameters(path: str) -> set[str]:
    """The body fields of POST `path`, with those of its `parameters` object as `parameters.<name>`."""
    properties = body_schema(path)["properties"]
    parameters = resolved(properties.get("parameters", {})).get("properties", {})
    return set(properties) | {f"parameters.{name}" for name in parameters}


def test_every_documented_field_is_audited() -> None:
    for path, audit in AUDITS.items():
        fields, options = documented(path)
        refusals = set(
            {CHAT_PATH: CHAT, COMPLETIONS_PATH: COMPLETIONS, RESPONSES_PATH: RESPONSES_REFUSED}.get(path, ())
        )
        assert set(audit.fields) == fields - ({"options"} if audit.options else set()) | refusals, path
        assert set(audit.options or {}) == options, path
        assert not fields & refusals, f"{path} documents a field it refuses"


@pytest.mark.parametrize(("path", "name"), CASES, ids=[f"{p}:{n}" for p, n in CASES])
def test_each_field_has_its_effect_or_is_a_400_naming_it(post: Post, path: str, name: str) -> None:
    audit = AUDITS[path]
    check = (
        audit.options[name.removeprefix("options.")]
        if name.startswith("options.") and audit.options
        else audit.fields[name]
    )
    check(post, path)


@pytest.fixture(scope="module")
def task_post(built: dict[str, Any], tiny_llama_build: BuildResult, minilm_artifacts: Artifacts,  # noqa: F811
              tensor_artifacts: Artifacts) -> Iterator[Post]:
    registry = ModelRegistry()
    for model in (served(built, "rerank"), served(built, "classification"),
                  load_served(deployment("minilm", precision="fp32"), minilm_artifacts),
                  load_served(deployment("tiny-llama", model={"source": "file:unused", "task": "text-generation",
                                                              "format": "genai"}, runtime={"device": "cpu"}),
                              artifacts_of(tiny_llama_build)),
                  load_served(deployment("tiny", model={"source": "file:tensor.onnx", "task": "tensor"}),
                              tensor_artifacts)):
        registry.put(model)
    server = BackgroundServer(create_app(registry)).start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield lambda path, body: client.post(path, json=body)
    server.stop()
    registry.close()


_TEI = {"model": tasks.check_model, "truncation_direction": tasks.check_direction}
TASK_AUDITS: dict[str, dict[str, Callable[[Post, str], None]]] = {
    tasks.RERANK: {
        "model": tasks.check_model, "query": tasks.changes("query", "a different question"),
        "documents": tasks.changes("documents", tasks.DOCUMENTS[:2]), "texts": tasks.check_texts,
        "top_n": tasks.check_top_n, "return_documents": tasks.check_return_documents,
        "return_text": tasks.check_return_text, "raw_scores": tasks.check_raw_scores,
        "rank_fields": tasks.check_rank_fields, "truncate": tasks.check_truncate("documents"),
        "truncation_direction": tasks.check_direction,
    },
    tasks.RERANK_V2: {
        "model": tasks.check_model, "query": tasks.changes("query", "a different question"),
        "documents": tasks.changes("documents", tasks.DOCUMENTS[:2]), "top_n": tasks.check_top_n,
        "max_tokens_per_doc": tasks.check_max_tokens_per_doc, "relevant_spans": tasks.refuses("relevant_spans", True),
        "priority": tasks.refuses("priority", 1),
    },
    tasks.CLASSIFY: {
        "model": tasks.check_model, "input": tasks.changes("input", "an awful sentence"),
        "raw_scores": tasks.check_raw_scores, "truncate": tasks.check_truncate("input"), "user": tasks.check_user,
    },
    tasks.EMBED: _TEI | {
        "inputs": tasks.changes("inputs", "other words"), "truncate": tasks.check_embed_truncate,
        "normalize": tasks.check_normalize, "dimensions": tasks.check_dimensions,
        "encoding_format": tasks.check_encoding_format, "prompt_name": tasks.refuses("prompt_name", "query"),
    },
    tasks.PREDICT: _TEI | {
        "inputs": tasks.changes("inputs", "an awful sentence"), "truncate": tasks.check_truncate("inputs"),
        "raw_scores": tasks.check_raw_scores, "parameters": tasks.check_predict_parameters,
        "parameters.top_k": tasks.check_predict_parameters,
        "parameters.function_to_apply": tasks.check_predict_parameters,
    },
    tasks.GENERATE: {
        "model": tasks.check_model, "inputs": tasks.changes("inputs", "Once upon a time"),
        "stream": tasks.check_stream, "parameters": tasks.check_max_new_tokens,
        "parameters.max_new_tokens": tasks.check_max_new_tokens,
        "parameters.temperature": tasks.sampled(temperature=2),
        "parameters.do_sample": tasks.sampled(do_sample=True),
        "parameters.top_p": tasks.narrowing(top_p=0.001), "parameters.top_k": tasks.narrowing(top_k=1),
        "parameters.seed": tasks.check_seed, "parameters.details": tasks.check_details,
        "parameters.return_full_text": tasks.check_return_full_text,
        "parameters.repetition_penalty": tasks.penalised("repetition_penalty", 2),
        "parameters.frequency_penalty": tasks.penalised("frequency_penalty", 2),
        "parameters.stop": tasks.check_stop, "parameters.typical_p": tasks.check_typical_p,
        **{f"parameters.{name}": tasks.refused_parameter(name, value) for name, value in (
            ("adapter_id", "x"), ("best_of", 2), ("decoder_input_details", True), ("grammar", {"type": "json"}),
            ("top_n_tokens", 1), ("watermark", True), ("truncate", 10))},
    },
    tasks.INFER: {
        "id": tasks.check_id, "inputs": tasks.check_inputs, "outputs": tasks.check_outputs,
        "parameters": tasks.check_binary_data_output, "parameters.binary_data_output": tasks.check_binary_data_output,
        "parameters.timeout": tasks.check_timeout,
    },
}
TASK_CASES = [(path, name) for path, fields in TASK_AUDITS.items() for name in fields]
DOCUMENTED_AT = {tasks.INFER: "/v2/models/{name}/infer"}


def test_every_documented_task_field_is_audited() -> None:
    for path, fields in TASK_AUDITS.items():
        assert set(fields) == documented_with_parameters(DOCUMENTED_AT.get(path, path)), path


@pytest.mark.parametrize(("path", "name"), TASK_CASES, ids=[f"{p}:{n}" for p, n in TASK_CASES])
def test_each_task_field_has_its_effect_or_is_a_400_naming_it(task_post: Post, path: str, name: str) -> None:
    TASK_AUDITS[path][name](task_post, path)


@pytest.mark.parametrize("path", list(AUDITS))
def test_a_field_the_endpoint_does_not_take_is_a_400_naming_it(post: Post, path: str) -> None:
    refused(post, path, base(path) | {"frequency_penalty_x": 1}, "'frequency_penalty_x'")


@pytest.mark.parametrize("path", list(TASK_AUDITS))
def test_a_task_field_the_endpoint_does_not_take_is_a_400_naming_it(task_post: Post, path: str) -> None:
    refused(task_post, path, tasks.base(path) | {"inputs_x": 1}, "'inputs_x'")
