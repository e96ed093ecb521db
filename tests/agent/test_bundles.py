"""Signed bundles and the poller that follows them, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from npuctl.agent import bundles, sources
from npuctl.agent.config import ManifestSource
from npuctl.agent.sources import SourcePoller
from npuctl.schema import load_file
from tests.agent.harness import manifest


class BundleServer:
    """Serves /bundle.json and /bundle.json.sig with ETags, and records what it was asked."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        files, requests = self.files, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                requests.append((self.path, self.headers.get("If-None-Match")))
                body = files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bundle.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, bundle: bundles.Bundle, key: bytes) -> None:
        data = bundle.as_bytes()
        self.files["/bundle.json"] = data
        self.files["/bundle.json.sig"] = bundles.sign(data, bundles.load_private_key(key)).encode()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[BundleServer]:
    running = BundleServer()
    yield running
    running.stop()


def test_sign_and_verify_round_trip_and_refusals(tmp_path: Path) -> None:
    pem, public = bundles.generate_key()
    _, other = bundles.generate_key()
    (tmp_path / "tiny.yaml").write_text(manifest())
    data = bundles.pack(tmp_path, "v1", datetime.now(UTC)).as_bytes()
    signature = bundles.sign(data, bundles.load_private_key(pem))
    bundles.verify(data, signature, public)
    with pytest.raises(bundles.BundleError, match="does not verify"):
        bundles.verify(data, signature, other)
    with pytest.raises(bundles.BundleError, match="does not verify"):
        bundles.verify(data.replace(b"w8a16", b"w8a8 "), signature, public)
    with pytest.raises(bundles.BundleError, match="unsafe manifest file names"):
        bundles.check(bundles.Bundle("v1", {"../escape.yaml": manifest()}))
    with pytest.raises(bundles.BundleError, match=r"bad.yaml:9:14: spec.precision"):
        bundles.check(bundles.Bundle("v1", {"bad.yaml": manifest(precision="int3")}))


def poll(poller: SourcePoller, source: ManifestSource) -> None:
    async def once() -> None:
        async with httpx.AsyncClient() as client:
            await poller.poll(client, source)

    asyncio.run(once())


def test_poller_applies_verified_bundles_and_keeps_the_last_good_one(tmp_path: Path, server: BundleServer) -> None:
    pem, public = bundles.generate_key()
    wrong_pem, _ = bundles.generate_key()
    wakes: list[int] = []
    source = ManifestSource(name="fleet", url=server.url, public_key=public)
    poller = SourcePoller([source], tmp_path, lambda: wakes.append(1))

    server.publish(bundles.Bundle("v1", {"tiny.yaml": manifest()}), pem)
    poll(poller, source)
    file = poller.file_of(source)
    assert [d.name for d in load_file(file).deployments] == ["tiny"]
    assert (poller.states["fleet"].state, poller.states["fleet"].version, len(wakes)) == ("Synced", "v1", 1)

    poll(poller, source)  # unchanged: the server answers 304 to the ETag, nothing is rewritten
    assert server.requests[-1][1] is not None and len(wakes) == 1

    server.publish(bundles.Bundle("v2", {"tiny.yaml": manifest(precision="w8a8")}), wrong_pem)
    poll(poller, source)
    state = poller.states["fleet"]
    assert state.state == "Rejected" and "does not verify" in state.message and state.version == "v1"
    assert load_file(file).deployments[0].deployment.spec.precision == "w8a16"

    server.publish(bundles.Bundle("v3", {"tiny.yaml": manifest(precision="w8a8"), "b.yaml": manifest(name="b")}), pem)
    poll(poller, source)
    assert sorted(d.name for d in load_file(file).deployments) == ["b", "tiny"] and len(wakes) == 2

    server.stop()
    poll(poller, source)
    state = poller.states["fleet"]
    assert state.state == "Unreachable" and state.version == "v3"
    assert len(load_file(file).deployments) == 2


async def follow_until_synced(poller: SourcePoller, after_polls: int) -> None:
    """Run the poller until its source "fleet" is Synced after at least `after_polls` polls (30 s at most)."""
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    state = poller.states["fleet"]
    async with asyncio.timeout(30):
        while state.state != "Synced" or state.polls < after_polls:
            await asyncio.sleep(0.02)
    stop.set()
    await task


def test_a_poll_that_ends_in_a_stray_cancellation_or_an_unforeseen_error_does_not_end_the_polling(
        tmp_path: Path, server: BundleServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # CI saw a fleet agent's poller end for good: a poll racing the bundle server's shutdown ended in a bare
    # CancelledError, and every later bundle was missed while the agent kept serving. Here the first poll ends
    # that way, the second in an error nobody foresaw; the third must still fetch the bundle.
    pem, public = bundles.generate_key()
    server.publish(bundles.Bundle("v1", {"tiny.yaml": manifest()}), pem)
    source = ManifestSource(name="fleet", url=server.url, public_key=public, interval_seconds=0.05)
    poller = SourcePoller([source], tmp_path, lambda: None)
    outcomes: list[tuple[str, str]] = []
    real_fetch = sources.fetch

    async def failing_first(*args: Any, **kwargs: Any) -> Any:
        state = poller.states["fleet"]
        if state.polls == 1:
            raise asyncio.CancelledError
        if state.polls == 2:
            outcomes.append((state.state, state.message))
            raise KeyError("surprise")
        outcomes.append((state.state, state.message))
        return await real_fetch(*args, **kwargs)

    monkeypatch.setattr(sources, "fetch", failing_first)

    asyncio.run(follow_until_synced(poller, after_polls=1))
    assert outcomes[0][0] == "Unreachable" and "cancelled before it finished" in outcomes[0][1]
    assert outcomes[1][0] == "Unreachable" and "KeyError: 'surprise'" in outcomes[1][1]
    assert poller.states["fleet"].version == "v1"
    assert [d.name for d in load_file(poller.file_of(source)).deployments] == ["tiny"]
    assert any("KeyError" in r.getMessage() and r.exc_info for r in caplog.records), "the unforeseen error is logged"


def test_a_poll_that_will_not_end_at_its_deadline_is_abandoned_as_stalled_and_the_next_one_comes(
        tmp_path: Path, server: BundleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A poll that swallows its deadline's cancellation (what no library should do, and what a stray one can look
    # like) is left behind once its deadline and the grace after it pass; the source shows Stalled.
    pem, public = bundles.generate_key()
    server.publish(bundles.Bundle("v1", {"tiny.yaml": manifest()}), pem)
    source = ManifestSource(name="fleet", url=server.url, public_key=public, interval_seconds=0.05,
                            poll_timeout_seconds=0.2)
    poller = SourcePoller([source], tmp_path, lambda: None)
    monkeypatch.setattr(sources, "POLL_GRACE_SECONDS", 0.2)
    outcomes: list[tuple[str, str]] = []
    real_fetch = sources.fetch

    async def stuck_first(*args: Any, **kwargs: Any) -> Any:
        state = poller.states["fleet"]
        if state.polls == 1:
            for _ in range(20):  # 1 s, past the 0.2 s deadline and the 0.2 s grace
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass
        outcomes.append((state.state, state.message))
        return await real_fetch(*args, **kwargs)

    monkeypatch.setattr(sources, "fetch", stuck_first)

    asyncio.run(follow_until_synced(poller, after_polls=2))
    stalled = [o for o in outcomes if o[0] == "Stalled"]
    assert stalled and "did not finish within 0.2 s (pollTimeoutSeconds)" in stalled[0][1]
    assert poller.states["fleet"].version == "v1"
