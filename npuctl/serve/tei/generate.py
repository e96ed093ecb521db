"""TGI's `/generate` and `/generate_stream` (and `stream: true` at the root), with the parameters huggingface_hub's
`text_generation` sends: each is honoured or a 400 naming it."""

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
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.sse import EventStream
from npuctl.serve.models import GenerationService

FIELDS = frozenset({"model", "inputs", "parameters", "stream"})
REFUSED = {"adapter_id": "adapters are not loaded", "best_of": "one sequence is generated",
           "decoder_input_details": "the prompt's log probabilities are not computed",
           "grammar": "use the OpenAI API's response_format", "top_n_tokens": "use the OpenAI API's logprobs",
           "watermark": "answers are not watermarked",
           "truncate": "a prompt too long for the context is a 400, never cut"}
"""TGI parameters npuctl cannot honour (each refused unless null or false)."""
_TAKEN = {"details", "do_sample", "max_new_tokens", "repetition_penalty", "frequency_penalty", "return_full_text",
          "seed", "stop", "temperature", "top_k", "top_p", "typical_p"}


async def generate(request: Request, ctx: ServeContext, body: dict[str, Any], name: str, stream: bool) -> Response:
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (TGI's request takes inputs, parameters, stream)",
                       param=unknown[0])
    prompt = body.get("inputs")
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(400, "'inputs' must be a non-empty string", param="inputs")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ApiError(400, "'parameters' must be an object", param="parameters")
    for key, value in parameters.items():
        if key in REFUSED and value not in (None, False):
            raise ApiError(400, f"'parameters.{key}' is not supported: {REFUSED[key]}", param=f"parameters.{key}")
        if key not in REFUSED and key not in _TAKEN:
            raise ApiError(400, f"unknown parameter {key!r}", param=f"parameters.{key}")
    sampling, stop = _sampling(parameters)
    details = parameters.get("details") is True
    with ctx.using(request, name, Api.OPENAI, GenerationService) as model:
        ids = model.model.tokenizer.plain(prompt)
        checked = checked_prompt(model, ids, parameters.get("max_new_tokens"), sampling, stop, what="inputs",
                                 max_param="parameters.max_new_tokens")
        generation = await started(request, model, checked, None)
        head = prompt if parameters.get("return_full_text") is True else ""
        if stream:
            return EventStream(_events(generation, head, details, sampling.seed), stream_lease(model, generation),
                               generation.ready)
        whole = await answered(request, collect(generation), model.timeout_seconds)
        answer: dict[str, Any] = {"generated_text": head + whole.text}
        if details:
            answer["details"] = _details(generation, sampling.seed)
        return JSONResponse(answer if details else [answer])


def _sampling(parameters: dict[str, Any]) -> tuple[Sampling, tuple[str, ...]]:
    def number(key: str, low: float, high: float, default: float) -> float:
        value = parameters.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ApiError(400, f"'parameters.{key}' must be a number from {low:g} to {high:g}, not {value!r}",
                           param=f"parameters.{key}")
        return float(value)

    for key in ("max_new_tokens", "top_k", "seed"):
        value = parameters.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0
                                  or (key == "max_new_tokens" and value < 1)):
            raise ApiError(400, f"'parameters.{key}' must be a {'positive' if key == 'max_new_tokens' else 'non-negative'}"
                           f" integer, not {value!r}", param=f"parameters.{key}")
    for key in ("do_sample", "details", "return_full_text"):
        if parameters.get(key) is not None and not isinstance(parameters[key], bool):
            raise ApiError(400, f"'parameters.{key}' must be true or false", param=f"parameters.{key}")
    stop = parameters.get("stop") or []
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "'parameters.stop' must be a list of at most 4 non-empty strings", param="parameters.stop")
    # TGI samples only when asked (do_sample, or a temperature, top_k, top_p or typical_p); otherwise it is greedy.
    sampled = parameters.get("do_sample") is True or any(parameters.get(k) is not None
                                                          for k in ("temperature", "top_k", "top_p", "typical_p"))
    temperature = number("temperature", 0.0, 2.0, 1.0) if sampled else 0.0
    typical = number("typical_p", 0.0, 1.0, 1.0)
    if typical == 0:
        raise ApiError(400, "'parameters.typical_p' must be more than 0 (1: no typical sampling)",
                       param="parameters.typical_p")
    penalties = Penalties(frequency=number("frequency_penalty", -2, 2, 0.0),
                          repetition=number("repetition_penalty", 0.01, 10, 1.0), window=-1, typical_p=typical,
                          temperature=temperature)
    return Sampling(0, temperature, number("top_p", 0.0, 1.0, 1.0) or 1.0, parameters.get("top_k") or None,
                    parameters.get("seed"), penalties=penalties), tuple(stop)


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
