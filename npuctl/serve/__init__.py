"""Serving over HTTP: one Starlette app for many models (OpenAI /v1, Open Inference Protocol /v2, Ollama /api,
TEI and TGI, rerank and classify, /metrics), dynamic batching per model, and a registry that models are put into,
swapped in and removed from while the server runs. One folder per API (`openai/`, `ollama/`, `oip/`, `scoring/`,
`tei/`), with `http/` (the plumbing they share), `generation/` (text generation) and `openapi/` (the description).

    registry = ModelRegistry()
    registry.put(load_served(deployment, artifacts))     # add, or swap atomically
    app = create_app(registry, routes=[...])             # extra routes: the agent's control API
    BackgroundServer(app, "127.0.0.1", 8080).start()     # or server.run(app, server.bind(host, port))
    registry.remove("minilm")
"""

from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer, run
from npuctl.serve.models import (
    EmbeddingService,
    ModelStatus,
    ServedModel,
    TensorService,
    Unavailable,
    load_served,
    serve_loaded,
)
from npuctl.serve.registry import ModelRegistry, UnknownModel

__all__ = [
    "BackgroundServer",
    "EmbeddingService",
    "ModelRegistry",
    "ModelStatus",
    "ServedModel",
    "TensorService",
    "Unavailable",
    "UnknownModel",
    "create_app",
    "load_served",
    "run",
    "serve_loaded",
]
