"""Ollama's API on the same port, for the editor plugins, note apps and front-ends that speak only it:
`/api/chat` and `/api/generate` (newline-delimited JSON streams by default, or one object), `/api/embed` and
the older `/api/embeddings`, and the model listings `/api/tags`, `/api/show`, `/api/ps`, `/api/version`.
Models are the deployments whose `spec.serve.apis` include `ollama`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.prompts import PromptError
from npuctl.schema.models import Api
from npuctl.serve import embedding
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.generation.completing import checked_prompt, collect, started, stream_lease
from npuctl.serve.generation.logprobs import chat_logprobs, token_entry
from npuctl.serve.generation.queue import FinishReason, Generation, Piece
from npuctl.serve.generation.structured import Structure
from npuctl.serve.http.body import answered
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.fastjson import FastJSONResponse
from npuctl.serve.http.sse import LineStream
from npuctl.serve.models import EmbeddingService, GenerationService, ServedModel
from npuctl.serve.ollama import generating
from npuctl.serve.ollama import requests as check
from npuctl.serve.ollama.bodies import (
    EmbedRequest,
    OllamaChatRequest,
    OllamaGenerateRequest,
    PromptEmbeddingRequest,
    ShowRequest,
)
from npuctl.serve.ollama.listings import OLLAMA_VERSION, model_list, running_list, show
from npuctl.serve.openai.replies import rest

RUNNING = "Ollama is running"
"""What Ollama answers on `/`; clients probe it to find a server."""


def ollama_routes(ctx: ServeContext) -> list[BaseRoute]:
    def names() -> set[str]:
        return {name for model in ctx.registry.models() if model.speaks(Api.OLLAMA) for name in model.names}

    async def version(request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": model_list(ctx.registry.models())})

    async def ps(request: Request) -> Response:
        return JSONResponse({"models": running_list(ctx.registry.models(), ctx.registry.idle_for)})

    async def show_model(request: Request) -> Response:
        asked = await ctx.body(request, ShowRequest)
        with ctx.using(request, check.model_name(asked.model, names()), Api.OLLAMA, ServedModel) as model:
            return JSONResponse(show(model))

    async def chat(request: Request) -> Response:
        asked = await ctx.body(request, OllamaChatRequest)
        with ctx.using(request, check.model_name(asked.model, names()), Api.OLLAMA, GenerationService) as model:
            form = generating.form(asked, model.model.guided)
            try:
                ids = model.model.tokenizer.chat([message.turn() for message in asked.messages], form.tools)
            except PromptError as exc:
                raise ApiError(400, str(exc)) from exc
            ctx.registry.keep_alive(model, check.keep_alive(asked.keep_alive))
            return await _generate(request, model, ids, asked, form, chat=True)

    async def generate(request: Request) -> Response:
        asked = await ctx.body(request, OllamaGenerateRequest)
        with ctx.using(request, check.model_name(asked.model, names()), Api.OLLAMA, GenerationService) as model:
            ctx.registry.keep_alive(model, check.keep_alive(asked.keep_alive))
            if not asked.prompt:  # Ollama's way to load a model (and, with keep_alive 0, to unload it)
                return JSONResponse(_Reply(model, 0, Structure(), False, chat=False).loaded())
            tokenizer = model.model.tokenizer
            if asked.raw or not tokenizer.has_chat_template:
                ids = tokenizer.plain(asked.system + asked.prompt)
            else:
                turns = ([{"role": "system", "content": asked.system}] if asked.system else []) \
                    + [{"role": "user", "content": asked.prompt}]
                try:
                    ids = tokenizer.chat(turns)
                except PromptError as exc:
                    raise ApiError(400, str(exc)) from exc
            form = generating.form(asked, model.model.guided)
            return await _generate(request, model, _context(asked.context, model) + ids, asked, form, chat=False)

    async def embed(request: Request) -> Response:
        asked = await ctx.body(request, EmbedRequest)
        began = time.perf_counter()
        with ctx.using(request, check.model_name(asked.model, names()), Api.OLLAMA, EmbeddingService) as model:
            ctx.registry.keep_alive(model, check.keep_alive(asked.keep_alive))
            done = await embedding.embed(request, model, asked.input, truncate=model.truncate and asked.truncate,
                                         dimensions=asked.dimensions)
            return FastJSONResponse({
                "model": model.name,
                "embeddings": [embedding.floats(vector) for vector in done.vectors],
                "total_duration": _nanoseconds(time.perf_counter() - began),
                "load_duration": 0,
                "prompt_eval_count": done.tokens,
            })

    async def embeddings(request: Request) -> Response:
        asked = await ctx.body(request, PromptEmbeddingRequest)
        with ctx.using(request, check.model_name(asked.model, names()), Api.OLLAMA, EmbeddingService) as model:
            ctx.registry.keep_alive(model, check.keep_alive(asked.keep_alive))
            if not asked.prompt:
                return FastJSONResponse({"embedding": []})
            done = await embedding.embed(request, model, asked.prompt, truncate=model.truncate, dimensions=None,
                                         param="prompt")
            return FastJSONResponse({"embedding": embedding.floats(done.vectors[0])})

    async def not_here(request: Request) -> Response:
        # An agent answers these (npuctl/agent/ollama_models.py); a one-shot server has no manifests to change.
        raise ApiError(400, f"{request.url.path} changes what is deployed, which npuctl serve cannot: it serves the "
                       "manifests given with -f. Edit those, or run an agent (npuctl agent) and pull or delete there "
                       "with its token")

    def route(path: str, handler: Any, method: str) -> Route:
        return Route(path, ctx.endpoint(Api.OLLAMA, handler), methods=[method])

    return [
        route("/api/version", version, "GET"),
        route("/api/pull", not_here, "POST"),
        route("/api/delete", not_here, "DELETE"),
        route("/api/tags", tags, "GET"),
        route("/api/ps", ps, "GET"),
        route("/api/show", show_model, "POST"),
        route("/api/chat", chat, "POST"),
        route("/api/generate", generate, "POST"),
        route("/api/embed", embed, "POST"),
        route("/api/embeddings", embeddings, "POST"),
    ]


async def _generate(request: Request, model: GenerationService, ids: list[int],
                    asked: OllamaChatRequest | OllamaGenerateRequest, form: Structure, *, chat: bool) -> Response:
    settings = generating.settings(asked.options)
    logprobs = chat_logprobs(asked.logprobs, asked.top_logprobs)
    sampling = replace(settings.sampling, guidance=form.guidance, logprobs=logprobs)
    prompt = checked_prompt(model, ids, settings.max_tokens, sampling, settings.stop, what="prompt",
                            max_param="options.num_predict", context=settings.context)
    reply = _Reply(model, len(ids), form, logprobs is not None, chat=chat)
    generation = await started(request, model, prompt, "format" if form.param == "response_format" else form.param)
    if not asked.stream:
        whole = await answered(request, collect(generation), model.timeout_seconds)
        return JSONResponse(reply.piece(whole) | reply.final(generation, ids, whole=True))
    return LineStream(reply.lines(generation, ids), stream_lease(model, generation), generation.ready)


def _context(context: list[int] | None, model: GenerationService) -> list[int]:
    """/api/generate's `context`: the token ids an earlier answer gave back, to continue from."""
    vocabulary = model.model.tokenizer.tokenizer.get_vocab_size()
    if not all(token < vocabulary for token in context or ()):
        raise ApiError(400, f"'context' must be a list of token ids (0..{vocabulary - 1}) from an earlier answer")
    return list(context or ())


