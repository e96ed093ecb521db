"""The control API's bearer token: made once into the state folder, readable by its owner only."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"


def ensure_token(state: Path) -> str:
    """The agent's token, created at first start. Owner-only permissions (POSIX mode; on Windows the
    user's profile folder already restricts it)."""
    path = state / TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    state.mkdir(parents=True, exist_ok=True)
    _owner_only(state, 0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token)
    os.replace(tmp, path)
    _owner_only(path, 0o600)
    return token


def read_token(state: Path) -> str | None:
    try:
        return (state / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def token_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _owner_only(path: Path, mode: int) -> None:
    try:
        path.chmod(mode)
    except OSError:
        pass  # file systems without POSIX modes (FAT, some network shares)
