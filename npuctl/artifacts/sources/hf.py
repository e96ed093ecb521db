"""`hf:<org>/<repo>[@<revision>][/<path>]` sources, through huggingface_hub and its cache.

The cache is huggingface_hub's own (HF_HUB_CACHE / HF_HOME), so models other tools already downloaded are
reused; the token comes from where huggingface_hub looks (HF_TOKEN, `hf auth login`). With HF_HUB_OFFLINE=1
only the cache is read. Files the cache names by their LFS sha256 (the blob a snapshot entry links to) are
re-hashed and must match: a corrupted cache is refused, not built from.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from npuctl.artifacts.errors import BuildError, NotBuiltError
from npuctl.artifacts.sources.context import Located, SourceContext
from npuctl.artifacts.store import sha256_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HfSource:
    repo_id: str
    revision: str | None
    """Branch, tag or commit; None for the default branch."""
    path: str
    """Inside the repo ('' for the whole repo)."""

    @classmethod
    def parse(cls, rest: str) -> HfSource:
        parts = rest.strip("/").split("/")
        if len(parts) < 2 or not parts[0] or not parts[1] or parts[1].startswith("@"):
            raise BuildError("resolve", f"hf:{rest}: expected hf:<org>/<repo>[@<revision>][/<path>], "
                             "e.g. hf:sentence-transformers/all-MiniLM-L6-v2@main/onnx")
        if any(part in (".", "..") for part in parts[2:]):
            raise BuildError("resolve", f"hf:{rest}: the path inside the repository must not contain '.' or '..'")
        repo, _, revision = parts[1].partition("@")
        return cls(f"{parts[0]}/{repo}", revision or None, "/".join(parts[2:]))

    def __str__(self) -> str:
        return f"hf:{self.repo_id}" + (f"@{self.revision}" if self.revision else "") + (f"/{self.path}" if self.path else "")


def resolve_hf(rest: str, context: SourceContext) -> Located:
    """Download (or find in the cache) the repo files under the source's path; the revision is the commit."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

    source = HfSource.parse(rest)
    patterns = [source.path, f"{source.path}/*"] if source.path else None
    offline = constants.is_offline_mode() or context.cached_only
    where = f"{source.repo_id} at revision {source.revision or 'main'}"
    disable_progress_bars()  # a library prints nothing; the build reports progress through step events
    try:
        snapshot = Path(snapshot_download(source.repo_id, revision=source.revision, allow_patterns=patterns,
                                          local_files_only=offline))
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise BuildError("resolve", f"{source}: repository {source.repo_id} not found or not accessible with "
                         f"the current token (HF_TOKEN or `hf auth login`): {_first_line(exc)}") from exc
    except RevisionNotFoundError as exc:
        raise BuildError("resolve", f"{source}: {source.repo_id} has no revision {source.revision!r}") from exc
    except HFValidationError as exc:  # a form the manifest check let through and the Hub refuses
        raise BuildError("resolve", f"{source}: {_first_line(exc)}") from exc
    except LocalEntryNotFoundError as exc:
        if not constants.is_offline_mode() and context.cached_only:
            # Not a failure: a build that may download comes next (the agent's child process).
            raise NotBuiltError("resolve", f"{source}: not in the Hugging Face cache yet") from exc
        mode = "HF_HUB_OFFLINE=1, so only the local cache is read" if offline else "the Hub could not be reached"
        raise BuildError("resolve", f"{source}: {_wanted(source)} of {where} is not in the Hugging Face cache "
                         f"{constants.HF_HUB_CACHE} ({mode})") from exc
    except HfHubHTTPError as exc:
        raise BuildError("resolve", f"{source}: the Hub answered {_first_line(exc)}") from exc
    except OSError as exc:  # IncompleteSnapshotError and file-system errors
        raise BuildError("resolve", f"{source}: {_first_line(exc)}") from exc
    target = snapshot / source.path if source.path else snapshot
    if not target.exists():
        mode = " (HF_HUB_OFFLINE=1: only the cache was searched)" if offline else ""
        raise BuildError("resolve", f"{source}: {source.path!r} is not in {where} (commit {snapshot.name}){mode}")
    _verify_blobs(source, target)
    return Located(target, revision=snapshot.name)


def _verify_blobs(source: HfSource, target: Path) -> None:
    """Check each file against the name of the cache blob it links to: the sha256 for LFS files, the git blob
    sha1 for small ones. Caches without symlinks (Windows without developer mode) have no such names."""
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    for file in files:
        if not file.is_symlink():
            continue
        blob = Path(file.readlink()).name
        if _SHA256.match(blob):
            actual = sha256_file(file)
        elif _GIT_SHA1.match(blob):
            actual = _git_blob_sha1(file)
        else:
            continue
        if actual != blob:
            raise BuildError("resolve", f"{source}: {file.name} in the Hugging Face cache does not match its hash "
                             f"({actual[:12]}..., the Hub's is {blob[:12]}...): the cache is corrupt; delete "
                             f"{file.resolve()} and build again to download it afresh")


def _git_blob_sha1(file: Path) -> str:
    digest = hashlib.sha1(f"blob {file.stat().st_size}\0".encode(), usedforsecurity=False)
    with file.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _wanted(source: HfSource) -> str:
    return f"file {source.path!r}" if source.path else "the snapshot"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

