"""Issue 26's fleet classes, fuzzed with hypothesis: agents files with arbitrary lines; bundles with any dates in
any order; bundle servers answering with any chain of redirects and any body (oversized, declared or not,
trickling, missing). In-process, against servers on 127.0.0.1 only (agents-file queries go to a mock transport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from npuctl.agent import bundles
from npuctl.agent.config import ManifestSource
from npuctl.agent.sources import SourcePoller
from npuctl.cli import cli, fleet
from npuctl.cli.fleet import read_agent_list
from tests.agent.harness import manifest
from tests.agent.hostile_server import HostileServer, endless, redirect, static, trickle
from tests.fuzzing import FULL, HTTP_CASES, MANIFEST_CASES, fuzz_settings

POLL_DEADLINE = 1.0
_ASYNC_CLIENT = httpx.AsyncClient
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[HostileServer, HostileServer]]:
    here, elsewhere = HostileServer(), HostileServer()
    yield here, elsewhere
    here.stop()
    elsewhere.stop()


def poll(poller: SourcePoller, source: ManifestSource) -> None:
    async def once() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            # The poll's own deadline must end it; this one only turns a hang into a failure.
            await asyncio.wait_for(poller.poll(client, source), POLL_DEADLINE * 20)

    asyncio.run(once())


# Agents files: any line is a row, nothing raises, nothing is asked beyond the mock transport.

url_like = st.builds(lambda scheme, host, port, tail: f"{scheme}{host}{port}{tail}",
                     st.sampled_from(["", "http://", "https://", "javascript:", "ftp://", "//", "http:/"]),
                     st.sampled_from(["127.0.0.1", "[::1]", "h", "", "ex ample", "xn--", "\u0430\u0431", "a" * 300]),
                     st.sampled_from(["", ":1", ":65535", ":0", ":99999", ":-1", ":x", ":"]),
                     st.sampled_from(["", "/", "/p", "?q", "#f", "//", " # comment", "\x00", "[/red]"]))
line = st.one_of(url_like, st.text(max_size=80), st.binary(max_size=40).map(lambda b: b.decode("latin-1")))


@given(lines=st.lists(st.one_of(line.map(str.encode), st.binary(max_size=40)), max_size=12))
@fuzz_settings(MANIFEST_CASES)
def test_any_agents_file_gives_a_row_per_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              lines: list[bytes]) -> None:
    agents = tmp_path / "agents.txt"
    agents.write_bytes(b"\n".join(lines))
    entries = read_agent_list(agents)
    for entry in entries:
        assert entry.place.startswith(f"{agents}:")
        if entry.problem is None:
            url = httpx.URL(entry.url)
            assert url.scheme in ("http", "https") and url.host and url.path in ("", "/"), entry
    def mocked(**options: Any) -> httpx.AsyncClient:
        return _ASYNC_CLIENT(**options, transport=httpx.MockTransport(lambda request: httpx.Response(503)))

    monkeypatch.setattr(fleet.httpx, "AsyncClient", mocked)
    for output in ("json", "table"):
        done = CliRunner().invoke(cli, ["get", "--agents", str(agents), "-o", output], env={"COLUMNS": "200"})
        assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
        assert done.exit_code == (1 if entries else 0), done.output
        if output == "json":
            rows = json.loads(done.stdout)
            assert len(rows) == len(entries) and all(r["error"] for r in rows)


# Bundles with any dates, in any order: never a rollback, never a crash.

date_value = st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=2),
                       st.datetimes().map(lambda d: d.isoformat()),
                       st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()))


@given(created=date_value, expires=date_value)
@fuzz_settings(MANIFEST_CASES)
def test_any_dates_parse_or_are_refused_by_name(created: object, expires: object) -> None:
    raw = json.loads(bundles.Bundle("v1", {"tiny.yaml": manifest()}).as_bytes())
    raw.update(created=created, expires=expires)
    try:
        parsed = bundles.parse(json.dumps(raw).encode())
    except bundles.BundleError as exc:
        assert any(name in str(exc) for name in ("created", "expires")), exc
        return
    assert (parsed.created is None) == (created is None) and (parsed.expires is None) == (expires is None)


offsets = st.one_of(st.none(), st.integers(min_value=-5, max_value=5))
"""A bundle's created time in days from now (None: undated)."""


@given(sequence=st.lists(st.tuples(offsets, st.sampled_from([-1, 30])), min_size=1, max_size=6),
       allow_rollback=st.booleans())
