"""`https:` sources: streamed to a temporary file, checked against the manifest's sha256 pin, then stored.

A pinned download is a step like any other: its key is the pin, so a stored copy is used without a request
and two manifests pinning the same bytes share it. A wrong digest stores nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from npuctl.artifacts import facts
from npuctl.artifacts.errors import BuildError, NotBuiltError
from npuctl.artifacts.sources.context import Located, SourceContext

MAX_BYTES = 20 * 2**30
"""Largest download accepted: past this, the server is misbehaving or the URL is wrong."""
TIMEOUT_SECONDS = 30.0
"""Per network operation (connect, each read), not for the whole download."""
_CHUNK = 1 << 20


def resolve_https(rest: str, context: SourceContext) -> Located:
    url = f"https:{rest}"
    name = _file_name(url)
    pin = context.pins.get(name)
    if pin is None and not context.insecure_skip_digest:
        raise BuildError("resolve", f"{url}: no sha256 pin for {name!r}; add spec.model.sha256: {{{name}: <hex>}} "
                         "(or insecureSkipDigest: true, not for production)")
    # Unpinned downloads are keyed by URL: they are fetched once and never re-checked against the server.
    key = hashlib.sha256(f"download:{pin or url}".encode()).hexdigest()
    store = context.store
    record = store.get(key)
    if record is None and context.cached_only:
        raise NotBuiltError("download", f"{url} is not in the store {store.root} (key {key[:12]})")
    if record is None:
        with store.lock(key):
            record = store.get(key)
            if record is None:
                work = store.new_workdir(key)
                started = time.perf_counter()
                try:
                    actual = fetch(url, work / name, expected=pin)
                except BaseException:
                    shutil.rmtree(work, ignore_errors=True)  # leftovers are the store's clean_tmp's job
                    raise
                record = store.commit(work, key=key, inputs={"url": url}, parameters={"sha256": pin}, tool_versions={},
                                      seconds=time.perf_counter() - started,
                                      details=facts.Download(url=url, sha256=actual))
    return Located(record.path(name))


def fetch(url: str, out: Path, *, expected: str | None, max_bytes: int = MAX_BYTES) -> str:
    """Stream `url` into `out`; returns the sha256. Raises BuildError (and leaves `out` removed) on an HTTP
    error, a body over `max_bytes`, or a digest other than `expected`."""
    import httpx

    digest = hashlib.sha256()
    size = 0
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=TIMEOUT_SECONDS) as response:
            if response.status_code != 200:
                raise BuildError("resolve", f"{url}: the server answered {response.status_code} {response.reason_phrase}")
            declared = int(response.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise BuildError("resolve", f"{url}: {declared} bytes is over the {max_bytes}-byte download limit")
            with out.open("wb") as f:
                for chunk in response.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise BuildError("resolve", f"{url}: more than the {max_bytes}-byte download limit")
                    digest.update(chunk)
                    f.write(chunk)
    except httpx.HTTPError as exc:
        out.unlink(missing_ok=True)
        raise BuildError("resolve", f"{url}: download failed: {exc}") from exc
    except BuildError:
        out.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        out.unlink()
        raise BuildError("resolve", f"{url}: downloaded {size} bytes with sha256 {actual}, but spec.model.sha256 "
                         f"pins {expected}; nothing was stored")
    return actual


def _file_name(url: str) -> str:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    if not name:
        raise BuildError("resolve", f"{url}: the URL names no file; point it at the .onnx (or .zip) to download")
    return name

