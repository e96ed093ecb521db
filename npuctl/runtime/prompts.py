"""Prompts of a text-generation model: chat messages through the model's own chat template (rendered the way
transformers renders it: sandboxed Jinja2), then token ids from its tokenizer.json."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from npuctl.errors import NpuctlError

CHAT_TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER = "tokenizer.json"


class PromptError(NpuctlError, ValueError):
    """The messages can't be made into a prompt (the template raised, or there is no template)."""


class PromptTokenizer:
    """The model folder's tokenizer and chat template."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        config = _json(folder / TOKENIZER_CONFIG)
        template_file = folder / CHAT_TEMPLATE_FILE
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else config.get("chat_template")
        # Some tokenizer configs carry several named templates; "default" is the chat one.
        if isinstance(template, list):
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        self.template = template if isinstance(template, str) else None
        """The chat template's text (Jinja, as transformers renders it); None without one."""
        self._render = _compile(template) if isinstance(template, str) else None
        self._specials = {key: _token_text(config.get(key)) for key in
                          ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(key) is not None}

    @property
    def has_chat_template(self) -> bool:
        return self._render is not None

    def chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> list[int]:
        """Token ids of the rendered conversation, ending with the assistant's turn opened. The template
        writes the special tokens itself, so the tokenizer adds none (as transformers' apply_chat_template).
        `tools`: the functions offered (OpenAI's `tools` entries), for templates that describe them."""
        if self._render is None:
            raise PromptError("this model has no chat template (chat_template.jinja or tokenizer_config.json's "
                              "chat_template): use /v1/completions with a plain prompt")
        try:
            extra = {"tools": list(tools)} if tools else {}
            text = self._render(messages=list(messages), add_generation_prompt=True, **extra, **self._specials)
        except Exception as exc:  # a template's raise_exception(), or any error rendering user content
            raise PromptError(f"the chat template refused these messages: {exc}") from exc
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def plain(self, prompt: str) -> list[int]:
        """Token ids of a plain prompt, with the special tokens the tokenizer adds (BOS for most models)."""
        return self.tokenizer.encode(prompt).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def detokenizer(self) -> Callable[[int], str | None]:
        """An incremental decoder for one answer (tokenizers' DecodeStream: one short step per token, where
        decoding a window of tokens twice per token cost 5 µs)."""
        stream = DecodeStream(skip_special_tokens=True)
        return lambda token: stream.step(self.tokenizer, token)


def _compile(template: str) -> Callable[..., str]:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    # The same environment settings and helpers as transformers' chat template renderer.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str:
    # tokenizer_config.json writes special tokens as strings or as AddedToken dicts.
    return str(value.get("content", "")) if isinstance(value, dict) else str(value)
