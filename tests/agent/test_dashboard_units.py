"""The dashboard's HTTP side, in process over real HTTP: the token guard of the page and its data (login form,
session cookie, Bearer), and what it refuses."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from npuctl.agent.dashboard.routes import COOKIE, DATA_PATH, dashboard_routes, session_value
from npuctl.agent.dashboard.views import AgentView, DashboardData, dashboard
from npuctl.serve.http.server import BackgroundServer

TOKEN = "s3cret-token-for-the-dashboard-test"
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def guarded() -> BackgroundServer:
    async def data(recent: float | None) -> DashboardData:
        return dashboard([AgentView(url=f"http://agent/{recent}")])

    with BackgroundServer(Starlette(routes=dashboard_routes(data, token=TOKEN))) as server:
        yield server


def test_a_guarded_page_and_its_data_need_the_token(guarded: BackgroundServer) -> None:
    with httpx.Client(base_url=guarded.url, timeout=10) as client:
        page = client.get("/", headers=BROWSER)
        assert page.status_code == 401 and 'action="/dashboard/login"' in page.text
        assert client.get(DATA_PATH).status_code == 401
        for forged in ("forged", TOKEN):  # nor is the token itself a session
            assert httpx.get(f"{guarded.url}{DATA_PATH}", cookies={COOKIE: forged}, timeout=10).status_code == 401
        wrong = client.post("/dashboard/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "not this agent's token" in wrong.text
        assert 'id="failed" hidden' not in wrong.text, "the failure message shows"
        assert COOKIE not in wrong.headers.get("set-cookie", "")
        assert client.post("/dashboard/login", content=b"token=" + b"x" * 5000).status_code == 413
        login = client.post("/dashboard/login", data={"token": TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert f"{COOKIE}={session_value(TOKEN)}" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        client.cookies.set(COOKIE, session_value(TOKEN))
        allowed = client.get("/", headers=BROWSER)
        assert allowed.status_code == 200 and "dashboard.js" in allowed.text
        assert allowed.headers["content-security-policy"].startswith("default-src 'self'")
        assert client.get(DATA_PATH).json()["agents"][0]["url"] == "http://agent/None"
        for response in (page, wrong, allowed, client.get("/dashboard/assets/dashboard.js")):
            assert TOKEN not in response.text and session_value(TOKEN) not in response.text
    bearer = httpx.get(f"{guarded.url}{DATA_PATH}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert bearer.status_code == 200


def test_unknown_parameters_and_assets_are_refused(guarded: BackgroundServer) -> None:
    with httpx.Client(base_url=guarded.url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.get(DATA_PATH, params={"since": "10"})
        assert response.status_code == 400 and "since" in response.json()["error"]["message"]
        assert client.get(DATA_PATH, params={"seconds": "12.5"}).json()["agents"][0]["url"] == "http://agent/12.5"
        for wrong in ("0", "-1", "601", "nan", "inf", "ten", ""):
            response = client.get(DATA_PATH, params={"seconds": wrong})
            assert response.status_code == 400 and "seconds" in response.json()["error"]["message"], wrong
        assert client.get("/dashboard/assets/index.html").status_code == 404
        assert client.get("/dashboard/assets/..%2Fviews.py").status_code == 404
        css = client.get("/dashboard/assets/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
