"""Progress from inside Olive's passes, in the olive_steps child: the passes take no callback, so each hook
counts calls of the Olive function that runs once per item (a split made static)
while its pass runs, and reports them. Olive is imported here only inside the hooks (the child has it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from npuctl.artifacts import progress

T = TypeVar("T")


@contextmanager
def splits_static(total: int) -> Iterator[None]:
    """StaticLLM: each transformer split saved as its context and iterator graphs."""
    from olive.passes.onnx import static_llm

    with _counting(static_llm, "resave_model", after=_counter(total, "splits", "making static graphs")):
        yield


class CalibrationRows(Sequence[T]):
    """The quantize stage's calibration rows as a map-style dataset (torch's DataLoader reads it by index)
    that reports each sample the calibrator takes."""

    def __init__(self, rows: list[T]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int):
            progress.report(index + 1, len(self.rows), "calibration samples", "calibrating")
        return self.rows[index]


def _counter(total: int, unit: str, message: str) -> Callable[[], None]:
    calls = 0

    def counted() -> None:
        nonlocal calls
        calls += 1
        progress.report(calls, total, unit, message)

    return counted


@contextmanager
def _counting(owner: Any, name: str, *, before: Callable[..., None] | None = None,
              after: Callable[[], None] | None = None) -> Iterator[None]:
    """`before(*args)` ahead of each call of `owner.name` and `after()` once it returned, while the block runs."""
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args)
        result = original(*args, **kwargs)
        if after is not None:
            after()
        return result

    setattr(owner, name, wrapped)
    try:
        yield
    finally:
        setattr(owner, name, original)
