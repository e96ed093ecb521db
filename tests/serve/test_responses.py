"""OpenAI's Responses API (`client.responses.create`) through the official client, against the tiny Llama served
on the CPU by a real server: text and message input, instructions, streaming typed events, function tools and
calls, `text.format` json_schema, `max_output_tokens`, usage, `previous_response_id` and `store`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from npuctl.serve.models import ServedModel
from npuctl.serve.openai.responses_store import ResponseStore
from tests.serve.conftest import Serve

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                          "required": ["city"]}}


class City(BaseModel):
    name: str = Field(max_length=10)
    big: bool


@pytest.fixture
def url(serve: Serve, tiny_llama: Callable[..., ServedModel]) -> str:
    return serve(tiny_llama()).url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_text_input_gives_a_message_with_usage_and_equals_the_chat_answer(url: str) -> None:
    answer = client(url).responses.create(model="tiny-llama", input="Hello there", instructions="Be tiny.",
                                          max_output_tokens=16, temperature=0)
    assert answer.status == "incomplete" and answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"
    assert answer.usage is not None and answer.usage.output_tokens == 16
    chat = client(url).chat.completions.create(model="tiny-llama", max_tokens=16, temperature=0, messages=[
        {"role": "system", "content": "Be tiny."}, {"role": "user", "content": "Hello there"}])
    assert answer.output_text == chat.choices[0].message.content and answer.output_text
    assert answer.usage.input_tokens == chat.usage.prompt_tokens if chat.usage else False
    as_items = client(url).responses.create(model="tiny-llama", max_output_tokens=16, temperature=0, input=[
        {"role": "system", "content": "Be tiny."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}])
    assert as_items.output_text == answer.output_text


def test_a_stream_sends_the_typed_events_and_the_same_text(url: str) -> None:
    whole = client(url).responses.create(model="tiny-llama", input="Hello", max_output_tokens=20, temperature=0)
    events = list(client(url).responses.create(model="tiny-llama", input="Hello", max_output_tokens=20,
                                               temperature=0, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 3 and "".join(deltas) == whole.output_text
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == whole.output_text and final.usage and final.usage.output_tokens == 20


def test_tools_give_a_function_call_and_its_output_continues_the_conversation(url: str) -> None:
    api = client(url)
    called = api.responses.create(model="tiny-llama", input="Weather in Paris?", tools=[WEATHER],  # type: ignore[list-item]
                                  tool_choice="required", max_output_tokens=100)
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert set(json.loads(call.arguments)) == {"city"} and called.status == "completed"
    follow = api.responses.create(model="tiny-llama", previous_response_id=called.id, max_output_tokens=8, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert follow.output_text and follow.usage and follow.usage.input_tokens > called.usage.input_tokens  # type: ignore[union-attr]
    events = list(api.responses.create(model="tiny-llama", input="Weather?", tools=[WEATHER], stream=True,  # type: ignore[list-item]
                                       tool_choice={"type": "function", "name": "get_weather"},
                                       max_output_tokens=100))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and set(json.loads(done[0].arguments)) == {"city"}
    assert events[-1].type == "response.completed"


def test_a_call_cut_by_max_output_tokens_is_incomplete_with_no_output(url: str) -> None:
    cut = client(url).responses.create(model="tiny-llama", input="Weather?", tools=[WEATHER],  # type: ignore[list-item]
                                       tool_choice="required", max_output_tokens=5)
    assert cut.status == "incomplete" and cut.output == [] and cut.output_text == ""


def test_text_format_json_schema_answers_parse(url: str) -> None:
    parsed = client(url).responses.parse(model="tiny-llama", input="A city", text_format=City,
                                         max_output_tokens=80)
    assert isinstance(parsed.output_parsed, City)


def test_text_format_with_tools_answers_a_call_or_the_format(url: str) -> None:
    """As OpenAI does (and openai-agents asks for an agent with tools and an output_type): with tool_choice auto
    the answer is a call or JSON in text.format's form, whichever the model starts; each parses."""
    answer = client(url).responses.parse(model="tiny-llama", input="A city", text_format=City, tools=[WEATHER],  # type: ignore[list-item]
                                         max_output_tokens=80, temperature=1)
    assert answer.status == "completed"
    [item] = answer.output
    if item.type == "function_call":
        assert item.name == "get_weather" and set(json.loads(item.arguments)) == {"city"}
    else:
        assert isinstance(answer.output_parsed, City)
    events = list(client(url).responses.create(model="tiny-llama", input="A city", tools=[WEATHER], stream=True,  # type: ignore[list-item]
                                               text={"format": {"type": "json_schema", "name": "city",
                                                                "schema": City.model_json_schema()}},
                                               max_output_tokens=80, temperature=1))
    done = [e for e in events if e.type in ("response.function_call_arguments.done", "response.output_text.done")]
    assert len(done) == 1 and events[-1].type == "response.completed"
    if done[0].type == "response.output_text.done":
        City.model_validate_json(done[0].text)


