"""What a source resolver is given and what it answers: the manifest's context (its folder, the store, the pins,
the folders it may read), where it found the files, and the refusal of a source that points where it may not."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.store import Store
from npuctl.schema.models import Format


@dataclass(frozen=True)
class SourceContext:
    """What a resolver may use besides the URI."""

    base_dir: Path
    """The manifest's folder: `file:` sources are relative to it."""
    store: Store
    """Where downloaded sources are kept (content-addressed, like build steps)."""
    pins: Mapping[str, str] = field(default_factory=dict)
    """spec.model.sha256: path relative to the source -> expected sha256."""
    insecure_skip_digest: bool = False
    cached_only: bool = False
    """Download nothing: use only what is already in a cache or the store (the build's cached_only)."""
    roots: tuple[Path, ...] | None = None
    """Folders `file:` sources must lead into, links followed. None: anywhere (a Python caller vouching for
    its own manifests); empty: no local source at all (a fleet bundle's manifest, by default)."""


class SourceRefused(BuildError):
    """A source points where its manifest may not read: outside the folders allowed to it, or at something
    that is not a regular file or folder. Permanent, and says nothing of what lies there."""

    def __init__(self, message: str) -> None:
        super().__init__("resolve", message)


@dataclass(frozen=True)
class Located:
    """Where a resolver found the source."""

    path: Path
    revision: str | None = None
    """The immutable version the URI resolved to (a commit hash for `hf:`), when the scheme has one."""
    confined_to: tuple[Path, ...] | None = None
    """Resolved folders every file of the source must lie in, links followed (`file:` with roots, `pkg:`);
    None for caches the resolver itself fills (the Hugging Face cache links into its own blobs folder)."""


Resolver = Callable[[str, SourceContext], Located]
"""(the source without its scheme, the context) -> where its files are."""


@dataclass(frozen=True)
class ResolvedSource:
    uri: str
    path: Path
    """The ONNX file, or the model folder."""
    format: Format
    digest: str
    """sha256 over the relative paths and contents of every file the source holds."""
    revision: str | None = None
    """The commit an `hf:` source resolved to (branch names are recorded as the commit they pointed at)."""

    @property
    def folder(self) -> Path:
        """Where tokenizer and sentence-transformers configs live."""
        return self.path if self.path.is_dir() else self.path.parent

    def as_dict(self) -> dict[str, str | None]:
        return {"uri": self.uri, "revision": self.revision, "digest": self.digest}


def buildable(source: ResolvedSource) -> bool:
    """Whether the local pipeline can build NPU artifacts from this source."""
    return source.format in (Format.ONNX, Format.TRANSFORMERS)
