"""A small registry client (OCI distribution API v2 over httpx) for what npuctl needs: manifests by tag or
digest (conditionally, with the ETag registries give: the manifest digest), blobs streamed to a file with
their digest checked on the way and an interrupted download resumed with Range, and pushes (blobs first,
then the manifest naming them). Every digest is computed here from the bytes: a registry is not trusted to
say what it sent.

Redirects: registries hand blob downloads to storage (S3, a CDN), and oras and distribution's clients follow
them (without the registry's Authorization, as here), which is safe because a blob is checked against its
digest. So a blob GET may be redirected to any host; everything else (manifests, pushes, token-less probes)
only within the registry; never from https to http; at most MAX_REDIRECTS, each redirect's own body capped."""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from npuctl.artifacts.oci.auth import AuthError, Credentials, RegistryAuth, docker_credentials

TIMEOUT_SECONDS = 30.0
MAX_MANIFEST_BYTES = 4 << 20
"""ACR's limit; distribution's too."""
DOWNLOAD_ATTEMPTS = 5
UPLOAD_CHUNK = 8 << 20
MAX_REDIRECTS = 5
MAX_REDIRECT_BODY = 64 << 10
"""A redirect's body is read and dropped; a registry has no reason to send more than a line of HTML."""
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class RegistryError(Exception):
    """A registry that could not be reached, refused a request, or answered something that does not check out."""


class DigestError(RegistryError):
    """Bytes whose sha256 differs from the digest they were asked for."""