def test_with_a_json_answer_allowed_a_call_is_told_by_its_tool_name() -> None:
    from npuctl.serve.generation.structured import structure
    from npuctl.serve.http.validation import parse
    from npuctl.serve.openai.requests import ChatRequest

    asked = parse(ChatRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": WEATHER}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "city", "schema": City.model_json_schema()}}})
    form = structure(asked.form, guided=True)
    assert form.json_answer and form.tool_calls('{"name":"get_weather","arguments":{"city":"Oslo"}}')
    for answer in ('{"name":"Oslo","big":true}', '{"name":{"x":1}}', '{"name":"get_weather","big":true}'):
        assert form.tool_calls(answer) is None and not form.cut_call(answer)
    assert form.cut_call('{"name":"get_weather","argu') and not form.cut_call('{"name":"Os')


def test_previous_response_id_continues_and_store_false_keeps_nothing(url: str) -> None:
    api = client(url)
    first = api.responses.create(model="tiny-llama", input="Hello", max_output_tokens=4)
    second = api.responses.create(model="tiny-llama", input="And?", previous_response_id=first.id,
                                  max_output_tokens=4)
    assert second.usage and first.usage and second.usage.input_tokens > first.usage.input_tokens + 4
    unstored = api.responses.create(model="tiny-llama", input="Hello", max_output_tokens=4, store=False)
    assert unstored.store is False
    with pytest.raises(openai.BadRequestError) as refused:
        api.responses.create(model="tiny-llama", input="And?", previous_response_id=unstored.id)
    assert refused.value.param == "previous_response_id" and "is not kept here" in refused.value.message


@pytest.mark.parametrize(("extra", "param"), [
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"background": True}, "background"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"made_up": 1}, "made_up"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
])
def test_what_cannot_be_honoured_is_a_400_naming_it(url: str, extra: dict[str, object], param: str) -> None:
    answer = httpx.post(f"{url}/v1/responses", json={"model": "tiny-llama", "input": "hi"} | extra)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"].startswith(param)


def test_the_store_keeps_the_latest_within_its_bounds() -> None:
    store = ResponseStore(max_responses=2, max_bytes=200)
    for name in ("a", "b", "c"):
        store.keep(name, [{"role": "user", "content": name}])
    assert store.conversation("a") is None and store.conversation("c") is not None and len(store) == 2
    store.keep("big", [{"role": "user", "content": "x" * 150}])
    assert store.conversation("big") is not None and store.conversation("b") is None  # the bytes bound
    store.keep("huge", [{"role": "user", "content": "x" * 300}])
    assert store.conversation("huge") is None and store.conversation("big") is not None


class Forecast(BaseModel):
    sky: str = Field(max_length=8)


def test_openai_agents_calls_a_tool_and_answers_in_its_output_type_in_its_default_mode(url: str) -> None:
    """openai-agents as its docs show it for another endpoint: agents name their model, and the default provider
    (the Responses API over HTTP) runs them on the endpoint's client. One agent calls its tool; another gets the
    conversation with the call and its output (`to_input_list`) and answers in its `output_type`, whole and
    streamed. (The random-weight model's free text would run until max_output_tokens, which openai-agents
    refuses; a typed answer ends.)"""
    agents = pytest.importorskip("agents", reason="openai-agents is not installed: pip install -e '.[dev]'")
    from agents.models.openai_provider import OpenAIProvider

    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: Annotated[str, Field(max_length=8)]) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    settings = agents.ModelSettings(max_tokens=100, temperature=0)
    caller = agents.Agent(name="caller", instructions="Be tiny.", model="tiny-llama", tools=[get_weather],
                          tool_use_behavior="stop_on_first_tool",
                          model_settings=settings.resolve(agents.ModelSettings(tool_choice="required")))
    answerer = agents.Agent(name="answerer", instructions="Say the sky.", model="tiny-llama", output_type=Forecast,
                            model_settings=settings)

    async def run() -> tuple[list[str], list[str]]:
        provider = OpenAIProvider(openai_client=openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused",
                                                                    max_retries=0))
        config = agents.RunConfig(model_provider=provider, tracing_disabled=True)
        called = await agents.Runner.run(caller, "Weather in Paris?", max_turns=2, run_config=config)
        assert called.final_output == "sunny" and len(calls) == 1
        items = called.to_input_list()
        assert [item.get("type") for item in items][-2:] == ["function_call", "function_call_output"]
        answered = await agents.Runner.run(answerer, [*items, {"role": "user", "content": "So?"}], max_turns=1,
                                           run_config=config)
        assert isinstance(answered.final_output, Forecast)
        kinds = []
        for agent, prompt in ((caller, "Weather?"), (answerer, [*items, {"role": "user", "content": "And?"}])):
            run = agents.Runner.run_streamed(agent, prompt, max_turns=2, run_config=config)  # type: ignore[arg-type]
            kinds.append([event.data.type async for event in run.stream_events() if event.type == "raw_response_event"])
            assert run.final_output == "sunny" if agent is caller else isinstance(run.final_output, Forecast)
        return kinds[0], kinds[1]

    call_kinds, answer_kinds = asyncio.run(run())
    assert len(calls) == 2 and "response.function_call_arguments.done" in call_kinds
    assert "response.output_text.delta" in answer_kinds and answer_kinds[-1] == "response.completed"


def test_langchain_with_use_responses_api_invokes_streams_and_calls_tools(url: str) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="tiny-llama", max_retries=0,  # type: ignore[arg-type]
                       use_responses_api=True, max_completion_tokens=100, temperature=0)
    answer = model.invoke("Hello")
    assert isinstance(answer.text, str) and answer.text
    streamed = "".join(chunk.text for chunk in model.stream("Hello"))
    assert streamed == answer.text
    called = model.bind_tools([WEATHER], tool_choice="any").invoke("Weather in Paris?")
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather"
