"""`npuctl dashboard --agents FILE`: the page's data gathered from every agent of a lab at once, each agent's own
dashboard data (the same records, so the same page shows them), plus the lab's phase counts. An agent that does
not answer is a row with the reason."""

from __future__ import annotations

import asyncio

import httpx

from npuctl.agent.dashboard.routes import DATA_PATH
from npuctl.agent.dashboard.views import AgentView, DashboardData, dashboard
from npuctl.agent.fleet import no_answer


class FleetSource:
    """Asks `urls` (agents' base URLs) for their dashboard data, with `token` as Bearer when given."""

    def __init__(self, urls: list[str], token: str | None = None, timeout: float = 5.0) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    async def __call__(self) -> DashboardData:
        async with httpx.AsyncClient(headers=self.headers, timeout=self.timeout,
                                     limits=httpx.Limits(max_connections=64)) as client:
            views = await asyncio.gather(*(self._agent(client, url) for url in self.urls))
        return dashboard(list(views), fleet=True)

    async def _agent(self, client: httpx.AsyncClient, url: str) -> AgentView:
        try:
            response = await client.get(f"{url}{DATA_PATH}")
            response.raise_for_status()
            agents = DashboardData.model_validate(response.json()).agents
        except (httpx.HTTPError, ValueError) as exc:  # a pydantic ValidationError is a ValueError
            return AgentView(url=url, error=no_answer(exc))
        if len(agents) != 1:
            return AgentView(url=url, error=f"{url} answered with {len(agents)} agents' data (is it a fleet dashboard?)")
        # The agent names itself by its listen address; the lab's list says how it is reached.
        return agents[0].model_copy(update={"url": url})
