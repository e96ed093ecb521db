"""The desired state: every deployment declared in the watched folders, keeping the last good version
of a file that became invalid so that what is serving stays up.

A changed file is read only once it has settled: unchanged (same mtime and size) for `settle_seconds`,
by its mtime's age or by how long this process has seen it so. Until then its previous content stays
declared (a new file declares nothing yet). A file written in several steps, seconds apart, is never
applied half-written, whether the half is invalid or valid but different. Files the agent wrote itself
(complete, through a rename: `apply`) are trusted at once.

`refresh()` runs in a worker thread (npuctl.agent.reconcile): what the event loop reads of it (`current`,
`settles_at`, `pending`) is replaced whole at the end, never changed in place, and `trust()` takes a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from npuctl.schema import LoadedDeployment, LoadResult, ManifestError, load_file
from npuctl.schema.clashes import Clash, clashes
from npuctl.schema.loader import manifest_files
from npuctl.schema.models import spec_digest
from npuctl.schema.status import PendingFile

SERVE_ONLY_FIELDS = ("name", "aliases", "apis", "max_batch", "batch_window_ms", "queue_limit", "timeout_seconds", "truncate",
                     "residency", "idle_seconds", "priority")
"""spec.serve fields applied in place: no rebuild, no reload."""


@dataclass(frozen=True)
class Keys:
    """What a change touches: artifacts (build), sessions (load), or only the serving options."""

    build: str
    load: str
    serve: str

    @classmethod
    def of(cls, loaded: LoadedDeployment) -> Keys:
        spec = loaded.deployment.spec.model_dump(mode="json", by_alias=False)
        serve = spec.pop("serve")
        serve_only = {k: serve.pop(k) for k in SERVE_ONLY_FIELDS}
        runtime, selector = spec.pop("runtime"), spec.pop("selector")
        # file: sources are relative to the manifest, so where it lives is part of what is built.
        build = spec_digest({"spec": spec, "base": str(loaded.file.parent.resolve())})
        del selector  # selection decides whether to deploy, not what
        return cls(build, spec_digest([build, runtime, serve]), spec_digest(serve_only))



@dataclass(frozen=True)
class Desired:
    deployment: LoadedDeployment
    errors: tuple[ManifestError, ...] = ()
    """Errors of its file now; non-empty means `deployment` is the last good version, not the file's."""
    conflict: Clash | None = None
    """A name it would be served under belongs to another deployment, which keeps it."""

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def valid(self) -> bool:
        return not self.errors

    @cached_property
    def keys(self) -> Keys:
        return Keys.of(self.deployment)

    @cached_property
    def generation(self) -> str:
        return self.deployment.deployment.generation()


