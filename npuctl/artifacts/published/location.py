"""Where a published artifact store is and what reading one promises: its location with options, the source
protocol every kind of store implements, and the error for a store that answered wrongly."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Protocol

from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic.alias_generators import to_camel

from npuctl.artifacts.facts import AnyFacts
from npuctl.artifacts.store import Record
from npuctl.errors import NpuctlError


class FetchError(NpuctlError):
    """A published store that answered wrongly: unreachable, a bad record, or a file whose digest differs."""


class StoreLocation(BaseModel):
    """A published store with options (agent config `artifactSources:` entry written as a mapping)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid", frozen=True,
                              use_attribute_docstrings=True)

    url: str
    """oci://HOST[:PORT]/REPO, an http(s) URL or a folder."""
    insecure: bool = False
    """oci:// only: plain http to the registry (a lab registry). TLS is verified otherwise."""
    username: str | None = None
    """oci:// only: registry user; without it, docker's config.json and credential helpers are asked."""
    password: SecretStr | None = None
    """oci:// only: the user's password or access token. Never logged."""


class ArtifactSource(Protocol):
    location: str

    def fetch_step(self, step: str, key: str, workdir: Path) -> Record[AnyFacts] | None:
        """Fetch the published step `key` into `workdir` (empty). None when the store does not have it.
        Raises FetchError when it has something that does not check out (`workdir` is then left partly filled)."""

    def close(self) -> None:
        """Release connections."""


class LayoutSource(Protocol):
    location: str

    def read(self, path: str, limit: int) -> bytes | None:
        """The file at `path` under the store (None when it is not there), at most `limit` bytes."""

    def copy(self, path: str, out: Path) -> str:
        """Copy the file at `path` to `out`; returns its sha256. Raises FetchError when it is not there."""

    def close(self) -> None:
        """Release connections."""


def safe_relative(path: str, location: str) -> str:
    # Records come from another machine: a path must stay inside the step's folder.
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\\" in path or ":" in path:
        raise FetchError(f"{location}: a step record names the unsafe file path {path!r}")
    return path

