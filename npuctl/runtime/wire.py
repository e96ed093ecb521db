"""Protobuf's wire format, enough to walk an ONNX file's messages without parsing them: the fields of a message with
where each value lies, so that a reader can skip an initializer's raw data (hundreds of MB) unread and parse only
the small messages it needs with onnx's own classes (npuctl.runtime.graph_facts, npuctl.artifacts.llm.graph_refs)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
"""The wire types an ONNX file uses (groups are long deprecated and never written by onnx)."""


class WireError(ValueError):
    """The bytes are not a protobuf message (not an ONNX file, or a truncated one)."""


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    start: int
    """The value's first byte: after the length of a length-delimited field."""
    end: int


def fields(view: memoryview, start: int, end: int) -> Iterator[Field]:
    """Each field of the message in view[start:end], in file order."""
    position = start
    while position < end:
        key, position = varint_at(view, position)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, after = varint_at(view, position)
        elif wire == FIXED64:
            after = position + 8
        elif wire == FIXED32:
            after = position + 4
        elif wire == LEN:
            length, position = varint_at(view, position)
            after = position + length
        else:
            raise WireError(f"not an ONNX graph: protobuf wire type {wire} at byte {position}")
        if after > end:
            raise WireError(f"truncated: field {number} ends at byte {after}, past its message's end at {end}")
        yield Field(number, wire, position, after)
        position = after


def messages(view: memoryview, start: int, end: int, *numbers: int) -> Iterator[Field]:
    """The length-delimited fields numbered `numbers` of the message in view[start:end]."""
    return (f for f in fields(view, start, end) if f.wire == LEN and f.number in numbers)


def varint_at(view: memoryview, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it."""
    value = shift = 0
    while True:
        if position >= len(view) or shift > 63:
            raise WireError(f"not an ONNX graph: a bad number at byte {position}")
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def raw(view: memoryview, field: Field) -> bytes:
    """The field as it is in the file: key, length if any, value."""
    value = bytes(view[field.start:field.end])
    return key(field.number, field.wire) + (varint(len(value)) if field.wire == LEN else b"") + value


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, value: bytes) -> bytes:
    return key(number, LEN) + varint(len(value)) + value
