"""OpenAI request fields npuctl cannot honour: each is a 400 naming it when set to anything but its "not set"
value, so a client never gets an answer that quietly ignored what it asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from npuctl.serve.http.errors import ApiError


@dataclass(frozen=True)
class Refused:
    why: str
    unset: tuple[Any, ...] = ()
    """Values that mean "not set" (besides null), which clients send by default."""

    def check(self, name: str, value: Any) -> None:
        """400 naming `name` when `value` is set to anything but null or a "not set" value."""
        if value is not None and not any(type(value) is type(u) and value == u for u in self.unset):
            raise ApiError(400, f"'{name}' is not supported: {self.why}", param=name)


TEXT_ONLY = "this server's models take and answer text only"
NO_STORE = "this server keeps no answers (store them on the client)"
REASONING = "this server's models do not reason before answering (no reasoning tokens to spend)"

CHAT = {
    "reasoning_effort": Refused(REASONING),
    "verbosity": Refused("the model's answer length is set by max_tokens alone"),
    "audio": Refused(TEXT_ONLY),
    "modalities": Refused(TEXT_ONLY, (["text"],)),
    "prediction": Refused("predicted outputs (speculative decoding) are not supported"),
    "web_search_options": Refused("this server does not search the web"),
    "functions": Refused("use 'tools' (the deprecated 'functions' is not supported)", ([],)),
    "function_call": Refused("use 'tool_choice' (the deprecated 'function_call' is not supported)", ("none",)),
    "service_tier": Refused("this server has one tier", ("auto", "default")),
    "store": Refused(NO_STORE, (False,)),
    "metadata": Refused("metadata is kept only with stored answers; " + NO_STORE, ({},)),
}
COMPLETIONS = {
    "best_of": Refused("only one completion is generated per request (best_of 1)", (1,)),
    "suffix": Refused("the model generates after the prompt only (no insertion)", ("",)),
}


def refuse(body: dict[str, Any], table: dict[str, Refused]) -> None:
    """400 naming the first field of `table` that `body` sets."""
    for name, refused in table.items():
        refused.check(name, body.get(name))
