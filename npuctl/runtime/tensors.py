"""Raw tensor models: named, typed inputs in, named outputs out, checked against the graph's signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from npuctl.runtime.sessions import OpenedSession, RunInfo

# ONNX tensor types <-> Open Inference Protocol datatypes <-> numpy.
_TYPES: dict[str, tuple[str, type[np.generic]]] = {
    "tensor(bool)": ("BOOL", np.bool_),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    """Open Inference Protocol datatype: FP32, INT64, ..."""
    shape: tuple[int, ...]
    """-1 where the graph leaves a dimension free."""
    dtype: type[np.generic]

    def accepts(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(want in (-1, got) for want, got in zip(self.shape, shape))


class TensorModel:
    """One session; `run` takes already validated arrays (see `inputs`)."""

    def __init__(self, opened: OpenedSession, info: RunInfo) -> None:
        self.info = info
        self._session = opened.session
        self.inputs = [_spec(node) for node in self._session.get_inputs()]
        self.outputs = [_spec(node) for node in self._session.get_outputs()]

    def run(self, feeds: Mapping[str, npt.NDArray[np.generic]]) -> dict[str, npt.NDArray[np.generic]]:
        values = self._session.run(None, dict(feeds))
        return {spec.name: np.asarray(value) for spec, value in zip(self.outputs, values)}

    def close(self) -> None:
        del self._session


def _spec(node: ort.NodeArg) -> TensorSpec:
    onnx_type: str = node.type
    if onnx_type not in _TYPES:
        raise ValueError(f"tensor {node.name!r} has type {onnx_type}, which the tensor API does not carry")
    datatype, dtype = _TYPES[onnx_type]
    shape = tuple(d if isinstance(d, int) else -1 for d in node.shape)
    return TensorSpec(node.name, datatype, shape, dtype)