@dataclass
class DesiredState:
    """Reads the folders on every `refresh()`; remembers each file's last valid content."""

    folders: list[Path]
    settle_seconds: float = 0.0
    clock: Callable[[], float] = time.monotonic
    last_good: dict[Path, list[LoadedDeployment]] = field(default_factory=dict)
    parsed: dict[Path, tuple[tuple[int, int], LoadResult]] = field(default_factory=dict)
    """Each file's last parse, by (mtime, size): an unchanged file is not parsed again."""
    current: dict[str, Desired] = field(default_factory=dict)
    errors: list[ManifestError] = field(default_factory=list)
    """Every error of the last refresh, including files that never had a good version."""
    duplicates: list[ManifestError] = field(default_factory=list)
    """The errors (among `errors`) of deployments whose metadata.name another file declared first."""
    changing: dict[Path, tuple[tuple[int, int], float]] = field(default_factory=dict)
    """Files changed since their last parse and not settled yet: their new stamp, and when it was first seen."""
    trusted: dict[Path, tuple[int, int]] = field(default_factory=dict)
    """Stamps of files the agent wrote whole itself."""
    settles_at: float | None = None
    """When the next changing file settles (this clock), if one is changing."""
    pending: tuple[PendingFile, ...] = ()
    """The files changing at the last refresh, and when each will be read."""
    read: bool = False
    """Whether a refresh has completed: before, nothing is known of what the folders declare."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def trust(self, file: Path) -> None:
        """`file` was just written whole (temp file + rename): read it at the next refresh, unsettled."""
        try:
            stat = file.stat()
        except OSError:
            return
        with self._lock:
            self.trusted[file] = (stat.st_mtime_ns, stat.st_size)

    def refresh(self) -> dict[str, Desired]:
        previous = {(id(d.deployment), d.errors, d.conflict and d.conflict.message): d for d in self.current.values()}
        self.errors, self.duplicates = [], []
        declared: list[tuple[LoadedDeployment, tuple[ManifestError, ...]]] = []
        seen: set[Path] = set()
        for file, folder in self._files():
            seen.add(file)
            result = self._load(file, folder)
            if result.ok:
                self.last_good[file] = result.deployments
            self.errors.extend(result.errors)
            declared += [(loaded, tuple(result.errors)) for loaded in self.last_good.get(file, [])]
        for gone in set(self.last_good) - seen:
            del self.last_good[gone]
        for gone in set(self.parsed) - seen:
            del self.parsed[gone]
        for gone in set(self.changing) - seen:
            del self.changing[gone]
        with self._lock:
            for gone in set(self.trusted) - seen:
                del self.trusted[gone]
        # A contested name stays with the deployment that held it on the last pass; newcomers lose,
        # in file order among themselves.
        held = {id(d.deployment) for d in self.current.values() if d.conflict is None}
        order = sorted(range(len(declared)), key=lambda i: id(declared[i][0]) not in held)
        lost = {id(clash.loaded): clash for clash in clashes(declared[i][0] for i in order)}
        desired: dict[str, Desired] = {}
        for loaded, errors in declared:
            clash = lost.get(id(loaded))
            if clash is not None and clash.duplicate:
                self.duplicates.append(clash.error())
                self.errors.append(clash.error())
                continue
            # The same object for an unchanged file: its keys and generation are computed once.
            desired[loaded.name] = previous.get((id(loaded), errors, clash and clash.message)) or Desired(
                loaded, errors, clash)
        self.current = desired
        self._note_pending()
        self.read = True
        return desired

    def _note_pending(self) -> None:
        """`settles_at` and `pending` from `changing`. A file is read when unchanged for settle_seconds by
        this process's clock or by its mtime, whichever comes first."""
        now, wall = self.clock(), time.time()
        due = {file: min(stamp[0] / 1e9 - wall, seen - now) + self.settle_seconds
               for file, (stamp, seen) in self.changing.items()}
        self.settles_at = now + min(due.values()) if due else None
        self.pending = tuple(PendingFile(file=str(file), applies_at=_rfc3339(wall + max(0.0, after)))
                             for file, after in sorted(due.items()))

    def file_errors(self) -> list[ManifestError]:
        """Errors no declared deployment shows (as Valid=False): files that declare nothing valid, and
        deployments that lost their name to another file."""
        shown = {error for want in self.current.values() for error in want.errors}
        return [error for error in self.errors if error not in shown]

    def _load(self, file: Path, folder: Path) -> LoadResult:
        try:
            stat = file.stat()
        except OSError:
            return load_file(file, folder)
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self.parsed.get(file)
        if cached and cached[0] == stamp:
            self.changing.pop(file, None)
            return cached[1]
        if not self._settled(file, stamp):
            return cached[1] if cached else LoadResult()
        self.changing.pop(file, None)
        result = load_file(file, folder)
        self.parsed[file] = (stamp, result)
        return result

    def _settled(self, file: Path, stamp: tuple[int, int]) -> bool:
        with self._lock:
            trusted = self.trusted.get(file) == stamp
        if trusted or self.settle_seconds <= 0:
            return True
        now = self.clock()
        changing = self.changing.get(file)
        if changing is None or changing[0] != stamp:
            changing = self.changing[file] = (stamp, now)
        age = time.time() - stamp[0] / 1e9  # mtime is wall-clock time
        return age >= self.settle_seconds or now - changing[1] >= self.settle_seconds

    def _files(self) -> list[tuple[Path, Path]]:
        """Each manifest file, with the folder it was found in (links may lead only inside that)."""
        files: list[tuple[Path, Path]] = []
        for folder in self.folders:
            try:
                files.extend((file, folder) for file in manifest_files(folder))
            except FileNotFoundError:
                continue  # a folder that is gone declares nothing; it may come back
        return files


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
