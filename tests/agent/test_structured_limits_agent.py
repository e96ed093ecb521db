"""Structured-output schemas that ask the grammar compiler for too much, on a real
agent serving the tiny random-weight Llama: at every entry point (OpenAI `response_format` and `tools`, Ollama's
`format` on /api/chat and /api/generate) they are 400s naming the place in the schema and the limit, while
`/v2/health/live` answers within 1 s throughout and the agent's memory stays within a stated bound (the memory
guard); deep ones log nothing, so the log cannot grow faster than the requests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from npuctl.serve.generation.schema_bounds import MAX_SCHEMA_COST
from tests.agent.harness import Agent
from tests.manifests import write_deployment

MODEL = "chat"
LIMIT = f"at most {MAX_SCHEMA_COST:,}"
RSS_GROWTH_BOUND = 200 << 20
"""The memory guard: the agent's RSS may grow this much over its RSS before the hostile requests (before the
fix, minItems 10^7 took it up by 1.4 GB and 10^8 by 14 GB)."""
HEALTH_SECONDS = 1.0
"""`/v2/health/live` answers within this, every time, while the hostile requests run (the issue's figure)."""


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def ref_chain(length: int) -> dict[str, Any]:
    """`$ref` to `$ref` ... `length` times: 3,000 crashed the compiler (a native stack overflow)."""
    defs: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(length)}
    defs[f"d{length}"] = {"type": "string"}
    return {"$ref": "#/$defs/d0", "$defs": defs}


HUGE: dict[str, tuple[dict[str, Any], str, str]] = {
    # name -> (schema, the place under the schema the 400 names, what it says)
    "minItems 10^8": ({"type": "array", "items": {"type": "integer"}, "minItems": 10**8},
                      "minItems", f"is 100,000,000; structured output allows {LIMIT}"),
    "maxItems 10^6": ({"type": "array", "maxItems": 10**6}, "maxItems", LIMIT),
    "nested minItems 1000^3": ({"type": "array", "minItems": 1000, "items": {"type": "array", "minItems": 1000,
                                "items": {"type": "array", "minItems": 1000}}}, "items", LIMIT),
    "ten arrays of maxItems 5,000": ({"type": "object", "required": [f"p{i}" for i in range(10)],
                                      "properties": {f"p{i}": {"type": "array", "maxItems": 5_000}
                                                      for i in range(10)}}, "properties.p", LIMIT),
    "minLength 10^9": ({"type": "string", "minLength": 10**9}, "minLength", "at most 1,000,000"),
    "pattern (a{1000}){1000}": ({"type": "string", "pattern": "^(a{1000}){1000}$"}, "pattern", "at most 10,000"),
    "5,000 optional properties": ({"type": "object", "properties": {f"p{i}": {"type": "integer"}
                                                                    for i in range(5000)}}, "", LIMIT),
}
DEEP: dict[str, tuple[dict[str, Any], str]] = {
    "250 levels": (nested(250), "is nested 65 levels deep"),
    "a chain of 3,000 $refs": (ref_chain(3000), "is nested 65 levels deep"),
}


