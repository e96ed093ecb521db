"""The Open Inference Protocol's infer request body as a model, with Triton's binary-data and timeout
parameters: what the server validates and what /openapi.json shows. A tensor's data is checked against the
model's signature by the route, which names the input and what it holds."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.validation import Body
from npuctl.serve.oip.binary import BINARY_SIZE


class TensorParameters(Body):
    """An input's parameters: no shared memory here."""

    binary_data_size: Annotated[int, Field(ge=0)] | None = None
    """This many of the bytes after the JSON are the tensor's (Triton's binary extension), given instead of data."""


class Tensor(Body):
    """An input (or an answer's output). Its name, datatype, shape and data are read against the model's
    signature by the route, whose messages name the input."""

    name: str
    datatype: str
    """BOOL, UINT8 ... INT64, FP16, FP32, FP64, or BYTES."""
    shape: list[Annotated[int, Field(ge=0)]]
    data: list[Any] | None = None
    """The values, flat or nested row by row (or none, with binary_data_size)."""
    parameters: TensorParameters | None = None

    @model_validator(mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        """The words clients had before the model: they name the input (as the route's checks against the
        signature do), not its index."""
        name = value.get("name") if isinstance(value, dict) else None
        if not isinstance(name, str):
            return value
        shape, parameters = value.get("shape"), value.get("parameters")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise ApiError(400, f"input {name!r} needs a 'shape': a list of non-negative integers")
        if parameters is not None and (not isinstance(parameters, dict) or set(parameters) - {BINARY_SIZE}):
            raise ApiError(400, f"input {name!r}: the only input parameter npuctl takes is {BINARY_SIZE} "
                           "(no shared memory)")
        return value


class OutputParameters(Body):
    binary_data: bool = False
    """This output's bytes after the JSON (Triton's binary extension)."""


class RequestedOutput(Body):
    name: str
    parameters: OutputParameters | None = None


class InferParameters(Body):
    binary_data_output: bool = False
    """Every output's bytes after the JSON, unless the output says otherwise."""
    timeout: Annotated[int, Field(ge=1)] | None = None
    """Microseconds; it can only shorten the model's spec.serve.timeoutSeconds."""


class InferRequest(Body):
    id: str | None = None
    """Given back in the answer."""
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    """The outputs to send, by name (all, when left out)."""
    parameters: InferParameters | None = None


class IndexRequest(Body):
    """The repository index's optional body."""

    ready: bool = False
    """Only the models that are ready."""
