"""Registry auth the way registries do it: try anonymously, then answer the `WWW-Authenticate` challenge —
`Basic` with the credentials, or `Bearer realm=...,service=...,scope=...` by asking the realm for a token
(with the credentials if there are any, anonymously if not). Credentials come from the caller (an agent's
config) or from docker's config.json: `auths` entries and credential helpers (`credHelpers`, `credsStore`)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import httpx

DOCKER_CONFIG_ENV = "DOCKER_CONFIG"
HELPER_TIMEOUT_SECONDS = 30.0
_PARAMETER = re.compile(r'(\w+)="([^"]*)"')


class AuthError(Exception):
    """Credentials could not be found or a token service refused them."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str
    """'basic' or 'bearer' (lowercase)."""
    realm: str
    service: str | None = None
    scope: str | None = None


def parse_challenge(header: str) -> Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    parameters = dict(_PARAMETER.findall(rest))
    if scheme.lower() not in ("basic", "bearer"):
        return None
    return Challenge(scheme.lower(), parameters.get("realm", ""), parameters.get("service"), parameters.get("scope"))


def docker_credentials(host: str, config_dir: Path | None = None) -> Credentials | None:
    """What `docker login HOST` stored: a credential helper's answer, else the base64 `auth` of `auths`.
    None when docker's config names nothing for HOST."""
    folder = config_dir or Path(os.environ.get(DOCKER_CONFIG_ENV) or Path.home() / ".docker")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuthError(f"{folder / 'config.json'}: {exc}") from exc
    helper = (config.get("credHelpers") or {}).get(host) or config.get("credsStore")
    if helper:
        found = _from_helper(str(helper), host)
        if found:
            return found
    for server, entry in (config.get("auths") or {}).items():
        if _host_of(server) == host and isinstance(entry, dict) and entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, password)
    return None


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise AuthError(f"docker's config.json names the credential helper {helper!r} for {host}, but "
                        f"docker-credential-{helper} is not on PATH")
    try:
        done = subprocess.run([program, "get"], input=host, capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"docker-credential-{helper} get: {exc}") from exc
    if done.returncode != 0:
        return None  # helpers exit 1 with "credentials not found in native keychain"
    try:
        answer = json.loads(done.stdout)
        return Credentials(str(answer["Username"]), str(answer["Secret"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthError(f"docker-credential-{helper} get answered something that is not its JSON: {exc}") from exc


def _host_of(server: str) -> str:
    # config.json keys are "host:port", "https://host" or "https://index.docker.io/v1/".
    return server.split("://", 1)[-1].split("/", 1)[0]


class RegistryAuth(httpx.Auth):
    """Answers 401 challenges; keeps the last token (or basic header) for the requests that follow. Sync
    clients only: the token response is read inside the flow (httpx's requires_response_body would read
    every response, streamed blobs included)."""

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self._authorization: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._authorization and "authorization" not in request.headers:
            request.headers["Authorization"] = self._authorization
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_challenge(response.headers.get("www-authenticate", ""))
        if challenge is None:
            return
        if challenge.scheme == "basic":
            if self.credentials is None:
                return
            self._authorization = self.credentials.basic()
        else:
            token_response = yield self._token_request(challenge)
            self._authorization = f"Bearer {_token(token_response, challenge)}"
        request.headers["Authorization"] = self._authorization
        yield request

    def _token_request(self, challenge: Challenge) -> httpx.Request:
        params = {k: v for k, v in (("service", challenge.service), ("scope", challenge.scope)) if v}
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        return httpx.Request("GET", challenge.realm, params=params, headers=headers)


def _token(response: httpx.Response, challenge: Challenge) -> str:
    response.read()
    if response.status_code != 200:
        raise AuthError(f"the token service {challenge.realm} answered HTTP {response.status_code} for scope "
                        f"{challenge.scope!r}: {response.text[:200]}")
    try:
        data = response.json()
        return str(data.get("token") or data["access_token"])
    except (ValueError, KeyError, AttributeError) as exc:
        raise AuthError(f"the token service {challenge.realm} answered no token: {exc}") from exc
