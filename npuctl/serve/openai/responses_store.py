"""Answers of the Responses API kept for `previous_response_id`: in memory, for this process's life, the most recent
ones within a count and a size bound (the oldest go first)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

MAX_RESPONSES = 256
MAX_BYTES = 32 << 20
"""Text held in all, as JSON (a conversation is at most a context's worth of tokens, but 256 of them add up)."""


class ResponseStore:
    def __init__(self, max_responses: int = MAX_RESPONSES, max_bytes: int = MAX_BYTES) -> None:
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, tuple[list[dict[str, Any]], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, response_id: str, conversation: list[dict[str, Any]]) -> None:
        """Keep `conversation` (the messages up to and with the answer) under `response_id`; the oldest kept ones go
        while the bounds are passed. One larger than max_bytes alone is not kept."""
        size = len(json.dumps(conversation, ensure_ascii=False))
        with self._lock:
            if size > self.max_bytes:
                return
            self._kept[response_id] = (conversation, size)
            self._bytes += size
            while len(self._kept) > self.max_responses or self._bytes > self.max_bytes:
                _, (_, dropped) = self._kept.popitem(last=False)
                self._bytes -= dropped

    def conversation(self, response_id: str) -> list[dict[str, Any]] | None:
        with self._lock:
            kept = self._kept.get(response_id)
            return None if kept is None else list(kept[0])

    def __len__(self) -> int:
        return len(self._kept)
