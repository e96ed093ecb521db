"""ONNX graphs handled without their weights: read with each large initializer a reference (file, offset, length)
to where its bytes are, in an external data file or inside the .onnx file itself; cut and reshaped as graphs; then
each output graph's weights copied tensor by tensor into its own data file. A step's memory is then its graphs'
plus one tensor's, not the model's (Olive's SplitModel loads all the weights, then copies each split's)."""

from __future__ import annotations

import mmap
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm import weights
from npuctl.runtime import wire

"""Bytes read and written at a time: an embedding table can be hundreds of MB."""


def load_graph(model: Path) -> Any:
    """`model` as an onnx ModelProto whose initializers of `INLINE_LIMIT` bytes or more are references: those
    already in external data files stay so, and those inside the .onnx file itself (a model under protobuf's
    2 GB is saved so) become references to their bytes' place in that file. The file is read field by field
    (protobuf's wire format, through a memory map): the weights are skipped over, never read."""
    import onnx
    from google.protobuf.message import DecodeError

    if model.stat().st_size == 0:
        raise BuildError("llm-static", f"{model} is empty, not an ONNX model")
    fields = bytearray()
    with model.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            for field in wire.fields(view, 0, len(view)):
                if field.number == _MODEL_GRAPH and field.wire == wire.LEN:
                    fields += wire.length_delimited(_MODEL_GRAPH, _graph_without_weights(view, field, model.name))
                else:
                    fields += wire.raw(view, field)
        except wire.WireError as exc:
            raise BuildError("llm-static", f"{model}: {exc}") from None
        finally:
            view.release()
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(bytes(fields))
    except DecodeError as exc:  # fields that are protobuf's but not an ONNX model's
        raise BuildError("llm-static", f"{model}: not an ONNX model, or a damaged one ({exc})") from None
    return proto


INLINE_LIMIT = 1024 - sys.getsizeof(b"")
"""Raw data under this many bytes stays in the graph, as onnx's save leaves it (its size_threshold of 1024 is
compared with sys.getsizeof of the bytes)."""
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 7, 5, 9, 13, 14
_EXTERNAL = 1
"""TensorProto.DataLocation.EXTERNAL."""


def _graph_without_weights(view: memoryview, graph: wire.Field, location: str) -> bytes:
    out = bytearray()
    for field in wire.fields(view, graph.start, graph.end):
        if field.number != _GRAPH_INITIALIZER or field.wire != wire.LEN:
            out += wire.raw(view, field)
            continue
        tensor = bytearray()
        reference = None
        for inner in wire.fields(view, field.start, field.end):
            if inner.number == _TENSOR_RAW_DATA and inner.end - inner.start >= INLINE_LIMIT:
                reference = (inner.start, inner.end - inner.start)
            else:
                tensor += wire.raw(view, inner)
        if reference is not None:
            for key, value in (("location", location), ("offset", str(reference[0])), ("length", str(reference[1]))):
                entry = wire.length_delimited(1, key.encode()) + wire.length_delimited(2, value.encode())
                tensor += wire.length_delimited(_TENSOR_EXTERNAL_DATA, entry)
            tensor += wire.key(_TENSOR_DATA_LOCATION, wire.VARINT) + wire.varint(_EXTERNAL)
        out += wire.length_delimited(_GRAPH_INITIALIZER, bytes(tensor))
    return bytes(out)


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
    folder = weights.WeightsFolder(source, "llm-static")
    with data_file.open("wb") as out:
        for tensor in external_tensors(model):
            start = out.tell()
            for piece in folder.chunks(tensor):
                out.write(piece)
            weights.point(tensor, data_name, start, out.tell() - start)
    if data_file.stat().st_size == 0:
        data_file.unlink()
    temp = model_file.with_name(f"{model_file.name}.tmp")
    onnx.save_model(model, str(temp))
    temp.replace(model_file)
