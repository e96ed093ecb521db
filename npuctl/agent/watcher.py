"""Wakes the reconcile loop when manifest files change. Events only wake it; what changed is read
again from disk, so lost, doubled or reordered events cannot put the agent in a wrong state."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from npuctl.schema.loader import MANIFEST_SUFFIXES


def is_manifest_path(path: str | Path) -> bool:
    """A YAML file that is not an editor's swap, backup or temp file (`.x.swp`, `x~`, `.#x`, `x.tmp`)."""
    name = Path(path).name
    return name.endswith(MANIFEST_SUFFIXES) and not name.startswith((".", "~", "#"))


class _Handler(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        # An editor's atomic save renames a temp file onto the manifest: dest_path is what matters.
        if event.is_directory or any(p and is_manifest_path(str(p)) for p in paths):
            self.wake()


class _FolderHandler(FileSystemEventHandler):
    """On a folder's parent: wakes when one of the manifest folders appears there (made, or moved in)."""

    def __init__(self, folders: list[Path], wake: Callable[[], None]) -> None:
        self.folders = {str(folder) for folder in folders}
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if event.is_directory and paths & self.folders:
            self.wake()


class ManifestWatcher:
    """watchdog observers on the manifest folders. `rearm()` re-watches folders that were deleted and
    made again (their old watch is dead); the loop calls it at every pass, and a watch on each folder's
    parent wakes the loop as soon as a folder is made again."""

    def __init__(self, folders: list[Path], wake: Callable[[], None]) -> None:
        self.folders = folders
        self.handler = _Handler(wake)
        self.observer: BaseObserver = Observer()
        self.watches: dict[Path, tuple[ObservedWatch, int]] = {}
        self._parents = _FolderHandler([folder.absolute() for folder in folders], wake)

    def start(self) -> None:
        self.rearm()
        for parent in sorted({folder.absolute().parent for folder in self.folders}):
            if parent.is_dir():
                self.observer.schedule(self._parents, str(parent), recursive=False)
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)

    def rearm(self) -> None:
        for folder in self.folders:
            identity = _identity(folder)
            watched = self.watches.get(folder)
            if watched and watched[1] == identity:
                continue
            if watched:
                self.observer.unschedule(watched[0])
                del self.watches[folder]
            if identity:
                self.watches[folder] = (self.observer.schedule(self.handler, str(folder), recursive=True), identity)


def _identity(folder: Path) -> int:
    """Changes when the folder is deleted and created again (0 when it does not exist)."""
    try:
        stat = folder.stat()
    except OSError:
        return 0
    return hash((stat.st_ino, stat.st_dev)) or 1