class _Reply:
    """Ollama's response objects for one request."""

    def __init__(self, model: GenerationService, prompt_tokens: int, form: Structure, logprobs: bool, *,
                 chat: bool) -> None:
        self.model = model.name
        self.chat = chat
        self.prompt_tokens = prompt_tokens
        self.form = form
        self.logprobs = logprobs
        self._decode = model.model.tokenizer.decode

    def piece(self, piece: Piece) -> dict[str, Any]:
        calls = self.form.tool_calls(piece.text) if self.chat else None
        if calls:
            message = {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}}
                for c in calls]}
            content: dict[str, Any] = {"message": message}
        else:
            # A tool call cut short (by num_predict) is no text: done_reason says length.
            text = "" if self.chat and self.form.cut_call(piece.text) else piece.text
            content = {"message": {"role": "assistant", "content": text}} if self.chat else {"response": text}
        if self.logprobs:
            content["logprobs"] = [token_entry(step, self._decode) for step in piece.steps]
        return {"model": self.model, "created_at": _now()} | content | {"done": False}

    def loaded(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": _now(), "response": "", "done": True, "done_reason": "load"}

    def final(self, generation: Generation, ids: list[int], *, whole: bool = False) -> dict[str, Any]:
        first, last = generation.first_token_at, generation.last_token_at
        prompt_seconds = first - generation.arrived - generation.queue_wait if first else 0.0
        answer: dict[str, Any] = {} if whole else self.piece(Piece(""))
        answer |= {
            "done": True,
            "done_reason": "length" if generation.finish_reason == FinishReason.LENGTH else "stop",
            "total_duration": _nanoseconds(time.perf_counter() - generation.arrived),
            "load_duration": 0,
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": _nanoseconds(prompt_seconds),
            "eval_count": generation.completion_tokens,
            "eval_duration": _nanoseconds(last - first if first and last else 0.0),
        }
        if not self.chat:
            answer["context"] = ids + generation.token_ids
        return answer

    async def lines(self, generation: Generation, ids: list[int]) -> AsyncIterator[dict[str, Any]]:
        try:
            chunks = generation.chunks()
            async for piece in chunks:
                if self.chat and self.form.may_call and piece.text.startswith("{"):
                    piece = await rest(piece, chunks)  # a tool call goes whole, once its arguments parse
                yield self.piece(piece)
        except Exception as exc:  # the status is sent: the error goes in the stream, as Ollama does
            yield {"error": f"generation failed: {exc}"}
            return
        yield self.final(generation, ids)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _nanoseconds(seconds: float) -> int:
    return max(0, int(seconds * 1e9))