@fuzz_settings(HTTP_CASES)
def test_a_sequence_of_bundles_never_rolls_back(tmp_path_factory: pytest.TempPathFactory,
                                                 servers: tuple[HostileServer, HostileServer],
                                                 sequence: list[tuple[int | None, int]], allow_rollback: bool) -> None:
    here, _ = servers
    pem, public = bundles.generate_key()
    folder = tmp_path_factory.mktemp("seq")
    source = ManifestSource(name="fleet", url=f"{here.origin}/seq.json", public_key=public,
                            allow_rollback=allow_rollback, poll_timeout_seconds=5)
    in_effect: datetime | None = None
    dated_applied = False
    for number, (offset, valid_days) in enumerate(sequence):
        created = None if offset is None else NOW + timedelta(days=offset)
        # -1: expired an hour ago when it was created before that (else valid), 30: valid for 30 days
        past = NOW - timedelta(hours=1)
        expires = None if created is None else past if valid_days < 0 and created < past else created + timedelta(30)
        bundle = bundles.Bundle(f"v{number}", {"tiny.yaml": manifest()}, created, expires)
        data = bundle.as_bytes()
        here.routes["/seq.json"] = static(data)
        here.routes["/seq.json.sig"] = static(bundles.sign(data, bundles.load_private_key(pem)).encode())
        # A new poller each time: what the agent remembers must come from its state folder (restarts).
        poller = SourcePoller([source], folder / "manifests", lambda: None, state=folder / "state")
        poll(poller, source)
        state = poller.states["fleet"]
        expired = expires is not None and expires < datetime.now(UTC)
        older = in_effect is not None and (created is None or created < in_effect)
        refused = expired or (older and not allow_rollback) or (dated_applied and created is None and not allow_rollback)
        assert (state.version == f"v{number}") == (not refused), (sequence, number, state)
        assert state.state in ("Synced", "Rejected"), state
        if not refused:
            in_effect, dated_applied = created, dated_applied or created is not None


# Bundle servers: any redirect chain, any body. The state says which, within the poll's deadline.

hop = st.tuples(st.sampled_from(["same", "elsewhere", "malformed"]), st.sampled_from([301, 302, 303, 307, 308]))
body = st.sampled_from(["bundle", "declared-over", "undeclared-over", "endless", "trickle", "missing"])


@given(hops=st.lists(hop, max_size=7), final=body, allow_hosts=st.booleans())
@fuzz_settings(HTTP_CASES if not FULL else 200)
def test_any_redirects_and_bodies_end_in_a_state_within_the_deadline(
        tmp_path_factory: pytest.TempPathFactory, servers: tuple[HostileServer, HostileServer],
        hops: list[tuple[str, int]], final: str, allow_hosts: bool) -> None:
    here, elsewhere = servers
    pem, public = bundles.generate_key()
    cap = bundles.MAX_BUNDLE_BYTES
    data = bundles.Bundle("v1", {"tiny.yaml": manifest()}, NOW, NOW + timedelta(days=1)).as_bytes()
    answers = {"bundle": static(data), "declared-over": endless(cap + 1, declared=cap + 1),
               "undeclared-over": endless(cap + 1), "endless": endless(None), "trickle": trickle(0.3)}
    path = f"/{len(here.requests)}"  # a fresh chain each case
    location = f"{path}/final"
    for number, (kind, status) in reversed(list(enumerate(hops))):
        server = elsewhere if kind == "elsewhere" else here
        hop_path = f"{path}/hop{number}"
        server.routes[hop_path] = redirect("http://[::bad" if kind == "malformed" else location, status)
        location = f"{server.origin}{hop_path}"
    last = elsewhere if hops and hops[-1][0] == "elsewhere" else here
    if final != "missing":
        last.routes[f"{path}/final"] = answers[final]
        here.routes[f"{path}/final"] = answers[final]
    entry = f"{here.origin}{path}/entry.json"
    here.routes[f"{path}/entry.json"] = redirect(location) if hops else answers.get(final, redirect("/nothing"))
    here.routes[f"{path}/entry.json.sig"] = static(bundles.sign(data, bundles.load_private_key(pem)).encode())
    source = ManifestSource(name="fleet", url=entry, public_key=public, poll_timeout_seconds=POLL_DEADLINE,
                            redirect_hosts=["127.0.0.1"] if allow_hosts else [])
    poller = SourcePoller([source], tmp_path_factory.mktemp("chain"), lambda: None)
    sent_before = here.sent + elsewhere.sent
    poll(poller, source)
    state = poller.states["fleet"]

    chain = redirects(hops, allow_hosts)
    # The fetch follows at most 5 redirects: only the first 6 are ever looked at.
    blocked = next((verdict for verdict in chain[:6] if verdict != "follow"), None)
    if len(chain) > 5 and not blocked:
        assert state.state == "Rejected" and "more than 5 redirects" in state.message, state
    elif blocked == "malformed":  # httpx refuses the Location itself: a server's protocol error
        assert state.state == "Unreachable" and "Invalid URL in location header" in state.message, state
    elif blocked:
        assert state.state == "Rejected" and "redirected" in state.message, state
    elif final == "bundle":
        assert state.state == "Synced", state
    elif final == "trickle":
        assert state.state == "Stalled", state
    elif final == "missing":
        assert state.state in ("Unreachable",), state
    else:
        assert state.state == "Rejected" and str(cap) in state.message, state
    assert here.sent + elsewhere.sent - sent_before < cap + (32 << 20)


def redirects(hops: list[tuple[str, int]], allow_hosts: bool) -> list[str]:
    """What each redirect of a chain meets: follow, malformed or elsewhere (refused). The entry redirects to hop 0;
    hop i to hop i+1 (on hop i+1's server), the last hop to the body on its own server; a malformed hop sends a
    Location that is no URL. Going back to the source's own origin is following."""
    if not hops:
        return []
    servers = ["elsewhere" if kind == "elsewhere" else "here" for kind, _ in hops]
    targets = servers + servers[-1:]
    verdicts = ["elsewhere" if servers[0] == "elsewhere" and not allow_hosts else "follow"]
    for number, (kind, _) in enumerate(hops):
        if kind == "malformed":
            verdicts.append("malformed")
        else:
            verdicts.append("elsewhere" if targets[number + 1] == "elsewhere" and not allow_hosts else "follow")
    return verdicts
