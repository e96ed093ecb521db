"""Many agents at once, for small fleets and labs (`npuctl get --agents FILE`): every agent in a list is asked
for its deployments and manifest sources concurrently, and an agent that does not answer is a row too. So is a
line of the list that is not an agent's address: it is shown with its place and why, never asked.
Large fleets scrape /metrics with Prometheus instead."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from npuctl.agent.api import PREFIX
from npuctl.errors import NpuctlError

MAX_AGENTS_FILE_BYTES = 1 << 20
"""A lab's list is a few KB; a larger file is a mistake (a log, a binary) and is refused while reading."""


class AgentListError(NpuctlError):
    """An agents file that cannot be read at all (missing, too large)."""


@dataclass(frozen=True)
class AgentEntry:
    """One line of an agents file that names something."""

    url: str
    """The agent's base URL; for a bad line, the line as written."""
    place: str
    """FILE:LINE of the line."""
    problem: str | None = None
    """Why the line is not an agent's address (then it is never asked)."""


@dataclass
class AgentReport:
    url: str
    deployments: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    """Why the agent gave no answer, or why its line is no agent's address (then the lists are empty)."""
    invalid: bool = False
    """The line of the agents file is not an agent's address (`error` says where and why)."""

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.url, "error": self.error, "deployments": self.deployments, "sources": self.sources}


def read_agent_list(path: Path) -> list[AgentEntry]:
    """Agent URLs, one per line; blank lines and `#` comments are skipped. A bare HOST:PORT means http://.
    A line that is not an agent's address is an entry with its problem, so one bad line costs one row."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_AGENTS_FILE_BYTES + 1)
    except OSError as exc:
        raise AgentListError(f"{path}: cannot read the agents file: {exc.strerror or exc}") from exc
    if len(data) > MAX_AGENTS_FILE_BYTES:
        raise AgentListError(f"{path}: over {MAX_AGENTS_FILE_BYTES} bytes; an agents file lists one agent URL "
                             "(or HOST:PORT) per line")
    entries = []
    for number, raw in enumerate(data.splitlines(), start=1):
        place = f"{path}:{number}"
        try:
            line = raw.decode("utf-8").split("#", 1)[0].strip()
        except UnicodeDecodeError:
            entries.append(AgentEntry(raw.decode("utf-8", "replace").strip(), place, "the line is not UTF-8 text"))
            continue
        if line:
            try:
                entries.append(AgentEntry(agent_url(line), place))
            except ValueError as exc:
                entries.append(AgentEntry(line, place, str(exc)))
    return entries


def agent_url(line: str) -> str:
    """The base URL a line names: http(s)://HOST[:PORT] (a trailing / allowed), or HOST:PORT for http://.
    Raises ValueError saying what is wrong."""
    text = line if "://" in line else f"http://{line}"
    expected = "expected http(s)://HOST[:PORT] or HOST:PORT"
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:  # idna's errors are UnicodeErrors
        raise ValueError(f"{line!r} is not an agent's address ({exc}); {expected}") from exc
    if url.scheme not in ("http", "https"):
        raise ValueError(f"{line!r}: scheme {url.scheme!r} is not http or https; {expected}")
    if not url.host:
        raise ValueError(f"{line!r} names no host; {expected}")
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError(f"{line!r}: port {url.port} is not in 1-65535; {expected}")
    if url.userinfo or url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"{line!r} has more than a scheme, host and port (a path, query, user or fragment); "
                         f"{expected}")
    return str(url.copy_with(path="/")).rstrip("/")


def query_agents(entries: list[AgentEntry], token: str | None = None, timeout: float = 10.0) -> list[AgentReport]:
    """Every agent's deployments and sources, in the order given."""
    return asyncio.run(_query_all(entries, token, timeout))


async def _query_all(entries: list[AgentEntry], token: str | None, timeout: float) -> list[AgentReport]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits) as client:
        return list(await asyncio.gather(*(_query(client, entry) for entry in entries)))


async def _query(client: httpx.AsyncClient, entry: AgentEntry) -> AgentReport:
    if entry.problem is not None:
        return AgentReport(entry.url, error=f"{entry.place}: {entry.problem}", invalid=True)
    url = entry.url
    try:
        deployments, sources = await asyncio.gather(client.get(f"{url}{PREFIX}/deployments"),
                                                    client.get(f"{url}{PREFIX}/sources"))
        for response in (deployments, sources):
            response.raise_for_status()
        return AgentReport(url, deployments.json()["items"], sources.json()["items"])
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError) as exc:
        return AgentReport(url, error=no_answer(exc))


def no_answer(exc: Exception) -> str:
    """Why an agent gave no usable answer, in a line."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
