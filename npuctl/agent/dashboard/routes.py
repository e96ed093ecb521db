"""The dashboard's HTTP side: the page at `/` (for browsers: requests that accept text/html; Ollama's clients
probe `/` too and get Ollama's answer), its script and style, and one read-only JSON endpoint the page polls.
Guarded like the control API's reads: open on a loopback agent; beyond loopback the page and its data need the
agent's token.

A browser proves it has the token through a login form, never through the page's HTML or URL: the form posts
the token once, and the answer sets an HttpOnly, SameSite=Strict cookie holding an HMAC of the token (not the
token itself, so the cookie cannot be replayed as a Bearer token against the control API's writes, and the
page's script never sees either). Scripts such as the fleet dashboard send `Authorization: Bearer <token>`."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Awaitable, Callable
from importlib.resources import files
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from npuctl.agent.auth import token_matches
from npuctl.agent.dashboard.views import DashboardData
from npuctl.serve.http.body import read_body
from npuctl.serve.http.errors import ApiError
from npuctl.serve.timeline import WINDOW_SECONDS

DATA_PATH = "/dashboard/v1/data"
LOGIN_PATH = "/dashboard/login"
COOKIE = "npuctl_dashboard"
MAX_LOGIN_BYTES = 4096

DataSource = Callable[[float | None], Awaitable[DashboardData]]
"""The page's data, with each model's samples of the last so many seconds (None: all the server keeps)."""

_MEDIA = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8"}
_ASSETS = ("dashboard.js", "dashboard.css")
# Everything the page loads comes from this server; no inline script, no framing. `same-origin`, not
# `no-referrer`: with no-referrer the browser sends `Origin: null` on the login form, which the server's
# Origin check (serve/guards.py) refuses; other sites still get no referrer.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_FAILED_MARKER = 'id="failed" hidden'


def dashboard_routes(data: DataSource, token: str | None = None) -> list[Route]:
    """The page, its assets and its data. With `token` (an agent reachable beyond loopback) the page and the
    data need it: a session cookie from the login form, or a Bearer header."""
    page = _Dashboard(data, token)
    return [
        _BrowserRoute("/", page.index, methods=["GET"]),
        Route(LOGIN_PATH, page.login, methods=["POST"]),
        Route("/dashboard/assets/{name}", page.asset, methods=["GET"]),
        Route(DATA_PATH, page.data, methods=["GET"]),
    ]


class _BrowserRoute(Route):
    """A route for browsers only (their requests accept text/html): programs that probe `/`, as Ollama's clients
    do, go on to the routes after it and get the answer they expect."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        accept = b",".join(value for name, value in scope.get("headers", []) if name == b"accept")
        return (match, child) if b"text/html" in accept else (Match.NONE, {})


def session_value(token: str) -> str:
    """The cookie's value: proves the browser was given the token, without being the token."""
    return hmac.new(token.encode(), b"npuctl dashboard session", hashlib.sha256).hexdigest()


class _Dashboard:
    def __init__(self, data: DataSource, token: str | None) -> None:
        self.source = data
        self.token = token
        web = files("npuctl.agent.dashboard").joinpath("web")
        self.files = {name: web.joinpath(name).read_bytes() for name in ("index.html", "login.html", *_ASSETS)}

    def allowed(self, request: Request) -> bool:
        if self.token is None:
            return True
        if token_matches(request.headers.get("authorization"), self.token):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), session_value(self.token).encode())

    async def index(self, request: Request) -> Response:
        if request.query_params:
            return _unknown_parameters(request)
        if not self.allowed(request):
            return self._login_page()
        return self._file("index.html")

    async def login(self, request: Request) -> Response:
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        try:
            body = await read_body(request, MAX_LOGIN_BYTES)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not token_matches(f"Bearer {given}", self.token):
            return self._login_page(failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session_value(self.token), httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return response

    async def asset(self, request: Request) -> Response:
        # The script and style are the package's own files, the same for everyone: no token needed (the
        # login page uses the style too).
        name = request.path_params["name"]
        if name not in _ASSETS:
            return _error(404, f"no dashboard asset named {name!r}")
        return self._file(name)

    async def data(self, request: Request) -> Response:
        """`?seconds=N`: only the samples of the last N seconds (the page asks for what it has not seen yet)."""
        if set(request.query_params) - {"seconds"}:
            return _unknown_parameters(request, "seconds")
        if not self.allowed(request):
            return _error(401, "the dashboard's data needs the agent's token: log in at / or send "
                               "Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
        recent = None
        if "seconds" in request.query_params:
            given = request.query_params["seconds"]
            try:
                recent = float(given)
            except ValueError:
                recent = math.nan
            if not 0 < recent <= WINDOW_SECONDS:  # false for nan too
                return _error(400, f"seconds: {given!r} is not a number of seconds in (0, {WINDOW_SECONDS:g}]")
        snapshot = await self.source(recent)
        return JSONResponse(snapshot.model_dump(mode="json"), headers=_HEADERS)

    def _file(self, name: str, status: int = 200, body: bytes | None = None) -> Response:
        return Response(self.files[name] if body is None else body, status_code=status,
                        media_type=_MEDIA[name[name.rindex("."):]], headers=_HEADERS)

    def _login_page(self, failed: bool = False) -> Response:
        body = self.files["login.html"]
        if failed:
            body = body.replace(_FAILED_MARKER.encode(), b'id="failed"')
        return self._file("login.html", 401, body)


def _unknown_parameters(request: Request, known: str = "") -> Response:
    names = ", ".join(sorted(set(request.query_params.keys()) - {known}))
    takes = f"it takes only {known}" if known else "it takes none"
    return _error(400, f"unknown query parameter(s): {names}; {takes}")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status, headers={**_HEADERS, **(headers or {})})
