"""Publishing built steps to a shared artifact store that a fleet's agents fetch from instead of compiling.

The published layout (a folder: an SMB share, a synced folder, or the document root of any static web
server or object store bucket):

    npuctl-store.json              {"layout": 1}: marks the folder as a published store
    steps/<key>.json               a step's record, as the local store's record.json (key = hash of the
                                   step's inputs, parameters and tool versions; files listed with sha256)
    blobs/sha256/<hex>             file contents by digest (a file shared by several steps is stored once)
    builds/<deployment>/<id>.json  what `npuctl build -o json` said about a published build, with its step
                                   keys (for people and scripts; agents don't read it); its files named
                                   relative to the store's root (`steps/<key>/model_ctx.onnx`), local
                                   sources by their file name: no path of the publisher's machine

An agent computes the key of each step it needs exactly as the builder did, so it asks for
`steps/<key>.json` and the blobs it lists and never needs an index. Blobs are written before the record
that names them, each through a temporary name and a rename, so a reader never sees a record whose files
are missing or half written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npuctl.artifacts.facts import Facts
from npuctl.artifacts.result import BuildResult
from npuctl.artifacts.store import RECORD, Record, Store

LAYOUT_FILE = "npuctl-store.json"
LAYOUT_VERSION = 1
STEPS = "steps"
BLOBS = "blobs/sha256"
BUILDS = "builds"


@dataclass(frozen=True)
class Published:
    """What one `publish` call did."""

    steps: tuple[str, ...]
    """Keys of the steps published (new or already there)."""
    blobs_written: int
    bytes_written: int
    builds: tuple[Path, ...]
    """The build descriptions written under builds/."""


def publish(results: list[BuildResult], store: Store, dest: Path) -> Published:
    """Copy every stored step of `results` from `store` into the published store at `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    _write_json(dest / LAYOUT_FILE, {"layout": LAYOUT_VERSION})
    keys: list[str] = []
    written = size = 0
    builds = []
    for result in results:
        records = stored_records(result, store)
        for record in records:
            if record.key in keys:
                continue
            blobs, nbytes = _publish_record(record, dest)
            keys.append(record.key)
            written, size = written + blobs, size + nbytes
        builds.append(_describe(result, [r.key for r in records], dest, store.root))
    return Published(tuple(keys), written, size, tuple(builds))


def stored_records(result: BuildResult, store: Store) -> list[Record[Facts]]:
    """The records of a build's steps that are in the store (what a publisher pushes)."""
    return [r for r in (store.get(run.key) for run in result.steps) if r is not None]


def build_id(keys: list[str]) -> str:
    """Names a build by the steps it is made of: the same build published twice has the same id."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def _publish_record(record: Record[Facts], dest: Path) -> tuple[int, int]:
    written = size = 0
    for stored in record.files:
        blob = dest / BLOBS / stored.sha256
        if blob.is_file() and blob.stat().st_size == stored.size:
            continue
        _copy_atomic(record.path(stored.path), blob)
        written, size = written + 1, size + stored.size
    # The record goes last: once it is visible, every blob it names is complete.
    data = json.loads((record.folder / RECORD).read_text(encoding="utf-8"))
    _write_json(dest / STEPS / f"{record.key}.json", data)
    return written, size


def _describe(result: BuildResult, keys: list[str], dest: Path, store_root: Path) -> Path:
    path = dest / BUILDS / result.deployment / f"{build_id(keys)}.json"
    _write_json(path, {**_without_local_paths(result.as_dict(), store_root.resolve()), "steps": keys})
    return path


def _without_local_paths(value: Any, store_root: Path) -> Any:
    """The `npuctl build -o json` object with each local path made a name that means the same to a reader
    elsewhere: a stored file's path relative to the store's root, any other path (a `file:` source's) its
    file name. What the build is made of is in the digests and step keys beside them."""
    if isinstance(value, dict):
        return {key: _without_local_paths(item, store_root) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_local_paths(item, store_root) for item in value]
    if not isinstance(value, str):
        return value
    scheme, colon, rest = value.partition(":")
    if scheme == "file" and colon and Path(rest).expanduser().is_absolute():
        return f"file:{Path(rest).name}"
    if not Path(value).is_absolute():
        return value
    local = Path(value).resolve()
    return local.relative_to(store_root).as_posix() if local.is_relative_to(store_root) else local.name


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _write_json(target: Path, data: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
