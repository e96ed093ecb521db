"""Generated token ids to text, piece by piece: a piece is released only once it is final (no half of a UTF-8
character, no possible start of a stop string), so the pieces of a stream add up to the whole answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Detokenize = Callable[[int], "str | None"]
"""An incremental decoder for one answer: a token in, the text it completes out (None while a character is
unfinished). `PromptTokenizer.detokenizer()` makes one with the tokenizers library's DecodeStream."""


class TextStream:
    def __init__(self, detokenize: Detokenize, stop: Sequence[str] = ()) -> None:
        self._detokenize = detokenize
        self._stop = [s for s in stop if s]
        self._held = ""
        """Text not yet released. Released text never holds the start of a stop string, so only this is searched."""
        self.stopped = False
        """A stop string was generated; the text ends before it."""

    def push(self, token: int) -> str:
        """Add one generated token; return the text it releases (often '', never past a stop string)."""
        if self.stopped:
            return ""
        piece = self._detokenize(token)
        if not piece:
            return ""
        self._held += piece
        hits = [i for i in (self._held.find(s) for s in self._stop) if i >= 0]
        if hits:
            self._held = self._held[: min(hits)]
            self.stopped = True
        return self._release(self._held_back() if self._stop and not self.stopped else 0)

    def finish(self) -> str:
        """The rest: text held back as a possible stop string."""
        return self._release(0)

    def _release(self, keep: int) -> str:
        end = len(self._held) - keep
        piece, self._held = self._held[:end], self._held[end:]
        return piece

    def _held_back(self) -> int:
        """Length of the longest text end that could still grow into a stop string."""
        return max((k for s in self._stop for k in range(1, len(s)) if self._held.endswith(s[:k])), default=0)
