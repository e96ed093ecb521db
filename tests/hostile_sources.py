"""Sources a hostile or careless manifest may name (issue 26): FIFOs, devices, links and paths out of the
folders allowed, `pkg:` with `..`; and a secret beside them that no error may reveal."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.agent.harness import tiny_model

SECRET = b"TOPSECRET-7f3a9 root:x:0:0\n"
SECRET_DIGEST = hashlib.sha256(SECRET).hexdigest()
CANARY = "listing-canary-9d1e.onnx"
"""A file beside the secret: an error that lists the outside folder would name it."""
HANG_SECONDS = 60
"""Far above what resolving a refused source takes (milliseconds): past it, the read blocked."""

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
needs_links = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")


def layout(root: Path) -> tuple[Path, Path]:
    """(the manifest folder, an outside folder holding a secret file and a canary)."""
    folder, outside = root / "manifests", root / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.onnx").write_bytes(SECRET)
    (outside / CANARY).write_bytes(b"x")
    tiny_model(folder / "tiny.onnx")
    return folder, outside


def hostile_source(kind: str, folder: Path, outside: Path) -> str:
    """The source URI of one hostile kind, after creating what it points at."""
    if kind == "fifo":
        os.mkfifo(folder / "pipe.onnx")
        return "file:pipe.onnx"
    if kind == "dev-zero":
        (folder / "zero.onnx").symlink_to("/dev/zero")
        return "file:zero.onnx"
    if kind == "dangling-out":
        (folder / "gone.onnx").symlink_to(outside / "nothing.onnx")
        return "file:gone.onnx"
    if kind == "link-out":
        (folder / "peek.onnx").symlink_to(outside / "secret.onnx")
        return "file:peek.onnx"
    if kind == "dotdot":
        return "file:../outside/secret.onnx"
    if kind == "absolute":
        return f"file:{outside / 'secret.onnx'}"
    if kind == "absolute-folder":
        return f"file:{outside}"
    if kind == "folder-with-fifo":
        (folder / "model").mkdir()
        tiny_model(folder / "model" / "model.onnx")
        os.mkfifo(folder / "model" / "extra.onnx")
        return "file:model"
    if kind == "folder-with-link-out":
        (folder / "model").mkdir()
        tiny_model(folder / "model" / "model.onnx")
        (folder / "model" / "config.json").symlink_to(outside / "secret.onnx")
        return "file:model"
    if kind == "pkg-dotdot":
        return "pkg:npuctl/" + "../" * 20 + str(outside / "secret.onnx").lstrip("/")
    raise AssertionError(kind)
