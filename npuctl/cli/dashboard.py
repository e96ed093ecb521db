"""`npuctl dashboard --agents FILE`: the dashboard page for a lab, served on this machine. Every 2 s the page asks
this server, which asks every listed agent for its own dashboard data at once (the same records, so the same
page shows them) and adds the lab's phase counts; an agent that does not answer is a row with the reason."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
import httpx

from npuctl.agent.dashboard.routes import DATA_PATH, dashboard_routes
from npuctl.agent.dashboard.views import AgentView, DashboardData, dashboard
from npuctl.cli.fleet import AgentEntry, AgentListError, no_answer, read_agent_list
from npuctl.cli.output import err_console

if TYPE_CHECKING:
    from starlette.applications import Starlette


class FleetSource:
    """Asks `urls` (agents' base URLs) for their dashboard data, with `token` as Bearer when given."""

    def __init__(self, entries: list[AgentEntry], token: str | None = None, timeout: float = 5.0) -> None:
        self.entries = entries
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    async def __call__(self, recent: float | None) -> DashboardData:
        params = {} if recent is None else {"seconds": f"{recent:g}"}
        async with httpx.AsyncClient(headers=self.headers, timeout=self.timeout, params=params,
                                     limits=httpx.Limits(max_connections=64)) as client:
            views = await asyncio.gather(*(self._agent(client, entry) for entry in self.entries))
        return dashboard(list(views), fleet=True)

    async def _agent(self, client: httpx.AsyncClient, entry: AgentEntry) -> AgentView:
        url = entry.url
        if entry.problem is not None:  # a bad line of the list is a row saying why, never a request
            return AgentView(url=url, error=f"{entry.place}: {entry.problem}", invalid=True)
        try:
            response = await client.get(f"{url}{DATA_PATH}")
            response.raise_for_status()
            agents = DashboardData.model_validate(response.json()).agents
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # a pydantic ValidationError is a ValueError
            return AgentView(url=url, error=no_answer(exc))
        if len(agents) != 1:
            return AgentView(url=url, error=f"answered with {len(agents)} agents' data (a fleet dashboard?)")
        # An agent names itself by its listen address; the lab's list says how it is reached from here.
        return agents[0].model_copy(update={"url": url})


@click.command("dashboard")
@click.option("--agents", "agents_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The lab's agents, one URL (or HOST:PORT) per line, as for `npuctl get --agents`.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on.")
@click.option("--port", default=8766, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
def dashboard_command(agents_file: Path, host: str, port: int) -> None:
    """Serve the dashboard for every agent in FILE on this machine (until Ctrl-C). Agents that want a token get
    NPUCTL_TOKEN; this page then holds it, so it listens on loopback only."""
    from npuctl.serve.http.server import PortInUse, bind, run

    if not _loopback(host):
        raise click.UsageError(f"--host {host} is reachable beyond this machine; the fleet dashboard holds the lab's "
                               "token (NPUCTL_TOKEN) and listens on loopback only (127.0.0.1, ::1, localhost)")
    try:
        entries = read_agent_list(agents_file)
    except AgentListError as exc:
        raise click.UsageError(str(exc)) from exc
    if not entries:
        raise click.UsageError(f"{agents_file} lists no agents")
    source = FleetSource(entries, token=os.environ.get("NPUCTL_TOKEN"))
    try:
        sock = bind(host, port)
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from exc
    err_console.print(f"npuctl dashboard for {len(entries)} agents: http://{host}:{sock.getsockname()[1]}/ (Ctrl-C stops)")
    run(fleet_app(source), sock)


def fleet_app(source: FleetSource) -> Starlette:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from npuctl.serve.app import ERROR_HANDLERS
    from npuctl.serve.http.guards import WebGuard, WebPolicy

    # The page holds the lab's token: no other site's page, rebound DNS name included, may read it.
    guard = Middleware(WebGuard, policy=WebPolicy())
    return Starlette(routes=dashboard_routes(source), exception_handlers=ERROR_HANDLERS, middleware=[guard])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
