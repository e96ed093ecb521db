"""Open Inference Protocol (KServe v2) over HTTP, with Triton's extensions: health, model metadata and readiness
(also under `/versions/{version}`), and `infer` with tensors checked against the model's signature (name, datatype,
shape) before they reach a session, as JSON or binary data. Embedding models answer too: a BYTES `text` input, an
FP32 `embedding` output."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl import __version__
from npuctl.runtime.tensors import TensorSpec
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import answered, check_json_type, read_body
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.limits import check_rows, check_tokens, tokenized
from npuctl.serve.http.validation import parse
from npuctl.serve.models import EmbeddingService, ServedModel, TensorService
from npuctl.serve.oip.binary import BINARY_SIZE, HEADER_LENGTH, Blobs, decode, encode, respond, split
from npuctl.serve.oip.repository import EXTENSIONS, PLATFORM, InferenceStats, Timing, config, index
from npuctl.serve.oip.requests import IndexRequest, InferParameters, InferRequest, RequestedOutput, Tensor
from npuctl.serve.oip.task_metadata import task_metadata

TEXT_INPUT = "text"
EMBEDDING_OUTPUT = "embedding"

_KINDS_TAKEN = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
"""numpy kinds of the JSON data each kind of input takes: booleans, integers, numbers."""
_KIND_NAMES = {"b": "boolean", "i": "integer", "u": "integer", "f": "number", "U": "string"}


def oip_routes(ctx: ServeContext) -> list[BaseRoute]:
    stats = InferenceStats()

    def served() -> list[ServedModel]:
        return [m for m in ctx.registry.models() if m.speaks(Api.OIP)]

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        models = ctx.registry.models()
        waiting = {m.name: {"reason": m.status.reason, "message": ctx.message(request, m.status.message)}
                   for m in models if not m.status.ready}
        waiting |= {subject: {"reason": reason, "message": ctx.message(request, message)}
                    for subject, (reason, message) in ctx.registry.problems().items()}
        return JSONResponse({"ready": not waiting, "notReady": waiting}, status_code=503 if waiting else 200)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "npuctl", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request) -> Response:
        model = _model(ctx, request)
        inputs, outputs = _signature(model)
        return JSONResponse({
            "name": model.name,
            "versions": [model.generation],
            "platform": PLATFORM,
            "inputs": [_meta(spec) for spec in inputs],
            "outputs": [_meta(spec) for spec in outputs],
            "status": model.status.as_dict() | {"message": ctx.message(request, model.status.message)},
            **task_metadata(model),
        })

    async def model_ready(request: Request) -> Response:
        model = _model(ctx, request)
        status = model.status
        body = {"name": model.name, "ready": status.ready, "reason": status.reason,
                "message": ctx.message(request, status.message)}
        return JSONResponse(body, status_code=200 if status.ready else 503)

    async def model_config(request: Request) -> Response:
        model = _model(ctx, request)
        return JSONResponse(config(model, *_signature(model)))

    async def model_stats(request: Request) -> Response:
        models = [_model(ctx, request)] if "name" in request.path_params else served()
        return JSONResponse(stats.report(models))

    async def repository_index(request: Request) -> Response:
        body = await read_body(request, ctx.max_body_bytes)
        asked = parse(IndexRequest, split(body, None)[0]) if body.strip() else IndexRequest()
        return JSONResponse(index(served(), asked.ready, lambda text: ctx.message(request, text)))

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        if HEADER_LENGTH.lower() not in request.headers:
            check_json_type(request)  # the binary extension's header is not one a page can send without CORS
        body, blobs = split(await read_body(request, ctx.max_body_bytes), request.headers.get(HEADER_LENGTH))
        asked = parse(InferRequest, body)
        with ctx.using(request, request.path_params["name"], Api.OIP, ServedModel) as model:
            _version(model, request)
            try:
                answer, timing = await _infer(request, model, asked, blobs, started)
            except ApiError:
                stats.failed(model, time.perf_counter() - started)
                raise
            stats.succeeded(model, timing)
            return answer

    probes = (live, ready, model_ready)

    def route(path: str, handler: Any, methods: list[str]) -> Route:
        return Route(path, ctx.endpoint(Api.OIP, handler, counted=handler not in probes), methods=methods)

    model_routes = [("", model_metadata, "GET"), ("/ready", model_ready, "GET"), ("/infer", infer, "POST"),
                    ("/config", model_config, "GET"), ("/stats", model_stats, "GET")]
    return [
        route("/v2", server_metadata, ["GET"]),
        route("/v2/health/live", live, ["GET"]),
        route("/v2/health/ready", ready, ["GET"]),
        route("/v2/repository/index", repository_index, ["POST"]),
        route("/v2/models/stats", model_stats, ["GET"]),  # before /v2/models/{name}, as in Triton
        *(route(f"/v2/models/{{name}}{tail}", handler, [method]) for tail, handler, method in model_routes),
        *(route(f"/v2/models/{{name}}/versions/{{version}}{tail}", handler, [method])
          for tail, handler, method in model_routes),
    ]


async def _infer(request: Request, model: ServedModel, asked: InferRequest, blobs: Blobs,
                 started: float) -> tuple[Response, Timing]:
    inputs, outputs = _signature(model)
    parameters = asked.parameters or InferParameters()
    timeout = model.timeout_seconds if parameters.timeout is None else min(model.timeout_seconds,
                                                                           parameters.timeout / 1e6)
    feeds = _feeds(asked.inputs, inputs, blobs)
    wanted = _wanted_outputs(asked.outputs, outputs, parameters.binary_data_output)
    decoded = time.perf_counter()
    if isinstance(model, EmbeddingService):
        texts = [str(t) for t in feeds[TEXT_INPUT].reshape(-1)]
        check_rows(len(texts), f"input {TEXT_INPUT!r}")
        tokens = await tokenized(texts, model.model.encoder.encode)
        check_tokens(sum(len(t.ids) for t in tokens), f"input {TEXT_INPUT!r}")
        if not model.truncate and any(t.truncated for t in tokens):
            limit = model.model.encoder.max_tokens
            raise ApiError(400, f"input {TEXT_INPUT!r} holds a text longer than {limit} tokens")
        vectors = await answered(request, model.batcher.submit([t.ids for t in tokens]), timeout)
        results: dict[str, np.ndarray] = {EMBEDDING_OUTPUT: np.stack(vectors)}
    elif isinstance(model, TensorService):
        [results] = await answered(request, model.batcher.submit([feeds]), timeout)
    else:
        raise ApiError(400, f"the model {model.name!r} does not take tensors")
    inferred = time.perf_counter()
    specs = {spec.name: spec for spec in outputs}
    tensors, blobs_out = [], []
    for name, binary in wanted:
        tensor = _tensor(name, specs[name], results[name], binary)
        if binary:
            blobs_out.append(encode(results[name]))
        tensors.append(tensor)
    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.generation, "outputs": tensors}
    if asked.id is not None:
        answer["id"] = asked.id
    response = respond(answer, blobs_out)
    done = time.perf_counter()
    first = next(iter(feeds.values()))
    rows = int(first.shape[0]) if first.ndim else 1
    return response, Timing(rows, done - started, decoded - started, inferred - decoded, done - inferred)


def _version(model: ServedModel, request: Request) -> None:
    version = request.path_params.get("version")
    if version not in (None, "", model.generation):
        raise ApiError(404, f"the model {model.name!r} has no version {version!r}; it serves version "
                       f"{model.generation!r}")


def _model(ctx: ServeContext, request: Request) -> ServedModel:
    name = request.path_params["name"]
    model = next((m for m in ctx.registry.models() if name in m.names and m.speaks(Api.OIP)), None)
    if model is None:
        raise ApiError(404, f"the model {name!r} does not exist")
    request.state.model = model.name
    _version(model, request)
    return model


def _signature(model: ServedModel) -> tuple[list[TensorSpec], list[TensorSpec]]:
    if isinstance(model, TensorService):
        return model.model.inputs, model.model.outputs
    if isinstance(model, EmbeddingService):
        return (
            [TensorSpec(TEXT_INPUT, "BYTES", (-1,), np.object_)],
            [TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, model.model.dimensions), np.float32)],
        )
    return [], []


def _meta(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _feeds(tensors: list[Tensor], specs: list[TensorSpec], blobs: Blobs) -> dict[str, np.ndarray]:
    by_name = {spec.name: spec for spec in specs}
    feeds: dict[str, np.ndarray] = {}
    for tensor in tensors:
        name = tensor.name
        if name not in by_name:
            raise ApiError(400, f"input {name!r} is not an input of this model (inputs: {', '.join(by_name)})")
        if name in feeds:
            raise ApiError(400, f"input {name!r} is given twice")
        feeds[name] = _array(tensor, by_name[name], blobs)
    blobs.finish()
    missing = [name for name in by_name if name not in feeds]
    if missing:
        raise ApiError(400, f"input {missing[0]!r} is missing")
    return feeds


def _array(tensor: Tensor, spec: TensorSpec, blobs: Blobs) -> np.ndarray:
    name, shape = spec.name, tensor.shape
    if tensor.datatype != spec.datatype:
        raise ApiError(400, f"input {name!r} has datatype {tensor.datatype!r}; the model takes {spec.datatype}")
    if not spec.accepts(shape):
        raise ApiError(400, f"input {name!r} has shape {shape}; the model takes {list(spec.shape)} (-1: any size)")
    if shape and spec.shape and spec.shape[0] == -1:
        check_rows(shape[0], f"input {name!r}")  # its batch rows: one session run, which nothing interrupts
    size = tensor.parameters.binary_data_size if tensor.parameters is not None else None
    if size is not None:
        if "data" in tensor.model_fields_set:
            raise ApiError(400, f"input {name!r}: {BINARY_SIZE} must be a byte count, given instead of 'data'")
        return decode(spec, blobs.take(size, name), shape)
    data = tensor.data
    if data is None:
        raise ApiError(400, f"input {name!r} needs 'data': a list of values (flat or nested, row-major)")
    try:
        flat = np.asarray(data, dtype=spec.dtype).reshape(-1)
        given = np.asarray(data).dtype.kind if flat.size and spec.dtype != np.object_ else None
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, f"input {name!r}: 'data' is not a list of {spec.datatype} values") from None
    if given is not None and given not in _KINDS_TAKEN[np.dtype(spec.dtype).kind]:
        # numpy would cut 1.5 to 1 for an INT64 input, or read "2" as 2.0: never silently.
        raise ApiError(400, f"input {name!r}: 'data' holds {_KIND_NAMES.get(given, 'mixed, null or out-of-range')} "
                       f"values; {spec.datatype} takes {_KIND_NAMES[np.dtype(spec.dtype).kind]} values")
    if spec.datatype == "BYTES" and not all(isinstance(v, str) for v in flat):
        raise ApiError(400, f"input {name!r}: BYTES data must be strings")
    if flat.size != math.prod(shape):
        raise ApiError(400, f"input {name!r} has {flat.size} values; shape {shape} needs {math.prod(shape)}")
    return flat.reshape(shape)


def _wanted_outputs(requested: list[RequestedOutput] | None, specs: list[TensorSpec],
                    binary: bool) -> list[tuple[str, bool]]:
    """The outputs to send, each with whether it goes as binary data (`binary`: the request's default)."""
    names = [spec.name for spec in specs]
    if requested is None:
        return [(name, binary) for name in names]
    unknown = next((o.name for o in requested if o.name not in names), None)
    if unknown is not None:
        raise ApiError(400, f"output {unknown!r} is not an output of this model (outputs: {', '.join(names)})")
    return [(o.name, o.parameters.binary_data if o.parameters is not None and "binary_data" in
             o.parameters.model_fields_set else binary) for o in requested]


def _tensor(name: str, spec: TensorSpec, value: np.ndarray, binary: bool) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": name, "datatype": spec.datatype, "shape": list(value.shape)}
    if binary:
        return tensor | {"parameters": {BINARY_SIZE: value.nbytes}}
    return tensor | {"data": value.reshape(-1).tolist()}
