"""Real servers on 127.0.0.1 for the serving tests: MiniLM on the CPU (built fp32 into the session's
shared MiniLM store, so only the export runs, and only once) and a tiny tensor graph."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.artifacts import BuildResult, Store, artifacts_of, build_deployment
from npuctl.runtime.placement import Artifacts
from npuctl.schema.models import ModelDeployment
from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.models import ServedModel, load_served
from npuctl.serve.registry import ModelRegistry
from tests.conftest import MINILM_SOURCE

TENSOR_WEIGHT = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)

Serve = Callable[..., BackgroundServer]


def deployment(name: str, **spec: Any) -> ModelDeployment:
    """A manifest as a dict: `spec` entries override the defaults (embeddings from MiniLM)."""
    body = {"model": {"source": MINILM_SOURCE, "task": "embeddings"}} | spec
    return ModelDeployment.model_validate(
        {"apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": body}
    )


def tensor_model(path: Path) -> Path:
    """y = x * w * mask, with x: float32[batch, 4], mask: int64[batch, 4], y: float32[batch, 4]."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["xw"]),
            helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xw", "maskf"], ["y"]),
        ],
        "tensor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(TENSOR_WEIGHT, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def minilm_artifacts(minilm_store: Store) -> Artifacts:
    return artifacts_of(build_deployment(deployment("minilm-fp32", precision="fp32"), store=minilm_store))


@pytest.fixture(scope="session")
def tensor_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return Artifacts(tensor_model(tmp_path_factory.mktemp("tensor") / "tensor.onnx"))


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(model, ...) -> a started server holding those models; stopped after the test."""
    started: list[tuple[BackgroundServer, ModelRegistry]] = []

    def start(*models: ServedModel, **app_options: Any) -> BackgroundServer:
        registry = ModelRegistry()
        for model in models:
            registry.put(model)
        server = BackgroundServer(create_app(registry, **app_options)).start()
        started.append((server, registry))
        return server

    yield start
    for server, registry in started:
        server.stop()
        registry.close()


@pytest.fixture
def minilm(minilm_artifacts: Artifacts) -> Callable[..., ServedModel]:
    """minilm(name="minilm", **spec) -> MiniLM loaded on the CPU for serving."""

    def load(name: str = "minilm", **spec: Any) -> ServedModel:
        return load_served(deployment(name, **spec), minilm_artifacts)

    return load


@pytest.fixture
def tensor(tensor_artifacts: Artifacts) -> Callable[..., ServedModel]:
    def load(name: str = "tiny", **spec: Any) -> ServedModel:
        spec = {"model": {"source": "file:tensor.onnx", "task": "tensor"}} | spec
        return load_served(deployment(name, **spec), tensor_artifacts)

    return load


@pytest.fixture
def tiny_llama(tiny_llama_build: BuildResult) -> Callable[..., ServedModel]:
    """tiny_llama(name="tiny-llama", **spec) -> the tiny Llama loaded on the CPU for serving."""
    artifacts: Artifacts = artifacts_of(tiny_llama_build)

    def load(name: str = "tiny-llama", **spec: Any) -> ServedModel:
        spec = {"model": {"source": "file:unused", "task": "text-generation", "format": "genai"},
                "runtime": {"device": "cpu"}} | spec
        served = load_served(deployment(name, **spec), artifacts)
        assert served.status.ready, served.status
        return served

    return load
