"""Reading a published artifact store: a folder or the same layout over http(s) (npuctl.artifacts.published.publish), or
an OCI registry repository (npuctl.artifacts.published.registry). A step is fetched by its key: its record first, then
each file it lists by sha256, each checked while it streams. Anything that does not match is discarded; the
caller then builds the step itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from npuctl.artifacts.facts import AnyFacts
from npuctl.artifacts.published.location import ArtifactSource, FetchError, LayoutSource, StoreLocation, safe_relative
from npuctl.artifacts.published.publish import BLOBS, STEPS
from npuctl.artifacts.store import Record

TIMEOUT_SECONDS = 30.0
MAX_RECORD_BYTES = 1 << 20
_CHUNK = 1 << 20


def open_source(location: str | StoreLocation, pins: dict[str, str] | None = None) -> ArtifactSource:
    """A published store by reference (oci:), URL (http:, https:) or folder path. pins: step key -> manifest
    digest that an oci: store must serve for that key (from signed bundles)."""
    spec = location if isinstance(location, StoreLocation) else StoreLocation(url=location)
    if spec.url.startswith("oci://"):
        from npuctl.artifacts.oci.client import RegistryError
        from npuctl.artifacts.published.registry import open_registry

        try:
            return open_registry(spec, pins)
        except (ValueError, RegistryError) as exc:
            raise FetchError(str(exc)) from exc
    if spec.url.startswith(("http://", "https://")):
        return HttpSource(spec.url)
    return FolderSource(Path(spec.url))


class _LayoutFetch:
    """fetch_step over read/copy of the folder layout."""

    def fetch_step(self: LayoutSource, step: str, key: str, workdir: Path) -> Record[AnyFacts] | None:
        return fetch_layout_step(self, step, key, workdir)


def fetch_layout_step(source: LayoutSource, step: str, key: str, workdir: Path) -> Record[AnyFacts] | None:
    raw = source.read(f"{STEPS}/{key}.json", MAX_RECORD_BYTES)
    if raw is None:
        return None
    try:
        record = Record.from_storage(json.loads(raw), workdir)
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"{source.location}: {STEPS}/{key}.json is not a step record: {exc}") from exc
    if (record.key, record.step) != (key, step):
        raise FetchError(f"{source.location}: {STEPS}/{key}.json describes {record.step} {record.key[:12]}, "
                         f"not {step} {key[:12]}")
    for stored in record.files:
        target = workdir / safe_relative(stored.path, source.location)
        target.parent.mkdir(parents=True, exist_ok=True)
        actual = source.copy(f"{BLOBS}/{stored.sha256}", target)
        if actual != stored.sha256:
            raise FetchError(f"{source.location}: {BLOBS}/{stored.sha256[:12]}... has sha256 {actual[:12]}...; "
                             "the published file is corrupt")
    return record


class FolderSource(_LayoutFetch):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def read(self, path: str, limit: int) -> bytes | None:
        try:
            with (self.root / path).open("rb") as f:
                return f.read(limit)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FetchError(f"{self.location}: {path}: {exc}") from exc

    def copy(self, path: str, out: Path) -> str:
        digest = hashlib.sha256()
        try:
            with (self.root / path).open("rb") as source, out.open("wb") as target:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    target.write(chunk)
        except OSError as exc:
            raise FetchError(f"{self.location}: {path}: {exc}") from exc
        return digest.hexdigest()

    def close(self) -> None:
        pass


class HttpSource(_LayoutFetch):
    def __init__(self, url: str) -> None:
        import httpx

        self.location = url
        self._http = httpx.Client(base_url=url.rstrip("/") + "/", timeout=TIMEOUT_SECONDS, follow_redirects=True)

    def read(self, path: str, limit: int) -> bytes | None:
        import httpx

        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise FetchError(f"{self.location}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise FetchError(f"{self.location}{path}: HTTP {response.status_code}")
        return response.content[:limit]

    def copy(self, path: str, out: Path) -> str:
        import httpx

        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", path) as response, out.open("wb") as target:
                if response.status_code != 200:
                    raise FetchError(f"{self.location}{path}: HTTP {response.status_code}")
                for chunk in response.iter_bytes(_CHUNK):
                    digest.update(chunk)
                    target.write(chunk)
        except httpx.HTTPError as exc:
            raise FetchError(f"{self.location}{path}: {exc}") from exc
        return digest.hexdigest()

    def close(self) -> None:
        self._http.close()
