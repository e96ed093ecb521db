"""Progress from inside Olive's passes, in the olive_steps child: the passes take no callback, so each hook
counts calls of the Olive function that runs once per item (a split made static)
while its pass runs, and reports them. Olive is imported here only inside the hooks (the child has it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from npuctl.artifacts import progress


@contextmanager
def splits_static(total: int) -> Iterator[None]:
    """StaticLLM: each transformer split saved as its context and iterator graphs."""
    from olive.passes.onnx import static_llm

    with _counting(static_llm, "resave_model", after=_counter(total, "splits", "making static graphs")):
        yield


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
