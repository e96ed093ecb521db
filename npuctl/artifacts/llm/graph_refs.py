"""ONNX graphs handled without their weights: read with each large initializer a reference (file, offset, length)
to where its bytes are, in an external data file or inside the .onnx file itself; cut and reshaped as graphs; then
each output graph's weights copied tensor by tensor into its own data file. A step's memory is then its graphs'
plus one tensor's, not the model's (Olive's SplitModel loads all the weights, then copies each split's)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from npuctl.artifacts.errors import BuildError

_COPY_CHUNK = 64 << 20
"""Bytes read and written at a time: an embedding table can be hundreds of MB."""


def load_graph(model: Path) -> Any:
    """`model` as an onnx ModelProto whose initializers of `INLINE_LIMIT` bytes or more are references: those
    already in external data files stay so, and those inside the .onnx file itself (a model under protobuf's
    2 GB is saved so) become references to their bytes' place in that file. The file is read field by field
    (protobuf's wire format): the weights are skipped over, never read."""
    import onnx

    with model.open("rb") as reader:
        size = model.stat().st_size
        fields = bytearray()
        for number, wire, start, end in _fields(reader, 0, size):
            if number == _MODEL_GRAPH and wire == _LENGTH_DELIMITED:
                graph = _graph_without_weights(reader, start, end, model.name)
                fields += _key(_MODEL_GRAPH, _LENGTH_DELIMITED) + _varint(len(graph)) + graph
            else:
                fields += _raw(reader, number, wire, start, end)
    proto = onnx.ModelProto()
    proto.ParseFromString(bytes(fields))
    return proto


INLINE_LIMIT = 1024 - sys.getsizeof(b"")
"""Raw data under this many bytes stays in the graph, as onnx's save leaves it (its size_threshold of 1024 is
compared with sys.getsizeof of the bytes)."""
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 7, 5, 9, 13, 14
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_EXTERNAL = 1
"""TensorProto.DataLocation.EXTERNAL."""


def _graph_without_weights(reader: BinaryIO, start: int, end: int, location: str) -> bytes:
    graph = bytearray()
    for number, wire, field_start, field_end in _fields(reader, start, end):
        if number != _GRAPH_INITIALIZER or wire != _LENGTH_DELIMITED:
            graph += _raw(reader, number, wire, field_start, field_end)
            continue
        tensor = bytearray()
        reference = None
        for inner, inner_wire, inner_start, inner_end in _fields(reader, field_start, field_end):
            if inner == _TENSOR_RAW_DATA and inner_end - inner_start >= INLINE_LIMIT:
                reference = (inner_start, inner_end - inner_start)
            else:
                tensor += _raw(reader, inner, inner_wire, inner_start, inner_end)
        if reference is not None:
            for key, value in (("location", location), ("offset", str(reference[0])), ("length", str(reference[1]))):
                entry = _string_field(1, key) + _string_field(2, value)
                tensor += _key(_TENSOR_EXTERNAL_DATA, _LENGTH_DELIMITED) + _varint(len(entry)) + entry
            tensor += _key(_TENSOR_DATA_LOCATION, _VARINT) + _varint(_EXTERNAL)
        graph += _key(_GRAPH_INITIALIZER, _LENGTH_DELIMITED) + _varint(len(tensor)) + tensor
    return bytes(graph)


def _fields(reader: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end of its value) of each field of the message at [start, end) of the
    file; a length-delimited value's start is after its length."""
    position = start
    while position < end:
        reader.seek(position)
        key, position = _read_varint(reader, position)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, after = _read_varint(reader, position)
        elif wire == _FIXED64:
            after = position + 8
        elif wire == _FIXED32:
            after = position + 4
        elif wire == _LENGTH_DELIMITED:
            length, position = _read_varint(reader, position)
            after = position + length
        else:
            raise BuildError("llm-static", f"{getattr(reader, 'name', 'the model')}: not an ONNX model (protobuf wire "
                             f"type {wire} at byte {position})")
        if after > end:
            raise BuildError("llm-static", f"{getattr(reader, 'name', 'the model')}: truncated (field {number} ends "
                             f"at byte {after}, past {end})")
        yield number, wire, position, after
        position = after


def _raw(reader: BinaryIO, number: int, wire: int, start: int, end: int) -> bytes:
    """The field as it was in the file: key, length if any, value."""
    reader.seek(start)
    value = reader.read(end - start)
    return _key(number, wire) + (_varint(len(value)) if wire == _LENGTH_DELIMITED else b"") + value


def _read_varint(reader: BinaryIO, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = reader.read(1)
        if not byte or shift > 63:
            raise BuildError("llm-static", f"{getattr(reader, 'name', 'the model')}: a bad varint at byte {position}")
        value |= (byte[0] & 0x7F) << shift
        position += 1
        shift += 7
        if not byte[0] & 0x80:
            return value, position


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _string_field(number: int, text: str) -> bytes:
    data = text.encode()
    return _key(number, _LENGTH_DELIMITED) + _varint(len(data)) + data


def external_tensors(model: Any) -> Iterator[Any]:
    """Every tensor of `model` whose data is in a file: initializers and node attributes, subgraphs included."""
    import onnx

    def of_graph(graph: Any) -> Iterator[Any]:
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                yield tensor
        for node in graph.node:
            for attribute in node.attribute:
                candidates = [attribute.t] if attribute.HasField("t") else list(attribute.tensors)
                for tensor in candidates:
                    if tensor.data_location == onnx.TensorProto.EXTERNAL:
                        yield tensor
                subgraphs = [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
                for subgraph in subgraphs:
                    yield from of_graph(subgraph)

    yield from of_graph(model.graph)


def localize(model_file: Path, source: Path) -> None:
    """Give `model_file` (whose references point into data files of the `source` folder) its own data file,
    `<name>.data` beside it, with only the tensors it references, copied one at a time in the order onnx would
    write them. The graph file is rewritten by temp file + rename."""
    import onnx

    model = load_graph(model_file)
    data_name = f"{model_file.name}.data"
    data_file = model_file.with_name(data_name)
    sources: dict[str, Any] = {}
    try:
        with data_file.open("wb") as out:
            for tensor in external_tensors(model):
                fields = {entry.key: entry.value for entry in tensor.external_data}
                location = fields.get("location", "")
                offset, length = int(fields.get("offset", 0)), fields.get("length")
                if location not in sources:
                    path = source / location
                    if not location or Path(location).is_absolute() or not path.resolve().is_relative_to(
                            source.resolve()):
                        raise BuildError("llm-static", f"{model_file.name}: tensor {tensor.name} names data file "
                                         f"{location!r}, which is not inside {source}")
                    sources[location] = path.open("rb")
                reader = sources[location]
                reader.seek(offset)
                start = out.tell()
                remaining = int(length) if length is not None else tensor_bytes(tensor)
                while remaining:
                    chunk = reader.read(min(remaining, _COPY_CHUNK))
                    if not chunk:
                        raise BuildError("llm-static", f"{source / location} ends before tensor {tensor.name}'s "
                                         f"{remaining} last bytes (offset {offset})")
                    out.write(chunk)
                    remaining -= len(chunk)
                del tensor.external_data[:]
                for key, value in (("location", data_name), ("offset", str(start)),
                                   ("length", str(out.tell() - start))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
    finally:
        for reader in sources.values():
            reader.close()
    if data_file.stat().st_size == 0:
        data_file.unlink()
    temp = model_file.with_name(f"{model_file.name}.tmp")
    onnx.save_model(model, str(temp))
    temp.replace(model_file)


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
