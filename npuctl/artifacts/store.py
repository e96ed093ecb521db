"""The artifact store: one folder per step key, written atomically, trusted only while its files match their sha256.

Layout under the root: `steps/<key>/` (the step's files + `record.json`, with the step's facts under `details`:
npuctl.artifacts.facts), `tmp/` (work in progress, renamed into `steps/` when complete), `locks/<key>.lock` (one
builder per key, across processes), `genai-views/` (hard-linked host views of decoder-pipeline packs, made when
one is served: npuctl.runtime.genai_pack.host_view).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from filelock import FileLock, Timeout

from npuctl.artifacts import facts

CACHE_ENV = "NPUCTL_CACHE"
RECORD = "record.json"
_CHUNK = 1 << 20
_OWN_KEYS = ("step", "key", "inputs", "parameters", "tool_versions", "files", "created", "seconds")
"""A record's own keys; its step's facts are under `details`."""
F = TypeVar("F", bound=facts.Facts, covariant=True)
"""Covariant because a record is read-only: a record of compile facts is a record of facts (what publishing takes)."""
G = TypeVar("G", bound=facts.Facts)


def default_root() -> Path:
    """`$NPUCTL_CACHE`, else `<user data dir>/npuctl/store`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("npuctl", appauthor=False)) / "store"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredFile:
    path: str
    """Relative to the step folder, with '/' separators."""
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Record(Generic[F]):
    """What `record.json` says about one completed step."""

    step: str
    key: str
    inputs: dict[str, str]
    """Input name -> digest of what the step read."""
    parameters: dict[str, Any]
    tool_versions: dict[str, str]
    files: tuple[StoredFile, ...]
    created: str
    seconds: float
    """How long the step took when it ran."""
    details: F
    """What the step recorded about its output (npuctl.artifacts.facts)."""
    folder: Path

    def path(self, name: str) -> Path:
        return self.folder / name

    @property
    def digest(self) -> str:
        """Digest of the step's outputs: what downstream keys are computed from."""
        blob = json.dumps(sorted((f.path, f.sha256) for f in self.files)).encode()
        return hashlib.sha256(blob).hexdigest()

    def for_storage(self) -> dict[str, Any]:
        return {
            "step": self.step, "key": self.key, "inputs": self.inputs, "parameters": self.parameters,
            "tool_versions": self.tool_versions, "files": [f.as_dict() for f in self.files],
            "created": self.created, "seconds": self.seconds, "details": self.details.model_dump(mode="json"),
        }

    @staticmethod
    def from_storage(data: dict[str, Any], folder: Path) -> Record[facts.AnyFacts]:
        """Raises ValueError, KeyError or TypeError when `data` is not a record."""
        if "details" in data:
            details = facts.parse(data["details"])
        else:
            details = facts.from_flat(data["step"], {k: v for k, v in data.items() if k not in _OWN_KEYS})
        if details.step != data["step"]:
            raise ValueError(f"a {data['step']} step with the facts of {details.kind}")
        return Record(
            step=data["step"], key=data["key"], inputs=data["inputs"], parameters=data["parameters"],
            tool_versions=data["tool_versions"],
            files=tuple(StoredFile(f["path"], f["sha256"], f["size"]) for f in data["files"]),
            created=data["created"], seconds=data["seconds"], details=details, folder=folder,
        )

    def narrowed(self, kind: type[G]) -> Record[G] | None:
        """This record, typed by its facts, when they are `kind`'s; None when they are another step's."""
        if not isinstance(self.details, kind):
            return None
        return Record(self.step, self.key, self.inputs, self.parameters, self.tool_versions, self.files, self.created,
                      self.seconds, self.details, self.folder)


@dataclass(frozen=True)
class Problem:
    """A stored step that failed verification."""

    key: str
    step: str | None
    message: str


