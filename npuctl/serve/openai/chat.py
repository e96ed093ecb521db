"""OpenAI text generation: `POST /v1/chat/completions` and `POST /v1/completions`, answered whole or streamed
as Server-Sent Events (`stream: true`), in OpenAI's shapes."""

from __future__ import annotations

from dataclasses import dataclass, replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.generation import Sampling
from npuctl.runtime.penalties import Penalties
from npuctl.runtime.prompts import PromptError
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.generation.completing import checked_prompt, collect, started, stream_lease
from npuctl.serve.generation.logprobs import chat_logprobs
from npuctl.serve.generation.penalties import openai_penalties
from npuctl.serve.generation.structured import structure
from npuctl.serve.http.body import answered
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.sse import EventStream
from npuctl.serve.models import GenerationService
from npuctl.serve.openai.replies import Reply, Shape
from npuctl.serve.openai.requests import ChatRequest, CompletionRequest


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
        asked = await ctx.body(request, ChatRequest)
        options = _options(asked)
        logprobs = chat_logprobs(asked.logprobs, asked.top_logprobs)
        with ctx.using(request, asked.model, Api.OPENAI, GenerationService) as model:
            form = structure(asked.form, model.model.guided)
            try:
                ids = model.model.tokenizer.chat([message.turn() for message in asked.messages], form.tools)
            except PromptError as exc:
                raise ApiError(400, str(exc), param="messages") from exc
            sampling = replace(options.sampling, guidance=form.guidance, logprobs=logprobs,
                               penalties=_penalties(asked, model))
            return await _answer(request, model, ids, replace(options, sampling=sampling), chat=True,
                                 what="messages", shape=Shape(form, logprobs is not None))

    async def completions(request: Request) -> Response:
        asked = await ctx.body(request, CompletionRequest)
        prompt = asked.prompt if isinstance(asked.prompt, str) else asked.prompt[0]
        options = _options(asked)
        logprobs, echo = asked.logprobs, asked.echo
        if echo and logprobs is not None:
            raise ApiError(400, "'echo' with 'logprobs' would need the prompt's log probabilities, which npuctl "
                           "does not compute", param="echo")
        with ctx.using(request, asked.model, Api.OPENAI, GenerationService) as model:
            options = replace(options, sampling=replace(options.sampling, logprobs=logprobs,
                                                        penalties=_penalties(asked, model)))
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


def _penalties(asked: ChatRequest | CompletionRequest, model: GenerationService) -> Penalties:
    vocabulary = int(model.model.tokenizer.tokenizer.get_vocab_size())
    return openai_penalties(asked.logit_bias, asked.frequency_penalty, asked.presence_penalty, vocabulary)


def _options(asked: ChatRequest | CompletionRequest) -> _Options:
    max_tokens = asked.max_completion_tokens if asked.max_completion_tokens is not None else asked.max_tokens
    if asked.stream_options is not None and not asked.stream:
        raise ApiError(400, "'stream_options' is an object, and only allowed with stream: true", param="stream_options")
    temperature = 1.0 if asked.temperature is None else asked.temperature
    sampling = Sampling(0, temperature, 1.0 if asked.top_p is None else asked.top_p, asked.top_k or None, asked.seed,
                        asked.ignore_eos)
    stop = (asked.stop,) if isinstance(asked.stop, str) else tuple(asked.stop or ())
    include_usage = asked.stream_options is not None and asked.stream_options.include_usage
    return _Options(max_tokens, sampling, stop, asked.stream, include_usage)
