"""OpenAI's Responses API, `POST /v1/responses`: text or items in, a message or a function call out, whole or
streamed as its typed events (`response.created` ... `response.completed`). Answers are kept in memory (bounded,
responses_store.py) for `previous_response_id` unless `store: false`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.generation import Sampling
from npuctl.runtime.prompts import PromptError
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.generation.completing import checked_prompt, collect, started, stream_lease
from npuctl.serve.generation.queue import FinishReason, Generation
from npuctl.serve.generation.structured import Structure, structure
from npuctl.serve.http.body import answered, read_json
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.limits import check_rows
from npuctl.serve.http.sse import EventStream
from npuctl.serve.models import GenerationService
from npuctl.serve.openai.replies import rest
from npuctl.serve.openai.responses_request import ResponsesRequest, messages, parse
from npuctl.serve.openai.responses_store import ResponseStore


def responses_routes(ctx: ServeContext) -> list[BaseRoute]:
    store = ResponseStore()

    async def create(request: Request) -> Response:
        asked = parse(await read_json(request, ctx.max_body_bytes))
        earlier: list[dict[str, Any]] = []
        if asked.previous_response_id is not None:
            found = store.conversation(asked.previous_response_id)
            if found is None:
                raise ApiError(400, f"previous response {asked.previous_response_id!r} is not kept here (answers "
                               f"are kept in memory, the latest {store.max_responses}, and never with store: false)",
                               param="previous_response_id")
            earlier = found
        conversation = messages(asked, earlier)
        check_rows(len(conversation), "'input'", param="input")
        with ctx.using(request, asked.model, Api.OPENAI, GenerationService) as model:
            form = structure(asked.chat_form(), model.model.guided)
            try:
                ids = model.model.tokenizer.chat(conversation, form.tools)
            except PromptError as exc:
                raise ApiError(400, str(exc), param="input") from exc
            sampling = Sampling(0, 1.0 if asked.temperature is None else asked.temperature,
                                asked.top_p or 1.0, guidance=form.guidance)
            prompt = checked_prompt(model, ids, asked.max_output_tokens, sampling, (), what="input",
                                    max_param="max_output_tokens")
            answer = Answer(asked, model.name, len(ids), form)
            generation = await started(request, model, prompt, form.param and _param(form.param))

            def kept(output: list[dict[str, Any]]) -> None:
                if asked.store is not False:
                    store.keep(answer.id, [*conversation, *_as_messages(output)])

            if not asked.streamed:
                whole = await answered(request, collect(generation), model.timeout_seconds)
                body = answer.whole(whole.text, generation)
                kept(body["output"])
                return JSONResponse(body)
            return EventStream(answer.events(generation, kept), stream_lease(model, generation), generation.ready)

    return [Route("/v1/responses", ctx.endpoint(Api.OPENAI, create), methods=["POST"])]


def _param(chat_param: str) -> str:
    return "text.format" if chat_param == "response_format" else chat_param


class Answer:
    """The response object of one request, whole or as stream events."""

    def __init__(self, asked: ResponsesRequest, model: str, input_tokens: int, form: Structure) -> None:
        self.id = f"resp_{uuid.uuid4().hex}"
        self.item_id = f"msg_{uuid.uuid4().hex}"
        self.asked = asked
        self.model = model
        self.input_tokens = input_tokens
        self.form = form
        self.created = int(time.time())
        self._sequence = 0

    def whole(self, text: str, generation: Generation) -> dict[str, Any]:
        return self._response(self._output(text, generation), generation)

    async def events(self, generation: Generation,
                     kept: Callable[[list[dict[str, Any]]], None]) -> AsyncIterator[dict[str, Any]]:
        yield self._event("response.created", response=self._response([], None))
        yield self._event("response.in_progress", response=self._response([], None))
        output: list[dict[str, Any]] = []
        text: list[str] = []
        message = {"type": "message", "id": self.item_id, "status": "in_progress", "role": "assistant",
                   "content": []}
        place = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        try:
            chunks = generation.chunks()
            async for piece in chunks:
                if self.form.may_call and piece.text.startswith("{") and not text:
                    piece = await rest(piece, chunks)
                    if self.form.tool_calls(piece.text) or self.form.cut_call(piece.text):
                        output = self._output(piece.text, generation)
                        for event in self._call_events(output):
                            yield event
                        break
                    # not a call: the answer in text.format's form, sent as text
                if not text:
                    yield self._event("response.output_item.added", output_index=0, item=message)
                    yield self._event("response.content_part.added", **place, part=_part(""))
                text.append(piece.text)
                yield self._event("response.output_text.delta", **place, delta=piece.text, logprobs=[])
        except Exception as exc:  # headers are sent: the failure goes in the stream, as OpenAI does
            yield self._event("error", code="server_error", message=f"generation failed: {exc}", param=None)
            return
        if text:
            whole_text = "".join(text)
            yield self._event("response.output_text.done", **place, text=whole_text, logprobs=[])
            yield self._event("response.content_part.done", **place, part=_part(whole_text))
            output = self._output(whole_text, generation)
            yield self._event("response.output_item.done", output_index=0, item=output[0])
        final = self._response(output, generation)
        kept(output)
        yield self._event("response.completed" if final["status"] == "completed" else "response.incomplete",
                          response=final)

    def _call_events(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events = []
        for index, item in enumerate(output):
            events.append(self._event("response.output_item.added", output_index=index,
                                      item=item | {"status": "in_progress", "arguments": ""}))
            if item["type"] == "function_call":
                ids = {"item_id": item["id"], "output_index": index}
                events.append(self._event("response.function_call_arguments.delta", **ids, delta=item["arguments"]))
                events.append(self._event("response.function_call_arguments.done", **ids, name=item["name"],
                                          arguments=item["arguments"]))
            events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def _output(self, text: str, generation: Generation) -> list[dict[str, Any]]:
        calls = self.form.tool_calls(text)
        if calls:
            return [{"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call["id"],
                     "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                     "status": "completed"} for call in calls]
        if self.form.cut_call(text):
            return []  # a call cut short by max_output_tokens: no call, and no text (status says incomplete)
        status = "incomplete" if generation.finish_reason == FinishReason.LENGTH else "completed"
        return [{"type": "message", "id": self.item_id, "status": status, "role": "assistant",
                 "content": [_part(text)]}]

    def _response(self, output: list[dict[str, Any]], generation: Generation | None) -> dict[str, Any]:
        asked = self.asked
        cut = generation is not None and generation.finish_reason == FinishReason.LENGTH
        status = "in_progress" if generation is None else "incomplete" if cut else "completed"
        text_format = asked.text.format.model_dump(by_alias=True, exclude_none=True) \
            if asked.text and asked.text.format else {"type": "text"}
        tool_choice = asked.tool_choice if isinstance(asked.tool_choice, str) or asked.tool_choice is None \
            else asked.tool_choice.model_dump()
        body: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "model": self.model,
            "output": output, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": asked.instructions, "max_output_tokens": asked.max_output_tokens,
            "previous_response_id": asked.previous_response_id, "store": asked.store is not False,
            "temperature": 1.0 if asked.temperature is None else asked.temperature,
            "top_p": asked.top_p or 1.0, "parallel_tool_calls": asked.parallel_tool_calls is not False,
            "tool_choice": tool_choice or ("auto" if asked.tools else "none"),
            "tools": [tool.model_dump(exclude_none=True) for tool in asked.tools or []],
            "text": {"format": text_format}, "metadata": asked.metadata or {}, "user": asked.user,
            "usage": None,
        }
        if generation is not None:
            done = generation.completion_tokens
            body["usage"] = {"input_tokens": self.input_tokens,
                             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "output_tokens": done, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": self.input_tokens + done}
        return body

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._sequence += 1
        return {"type": kind, "sequence_number": self._sequence - 1, **fields}


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _as_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answer as chat messages, for the next turn of the conversation."""
    calls = [{"id": item["call_id"], "type": "function", "function": {"name": item["name"],
                                                                      "arguments": item["arguments"]}}
             for item in output if item["type"] == "function_call"]
    if calls:
        return [{"role": "assistant", "content": "", "tool_calls": calls}]
    text = "".join(part["text"] for item in output if item["type"] == "message" for part in item["content"])
    return [{"role": "assistant", "content": text}]