class Store:
    """A cache directory of step outputs, safe for several processes at once."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.steps_dir = self.root / "steps"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.views_dir = self.root / "genai-views"
        # Hashes this process already checked, by (path, size, mtime): a cached build re-reads nothing twice.
        self._checked: dict[tuple[str, int, int], str] = {}

    def get(self, key: str) -> Record[facts.AnyFacts] | None:
        """The record of `key`, or None when missing, unreadable, or any file fails its sha256."""
        record = self._read(key)
        if record is None or self._bad_file(record) is not None:
            return None
        return record

    @contextmanager
    def lock(self, key: str, timeout: float = -1) -> Iterator[None]:
        """Hold the cross-process lock of `key` (OS-level, so a killed holder releases it)."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks_dir / f"{key}.lock"), timeout=timeout):
            yield

    def new_workdir(self, key: str) -> Path:
        """An empty folder to build `key` in; invisible to readers until `commit`."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        workdir = self.tmp_dir / f"{key}.{uuid.uuid4().hex[:12]}"
        workdir.mkdir()
        return workdir

    def commit(
        self,
        workdir: Path,
        *,
        key: str,
        inputs: dict[str, str],
        parameters: dict[str, Any],
        tool_versions: dict[str, str],
        seconds: float,
        details: G,
    ) -> Record[G]:
        """Hash the files in `workdir`, write its record, and rename it to `steps/<key>`. Call under `lock(key)`."""
        files = tuple(
            StoredFile(p.relative_to(workdir).as_posix(), sha256_file(p), p.stat().st_size)
            for p in sorted(workdir.rglob("*")) if p.is_file() and p.name != RECORD
        )
        created = datetime.now(UTC).isoformat(timespec="seconds")
        record = Record(details.step, key, inputs, parameters, tool_versions, files, created, round(seconds, 3), details,
                        self.steps_dir / key)
        (workdir / RECORD).write_text(json.dumps(record.for_storage(), indent=2), encoding="utf-8")
        self.steps_dir.mkdir(parents=True, exist_ok=True)
        if record.folder.exists():
            self._discard(record.folder)
        os.replace(workdir, record.folder)
        return record

    def records(self) -> list[Record[facts.AnyFacts]]:
        """Every readable record, unverified (cheap): for listings."""
        if not self.steps_dir.is_dir():
            return []
        return [r for key in sorted(p.name for p in self.steps_dir.iterdir()) if (r := self._read(key))]

    def verify(self, *, drop: bool = True) -> list[Problem]:
        """Re-hash every stored file; report (and by default remove) entries that don't match."""
        self._checked.clear()
        problems: list[Problem] = []
        if not self.steps_dir.is_dir():
            return problems
        for folder in sorted(self.steps_dir.iterdir()):
            record = self._read(folder.name)
            message = "record.json is missing or unreadable" if record is None else self._bad_file(record)
            if message is None:
                continue
            problems.append(Problem(folder.name, record.step if record else None, message))
            if drop:
                with self.lock(folder.name):
                    self._discard(folder)
        return problems

    def remove(self, key: str) -> None:
        with self.lock(key):
            if (self.steps_dir / key).exists():
                self._discard(self.steps_dir / key)

    def clean_tmp(self, max_age_seconds: float = 0) -> list[Path]:
        """Remove work folders left by builders that died, skipping any whose key is being built now."""
        removed: list[Path] = []
        if not self.tmp_dir.is_dir():
            return removed
        now = time.time()
        for work in sorted(self.tmp_dir.iterdir()):
            if now - work.stat().st_mtime < max_age_seconds:
                continue
            key = work.name.split(".", 1)[0]
            try:
                with self.lock(key, timeout=0):
                    shutil.rmtree(work, ignore_errors=True)
                    removed.append(work)
            except Timeout:
                continue
        return removed

    def size(self, record: Record[facts.Facts]) -> int:
        return sum(f.size for f in record.files)

    def _read(self, key: str) -> Record[facts.AnyFacts] | None:
        file = self.steps_dir / key / RECORD
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            record = Record.from_storage(data, file.parent)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if "details" not in data:
            _migrate(record, file)
        return record

    def _bad_file(self, record: Record[facts.Facts]) -> str | None:
        for stored in record.files:
            path = record.path(stored.path)
            try:
                stat = path.stat()
            except OSError:
                return f"{stored.path} is missing"
            if stat.st_size != stored.size:
                return f"{stored.path} is {stat.st_size} bytes, the record says {stored.size}"
            seen = (str(path), stat.st_size, stat.st_mtime_ns)
            if seen not in self._checked:
                self._checked[seen] = sha256_file(path)
            if self._checked[seen] != stored.sha256:
                return f"{stored.path} has sha256 {self._checked[seen][:12]}..., the record says {stored.sha256[:12]}..."
        return None

    def _discard(self, folder: Path) -> None:
        # Rename first so no reader ever sees a half-deleted entry, then delete at leisure.
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        trash = self.tmp_dir / f"{folder.name}.trash-{uuid.uuid4().hex[:8]}"
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _migrate(record: Record[facts.Facts], file: Path) -> None:
    """Rewrite a record of the flat format (facts beside its own keys) with its facts under `details`, once: the
    published copies of this step (`npuctl build --publish`) are then in the current format too."""
    temporary = file.with_name(f".{RECORD}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(json.dumps(record.for_storage(), indent=2), encoding="utf-8")
        os.replace(temporary, file)
    except OSError:
        pass  # read-only store, or a reader holding the file open on Windows: read as flat again next time
    finally:
        temporary.unlink(missing_ok=True)
