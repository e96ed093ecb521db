"""Triton's binary tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes, then the
raw tensors in order (little-endian, row-major; BYTES as a 4-byte length before each element). Inputs say
`parameters.binary_data_size`; outputs are sent so when asked (`binary_data`, or `binary_data_output` for all)."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
from starlette.responses import JSONResponse, Response

from npuctl.runtime.tensors import TensorSpec
from npuctl.serve.http.body import parse_json
from npuctl.serve.http.errors import ApiError

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"
_LENGTH = struct.Struct("<I")


class Blobs:
    """The binary part of a request, handed out input by input."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def take(self, size: int, name: str) -> bytes:
        if self._at + size > len(self._data):
            raise ApiError(400, f"input {name!r} says binary_data_size {size}, but only "
                           f"{len(self._data) - self._at} bytes of binary data are left in the body")
        piece = bytes(self._data[self._at:self._at + size])
        self._at += size
        return piece

    def finish(self) -> None:
        left = len(self._data) - self._at
        if left:
            raise ApiError(400, f"the body has {left} bytes of binary data that no input's binary_data_size claims")


def split(body: bytes, header_length: str | None) -> tuple[Any, Blobs]:
    """The JSON header and the binary tensors after it (none without the header)."""
    if header_length is None:
        header, rest = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise ApiError(400, f"Inference-Header-Content-Length is {header_length!r}; it must be the byte length "
                           f"of the JSON header, at most the body's {len(body)} bytes")
        size = int(header_length)
        header, rest = body[:size], body[size:]
    return parse_json(header, "the request's JSON header"), Blobs(rest)


def decode(spec: TensorSpec, data: bytes, shape: list[int]) -> np.ndarray:
    """One input's raw bytes as an array of `shape`; 400 when the bytes do not make that many values."""
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        values = _strings(data, spec.name)
        if len(values) != count:
            raise ApiError(400, f"input {spec.name!r} has {len(values)} BYTES elements; shape {shape} needs {count}")
        return np.array(values, dtype=np.object_).reshape(shape)
    dtype = np.dtype(spec.dtype).newbyteorder("<")
    if len(data) != count * dtype.itemsize:
        raise ApiError(400, f"input {spec.name!r} has {len(data)} bytes of binary data; shape {shape} of "
                       f"{spec.datatype} needs {count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype).astype(spec.dtype).reshape(shape)


def encode(value: np.ndarray) -> bytes:
    """A numeric output's bytes, little-endian, row-major."""
    return np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False).tobytes()


def respond(answer: dict[str, Any], blobs: list[bytes]) -> Response:
    """The answer, with binary outputs after its JSON (plain JSON when there are none)."""
    if not blobs:
        return JSONResponse(answer)
    header = json.dumps(answer, separators=(",", ":")).encode()
    return Response(header + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def _strings(data: bytes, name: str) -> list[str]:
    values, at = [], 0
    while at < len(data):
        if at + _LENGTH.size > len(data):
            raise ApiError(400, f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (size,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + size > len(data):
            raise ApiError(400, f"input {name!r}: a BYTES element of {size} bytes runs past the end of its data")
        try:
            values.append(data[at:at + size].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"input {name!r}: a BYTES element is not UTF-8 text ({exc})") from exc
        at += size
    return values
