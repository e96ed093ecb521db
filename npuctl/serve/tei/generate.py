"""TGI's `/generate` and `/generate_stream` (and `stream: true` at the root), with the parameters huggingface_hub's
`text_generation` sends (npuctl/serve/tei/requests.py): each is honoured or a 400 naming it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from npuctl.runtime.generation import Sampling
from npuctl.runtime.penalties import Penalties
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.generation.completing import checked_prompt, collect, started, stream_lease
from npuctl.serve.generation.queue import FinishReason, Generation, Piece
from npuctl.serve.http.body import answered
from npuctl.serve.http.sse import EventStream
from npuctl.serve.models import GenerationService
from npuctl.serve.tei.requests import GenerateParameters, GenerateRequest


async def generate(request: Request, ctx: ServeContext, asked: GenerateRequest, name: str, stream: bool) -> Response:
    parameters = asked.parameters or GenerateParameters()
    sampling = _sampling(parameters)
    stop = tuple(parameters.stop or ())
    with ctx.using(request, name, Api.OPENAI, GenerationService) as model:
        ids = model.model.tokenizer.plain(asked.inputs)
        checked = checked_prompt(model, ids, parameters.max_new_tokens, sampling, stop, what="inputs",
                                 max_param="parameters.max_new_tokens")
        generation = await started(request, model, checked, None)
        head = asked.inputs if parameters.return_full_text else ""
        if stream:
            return EventStream(_events(generation, head, bool(parameters.details), sampling.seed),
                               stream_lease(model, generation), generation.ready)
        whole = await answered(request, collect(generation), model.timeout_seconds)
        answer: dict[str, Any] = {"generated_text": head + whole.text}
        if parameters.details:
            answer["details"] = _details(generation, sampling.seed)
        return JSONResponse(answer if parameters.details else [answer])


def _sampling(parameters: GenerateParameters) -> Sampling:
    # TGI samples only when asked (do_sample, or a temperature, top_k, top_p or typical_p); otherwise it is greedy.
    sampled = parameters.do_sample is True or any(value is not None for value in (
        parameters.temperature, parameters.top_k, parameters.top_p, parameters.typical_p))
    temperature = (1.0 if parameters.temperature is None else parameters.temperature) if sampled else 0.0
    penalties = Penalties(frequency=parameters.frequency_penalty or 0.0,
                          repetition=1.0 if parameters.repetition_penalty is None else parameters.repetition_penalty,
                          window=-1, typical_p=1.0 if parameters.typical_p is None else parameters.typical_p,
                          temperature=temperature)
    return Sampling(0, temperature, parameters.top_p or 1.0, parameters.top_k or None, parameters.seed,
                    penalties=penalties)


def _details(generation: Generation, seed: int | None) -> dict[str, Any]:
    reason = {FinishReason.LENGTH: "length", FinishReason.STOP: "eos_token"}.get(generation.finish_reason or "",
                                                                                 "stop_sequence")
    return {"finish_reason": reason, "generated_tokens": generation.completion_tokens, "seed": seed,
            "prefill": [], "tokens": []}


async def _events(generation: Generation, head: str, details: bool,
                  seed: int | None) -> AsyncIterator[dict[str, Any]]:
    """One event per piece, each held back until the next arrives: the last one carries the whole text."""
    text = [head]
    held: Piece | None = None
    try:
        async for piece in generation.chunks():
            if not piece.text:
                continue
            if held is not None:
                yield _event(len(text) - 1, held, None, None)
            text.append(piece.text)
            held = piece
    except Exception as exc:  # headers are sent: the error goes in the stream, as TGI does
        yield {"error": f"generation failed: {exc}", "error_type": "generation"}
        return
    if held is not None:
        yield _event(len(text) - 1, held, "".join(text), _details(generation, seed) if details else None)


def _event(index: int, piece: Piece, whole: str | None, details: dict[str, Any] | None) -> dict[str, Any]:
    step = piece.steps[-1] if piece.steps else None
    token = {"id": step.token if step else 0, "text": piece.text, "logprob": step.logprob if step else None,
             "special": False}
    return {"index": index, "token": token, "generated_text": whole, "details": details}
