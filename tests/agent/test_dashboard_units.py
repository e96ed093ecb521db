"""The dashboard's server side, in process over real HTTP: the metric timeline behind the charts, and the token
guard of the page and its data (login form, session cookie, Bearer)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from npuctl.agent.dashboard.routes import COOKIE, DATA_PATH, dashboard_routes, session_value
from npuctl.agent.dashboard.views import AgentView, DashboardData, dashboard
from npuctl.serve.models import ModelStatus, Unavailable
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.server import BackgroundServer
from npuctl.serve.timeline import Timeline, quantile
from tests.manifests import write_deployment

TOKEN = "s3cret-token-for-the-dashboard-test"


def test_quantile_interpolates_within_a_bucket_like_prometheus() -> None:
    buckets = [(0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(buckets, 0.5) == pytest.approx(0.1)
    assert quantile(buckets, 0.25) == pytest.approx(0.055)
    assert quantile(buckets, 0.95) == pytest.approx(0.91)
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert quantile([(0.1, 1.0), (float("inf"), 10.0)], 0.95) == pytest.approx(0.1), "+Inf bucket: the largest bound"


def test_timeline_turns_counters_into_rates_and_percentiles(tmp_path: Path) -> None:
    registry = ModelRegistry()
    loaded = write_deployment(tmp_path, "tiny", {"model": {"source": "file:tiny.onnx", "task": "tensor"}})
    registry.put(Unavailable(loaded.deployment, ModelStatus(False, "Loading", "not yet")))
    timeline = Timeline(registry, interval=2.0, window=6.0)
    metrics = registry.metrics
    timeline.sample(at=100.0)
    assert timeline.series()[0].samples == [], "the first reading is only a baseline"
    for seconds in [0.004] * 9 + [0.2]:
        metrics.observe_request("tiny", "oip", 200, seconds, None)
    for _ in range(4):
        metrics.observe_request("tiny", "oip", 429, 0.0001, "rate_limit_exceeded")
    metrics.observe_request("other-model", "oip", 200, 1.0, None)
    timeline.sample(at=102.0)
    [series] = timeline.series()
    assert (series.deployment, series.model, series.chat) == ("tiny", "tiny", False)
    [sample] = series.samples
    assert sample.requests_per_second == pytest.approx(14 / 2)
    assert sample.rejected_per_second == pytest.approx(4 / 2)
    assert 2.5 <= sample.latency_p50_ms <= 5.0  # type: ignore[operator]
    assert 100 <= sample.latency_p95_ms <= 250  # type: ignore[operator]
    for at in (104.0, 106.0, 108.0, 110.0):
        timeline.sample(at=at)
    samples = timeline.series()[0].samples
    assert [s.time for s in samples] == [106.0, 108.0, 110.0], "a window of 6 s at 2 s keeps 3 samples"
    assert samples[-1].requests_per_second == 0 and samples[-1].latency_p50_ms is None
    registry.remove("tiny")
    timeline.sample(at=112.0)
    assert timeline.series() == [], "a removed deployment's series goes with it"


@pytest.fixture
def guarded() -> BackgroundServer:
    async def data() -> DashboardData:
        return dashboard([AgentView(url="http://agent")])

    with BackgroundServer(Starlette(routes=dashboard_routes(data, token=TOKEN))) as server:
        yield server


def test_a_guarded_page_and_its_data_need_the_token(guarded: BackgroundServer) -> None:
    with httpx.Client(base_url=guarded.url, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 401 and 'action="/dashboard/login"' in page.text
        assert client.get(DATA_PATH).status_code == 401
        for forged in ("forged", TOKEN):  # nor is the token itself a session
            assert httpx.get(f"{guarded.url}{DATA_PATH}", cookies={COOKIE: forged}, timeout=10).status_code == 401
        wrong = client.post("/dashboard/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "not this agent's token" in wrong.text and 'id="failed" hidden' not in wrong.text
        assert COOKIE not in wrong.headers.get("set-cookie", "")
        assert client.post("/dashboard/login", content=b"token=" + b"x" * 5000).status_code == 413
        login = client.post("/dashboard/login", data={"token": TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert f"{COOKIE}={session_value(TOKEN)}" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        client.cookies.set(COOKIE, session_value(TOKEN))
        allowed = client.get("/")
        assert allowed.status_code == 200 and "dashboard.js" in allowed.text
        assert allowed.headers["content-security-policy"].startswith("default-src 'self'")
        assert client.get(DATA_PATH).json()["agents"][0]["url"] == "http://agent"
        for response in (page, wrong, allowed, client.get("/dashboard/assets/dashboard.js")):
            assert TOKEN not in response.text and session_value(TOKEN) not in response.text
    bearer = httpx.get(f"{guarded.url}{DATA_PATH}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert bearer.status_code == 200


def test_unknown_parameters_and_assets_are_refused(guarded: BackgroundServer) -> None:
    with httpx.Client(base_url=guarded.url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.get(DATA_PATH, params={"since": "10"})
        assert response.status_code == 400 and "since" in response.json()["error"]["message"]
        assert client.get("/dashboard/assets/index.html").status_code == 404
        assert client.get("/dashboard/assets/..%2Fviews.py").status_code == 404
        css = client.get("/dashboard/assets/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
