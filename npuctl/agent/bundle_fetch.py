"""One GET of an http(s) bundle source, bounded three ways: the body is streamed and refused as soon as it passes
the cap (a Content-Length over it is refused before a byte is read; decoded bytes count, so a compressed bomb
stops too); redirects are followed by hand, only to the bundle URL's own origin or to hosts the source names
(`redirectHosts`), never from https to http, at most MAX_REDIRECTS, and without reading their bodies; the
caller's deadline (the poll's) covers all of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

MAX_REDIRECTS = 5
MAX_SIGNATURE_BYTES = 4096
"""A detached signature is 88 base64 characters; room for a newline and a proxy's whitespace."""


class FetchError(Exception):
    """The server could not be reached or answered an error: the source is Unreachable."""


class FetchRefused(FetchError):
    """The server answered something this agent will not take (too large, a redirect elsewhere): Rejected."""


@dataclass(frozen=True)
class Fetched:
    status: int
    """200 or 304."""
    body: bytes
    etag: str | None
    url: str
    """Where the body came from, after redirects."""


async def fetch(client: httpx.AsyncClient, url: str, limit: int, redirect_hosts: Sequence[str] = (),
                headers: Mapping[str, str] | None = None) -> Fetched:
    """GET `url`: 200 with at most `limit` bytes, or 304. Raises FetchError, FetchRefused."""
    origin = current = httpx.URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with client.stream("GET", current, headers=headers, follow_redirects=False) as response:
                if response.has_redirect_location:
                    # The body of a redirect is never read: closing the stream drops it.
                    current = check_redirect(origin, current.join(response.headers["location"]), redirect_hosts)
                    continue
                if response.status_code == 304:
                    return Fetched(304, b"", response.headers.get("etag"), str(current))
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code} from {current}")
                body = await _bounded(response, limit, current)
                return Fetched(200, body, response.headers.get("etag"), str(current))
        except httpx.HTTPError as exc:  # a malformed Location is an httpx.InvalidURL, not an HTTPError
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise FetchRefused(f"{current} redirected to a malformed URL: {exc}") from exc
    raise FetchRefused(f"{url}: more than {MAX_REDIRECTS} redirects")


def check_redirect(origin: httpx.URL, target: httpx.URL, allowed_hosts: Sequence[str]) -> httpx.URL:
    """`target` if a redirect from `origin`'s source may go there; FetchRefused naming the setting if not."""
    if origin.scheme == "https" and target.scheme != "https":
        raise FetchRefused(f"{origin} redirected to {target}: from https to {target.scheme or 'no scheme'}, refused")
    if target.scheme not in ("http", "https"):
        raise FetchRefused(f"{origin} redirected to {target}: not an http(s) URL, refused")
    same_origin = (target.scheme, target.host, target.port) == (origin.scheme, origin.host, origin.port)
    if same_origin or "*" in allowed_hosts or target.host in allowed_hosts:
        return target
    raise FetchRefused(f"{origin} redirected to another origin, {target.scheme}://{target.netloc.decode()}; add "
                       f"{target.host} to the source's redirectHosts to follow such redirects")


async def _bounded(response: httpx.Response, limit: int, url: httpx.URL) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchRefused(f"{url} is {declared} bytes (Content-Length); the limit is {limit}")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise FetchRefused(f"{url} sent over {limit} bytes, the limit; the rest was not read")
    return bytes(body)