def entry_points(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(path, body, where the schema sits in it) for each structured-output entry point."""
    chat = [{"role": "user", "content": "Describe a city."}]
    return [
        ("/v1/chat/completions", {"model": MODEL, "messages": chat, "max_tokens": 4, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
         "response_format.json_schema.schema"),
        ("/v1/chat/completions", {"model": MODEL, "messages": chat, "max_tokens": 4, "tool_choice": "required",
                                  "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]},
         "tools[0].function.parameters"),
        ("/api/chat", {"model": MODEL, "messages": chat, "stream": False, "options": {"num_predict": 4},
                       "format": schema}, "format"),
        ("/api/generate", {"model": MODEL, "prompt": "Describe a city.", "stream": False,
                           "options": {"num_predict": 4}, "format": schema}, "format"),
    ]


def error_text(response: httpx.Response) -> str:
    error = response.json()["error"]
    return error["message"] if isinstance(error, dict) else str(error)


@pytest.fixture(scope="module")
def chat_agent(tmp_path_factory: pytest.TempPathFactory, tiny_llama_source: Path) -> Iterator[Agent]:
    root = tmp_path_factory.mktemp("structured-agent")
    agent = Agent(root, root / "cache")
    write_deployment(agent.manifests, MODEL, {
        "model": {"source": f"file:{tiny_llama_source}", "task": "text-generation", "format": "transformers"},
        "precision": "fp32", "runtime": {"device": "cpu"}})
    agent.start()
    agent.wait_phase(MODEL, "Ready", timeout=300)
    yield agent
    agent.stop()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Guard:
    """While it runs: the agent's RSS sampled every 50 ms (the agent is killed past the bound, so a failing run
    does not take the host down), and `/v2/health/live` asked every 100 ms with a 1 s deadline."""

    def __init__(self, agent: Agent) -> None:
        assert agent.process is not None
        self.agent = agent
        self.pid = agent.process.pid
        self.baseline = rss(self.pid)
        self.peak = self.baseline
        self.slow_health: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._memory), threading.Thread(target=self._health)]

    @property
    def bound(self) -> int:
        return self.baseline + RSS_GROWTH_BOUND

    def __enter__(self) -> Guard:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _memory(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, AssertionError):
                return  # the process is gone
            if self.peak > self.bound and self.agent.process is not None:
                self.agent.process.kill()
                return

    def _health(self) -> None:
        with httpx.Client(timeout=HEALTH_SECONDS) as client:
            # Asked at once and then every 0.1 s: the hostile requests may all be answered within 0.1 s.
            while True:
                started = time.monotonic()
                try:
                    status = str(client.get(f"{self.agent.url}/v2/health/live").status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.polls += 1
                took = time.monotonic() - started
                if status != "200" or took > HEALTH_SECONDS:
                    self.slow_health.append(f"{status} after {took:.2f} s")
                if self._stop.wait(0.1):
                    return


@pytest.fixture
def guarded(chat_agent: Agent) -> Callable[[], Guard]:
    if not Path("/proc/self/status").exists():
        pytest.skip("the memory guard reads /proc")
    return lambda: Guard(chat_agent)


def test_huge_sizes_are_400s_naming_the_place_and_the_limit_with_health_and_memory_guarded(
        chat_agent: Agent, guarded: Callable[[], Guard]) -> None:
    answers: list[tuple[str, str, int, str]] = []
    with guarded() as guard, httpx.Client(base_url=chat_agent.url, timeout=120) as client:
        for name, (schema, key, says) in HUGE.items():
            for path, body, where in entry_points(schema):
                response = client.post(path, json=body)
                answers.append((name, path, response.status_code, error_text(response)))
                assert response.status_code == 400, (name, path, response.text[:500])
                assert error_text(response).startswith(f"{where}.{key}" if key else where), (name, path)
                assert says in error_text(response), (name, path, error_text(response))
    assert guard.peak <= guard.bound, f"RSS {guard.baseline >> 20} -> {guard.peak >> 20} MiB"
    assert guard.polls and not guard.slow_health, guard.slow_health
    print(f"\n{len(answers)} hostile requests: RSS {guard.baseline >> 20} -> peak {guard.peak >> 20} MiB "
          f"(bound {guard.bound >> 20} MiB); {guard.polls} health polls, all within {HEALTH_SECONDS:g} s")


def test_a_schema_within_the_bounds_still_shapes_the_answer_at_every_entry_point(chat_agent: Agent) -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "minItems": 2, "maxItems": 3,
                                                        "items": {"type": "string", "maxLength": 4}}},
              "required": ["tags"]}
    with httpx.Client(base_url=chat_agent.url, timeout=120) as client:
        for path, body, _ in entry_points(schema):
            body = body | ({"max_tokens": 60} if path.startswith("/v1") else {"options": {"num_predict": 60}})
            response = client.post(path, json=body)
            assert response.status_code == 200, (path, response.text[:500])


def test_deep_schemas_are_400s_and_the_log_grows_slower_than_the_requests(chat_agent: Agent,
                                                                          guarded: Callable[[], Guard]) -> None:
    logged = chat_agent.log.stat().st_size
    sent = 0
    with guarded() as guard, httpx.Client(base_url=chat_agent.url, timeout=120) as client:
        for _ in range(5):
            for name, (schema, says) in DEEP.items():
                for path, body, where in entry_points(schema):
                    raw = json.dumps(body).encode()
                    sent += len(raw)
                    response = client.post(path, content=raw, headers={"Content-Type": "application/json"})
                    assert response.status_code == 400, (name, path, response.text[:500])
                    assert error_text(response).startswith(where) and says in error_text(response), (name, path)
    grown = chat_agent.log.stat().st_size - logged
    assert grown < sent, f"the log grew {grown:,} bytes for {sent:,} bytes of requests"
    assert guard.peak <= guard.bound and not guard.slow_health, (guard.peak >> 20, guard.slow_health)
    assert chat_agent.process is not None and chat_agent.process.poll() is None, "the agent is still running"
