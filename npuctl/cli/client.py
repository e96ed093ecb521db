"""A small client of the agent's control API, for the CLI and scripts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from npuctl.agent.api import PREFIX
from npuctl.agent.auth import read_token
from npuctl.agent.config import DEFAULT_LISTEN, AgentConfig
from npuctl.errors import NpuctlError
from npuctl.schema.status import BudgetUse


class AgentError(NpuctlError):
    """The agent answered with an error, or could not be reached (`status` is None then)."""

    def __init__(self, message: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


def default_url() -> str:
    return os.environ.get("NPUCTL_AGENT") or f"http://{DEFAULT_LISTEN}"


def default_token(state: Path | None = None) -> str | None:
    """NPUCTL_TOKEN, else the token file in the agent's state folder (the local agent's)."""
    return os.environ.get("NPUCTL_TOKEN") or read_token(state or AgentConfig().state)


class AgentClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url + PREFIX, headers=headers, timeout=timeout)

    def deployments(self) -> list[dict[str, Any]]:
        items = self._items(self._call("GET", "/deployments"))
        if not all(isinstance(item.get("metadata"), dict) and isinstance(item.get("status"), dict) for item in items):
            raise self._foreign("deployments without metadata and status")
        return items

    def overview(self) -> dict[str, Any]:
        """The deployments (`items`), the agent's own `conditions`, `invalidFiles`: manifest files that
        declare no deployment, `pendingFiles`: files saved and not read yet (each with when it will be), and
        `budget`: what the loaded models take of the agent's budget."""
        body = self._call("GET", "/deployments")
        self._items(body)
        if "budget" in body:
            try:
                BudgetUse.model_validate(body["budget"])
            except ValidationError:
                raise self._foreign("a budget that is not one") from None
        return body

    def deployment(self, name: str) -> dict[str, Any]:
        found = self._call("GET", f"/deployments/{name}")
        if not isinstance(found.get("metadata"), dict) or not isinstance(found.get("status"), dict):
            raise self._foreign("a deployment without metadata and status")
        return found

    def apply(self, file_name: str, text: str, dry_run: bool = False) -> dict[str, Any]:
        params = {"dryRun": "true"} if dry_run else {}
        return self._call("PUT", f"/manifests/{file_name}", content=text.encode("utf-8"), params=params)

    def delete(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/deployments/{name}")

    def sources(self) -> list[dict[str, Any]]:
        """Each manifest source's state (name, url, state, message, version, lastPoll, ...)."""
        return self._items(self._call("GET", "/sources"))

    def process(self) -> dict[str, Any]:
        """The agent process's CPU seconds, resident size and host facts (for `npuctl bench`)."""
        return self._call("GET", "/process")

    def keep_bench(self, name: str, result: str) -> dict[str, Any]:
        """Keep a bench result (BenchResult JSON) in the deployment's status."""
        return self._call("PUT", f"/deployments/{name}/bench", content=result.encode("utf-8"),
                          headers={"content-type": "application/json"})

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return self._items(self._call("GET", "/events", params={"name": name} if name else {}))

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise AgentError(f"no agent answers at {self.url} ({exc}); start one with `npuctl up` or `npuctl agent`") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if response.is_error:
            if not isinstance(error, dict) or not isinstance(error.get("message"), str):
                raise self._foreign(f"HTTP {response.status_code} for {method} {PREFIX}{path}")
            raise AgentError(error["message"], response.status_code, body)
        if not isinstance(body, dict):
            raise self._foreign(f"{response.headers.get('content-type') or 'no content type'} for {PREFIX}{path}")
        return body

    def _items(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise self._foreign("a body without an 'items' list")
        return items

    def _foreign(self, answer: str) -> AgentError:
        return AgentError(f"{self.url} is not an npuctl agent, or not this version's (it answered {answer}); "
                          "check --agent / NPUCTL_AGENT")
