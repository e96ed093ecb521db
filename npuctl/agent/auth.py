"""The control API's bearer token: made once into the state folder, readable by its owner only.

At every start the token must be usable: an empty file gets a new token; a file that is binary, a folder,
or holds a token with spaces stops the start with the reason. On POSIX the token file must be owner-only
and so must the state folder: looser modes are tightened (with a warning), and if they
cannot be, the agent refuses to start. Windows has no such modes: the user's profile folder restricts it.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

TOKEN_FILE = "token"
_POSIX = os.name != "nt"

log = logging.getLogger("npuctl.agent")


class StateFolderError(ValueError):
    """The state folder or its token file cannot be used safely; the message says what to do."""


def ensure_token(state: Path) -> str:
    """The agent's token, created at first start (or when the file is empty), with safe permissions."""
    path = state / TOKEN_FILE
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        _tighten(state, 0o077, 0o700, "the state folder")
        if path.is_dir() or (path.exists() and not path.is_file()):
            raise StateFolderError(f"{path} is not a file: remove it, and a new token is made at the next start")
        if path.exists():
            token = _stored_token(path)
            if token:
                _tighten(path, 0o077, 0o600, "the token file")
                return token
            log.warning("%s was empty: a new token was written into it", path)
        return _new_token(path)
    except OSError as exc:
        raise StateFolderError(f"{exc.filename or state}: {exc.strerror or exc}") from exc


def read_token(state: Path) -> str | None:
    try:
        return (state / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, ValueError):
        return None


def token_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header. An empty token never matches."""
    scheme, _, given = (header or "").partition(" ")
    given = given.strip()
    return bool(token and given) and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _stored_token(path: Path) -> str:
    try:
        token = path.read_bytes().decode("ascii").strip()
    except UnicodeDecodeError:
        raise StateFolderError(f"{path} does not hold a token (it is not ASCII text): delete it, and a new token "
                               "is made at the next start") from None
    if any(not c.isprintable() or c.isspace() for c in token):
        raise StateFolderError(f"{path} holds a token with spaces or control characters: a bearer token is one "
                               "printable word; delete the file to have a new one made")
    return token


def _new_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token)
    os.replace(tmp, path)
    _tighten(path, 0o077, 0o600, "the token file")
    return token


def _tighten(path: Path, loose: int, mode: int, what: str) -> None:
    """Set `mode` if any `loose` bit is set; refuse when that is not possible (someone else's file)."""
    if not _POSIX:
        return
    current = stat.S_IMODE(path.stat().st_mode)
    if not current & loose:
        return
    try:
        path.chmod(mode)
    except OSError as exc:
        raise StateFolderError(f"{path}: {what} has mode {current:o} (others may read or change it), and it could "
                               f"not be set to {mode:o}: {exc.strerror}; fix its owner or permissions") from exc
    if stat.S_IMODE(path.stat().st_mode) & loose:
        # File systems without POSIX modes (FAT, some network shares) accept chmod and change nothing.
        raise StateFolderError(f"{path}: {what} has mode {current:o} (others may read or change it) and this file "
                               "system keeps it so; put the state folder (--state) on a file system with permissions")
    log.warning("%s had mode %o (others could read or change it); it is %o now", path, current, mode)
