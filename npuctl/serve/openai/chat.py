"""OpenAI text generation: `POST /v1/chat/completions` and `POST /v1/completions`, answered whole or streamed
as Server-Sent Events (`stream: true`), in OpenAI's shapes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.generation import Sampling
from npuctl.runtime.prompts import PromptError
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.generation.completing import checked_prompt, collect, started, stream_lease
from npuctl.serve.generation.logprobs import chat_logprobs, completion_logprobs
from npuctl.serve.generation.penalties import openai_penalties
from npuctl.serve.generation.structured import structure
from npuctl.serve.http.body import answered, read_json
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.limits import check_rows
from npuctl.serve.http.sse import EventStream
from npuctl.serve.models import GenerationService
from npuctl.serve.openai import fields
from npuctl.serve.openai.replies import Reply, Shape

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP = 4
"""Stop strings per request, as OpenAI allows."""


@dataclass(frozen=True)
class _Options:
    """The generation fields common to both endpoints, checked."""

    max_tokens: int | None
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def chat_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def chat(request: Request) -> Response:
        body = await _body(request, ctx)
        fields.refuse(body, fields.CHAT)
        messages = _messages(body.get("messages"))
        options = _options(body)
        logprobs = chat_logprobs(body)
        with ctx.using(request, body.get("model"), Api.OPENAI, GenerationService) as model:
            form = structure(body, model.model.guided)
            try:
                ids = model.model.tokenizer.chat(messages, form.tools)
            except PromptError as exc:
                raise ApiError(400, str(exc), param="messages") from exc
            sampling = replace(options.sampling, guidance=form.guidance, logprobs=logprobs,
                               penalties=openai_penalties(body, _vocabulary(model)))
            return await _answer(request, model, ids, replace(options, sampling=sampling), chat=True,
                                 what="messages", shape=Shape(form, logprobs is not None))

    async def completions(request: Request) -> Response:
        body = await _body(request, ctx)
        fields.refuse(body, fields.COMPLETIONS)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "'prompt' must be a non-empty string (one prompt per request)", param="prompt")
        options = _options(body)
        logprobs, echo = completion_logprobs(body), body.get("echo", False)
        if not isinstance(echo, bool):
            raise ApiError(400, "'echo' must be true or false", param="echo")
        if echo and logprobs is not None:
            raise ApiError(400, "'echo' with 'logprobs' would need the prompt's log probabilities, which npuctl "
                           "does not compute", param="echo")
        with ctx.using(request, body.get("model"), Api.OPENAI, GenerationService) as model:
            options = replace(options, sampling=replace(options.sampling, logprobs=logprobs,
                                                        penalties=openai_penalties(body, _vocabulary(model))))
            ids = model.model.tokenizer.plain(prompt)
            return await _answer(request, model, ids, options, chat=False, what="prompt",
                                 shape=Shape(logprobs=logprobs is not None, echo=prompt if echo else ""))

    return [
        Route("/v1/chat/completions", ctx.endpoint(Api.OPENAI, chat), methods=["POST"]),
        Route("/v1/completions", ctx.endpoint(Api.OPENAI, completions), methods=["POST"]),
    ]


async def _answer(request: Request, model: GenerationService, ids: list[int], options: _Options, *, chat: bool,
                  what: str, shape: Shape) -> Response:
    prompt = checked_prompt(model, ids, options.max_tokens, options.sampling, options.stop, what=what,
                            max_param="max_tokens")
    reply = Reply(model.name, chat, len(ids), shape, model.model.tokenizer.decode)
    generation = await started(request, model, prompt, shape.structure.param)
    if not options.stream:
        whole = await answered(request, collect(generation), model.timeout_seconds)
        return JSONResponse(reply.whole(whole, generation))
    return EventStream(reply.events(generation, options.include_usage), stream_lease(model, generation), generation.ready)


def _vocabulary(model: GenerationService) -> int:
    return int(model.model.tokenizer.tokenizer.get_vocab_size())


async def _body(request: Request, ctx: ServeContext) -> dict[str, Any]:
    body = await read_json(request, ctx.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'messages' must be a non-empty array of messages", param="messages")
    check_rows(len(value), "'messages'", param="messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object with 'role' and 'content'", param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ApiError(400, f"messages[{i}].role is {role!r}; expected one of {', '.join(sorted(ROLES))}",
                           param=f"messages[{i}].role")
        messages.append(message | {"content": _content(message.get("content"), i, role)})
    return messages


def _content(value: Any, index: int, role: str) -> str:
    """A message's text: a string, or OpenAI's list of text parts (other part types need a multimodal model)."""
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return ""
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                       and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts",
                   param=f"messages[{index}].content")


def _options(body: dict[str, Any]) -> _Options:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise ApiError(400, f"'{name}' must be a positive integer, not {max_tokens!r}", param=name)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise ApiError(400, "'top_p' must be above 0", param="top_p")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise ApiError(400, f"'top_k' must be a non-negative integer, not {top_k!r}", param="top_k")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise ApiError(400, f"'seed' must be an integer, not {seed!r}", param="seed")
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported (one choice per request)", param="n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or (stream_options and not stream):
        raise ApiError(400, "'stream_options' is an object, and only allowed with stream: true", param="stream_options")
    if not isinstance(stream_options.get("include_usage", False), bool):
        raise ApiError(400, "'stream_options.include_usage' must be true or false", param="stream_options")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise ApiError(400, "'ignore_eos' must be true or false", param="ignore_eos")
    return _Options(max_tokens, Sampling(0, temperature, top_p, top_k or None, seed, ignore_eos), _stop(body.get("stop")),
                    stream, bool(stream_options.get("include_usage", False)))


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'stop' must be a non-empty string or a list of at most {MAX_STOP} of them", param="stop")
    return tuple(stops)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be a number from {low:g} to {high:g}, not {value!r}", param=name)
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
