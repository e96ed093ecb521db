"""What a structured-output schema may ask of the grammar compiler, checked before any grammar is built.

onnxruntime-genai compiles a JSON Schema with llguidance in one native call that holds the GIL: while it runs,
the event loop (health, every model, the control API) waits, and nothing can interrupt it. Its cost is not the
schema's size in bytes. Measured on this project's 2-core x86_64 host (onnxruntime-genai 0.18, tiny Llama):

- an array's `minItems`/`maxItems` is unrolled into that many grammar symbols: minItems 10^6 0.28 s and 200 MB,
  10^7 3.7 s and 1.4 GB (10^8: 14 GB); maxItems 50,000 0.32 s, 100,000 a panic. The counts of all arrays add up
  (ten arrays of maxItems 10,000: a panic), so the budget is one total over the schema;
- object properties that are not required cost their count squared: 1,000 0.12 s, 5,000 1.2 s, 10,000 4.7 s;
- a `pattern`'s counted repetitions multiply: `(a{1000}){1000}` 0.49 s and 170 MB;
- `minLength`/`maxLength` are kept symbolic (10^8 compiles in 0.07 s), but get a cap like every size;
- a chain of 3,000 `$ref`s crashes the process (a native stack overflow); schemas nested past 128 JSON levels
  are refused by the compiler, and ~250 levels overflowed Python's stack in npuctl before that.

The walk is iterative and follows local `$ref`s (a reference back into its own path is recursion, which the
compiler keeps as one symbol), so neither depth nor a reference chain can exhaust a stack here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from npuctl.serve.http.errors import ApiError

MAX_SCHEMA_DEPTH = 64
"""Nesting of a schema's objects and arrays, `$ref`s followed (OpenAI allows 10 levels of objects, ~20 here)."""
MAX_SCHEMA_COST = 10_000
"""The estimated grammar size of a whole schema: each schema object 1, each repetition an array or object asks
for 1, properties that are not required (count²)/100, each `enum` value 1, a `pattern` a tenth of its length,
and everything under a repetition
counts as often as it repeats. At the bound a compile took 0.10-0.20 s on this host at load average 3.5
(maxItems 9,999 the slowest; a two-property schema 0.05-0.13 s), so the event loop is not held much longer."""
MAX_STRING_LENGTH = 1_000_000
"""`minLength`/`maxLength`: above any answer a model on this PC can write (~250,000 tokens)."""
MAX_PATTERN_SIZE = 10_000
"""A `pattern`'s length, and its size unrolled: its counted repetitions multiplied through their nesting
(`(a{100}){100}` is 10,000)."""
MAX_SCHEMA_VISITS = 100_000
"""Schema values walked, a `$ref` target once per reference to it: a bound on this check's own time."""

_COUNTS = ("minItems", "maxItems", "minContains", "maxContains", "minProperties", "maxProperties")
_LENGTHS = ("minLength", "maxLength")
_DATA = frozenset({"enum", "const", "default", "examples"})
_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_QUANTIFIER = re.compile(r"\{(\d*)(?:,(\d*))?\}")


class SchemaTooBig(ApiError):
    """400 naming the place in the schema (its JSON path in the request) and the limit it passes."""

    def __init__(self, place: str, message: str) -> None:
        super().__init__(400, f"{place} {message}", param=place)
        self.place = place


@dataclass(frozen=True)
class _Visit:
    value: Any
    place: str
    depth: int
    times: int
    """How often this part of the grammar is repeated by the repetitions around it."""
    refs: tuple[int, ...]
    """The `$ref` targets followed on the way here (ids), to tell recursion from a chain."""
    data: bool = False
    """Inside `enum`, `const`, `default` or `examples`: JSON values, not schemas (only their depth counts)."""


def check_schema(schema: Any, place: str, spent: int = 0) -> int:
    """The estimated grammar size of `schema` (found at `place` in the request, e.g.
    `response_format.json_schema.schema`) added to `spent` (what the request's other schemas cost: one grammar
    holds them all). Raises SchemaTooBig when it is nested too deeply or passes a bound above."""
    cost = spent
    visits = 0
    stack = [_Visit(schema, place, 1, 1, ())]
    while stack:
        visit = stack.pop()
        # A list's items count before any is walked: half a million of them must not be queued first.
        visits += 1 + (len(visit.value) if isinstance(visit.value, list) else 0)
        if visits > MAX_SCHEMA_VISITS:
            raise SchemaTooBig(place, f"has more than {MAX_SCHEMA_VISITS:,} parts (its $refs followed); "
                               "structured output allows no more")
        if visit.depth > MAX_SCHEMA_DEPTH:
            raise SchemaTooBig(visit.place, f"is nested {visit.depth} levels deep (its $refs followed); structured "
                               f"output allows at most {MAX_SCHEMA_DEPTH}")
        value = visit.value
        if isinstance(value, list):
            stack.extend(_Visit(item, f"{visit.place}[{i}]", visit.depth + 1, visit.times, visit.refs, visit.data)
                         for i, item in enumerate(value) if isinstance(item, dict | list))
            continue
        if visit.data:
            stack.extend(_Visit(item, f"{visit.place}.{key}", visit.depth + 1, visit.times, visit.refs, True)
                         for key, item in value.items() if isinstance(item, dict | list))
            continue
        own, repeats = _own_cost(value, visit.place)
        cost += visit.times * own
        if cost > MAX_SCHEMA_COST:
            raise SchemaTooBig(visit.place, f"makes the schema's grammar too large: it asks for about {cost:,} "
                               f"grammar parts (repetitions multiply through their nesting); structured output "
                               f"allows at most {MAX_SCHEMA_COST:,}")
        inner = visit.times * max(1, repeats)
        for key, item in value.items():
            if key in _MAPS and isinstance(item, dict):  # names to schemas: a property may be called `enum`
                stack.extend(_Visit(schema_, f"{visit.place}.{key}.{name}", visit.depth + 2, inner, visit.refs)
                             for name, schema_ in item.items() if isinstance(schema_, dict | list))
            elif isinstance(item, dict | list):
                stack.append(_Visit(item, f"{visit.place}.{key}", visit.depth + 1, inner, visit.refs, key in _DATA))
        ref = value.get("$ref")
        target = _local_ref(schema, ref)
        if target is not None and id(target) not in visit.refs:
            where = place + "".join(f".{part}" for part in _pointer(ref))
            stack.append(_Visit(target, where, visit.depth + 1, inner, visit.refs + (id(target),)))
    return cost


