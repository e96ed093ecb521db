"""What keeps web pages out: a `Host` that must name this server (DNS rebinding), an `Origin` that must be
this server's own or one CORS allows, and preflight (OPTIONS) answers for the allowed ones.

A page on another site can make a browser send requests to 127.0.0.1 without a preflight (a `text/plain`
POST), and a DNS-rebinding page can even read the answers: its own name resolves to 127.0.0.1, so the
browser thinks it is same-origin, but the `Host` header still carries that name. So the server answers only
to its own address (the one the connection came in on), `localhost` on loopback, and names configured as
allowed; and a request with a foreign `Origin` is refused unless CORS allows that origin.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from npuctl.serve.http.errors import ApiError, error_response

ANY = "*"
PREFLIGHT_MAX_AGE = 600
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE")
ALLOWED_HEADERS = frozenset({"authorization", "content-type", "content-encoding", "accept", "api-key", "x-api-key"})
ALLOWED_HEADER_PREFIXES = ("x-stainless-", "openai-")
"""What the official SDKs send besides (the openai SDKs' X-Stainless-* platform headers, OpenAI-Organization,
OpenAI-Project, OpenAI-Beta): without them in the preflight's answer a browser blocks the SDK's request."""
_LONGEST_IP = len("0000:0000:0000:0000:0000:ffff:255.255.255.255")
"""No longer text is an IP address (ipaddress takes at most four digits a group, three an octet)."""


@dataclass(frozen=True)
class WebPolicy:
    """Which `Host` names and which browser origins the server answers, besides its own address."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names (lowercase, no port) the server answers to, besides its IP address and, on loopback,
    `localhost`; `*` turns the check off."""
    cors_origins: tuple[str, ...] = ()
    """Origins (`https://app.example:8443`) whose pages may call the APIs; `*` allows every origin. None by default."""

    @classmethod
    def of(cls, allowed_hosts: Sequence[str] = (), cors_origins: Sequence[str] = ()) -> WebPolicy:
        return cls(tuple(h.lower() for h in allowed_hosts), tuple(o.rstrip("/").lower() for o in cors_origins))

    def allows_origin(self, origin: str) -> bool:
        return ANY in self.cors_origins or origin.rstrip("/").lower() in self.cors_origins


class WebGuard:
    """ASGI middleware applying a `WebPolicy` before any route runs."""

    def __init__(self, app: ASGIApp, policy: WebPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        if host is not None and not self._host_allowed(host, scope.get("server")):
            await _refuse(scope, receive, send, 421, f"Host {host!r} is not an address of this server; "
                          "add the name to allowedHosts (agent config) or --allow-host (npuctl serve)")
            return
        origin = headers.get("origin")
        cross = origin is not None and not _same_origin(origin, host)
        if cross and not self.policy.allows_origin(origin or ""):
            await _refuse(scope, receive, send, 403, f"Origin {origin!r} may not call this server; allow it with "
                          "corsOrigins (agent config) or --cors-origin (npuctl serve)")
            return
        if cross and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(send, origin or "", headers)
            return
        if not cross:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_cors_headers(origin or "")]}
            await send(message)

        await self.app(scope, receive, with_cors)

    def _host_allowed(self, host: str, server: tuple[str, int] | None) -> bool:
        name = _hostname(host)
        if ANY in self.policy.allowed_hosts or name in self.policy.allowed_hosts:
            return True
        local = _ip(server[0]) if server else None
        if name == "localhost" or name.endswith(".localhost"):
            return local is None or local.is_loopback
        given = _ip(name)
        if given is None:
            return False
        # The address the connection came in on; any loopback address stands for any other.
        return local is None or given == local or (given.is_loopback and local.is_loopback)


def from_another_site(headers: Headers) -> bool:
    """Whether a browser sent this request for a page of another site: a foreign `Origin` (one CORS allows, or the
    guard would have refused it), or, where a privacy extension stripped `Origin`, `Sec-Fetch-Site` saying so."""
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin, headers.get("host")):
        return True
    return headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site")


def check_origin(origin: str) -> str:
    """`origin` if it is `*` or scheme://host[:port] as browsers send it; else ValueError saying so."""
    parts = urlsplit(origin)
    if origin != ANY and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/")
                          or parts.query or parts.fragment):
        raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], e.g. https://app.example:8443, or *")
    return origin


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    address = text.partition("%")[0]
    # Parsed on every request, so kept; the Host is the client's to choose, so only what can be an address is
    # parsed and kept, in a bounded cache.
    return _parse_ip(address) if len(address) <= _LONGEST_IP else None


@functools.lru_cache(maxsize=256)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _same_origin(origin: str, host: str | None) -> bool:
    parts = urlsplit(origin)
    return host is not None and parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
            (b"access-control-expose-headers", b"Retry-After")]


async def _preflight(send: Send, origin: str, asked: Headers) -> None:
    """The CORS answer: the method and headers asked for, those of them that are allowed (a browser then sends
    the request only if all it asked for came back)."""
    method = asked.get("access-control-request-method", "").strip().upper()
    methods = method if method in ALLOWED_METHODS else ", ".join(ALLOWED_METHODS)
    wanted = [name.strip().lower() for name in asked.get("access-control-request-headers", "").split(",")]
    allowed = [name for name in wanted if name in ALLOWED_HEADERS or name.startswith(ALLOWED_HEADER_PREFIXES)]
    headers = [*_cors_headers(origin), (b"access-control-allow-methods", methods.encode()),
               (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()), (b"content-length", b"0")]
    if allowed:
        headers.append((b"access-control-allow-headers", ", ".join(allowed).encode("latin-1")))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    await error_response(ApiError(status, message), scope["path"])(scope, receive, send)
