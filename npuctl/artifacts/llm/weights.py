"""An ONNX model's weights read one tensor at a time from its external data file, and a quantized model's data
file written tensor by tensor as it is saved: the quantize stage never holds the fp32 model in memory.

onnx's own reader (numpy_helper.to_array with a base dir) refuses a data file that is a hard link, which a store
copied with hard links has; this reader checks what onnx checks that matters here (the entry's bytes lie inside
the file and match the tensor's shape and type) and reads nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from npuctl.artifacts.errors import BuildError

EXTERNAL_THRESHOLD = 1024
"""Tensors of at least this many bytes go to the data file (onnx's and onnxruntime's quantizer's default)."""
_ALIGNMENT = 4096
"""Each tensor in a written data file starts at a multiple of this (a page): onnxruntime maps aligned tensors
instead of copying them."""
_COPY_CHUNK = 16 << 20


def is_external(tensor: Any) -> bool:
    import onnx

    return bool(tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL)


def _entry(tensor: Any) -> tuple[str, int, int | None]:
    """(location, offset, length) of an external tensor."""
    fields = {item.key: item.value for item in tensor.external_data}
    length = fields.get("length")
    return fields.get("location", ""), int(fields.get("offset", 0)), int(length) if length is not None else None


class WeightsFolder:
    """The folder of a model's external data files (and data files made since, added by name): `read` gives one
    tensor's values."""

    def __init__(self, folder: Path, step: str) -> None:
        self.folder = folder
        self.step = step
        """The step that reads: what its errors name."""
        self.added: dict[str, Path] = {}

    def add(self, location: str, path: Path) -> None:
        """Tensors whose location is `location` are in `path`."""
        self.added[location] = path

    def _span(self, tensor: Any) -> tuple[Path, int, int]:
        location, offset, length = _entry(tensor)
        path = self.added.get(location) or self.folder / location
        if location not in self.added and (not location or Path(location).is_absolute()
                                           or ".." in Path(location).parts):
            raise BuildError(self.step, f"{tensor.name}: its data file {location!r} is not in {self.folder}")
        if not path.is_file():
            raise BuildError(self.step, f"{tensor.name}: its data file {location!r} is not in {self.folder}")
        expected = tensor_bytes(tensor)
        size = path.stat().st_size
        if (length is not None and length != expected) or offset < 0 or offset + expected > size:
            raise BuildError(self.step, f"{tensor.name}: {expected} bytes at offset {offset} of {path} ({size} bytes, "
                             f"entry length {length}) do not fit its shape {list(tensor.dims)}")
        return path, offset, expected

    def read(self, tensor: Any) -> np.ndarray:
        """The tensor's values: read from its data file when it is external, else from the proto."""
        import onnx

        if not is_external(tensor):
            return np.asarray(onnx.numpy_helper.to_array(tensor))
        path, offset, size = self._span(tensor)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        with path.open("rb") as file:
            file.seek(offset)
            data = np.fromfile(file, dtype=dtype, count=size // dtype.itemsize)
        return data.reshape(tuple(tensor.dims))

    def chunks(self, tensor: Any) -> Iterator[bytes]:
        """An external tensor's bytes, a bounded piece at a time."""
        path, offset, size = self._span(tensor)
        with path.open("rb") as file:
            file.seek(offset)
            while size > 0:
                piece = file.read(min(size, _COPY_CHUNK))
                if not piece:
                    raise BuildError(self.step, f"{tensor.name}: {path} ended early")
                size -= len(piece)
                yield piece


def append(data: Any, name: str, values: np.ndarray, location: str) -> Any:
    """`values` written at the end of the open data file `data` (page-aligned), as an external tensor `name` whose
    location is `location`."""
    import onnx

    offset = -(-data.tell() // _ALIGNMENT) * _ALIGNMENT
    data.seek(offset)
    data.write(np.ascontiguousarray(values).tobytes())
    tensor = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
                              dims=values.shape)
    point(tensor, location, offset, data.tell() - offset)
    return tensor


def point(tensor: Any, location: str, offset: int, length: int) -> None:
    """Make `tensor` external: its data at `offset` of the data file `location`, `length` bytes."""
    import onnx

    del tensor.external_data[:]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def save(model: Any, path: Path, source: WeightsFolder) -> None:
    """`model` to `path` with its tensors of EXTERNAL_THRESHOLD bytes or more in `path.name + ".data"`, written
    one at a time: in-memory tensors (the quantized weights) are moved out of the proto as they are written, tensors
    still external in `source` (fp32 ones left unquantized) are copied from it piece by piece."""
    import onnx

    location = path.name + ".data"
    with (path.parent / location).open("wb") as data:
        for tensor in model.graph.initializer:
            external = is_external(tensor)
            if not external and len(tensor.raw_data) < EXTERNAL_THRESHOLD:
                continue
            offset = -(-data.tell() // _ALIGNMENT) * _ALIGNMENT
            data.seek(offset)
            if external:
                for piece in source.chunks(tensor):
                    data.write(piece)
            else:
                data.write(tensor.raw_data)
            point(tensor, location, offset, data.tell() - offset)
    onnx.save(model, str(path))


def tensor_bytes(tensor: Any) -> int:
    """Bytes of `tensor`'s data (4-bit types packed two to a byte)."""
    import onnx

    count = 1
    for dim in tensor.dims:
        count *= dim
    bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(tensor.data_type)
    if bits is None:
        bits = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize * 8
    return (count * bits + 7) // 8