def _own_cost(node: dict[str, Any], place: str) -> tuple[int, int]:
    """The grammar parts one schema object makes by itself (1, its repetitions, its optional properties and enum
    values), and how often what is under it repeats; 400 for a size past a cap."""
    repeats = 0
    for key in _COUNTS:
        repeats = max(repeats, _size(node, key, place, MAX_SCHEMA_COST))
    for key in _LENGTHS:
        _size(node, key, place, MAX_STRING_LENGTH)
    prefix = node.get("prefixItems")
    repeats = max(repeats, len(prefix) if isinstance(prefix, list) else 0)
    properties, required = node.get("properties"), node.get("required")
    optional = 0
    if isinstance(properties, dict):
        named = set(required) if isinstance(required, list) and all(isinstance(r, str) for r in required) else set()
        optional = sum(1 for key in properties if key not in named)
    choices = node.get("enum")
    pattern = node.get("pattern")
    scanned = 0
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_SIZE:
            raise SchemaTooBig(f"{place}.pattern", f"is {len(pattern):,} characters long; structured output allows "
                               f"at most {MAX_PATTERN_SIZE:,}")
        scanned = len(pattern) // 10  # the compiler's work grows with it, and so does this check's
        size = pattern_size(pattern)
        if size > MAX_PATTERN_SIZE:
            raise SchemaTooBig(f"{place}.pattern", f"has more than {MAX_PATTERN_SIZE:,} parts when its counted "
                               f"repetitions ({{n}}, {{n,m}}) are unrolled (they multiply through their nesting); "
                               f"structured output allows at most {MAX_PATTERN_SIZE:,}")
    own = 1 + repeats + optional * optional // 100 + (len(choices) if isinstance(choices, list) else 0) + scanned
    return own, repeats


def _size(node: dict[str, Any], key: str, place: str, limit: int) -> int:
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0  # not a size: the compiler names what is wrong with it
    if not value <= limit:  # NaN too: Python's JSON parser takes it
        shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
        raise SchemaTooBig(f"{place}.{key}", f"is {shown}; structured output allows at most {limit:,}")
    return max(0, int(value))


def _local_ref(root: Any, ref: Any) -> Any:
    """What a `#/...` JSON pointer in `root` points at, or None (not local, or nothing there)."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in _pointer(ref):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if isinstance(node, dict) else None


def _pointer(ref: str) -> list[str]:
    """The keys of a local `#/a/b` JSON pointer."""
    return [part.replace("~1", "/").replace("~0", "~") for part in ref[1:].split("/")[1:]]


def pattern_size(pattern: str) -> int:
    """How many atoms `pattern` has with its counted repetitions (`{n}`, `{n,m}`) unrolled, nesting multiplied.
    Alternatives are added (an upper bound); `*`, `+` and `?` count once (the compiler keeps them as loops).
    Saturates just above MAX_PATTERN_SIZE."""
    cap = MAX_PATTERN_SIZE + 1
    groups: list[list[int]] = [[0, 0]]  # per open group: its size so far, and the size of its last atom
    i = 0
    while i < len(pattern):
        char = pattern[i]
        atom = 1
        if char == "\\":
            i += 2
            if i < len(pattern) and pattern[i - 1] in "pPxuk" and pattern[i] == "{":
                i = pattern.find("}", i) + 1 or len(pattern)
        elif char == "[":
            i = _class_end(pattern, i)
        elif char in "|*+?^$":  # no atom of their own
            i += 1
            continue
        elif char == "(":
            groups.append([0, 0])
            i += 1
            continue
        elif char == ")" and len(groups) > 1:
            atom = groups.pop()[0]
            i += 1
        elif char == "{" and (count := _QUANTIFIER.match(pattern, i)) and count.group(0) != "{}":
            low, high = count.group(1), count.group(2)
            times = max(_count(low), _count(high))
            frame = groups[-1]
            frame[0] = min(cap, frame[0] - frame[1] + frame[1] * times)
            frame[1] = 0
            i = count.end()
            continue
        else:
            i += 1
        frame = groups[-1]
        frame[0], frame[1] = min(cap, frame[0] + atom), atom
    return sum(frame[0] for frame in groups)


def _count(digits: str | None) -> int:
    # Past seven digits the pattern is over the cap anyway (and int() refuses past 4,300 digits).
    return MAX_PATTERN_SIZE + 1 if digits and len(digits) > 7 else int(digits or 0)


def _class_end(pattern: str, start: int) -> int:
    """The index after the `[...]` class opened at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1