class DeadlineExceeded(RegistryError):
    """The registry was still sending when the caller's deadline passed."""


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry sent it."""

    data: bytes
    digest: str
    """sha256 of `data`, computed here."""
    media_type: str


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """One registry host. insecure: plain http (a lab registry); otherwise https with verified TLS.
    credentials: None reads docker's config.json for the host; anonymous when it has none."""

    def __init__(self, host: str, *, insecure: bool = False, credentials: Credentials | None = None,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}"
        try:
            found = credentials or docker_credentials(host)
        except AuthError as exc:
            raise RegistryError(str(exc)) from exc
        self._http = httpx.Client(base_url=self.base, timeout=timeout, follow_redirects=True,
                                  max_redirects=MAX_REDIRECTS, auth=RegistryAuth(found),
                                  headers={"User-Agent": "npuctl"}, event_hooks={"response": [self._redirected]})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest(self, repository: str, reference: str, *, etag: str | None = None,
                 accept: str = OCI_MANIFEST, deadline: float | None = None) -> Fetched | None:
        """The manifest at a tag or digest; None when `etag` still matches (304). Raises RegistryError, also
        for 404 (use `head_manifest` to ask whether something exists); DeadlineExceeded past `deadline`."""
        headers = {"Accept": accept, **({"If-None-Match": etag} if etag else {})}
        response, data = self._bounded(f"/v2/{repository}/manifests/{reference}", MAX_MANIFEST_BYTES,
                                       f"manifest {repository}:{reference}", headers, deadline)
        if response.status_code == 304:
            return None
        digest = digest_of(data)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestError(f"{self.base}: manifest {repository}@{reference} has digest {digest}")
        return Fetched(data, digest, response.headers.get("content-type", "").split(";")[0])

    def head_manifest(self, repository: str, reference: str, accept: str = OCI_MANIFEST) -> str | None:
        """The digest the registry names for a tag (Docker-Content-Digest); None when there is no such tag."""
        response = self._send("HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept})
        if response.status_code == 404:
            return None
        self._expect(response, 200, f"manifest {repository}:{reference}")
        digest = response.headers.get("docker-content-digest")
        if not digest:
            raise RegistryError(f"{self.base}: HEAD {repository}:{reference} named no Docker-Content-Digest")
        return str(digest)

    def blob(self, repository: str, digest: str, limit: int, *, deadline: float | None = None) -> bytes:
        """A small blob (a config), checked against its digest; DeadlineExceeded past `deadline`."""
        _, data = self._bounded(f"/v2/{repository}/blobs/{digest}", limit, f"blob {digest[:19]}...",
                                deadline=deadline)
        if digest_of(data) != digest:
            raise DigestError(f"{self.base}: blob {digest[:19]}... has digest {digest_of(data)[:19]}...")
        return data

    def _bounded(self, url: str, limit: int, what: str, headers: dict[str, str] | None = None,
                 deadline: float | None = None) -> tuple[httpx.Response, bytes]:
        """GET at most `limit` bytes (a registry is not trusted to send a small manifest) before `deadline` (a
        time.monotonic(); each read has the client's timeout besides); 200 or 304."""
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return response, b""
                if response.status_code != 200:
                    response.read()
                    self._expect(response, 200, what)
                data = bytearray()
                # As the network delivers (no chunk_size, which would wait for 64 KiB): the deadline is checked
                # on every read, so a registry trickling bytes cannot hold the read past it.
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise RegistryError(f"{self.base}: {what} is over {limit} bytes, the limit")
                    if deadline is not None and time.monotonic() > deadline:
                        raise DeadlineExceeded(f"{self.base}: {what}: still arriving at the deadline "
                                               f"({len(data)} bytes so far)")
                return response, bytes(data)
        except httpx.HTTPError as exc:
            raise self._failed("GET", url, exc) from exc
        except AuthError as exc:
            raise RegistryError(f"{self.base}: {exc}") from exc

    def download(self, repository: str, digest: str, size: int, out: Path) -> int:
        """Stream a blob into `out`, hashing on the way; a dropped connection resumes where it stopped with a
        Range request (up to DOWNLOAD_ATTEMPTS). Returns how many times it resumed. Raises DigestError when the
        bytes are not `digest`'s (and removes `out`)."""
        hasher = hashlib.sha256()
        resumed = 0
        try:
            with out.open("wb") as target:
                for attempt in range(DOWNLOAD_ATTEMPTS):
                    have = target.tell()
                    try:
                        hasher = self._stream_into(repository, digest, size, have, hasher, target)
                        break
                    except httpx.TransportError as exc:
                        if attempt == DOWNLOAD_ATTEMPTS - 1:
                            raise RegistryError(f"{self.base}: blob {digest[:19]}...: {exc} "
                                                f"({DOWNLOAD_ATTEMPTS} attempts)") from exc
                        resumed += 1
                written = target.tell()
        except RegistryError:
            out.unlink(missing_ok=True)
            raise
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest or written != size:
            out.unlink(missing_ok=True)
            raise DigestError(f"{self.base}: blob {digest[:19]}... arrived as {written} bytes with digest "
                              f"{actual[:19]}... (expected {size} bytes); not used")
        return resumed

    def _stream_into(self, repository: str, digest: str, size: int, have: int, hasher: hashlib._Hash,
                     target: BinaryIO) -> hashlib._Hash:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with self._http.stream("GET", f"/v2/{repository}/blobs/{digest}", headers=headers) as response:
                if have and response.status_code == 200:
                    # No Range support: start over rather than append the whole blob after a prefix.
                    target.seek(0)
                    target.truncate()
                    hasher = hashlib.sha256()
                elif response.status_code not in (200, 206):
                    response.read()
                    self._expect(response, 200, f"blob {digest}")
                # As the network delivers (no chunk_size): what arrived before a drop is kept for the Range resume.
                for chunk in response.iter_bytes():
                    hasher.update(chunk)
                    target.write(chunk)
                    if target.tell() > size:
                        raise DigestError(f"{self.base}: blob {digest[:19]}... is longer than the {size} bytes "
                                          "its manifest says; not used")
            return hasher
        except AuthError as exc:
            raise RegistryError(f"{self.base}: {exc}") from exc

    def has_blob(self, repository: str, digest: str) -> bool:
        return self._send("HEAD", f"/v2/{repository}/blobs/{digest}").status_code == 200

    def push_blob(self, repository: str, digest: str, content: bytes | Path) -> bool:
        """Upload a blob unless the registry has it; True if it was uploaded. A file goes up in chunks
        (PATCH), so a large context binary is never held in memory."""
        if self.has_blob(repository, digest):
            return False
        started = self._send("POST", f"/v2/{repository}/blobs/uploads/")
        self._expect(started, 202, "blob upload")
        location = started.headers["location"]
        if isinstance(content, Path):
            offset = 0
            with content.open("rb") as source:
                while chunk := source.read(UPLOAD_CHUNK):
                    headers = {"Content-Type": "application/octet-stream",
                               "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
                    patched = self._send("PATCH", location, content=chunk, headers=headers)
                    self._expect(patched, 202, f"blob upload {digest[:19]}...")
                    location, offset = patched.headers["location"], offset + len(chunk)
            body = b""
        else:
            body = content
        # Appended by hand: merging params into the upload URL re-encodes its opaque _state.
        separator = "&" if "?" in location else "?"
        done = self._send("PUT", f"{location}{separator}digest={digest}", content=body,
                          headers={"Content-Type": "application/octet-stream"})
        self._expect(done, 201, f"blob upload {digest[:19]}...")
        return True

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str = OCI_MANIFEST) -> str:
        """PUT a manifest under a tag (or its digest); returns its digest."""
        response = self._send("PUT", f"/v2/{repository}/manifests/{reference}", content=data,
                              headers={"Content-Type": media_type})
        self._expect(response, 201, f"manifest {repository}:{reference}")
        return digest_of(data)

    def _send(self, method: str, url: str, **options: object) -> httpx.Response:
        try:
            return self._http.request(method, url, **options)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise self._failed(method, url, exc) from exc
        except AuthError as exc:
            raise RegistryError(f"{self.base}: {exc}") from exc

    def _failed(self, method: str, url: str, exc: httpx.HTTPError) -> RegistryError:
        said = f"{method} {url}: {type(exc).__name__}: {exc}"
        if self.base.startswith("https:") and _tls_refused(exc):
            return RegistryError(f"{self.host} did not answer TLS (https), as a plain-http registry does; if it is "
                                 f"one (a lab registry), add --plain-http (npuctl build --publish, npuctl bundle push) "
                                 f"or `insecure: true` for it in the agent config ({said})")
        return RegistryError(f"{self.base}: {said}")

    def _redirected(self, response: httpx.Response) -> None:
        """httpx's response hook, on every answer including each redirect: refuse a redirect the rule above
        does not allow, and cap the body httpx reads and drops before following one."""
        if not response.has_redirect_location:
            return
        source = response.request.url
        try:
            target = source.join(response.headers["location"])
        except httpx.InvalidURL as exc:
            raise RegistryError(f"{self.base}: {source.path} redirected to a malformed URL: {exc}") from exc
        if source.scheme == "https" and target.scheme != "https":
            raise RegistryError(f"{self.base}: {source.path} redirected from https to {target.scheme}: refused")
        registry = httpx.URL(self.base)
        leaves = (target.scheme, target.host, target.port) != (registry.scheme, registry.host, registry.port)
        # Off the registry only blob downloads get there, so a hop that starts elsewhere is one of theirs.
        blob = response.request.method == "GET" and ("/blobs/" in source.path or source.host != registry.host)
        if leaves and not blob:
            raise RegistryError(f"{self.base}: {source.path} redirected to another host, {target.host}: only blob "
                                "downloads may leave the registry (their bytes are checked against the digest)")
        response.stream = _Capped(response.stream, MAX_REDIRECT_BODY, f"{self.base}: the redirect from {source.path}")

    def _expect(self, response: httpx.Response, status: int, what: str) -> None:
        if response.status_code == status or (status == 200 and response.status_code == 206):
            return
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.text[:200]
        except (ValueError, AttributeError):
            detail = response.text[:200]
        hint = " (credentials: the agent config's username/password or `docker login`)" if response.status_code in (401, 403) else ""
        raise RegistryError(f"{self.base}: {what}: HTTP {response.status_code} {detail}{hint}")


def _tls_refused(exc: BaseException) -> bool:
    """Whether the TLS handshake failed on an answer that is no TLS (plain http answers a ClientHello with an HTTP
    400, which OpenSSL reads as a record of the wrong version)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and ("WRONG_VERSION_NUMBER" in str(seen) or "record layer" in str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return "WRONG_VERSION_NUMBER" in str(exc)

class _Capped(httpx.SyncByteStream):
    """A response body that raises RegistryError past `limit` bytes."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, limit: int, what: str) -> None:
        assert isinstance(stream, httpx.SyncByteStream)  # the registry client is synchronous
        self._stream, self._limit, self._what = stream, limit, what

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise RegistryError(f"{self._what} has a body over {self._limit} bytes")
            yield chunk

    def close(self) -> None:
        self._stream.close()
