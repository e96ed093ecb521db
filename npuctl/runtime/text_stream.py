"""Generated token ids to text, piece by piece: a piece is released only once it is final (no half of a UTF-8
character, no possible start of a stop string), so the pieces of a stream add up to the whole answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]
_PARTIAL = "\ufffd"
"""What a tokenizer decodes an incomplete UTF-8 sequence to."""


class TextStream:
    def __init__(self, decode: Decode, stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._ids: list[int] = []
        # Decoding from a recent offset rather than from the start keeps each step short; text before the
        # offset is settled (tokenizers join pieces with context, hence one token of overlap).
        self._prefix = 0
        self._read = 0
        self._before: str | None = None
        self._text = ""
        self._sent = 0
        self.stopped = False
        """A stop string was generated; the text ends before it."""

    @property
    def text(self) -> str:
        """Everything released so far."""
        return self._text[: self._sent]

    def push(self, token: int) -> str:
        """Add one generated token; return the text it releases (often '', never past a stop string)."""
        if self.stopped:
            return ""
        self._ids.append(token)
        if self._before is None:  # the settled window's text only changes when the window moves
            self._before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(self._before) and not after.endswith(_PARTIAL):
            self._append(after[len(self._before) :])
            self._prefix, self._read, self._before = self._read, len(self._ids), None
        return self._release(final=False)

    def finish(self) -> str:
        """The rest: undecodable bytes left at the end, and text held back as a possible stop string."""
        if not self.stopped and self._read < len(self._ids):
            before = self._decode(self._ids[self._prefix : self._read])
            self._append(self._decode(self._ids[self._prefix :])[len(before) :])
            self._read = len(self._ids)
        return self._release(final=True)

    def _append(self, piece: str) -> None:
        start = max(0, len(self._text) - max((len(s) for s in self._stop), default=0))
        self._text += piece
        hits = [i for i in (self._text.find(s, start) for s in self._stop) if i >= 0]
        if hits:
            self._text = self._text[: min(hits)]
            self.stopped = True

    def _release(self, final: bool) -> str:
        end = len(self._text) if final or self.stopped else len(self._text) - self._held_back()
        piece = self._text[self._sent : end]
        self._sent = max(self._sent, end)
        return piece

    def _held_back(self) -> int:
        """Length of the longest text end that could still grow into a stop string."""
        return max((k for s in self._stop for k in range(1, len(s)) if self._text.endswith(s[:k])), default=0)
