"""A chat model's prompt as the model sees it: the model's own chat template (from chat_template.jinja, or the
"default" one of tokenizer_config.json's list), rendered with its special tokens and the tools offered, the
assistant's turn opened; a template that refuses, one that reaches outside its sandbox, and a model without
a template are errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from npuctl.runtime.prompts import PromptError, PromptTokenizer
from tests.runtime.byte_tokenizer import byte_tokenizer

TEMPLATE = ("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
            "{% if tools %}[tools: {{ tools | map(attribute='function.name') | join(',') }}]{% endif %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def rendered(folder: Path, messages: list[dict[str, str]], tools: list[dict[str, object]] | None = None) -> str:
    tokenizer = PromptTokenizer(folder)
    return tokenizer.tokenizer.decode(tokenizer.chat(messages, tools or []))


def test_the_template_file_renders_the_conversation_with_special_tokens_and_tools(tmp_path: Path) -> None:
    byte_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": {"content": "<s>", "lstrip": False}, "chat_template": "ignored: the file wins"}))
    (tmp_path / "chat_template.jinja").write_text(TEMPLATE)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo"}]
    assert rendered(tmp_path, messages) == "<s><system>Be brief.<user>héllo<assistant>"
    tools: list[dict[str, object]] = [{"type": "function", "function": {"name": "weather"}}]
    assert rendered(tmp_path, messages[1:], tools) == "<s><user>héllo[tools: weather]<assistant>"


def test_the_default_of_several_named_templates_is_the_chat_one(tmp_path: Path) -> None:
    byte_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "", "chat_template": [
        {"name": "tool_use", "template": "not this"}, {"name": "default", "template": TEMPLATE}]}))
    assert rendered(tmp_path, [{"role": "user", "content": "hi"}]) == "<user>hi<assistant>"


def test_a_model_without_a_template_says_to_use_plain_completions(tmp_path: Path) -> None:
    tokenizer = byte_tokenizer(tmp_path)
    assert not tokenizer.has_chat_template
    with pytest.raises(PromptError, match="/v1/completions"):
        tokenizer.chat([{"role": "user", "content": "hi"}])
    assert tokenizer.decode(tokenizer.plain("plain text")) == "plain text"


@pytest.mark.parametrize(("template", "says"), [
    ("{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}",
     "Conversations must start with the user"),
    ("{{ messages.__class__.__mro__[1].__subclasses__() }}", "refused these messages"),
])
def test_a_template_that_refuses_or_leaves_its_sandbox_is_a_prompt_error(tmp_path: Path, template: str,
                                                                          says: str) -> None:
    byte_tokenizer(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(template)
    with pytest.raises(PromptError, match=says):
        PromptTokenizer(tmp_path).chat([{"role": "assistant", "content": "hi"}])
