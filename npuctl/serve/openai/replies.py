"""OpenAI's response objects for one chat or text completion, whole or as stream chunks: text or tool calls,
log probabilities in the chat or the legacy completions form, and the prompt echoed when asked."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from npuctl.serve.generation.logprobs import Decode, token_entry
from npuctl.serve.generation.queue import Generation, Piece
from npuctl.serve.generation.structured import Structure
from npuctl.serve.http.sse import DONE

TOOL_CALLS = "tool_calls"


@dataclass(frozen=True)
class Shape:
    """What the request asked the answer to carry besides its text."""

    structure: Structure = Structure()
    logprobs: bool = False
    echo: str = ""
    """The prompt, to put before the answer (completions' `echo`)."""


class Reply:
    def __init__(self, model: str, chat: bool, prompt_tokens: int, shape: Shape, decode: Decode) -> None:
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.model = model
        self.chat = chat
        self.created = int(time.time())
        self.prompt_tokens = prompt_tokens
        self.shape = shape
        self._decode = decode
        self._chunk_head = self._object(True)
        """What every stream chunk begins with (built once: a chunk per token is on the hot path)."""
        self._offset = len(shape.echo)
        """Completions' text_offset: where the next token's text starts in the answer."""

    def whole(self, piece: Piece, generation: Generation) -> dict[str, Any]:
        reason = generation.finish_reason
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": self._logprobs(piece)}
        if self.chat:
            calls = self.shape.structure.tool_calls(piece.text)
            cut = self.shape.structure.cut_call(piece.text)  # no call and no text: finish_reason says length
            message = {"role": "assistant", "content": None, "tool_calls": calls} if calls else \
                {"role": "assistant", "content": None if cut else piece.text}
            choice |= {"message": message, "finish_reason": TOOL_CALLS if calls else reason}
        else:
            choice["text"] = self.shape.echo + piece.text
        return self._object(False) | {"choices": [choice], "usage": self._usage(generation)}

    async def events(self, generation: Generation, include_usage: bool) -> AsyncIterator[dict[str, Any] | str]:
        usage: dict[str, Any] = {"usage": None} if include_usage else {}
        reason: str | None = None
        if self.chat:
            yield self._chunk({"role": "assistant", "content": ""}, None) | usage
        elif self.shape.echo:
            yield self._chunk(self.shape.echo, None) | usage
        try:
            chunks = generation.chunks()
            async for piece in chunks:
                if self.chat and self.shape.structure.may_call and piece.text.startswith("{"):
                    # A tool call is sent whole, once it is complete (its arguments must parse).
                    call = await rest(piece, chunks)
                    calls = self.shape.structure.tool_calls(call.text)
                    if calls:
                        delta = {TOOL_CALLS: [{"index": 0} | c for c in calls]}
                        yield self._chunk(delta, None, self._logprobs(call)) | usage
                        reason = TOOL_CALLS
                        break
                    if self.shape.structure.cut_call(call.text):
                        break  # a call cut short is no answer text; the last chunk says length
                    piece = call
                text = piece.text
                yield self._chunk({"content": text} if self.chat else text, None, self._logprobs(piece)) | usage
        except Exception as exc:  # headers are sent: the error goes in the stream, as OpenAI does
            yield {"error": {"message": f"generation failed: {exc}", "type": "server_error", "param": None,
                             "code": None}}
            return
        yield self._chunk({} if self.chat else "", reason or generation.finish_reason) | usage
        if include_usage:
            yield self._object(True) | {"choices": [], "usage": self._usage(generation)}
        yield DONE

    def _chunk(self, delta: dict[str, Any] | str, reason: str | None,
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        choice = {"index": 0, "finish_reason": reason, "logprobs": logprobs, "delta" if self.chat else "text": delta}
        return {**self._chunk_head, "choices": [choice]}

    def _logprobs(self, piece: Piece) -> dict[str, Any] | None:
        if not self.shape.logprobs:
            return None
        if self.chat:
            return {"content": [token_entry(step, self._decode) for step in piece.steps], "refusal": None}
        tokens = [self._decode([step.token]) for step in piece.steps]
        offsets = []
        for token in tokens:
            offsets.append(self._offset)
            self._offset += len(token)
        return {"tokens": tokens, "token_logprobs": [step.logprob for step in piece.steps],
                "top_logprobs": [{self._decode([t]): lp for t, lp in step.top} for step in piece.steps],
                "text_offset": offsets}

    def _object(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _usage(self, generation: Generation) -> dict[str, int]:
        done = generation.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done, "total_tokens": self.prompt_tokens + done}


async def rest(first: Piece, chunks: AsyncIterator[Piece]) -> Piece:
    """`first` and every piece after it, as one."""
    text, steps = [first.text], list(first.steps)
    async for piece in chunks:
        text.append(piece.text)
        steps.extend(piece.steps)
    return Piece("".join(text), tuple(steps))
