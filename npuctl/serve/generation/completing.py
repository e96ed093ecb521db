"""What the OpenAI and Ollama text APIs share: a prompt checked against the model's context and limits,
and a generation read to its end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from npuctl.runtime.generation import GuidanceError, Sampling
from npuctl.serve.http.errors import ApiError
from npuctl.serve.generation.queue import Generation, Piece, Prompt
from npuctl.serve.models import GenerationService


def checked_prompt(model: GenerationService, ids: list[int], max_tokens: int | None, sampling: Sampling,
                   stop: Sequence[str], *, what: str, max_param: str, context: int | None = None) -> Prompt:
    """The prompt to generate from; 400 (naming `what`, or `max_param`) when `ids` or `max_tokens` do not fit the
    model's input limit and context. `context`: a smaller context the client asked for. Without `max_tokens`,
    generation may fill the context."""
    limit = model.max_input_tokens
    context = min(context or model.model.context_length, model.model.context_length)
    if len(ids) > limit or len(ids) >= context:
        raise ApiError(400, f"the {what} are {len(ids)} tokens; this model accepts at most "
                       f"{min(limit, context - 1)} input tokens (its context is {context} tokens)",
                       param=what, code="context_length_exceeded")
    room = min(context - len(ids), model.model.room(len(ids)))
    if max_tokens is not None and max_tokens > room:
        if room < context - len(ids):  # an encoder-decoder: answers have a length of their own
            raise ApiError(400, f"this model's answers have at most {room} tokens (spec.shapes.maxOutputTokens), "
                           f"not {max_param} {max_tokens}", param=max_param, code="context_length_exceeded")
        raise ApiError(400, f"this model's context is {context} tokens: {len(ids)} in the {what} leave room for "
                       f"{room} generated tokens, not {max_param} {max_tokens}",
                       param=max_param, code="context_length_exceeded")
    return Prompt(ids, replace(sampling, max_new_tokens=max_tokens or room), tuple(stop))


async def collect(generation: Generation) -> Piece:
    """The whole answer: its text and its tokens."""
    pieces: list[Piece] = []
    try:
        async for piece in generation.chunks():
            pieces.append(piece)
    finally:
        generation.cancel()  # a no-op when it has ended; stops it when the client left or the time ran out
    return Piece("".join(p.text for p in pieces), tuple(step for p in pieces for step in p.steps))


async def begun(generation: Generation, param: str | None) -> None:
    """Wait for the model to take the request; 400 naming `param` when its grammar does not compile."""
    try:
        await generation.begun()
    except GuidanceError as exc:
        raise ApiError(400, f"'{param}' cannot be followed: {exc}", param=param) from exc


def stream_lease(model: GenerationService, generation: Generation) -> Callable[[], None]:
    """A streamed answer outlives its handler: the model stays leased until the stream ends. Call the
    returned function then (it also stops the generation if the client left first)."""
    model.acquire()

    def close() -> None:
        generation.cancel()
        model.release()

    return close
