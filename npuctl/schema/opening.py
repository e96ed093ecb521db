"""Reading a manifest file's bytes without trusting what its name leads to.

Links are resolved first. Inside a folder being read, a link must lead to a file inside that folder: a link
out is refused unread, so no file elsewhere (a root-only one, say) is ever quoted back in an error. Only a
regular file is opened: a FIFO blocks in open() itself and a device never ends, so the type is checked on
the resolved path before opening, the open is non-blocking where the platform has that (a FIFO swapped in
between cannot hang it), and the open file is checked again. The size cap counts the bytes read, never the
size `stat` reports (/dev/zero and /proc files report 0)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_CHUNK = 1 << 16
# Windows has neither flag and no FIFOs in the file system; O_BINARY exists only there.
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


class Unreadable(Exception):
    """Why a manifest file was not read, in words that quote nothing of its contents."""


def read_capped(file: Path, limit: int, within: Path | None = None) -> bytes:
    """The bytes of `file`, at most `limit` of them. With `within`, `file` must resolve inside that folder.
    Raises Unreadable saying why not."""
    target = _resolve(file)
    if within is not None and not target.is_relative_to(_resolve(within)):
        raise Unreadable(f"a link out of the manifest folder {within}: links are followed only to files inside "
                         "it, so this one is not read")
    try:
        kind = _kind(os.stat(target).st_mode)
        if kind:
            raise Unreadable(f"not a regular file ({kind}{' behind a link' if file.is_symlink() else ''}); "
                             "manifests are regular files")
        fd = os.open(target, _FLAGS)
    except OSError as exc:
        raise Unreadable(_why(exc)) from None
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind:  # replaced between the check and the open
            raise Unreadable(f"not a regular file ({kind}); manifests are regular files")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # whole chunks: some /proc files refuse reads of odd sizes; one chunk past the cap
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise Unreadable(f"more than {limit} bytes; manifests are limited to {limit} bytes")
    except OSError as exc:
        raise Unreadable(_why(exc)) from None
    finally:
        os.close(fd)


def _resolve(path: Path) -> Path:
    try:
        return path.resolve(strict=True)
    except RuntimeError:  # Python before 3.13 reports a loop so
        raise Unreadable("a loop of symbolic links") from None
    except FileNotFoundError:
        raise Unreadable("a symbolic link that leads nowhere" if path.is_symlink() else "no such file") from None
    except OSError as exc:
        raise Unreadable(_why(exc)) from None


def _kind(mode: int) -> str:
    """What a file that is not regular is, or '' for a regular file."""
    if stat.S_ISREG(mode):
        return ""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a loop of symbolic links, or a link where a file was checked"
    return f"cannot read: {exc.strerror or exc}"
