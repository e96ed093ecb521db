"""The desired state: every deployment declared in the watched folders, keeping the last good version
of a file that became invalid so that what is serving stays up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from npuctl.schema import LoadedDeployment, ManifestError, load_file
from npuctl.schema.loader import manifest_files


@dataclass(frozen=True)
class Desired:
    deployment: LoadedDeployment
    errors: tuple[ManifestError, ...] = ()
    """Errors of its file now; non-empty means `deployment` is the last good version, not the file's."""

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def valid(self) -> bool:
        return not self.errors


@dataclass
class DesiredState:
    """Reads the folders on every `refresh()`; remembers each file's last valid content."""

    folders: list[Path]
    last_good: dict[Path, list[LoadedDeployment]] = field(default_factory=dict)
    errors: list[ManifestError] = field(default_factory=list)
    """Every error of the last refresh, including files that never had a good version."""

    def refresh(self) -> dict[str, Desired]:
        desired: dict[str, Desired] = {}
        self.errors = []
        seen: set[Path] = set()
        for file in self._files():
            seen.add(file)
            result = load_file(file)
            if result.ok:
                self.last_good[file] = result.deployments
            self.errors.extend(result.errors)
            for loaded in self.last_good.get(file, []):
                self._add(desired, Desired(loaded, tuple(result.errors)))
        for gone in set(self.last_good) - seen:
            del self.last_good[gone]
        return desired

    def _add(self, desired: dict[str, Desired], item: Desired) -> None:
        first = desired.get(item.name)
        if first is None:
            desired[item.name] = item
            return
        line, column = item.deployment.positions.get(("metadata", "name"), (item.deployment.line, 1))
        self.errors.append(
            ManifestError(str(item.deployment.file), line, column, "metadata.name",
                          f"deployment {item.name!r} is already declared at {first.deployment.where(('metadata', 'name'))}")
        )

    def _files(self) -> list[Path]:
        files: list[Path] = []
        for folder in self.folders:
            try:
                files.extend(manifest_files(folder))
            except FileNotFoundError:
                continue  # a folder that is gone declares nothing; it may come back
        return files
