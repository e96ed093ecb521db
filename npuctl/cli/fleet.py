"""Many agents at once, for small fleets and labs (`npuctl get --agents FILE`): every agent in a list is asked
for its deployments and manifest sources concurrently, and an agent that does not answer is a row too.
Large fleets scrape /metrics with Prometheus instead."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from npuctl.agent.api import PREFIX


@dataclass
class AgentReport:
    url: str
    deployments: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    """Why the agent gave no answer (then the lists are empty)."""

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.url, "error": self.error, "deployments": self.deployments, "sources": self.sources}


def read_agent_list(path: Path) -> list[str]:
    """Agent URLs, one per line; blank lines and `#` comments are skipped. A bare HOST:PORT means http://."""
    urls = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            urls.append((line if "://" in line else f"http://{line}").rstrip("/"))
    return urls


def query_agents(urls: list[str], token: str | None = None, timeout: float = 10.0) -> list[AgentReport]:
    """Every agent's deployments and sources, in the order given."""
    return asyncio.run(_query_all(urls, token, timeout))


async def _query_all(urls: list[str], token: str | None, timeout: float) -> list[AgentReport]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits) as client:
        return list(await asyncio.gather(*(_query(client, url) for url in urls)))


async def _query(client: httpx.AsyncClient, url: str) -> AgentReport:
    try:
        deployments, sources = await asyncio.gather(client.get(f"{url}{PREFIX}/deployments"),
                                                    client.get(f"{url}{PREFIX}/sources"))
        for response in (deployments, sources):
            response.raise_for_status()
        return AgentReport(url, deployments.json()["items"], sources.json()["items"])
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return AgentReport(url, error=no_answer(exc))


def no_answer(exc: Exception) -> str:
    """Why an agent gave no usable answer, in a line."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
