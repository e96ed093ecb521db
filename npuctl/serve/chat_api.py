"""OpenAI text generation: `POST /v1/chat/completions` and `POST /v1/completions`, answered whole or streamed
as Server-Sent Events (`stream: true`), in OpenAI's shapes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.generation import Sampling
from npuctl.runtime.prompts import PromptError
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.errors import ApiError
from npuctl.serve.generating import Generation, Prompt
from npuctl.serve.http import answered, read_json
from npuctl.serve.models import GenerationService
from npuctl.serve.sse import DONE, EventStream

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
        messages = _messages(body.get("messages"))
        options = _options(body)
        with ctx.using(request, body.get("model"), Api.OPENAI, GenerationService) as model:
            try:
                ids = model.model.tokenizer.chat(messages)
            except PromptError as exc:
                raise ApiError(400, str(exc), param="messages") from exc
            return await _answer(request, model, ids, options, chat=True, what="messages")

    async def completions(request: Request) -> Response:
        body = await _body(request, ctx)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "'prompt' must be a non-empty string (one prompt per request)", param="prompt")
        options = _options(body)
        with ctx.using(request, body.get("model"), Api.OPENAI, GenerationService) as model:
            ids = model.model.tokenizer.plain(prompt)
            return await _answer(request, model, ids, options, chat=False, what="prompt")

    return [
        Route("/v1/chat/completions", ctx.endpoint("openai", chat), methods=["POST"]),
        Route("/v1/completions", ctx.endpoint("openai", completions), methods=["POST"]),
    ]


async def _answer(request: Request, model: GenerationService, ids: list[int], options: _Options, *, chat: bool,
                  what: str) -> Response:
    limit = model.max_input_tokens
    room = model.model.room(len(ids))
    if len(ids) > limit or room < 1:
        raise ApiError(400, f"the {what} are {len(ids)} tokens; this model accepts at most {limit} input tokens "
                       f"({model.model.limits})", param=what, code="context_length_exceeded")
    if options.max_tokens is not None and options.max_tokens > room:
        raise ApiError(400, f"{model.model.limits}: {len(ids)} tokens in the {what} leave room for "
                       f"{room} generated tokens, not max_tokens {options.max_tokens}",
                       param="max_tokens", code="context_length_exceeded")
    sampling = replace(options.sampling, max_new_tokens=options.max_tokens or room)
    prompt = Prompt(ids, sampling, options.stop)
    reply = _Reply(model.name, chat, len(ids))
    if not options.stream:
        generation = await answered(request, model.queue.start(prompt), model.timeout_seconds)
        text = await answered(request, _collect(generation), model.timeout_seconds)
        return JSONResponse(reply.whole(text, generation))
    generation = await answered(request, model.queue.start(prompt), model.timeout_seconds)
    # The stream outlives this handler: it keeps the model leased until it ends.
    model.acquire()

    def close() -> None:
        generation.cancel()
        model.release()

    return EventStream(reply.events(generation, options.include_usage), close)


async def _collect(generation: Generation) -> str:
    pieces: list[str] = []
    try:
        async for piece in generation.pieces():
            pieces.append(piece)
    finally:
        generation.cancel()  # a no-op when it has ended; stops it when the client left or the time ran out
    return "".join(pieces)


class _Reply:
    """OpenAI's response objects for one request."""

    def __init__(self, model: str, chat: bool, prompt_tokens: int) -> None:
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.model = model
        self.chat = chat
        self.created = int(time.time())
        self.prompt_tokens = prompt_tokens

    def whole(self, text: str, generation: Generation) -> dict[str, Any]:
        reason = generation.finish_reason
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        choice |= {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        return self._object(False) | {"choices": [choice], "usage": self._usage(generation)}

    async def events(self, generation: Generation, include_usage: bool) -> AsyncIterator[dict[str, Any] | str]:
        usage: dict[str, Any] = {"usage": None} if include_usage else {}
        if self.chat:
            yield self._chunk({"role": "assistant", "content": ""}, None) | usage
        try:
            async for piece in generation.pieces():
                yield self._chunk({"content": piece} if self.chat else piece, None) | usage
        except Exception as exc:  # headers are sent: the error goes in the stream, as OpenAI does
            yield {"error": {"message": f"generation failed: {exc}", "type": "server_error", "param": None,
                             "code": None}}
            return
        yield self._chunk({} if self.chat else "", generation.finish_reason) | usage
        if include_usage:
            yield self._object(True) | {"choices": [], "usage": self._usage(generation)}
        yield DONE

    def _chunk(self, delta: dict[str, Any] | str, reason: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        choice |= {"delta": delta} if self.chat else {"text": delta}
        return self._object(True) | {"choices": [choice]}

    def _object(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _usage(self, generation: Generation) -> dict[str, int]:
        done = generation.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done, "total_tokens": self.prompt_tokens + done}


async def _body(request: Request, ctx: ServeContext) -> dict[str, Any]:
    body = await read_json(request, ctx.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'messages' must be a non-empty array of messages", param="messages")
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
