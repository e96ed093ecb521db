"""What the OpenAI and Ollama text APIs share: a prompt checked against the model's context and limits,
and a generation read to its end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from starlette.requests import Request

from npuctl.runtime.generation import GuidanceError, Sampling
from npuctl.serve.generation.queue import Generation, Piece, Prompt
from npuctl.serve.http.body import answered
from npuctl.serve.http.errors import ApiError
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


async def started(request: Request, model: GenerationService, prompt: Prompt, param: str | None) -> Generation:
    """A slot in the model's queue, and the generation begun in it (its grammar built): each wait under the
    model's timeout (504), 400 naming `param` when the grammar does not compile. A grammar is built in one
    native call nothing can interrupt: when the client gets its 504 (or leaves) first, the generation is
    cancelled, so it ends as soon as that call returns, with no token generated."""
    generation = await answered(request, model.queue.start(prompt), model.timeout_seconds)
    try:
        await answered(request, _begun(generation, param), model.timeout_seconds)
    except BaseException:
        generation.cancel()
        raise
    return generation


async def _begun(generation: Generation, param: str | None) -> None:
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
