"""What sizing a loaded model needs from an ONNX graph (npuctl.runtime.footprint): the files it refers to, its
context binaries' bytes and its inputs' shapes, read from the protobuf's wire format through a memory map.

`onnx.load` would parse the whole file, initializers included, even without external data: twice an
embedded-weights graph's bytes for a moment (173 MiB for MiniLM fp32's 86 MiB graph), inside the very agent whose
memory the reading is meant to account for. Here the initializers' raw data is skipped unread; only the small
messages (an EPContext node, a graph input, an external-data entry) are parsed, with onnx's own classes."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from npuctl.runtime import wire

_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT = 1, 5, 11
_NODE_OP_TYPE = 4
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_EXTERNAL = 1
"""TensorProto.DataLocation.EXTERNAL."""


class GraphError(ValueError):
    """A file that cannot be sized: not an ONNX graph, or a truncated or damaged one. Names the file."""


@dataclass(frozen=True)
class GraphFacts:
    files: frozenset[Path]
    """The graph's file and every file it refers to (external weights, context binaries)."""
    context_bytes: int
    """Bytes of its context binaries (EPContext nodes), embedded or beside it."""
    inputs: dict[str, tuple[tuple[int | str, ...], int]]
    """Each input's shape (a name where it is symbolic) and element size in bytes."""


def graph_facts(graph: Path) -> GraphFacts:
    stat = graph.stat()
    return _read(graph.resolve(), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _read(graph: Path, size: int, mtime_ns: int) -> GraphFacts:
    # Keyed on size and time as well: a path rewritten in place is read again (store artifacts never are).
    files = {graph}
    context = 0
    inputs: dict[str, tuple[tuple[int | str, ...], int]] = {}
    if size == 0:
        raise GraphError(f"{graph} is empty, not an ONNX graph")
    with graph.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            for model in wire.messages(view, 0, len(view), _MODEL_GRAPH):
                for part in wire.messages(view, model.start, model.end, _GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT):
                    field, begin, stop = part.number, part.start, part.end
                    if field == _GRAPH_NODE and _op_type(view, begin, stop) == "EPContext":
                        binary, bytes_ = _context(onnx.NodeProto.FromString(bytes(view[begin:stop])), graph.parent)
                        files |= {binary} if binary else set()
                        context += bytes_
                    elif field == _GRAPH_INITIALIZER:
                        files |= {graph.parent / location for location in _external(view, begin, stop)}
                    elif field == _GRAPH_INPUT:
                        value = onnx.ValueInfoProto.FromString(bytes(view[begin:stop]))
                        inputs[value.name] = _shape(value)
        except (wire.WireError, DecodeError, UnicodeDecodeError, GraphError) as exc:
            # onnx's classes say which message failed, not where: the file is what the user can act on.
            raise GraphError(f"{graph}: not an ONNX graph, or a truncated or damaged one ({exc})") from None
        finally:
            view.release()
    return GraphFacts(frozenset(file for file in files if file.is_file()), context, inputs)


def _context(node: onnx.NodeProto, folder: Path) -> tuple[Path | None, int]:
    """An EPContext node's context binary: the file beside the graph (embed_mode 0) and its bytes, or None and
    the embedded bytes."""
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    cache = attributes.get("ep_cache_context", b"")
    if not isinstance(cache, (bytes, str)):
        raise GraphError(f"EPContext node {node.name!r}: its ep_cache_context is not a string")
    if attributes.get("embed_mode", 1) == 0:
        binary = folder / (cache.decode() if isinstance(cache, bytes) else str(cache))
        return binary, binary.stat().st_size if binary.is_file() else 0
    return None, len(cache)


def _external(view: memoryview, start: int, end: int) -> list[str]:
    """An initializer's external data file, if it has one (its raw data, however large, is skipped unread)."""
    location, entries = 0, []
    for field in wire.fields(view, start, end):
        if field.number == _TENSOR_DATA_LOCATION and field.wire == wire.VARINT:
            location = wire.varint_at(view, field.start)[0]
        elif field.number == _TENSOR_EXTERNAL_DATA and field.wire == wire.LEN:
            entries.append(onnx.StringStringEntryProto.FromString(bytes(view[field.start:field.end])))
    return [e.value for e in entries if e.key == "location" and e.value] if location == _EXTERNAL else []


def _op_type(view: memoryview, start: int, end: int) -> str:
    for field in wire.messages(view, start, end, _NODE_OP_TYPE):
        return bytes(view[field.start:field.end]).decode()
    return ""


def _shape(value: onnx.ValueInfoProto) -> tuple[tuple[int | str, ...], int]:
    tensor = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim)
    try:
        element = int(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize) if tensor.elem_type else 0
    except KeyError:
        raise GraphError(f"input {value.name!r}: element type {tensor.elem_type} is not an ONNX type") from None
    return shape, element
