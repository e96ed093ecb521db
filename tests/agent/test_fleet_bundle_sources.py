"""Fleet bundle sources: bundles that roll back, oversized and slow bundle bodies, redirects elsewhere, bad lines in
an agents file. In-process against hostile servers on 127.0.0.1; the agent process is in
test_fleet_agent_bundle_limits.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from npuctl.agent import bundles
from npuctl.agent.bundle_fetch import FetchRefused, check_redirect
from npuctl.agent.config import ManifestSource
from npuctl.agent.sources import Applied, SourcePoller
from npuctl.cli import cli
from npuctl.cli.dashboard import FleetSource, fleet_app
from npuctl.cli.fleet import read_agent_list
from tests.agent.harness import manifest
from tests.agent.hostile_server import HostileServer, endless, redirect, static, trickle

MiB = 1 << 20


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.stop()


def signed(server: HostileServer, path: str, bundle: bundles.Bundle, pem: bytes) -> None:
    data = bundle.as_bytes()
    server.routes[path] = static(data, etag=f'"{hash(data) & 0xffffffff:x}"')
    server.routes[f"{path}.sig"] = static(bundles.sign(data, bundles.load_private_key(pem)).encode())


def poll(poller: SourcePoller, source: ManifestSource) -> None:
    async def once() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await poller.poll(client, source)

    asyncio.run(once())


def dated(version: str, created: datetime, days: float = 30, precision: str = "w8a16") -> bundles.Bundle:
    return bundles.Bundle(version, {"tiny.yaml": manifest(precision=precision)}, created,
                          created + timedelta(days=days))


# -- Rollback through undated bundles; expiry on every source.

def test_pack_dates_every_bundle(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tiny.yaml").write_text(manifest())
    out = tmp_path / "fleet.json"
    done = CliRunner().invoke(cli, ["bundle", "pack", str(tmp_path / "m"), "--version", "v1", "--out", str(out),
                                    "--expires-in", "2"])
    assert done.exit_code == 0, done.output
    packed = bundles.parse(out.read_bytes())
    assert packed.created is not None and packed.expires is not None
    assert abs((packed.created - datetime.now(UTC)).total_seconds()) < 300
    assert packed.expires - packed.created == timedelta(days=2)
    default = CliRunner().invoke(cli, ["bundle", "pack", str(tmp_path / "m"), "--version", "v1", "--out", str(out)])
    assert default.exit_code == 0 and "expires" in default.output
    packed = bundles.parse(out.read_bytes())
    assert packed.expires and packed.created and packed.expires - packed.created == bundles.DEFAULT_VALIDITY
    with pytest.raises(bundles.BundleError, match="is not after created"):
        bundles.parse(out.read_bytes().replace(bundles.timestamp(packed.expires).encode(), b"2001-01-01T00:00:00Z"))


def test_an_agent_that_applied_a_dated_bundle_refuses_an_undated_one_also_after_a_restart(
        tmp_path: Path, hostile: HostileServer) -> None:
    pem, public = bundles.generate_key()
    source = ManifestSource(name="fleet", url=f"{hostile.origin}/fleet.json", public_key=public)
    state = tmp_path / "state"
    poller = SourcePoller([source], tmp_path / "manifests", lambda: None, state=state)
    signed(hostile, "/fleet.json", dated("v2", datetime.now(UTC) - timedelta(hours=1), precision="w8a8"), pem)
    poll(poller, source)
    assert (poller.states["fleet"].state, poller.states["fleet"].version) == ("Synced", "v2")

    signed(hostile, "/fleet.json", bundles.Bundle("v1-replayed", {"tiny.yaml": manifest()}), pem)  # as pack wrote
    poll(poller, source)
    refused = poller.states["fleet"]
    assert refused.state == "Rejected" and refused.version == "v2", refused
    assert "no created time" in refused.message and "allowRollback" in refused.message
    assert "w8a8" in poller.file_of(source).read_text()

    restarted = SourcePoller([source], tmp_path / "manifests", lambda: None, state=state)
    poll(restarted, source)
    assert (restarted.states["fleet"].state, restarted.states["fleet"].version) == ("Rejected", "v2")

    signed(hostile, "/fleet.json", dated("v0", datetime.now(UTC) - timedelta(days=2)), pem)
    poll(restarted, source)
    assert restarted.states["fleet"].state == "Rejected" and "a rollback" in restarted.states["fleet"].message

    lenient = ManifestSource(name="fleet", url=source.url, public_key=public, allow_rollback=True)
    signed(hostile, "/fleet.json", bundles.Bundle("v1-replayed", {"tiny.yaml": manifest()}), pem)
    allowed = SourcePoller([lenient], tmp_path / "manifests", lambda: None, state=state)
    poll(allowed, lenient)
    assert (allowed.states["fleet"].state, allowed.states["fleet"].version) == ("Synced", "v1-replayed")


def test_expiry_is_reported_whatever_the_poll_meets(tmp_path: Path, hostile: HostileServer) -> None:
    pem, public = bundles.generate_key()
    source = ManifestSource(name="fleet", url=f"{hostile.origin}/fleet.json", public_key=public)
    signed(hostile, "/fleet.json", dated("v9", datetime.now(UTC) - timedelta(days=3), days=1), pem)
    poller = SourcePoller([source], tmp_path / "manifests", lambda: None)
    poll(poller, source)
    assert poller.states["fleet"].state == "Rejected" and "expired at" in poller.states["fleet"].message
    assert not poller.file_of(source).exists()

    # An agent restarted after the bundle in effect expired, its server gone: Unreachable, and says it expired.
    state = tmp_path / "state"
    (state / "sources").mkdir(parents=True)
    old = dated("v8", datetime.now(UTC) - timedelta(days=3), days=1)
    (state / "sources" / "fleet.json").write_text(json.dumps(Applied.of(old, None).__dict__))
    gone = ManifestSource(name="fleet", url="http://127.0.0.1:9/fleet.json", public_key=public)
    restarted = SourcePoller([gone], tmp_path / "manifests", lambda: None, state=state)
    poll(restarted, gone)
    status = restarted.states["fleet"]
    assert status.state == "Unreachable" and "bundle v8 in effect expired at" in status.message, status


# -- The cap holds while reading.

@pytest.mark.parametrize("answer", [endless(None), endless(64 * MiB, declared=64 * MiB), endless(64 * MiB)],
                         ids=["no-end", "declared-64MiB", "undeclared-64MiB"])
def test_an_oversized_bundle_is_refused_while_reading(tmp_path: Path, hostile: HostileServer,
                                                      answer: object) -> None:
    _, public = bundles.generate_key()
    hostile.routes["/fleet.json"] = answer  # type: ignore[assignment]
    source = ManifestSource(name="fleet", url=f"{hostile.origin}/fleet.json", public_key=public)
    poller = SourcePoller([source], tmp_path, lambda: None)
    poll(poller, source)
    state = poller.states["fleet"]
    assert state.state == "Rejected", state
    assert (f"the limit is {bundles.MAX_BUNDLE_BYTES}" in state.message
            or f"over {bundles.MAX_BUNDLE_BYTES} bytes, the limit" in state.message), state
    # What the server managed to send before the agent hung up: the cap, plus what sockets buffer.
    assert hostile.sent < bundles.MAX_BUNDLE_BYTES + 16 * MiB, hostile.sent


# -- A poll has a deadline, and a stalled source says so.

def test_a_server_sending_a_byte_at_a_time_stalls_the_poll_and_the_source_says_so(
        tmp_path: Path, hostile: HostileServer) -> None:
    pem, public = bundles.generate_key()
    hostile.routes["/fleet.json"] = trickle(0.2)  # each read gets a byte: the 30 s read timeout never fires
    source = ManifestSource(name="fleet", url=f"{hostile.origin}/fleet.json", public_key=public,
                            poll_timeout_seconds=1.5)
    poller = SourcePoller([source], tmp_path, lambda: None)
    poll(poller, source)
    state = poller.states["fleet"]
    assert state.state == "Stalled" and "within 1.5 s (pollTimeoutSeconds)" in state.message, state

    signed(hostile, "/fleet.json", dated("v1", datetime.now(UTC)), pem)  # the server recovers
    poll(poller, source)
    assert (poller.states["fleet"].state, poller.states["fleet"].version) == ("Synced", "v1")


# -- Redirects.

def test_redirects_stay_on_the_origin_unless_the_source_allows_the_host(tmp_path: Path,
                                                                        hostile: HostileServer) -> None:
    pem, public = bundles.generate_key()
    elsewhere = HostileServer()
    try:
        signed(elsewhere, "/fleet.json", dated("v-elsewhere", datetime.now(UTC)), pem)
        signed(hostile, "/moved.json", dated("v-moved", datetime.now(UTC)), pem)
        hostile.routes["/fleet.json"] = redirect(f"{elsewhere.origin}/fleet.json")
        hostile.routes["/fleet.json.sig"] = redirect(f"{elsewhere.origin}/fleet.json.sig")
        hostile.routes["/here.json"] = redirect("/moved.json", 301)
        hostile.routes["/here.json.sig"] = redirect("/moved.json.sig", 307)
        source = ManifestSource(name="fleet", url=f"{hostile.origin}/fleet.json", public_key=public)
        poller = SourcePoller([source], tmp_path, lambda: None)
        poll(poller, source)
        state = poller.states["fleet"]
        assert state.state == "Rejected" and "redirected to another origin" in state.message, state
        assert "redirectHosts" in state.message and elsewhere.requests == []

        same = ManifestSource(name="fleet", url=f"{hostile.origin}/here.json", public_key=public)
        poll(poller, same)
        assert (poller.states["fleet"].state, poller.states["fleet"].version) == ("Synced", "v-moved")

        allowed = ManifestSource(name="fleet", url=source.url, public_key=public, redirect_hosts=["127.0.0.1"])
        poll(poller, allowed)
        assert (poller.states["fleet"].state, poller.states["fleet"].version) == ("Synced", "v-elsewhere")

        hostile.routes["/loop.json"] = redirect("/loop.json")
        looping = ManifestSource(name="fleet", url=f"{hostile.origin}/loop.json", public_key=public)
        poll(poller, looping)
        assert poller.states["fleet"].state == "Rejected" and "more than 5 redirects" in poller.states["fleet"].message
    finally:
        elsewhere.stop()


def test_a_redirect_never_goes_from_https_to_http() -> None:
    with pytest.raises(FetchRefused, match="from https to http"):
        check_redirect(httpx.URL("https://bundles.example/f.json"), httpx.URL("http://bundles.example/f.json"), ["*"])
    with pytest.raises(FetchRefused, match="not an http"):
        check_redirect(httpx.URL("http://a.example/f.json"), httpx.URL("file:///etc/passwd"), ["*"])
    assert check_redirect(httpx.URL("https://a.example/f"), httpx.URL("https://cdn.example/f"), ["cdn.example"])


# -- A bad line of an agents file is a row that says why.

BAD_LINES = ["javascript:alert(7)//", "[/red] not markup", "http://h:99999", "ftp://h:1", "http://h/path?q=1",
             "http://user:pw@h:1"]


def test_a_bad_line_in_an_agents_file_is_a_row_with_its_place(tmp_path: Path) -> None:
    agents = tmp_path / "lab-agents.txt"
    agents.write_bytes(("# the lab\n" + "\n".join(BAD_LINES) + "\n").encode() + b"\xff\xfe\n")
    done = CliRunner().invoke(cli, ["get", "--agents", str(agents), "-o", "json"])
    assert done.exception is None or isinstance(done.exception, SystemExit), done.output
    assert done.exit_code == 1
    rows = json.loads(done.stdout)
    assert [r["agent"] for r in rows[:len(BAD_LINES)]] == BAD_LINES
    for number, row in enumerate(rows, start=2):
        assert row["error"].startswith(f"{agents}:{number}: ") and not row["deployments"], row
    table = CliRunner().invoke(cli, ["get", "--agents", str(agents)], env={"COLUMNS": "300"})
    assert table.exit_code == 1 and table.stdout.count(" Invalid ") == len(BAD_LINES) + 1, table.output
    assert "[/red] not markup" in table.stdout

    page = TestClient(fleet_app(FleetSource(read_agent_list(agents))), base_url="http://127.0.0.1")
    data = page.get("/dashboard/v1/data")
    assert data.status_code == 200, data.text
    views = data.json()["agents"]
    assert [v["url"] for v in views][:len(BAD_LINES)] == BAD_LINES
    assert all(v["error"].startswith(f"{agents}:") and v["invalid"] for v in views)


def test_an_agents_file_over_its_cap_is_refused_while_reading(tmp_path: Path) -> None:
    agents = tmp_path / "agents.txt"
    agents.write_bytes(b"127.0.0.1:1\n" * (200_000))  # 2.4 MB: a log written where the list belongs
    done = CliRunner().invoke(cli, ["get", "--agents", str(agents)])
    assert done.exit_code == 2 and "over 1048576 bytes" in done.output, done.output
